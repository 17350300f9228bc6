"""The Keras 3 network behind the LSTM forecaster (the only module that imports TensorFlow / Keras).

Why a separate module: ``import tensorflow`` costs seconds and hundreds of MB, so the estimator
(``lstm.py``), the windowing and every Airflow-facing path stay importable without it; this module
is imported lazily, only when a model is built, trained or loaded.

Shape of the network (``# [batch, ...]`` annotated inline):
- inputs: static features, task id (embedding), operator id (embedding), the observed prefix
  sequence (encoded by an LSTM) and a few prefix numbers;
- a context vector -> repeated over the run's timeline + a learned position -> LSTM decoder ->
  per step, per dimension, three quantiles (p50/p90/p99) made monotone by construction;
- a duration head (log-duration quantiles);
- a per-task adapter (embedding added to the raw outputs, zero and frozen until per-task
  fine-tuning) so that one model serves every task, in one predict call.

Everything custom is a registered serialisable class, so ``keras.saving.load_model(path,
safe_mode=True)`` loads it without pickle or lambdas. Never add a Lambda layer here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import layers, ops

PACKAGE = "airflow_predictive"
QUANTILE_LEVELS: tuple[float, ...] = (0.5, 0.9, 0.99)
ADAPTER_LAYERS: tuple[str, ...] = ("task_curve_adapter", "task_duration_adapter")


@keras.saving.register_keras_serializable(package=PACKAGE)
class MonotoneQuantiles(layers.Layer):
    """Raw outputs ``[..., q]`` -> increasing quantiles: first as is, then + softplus increments."""

    def call(self, x: Any) -> Any:
        base = x[..., :1]
        steps = ops.cumsum(ops.softplus(x[..., 1:]), axis=-1)
        return ops.concatenate([base, base + steps], axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class TimelinePosition(layers.Layer):
    """Adds a learned vector per timeline step: ``[batch, time, dim] -> [batch, time, dim]``."""

    def __init__(self, steps: int, dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.steps = steps
        self.dim = dim

    def build(self, input_shape: Any) -> None:
        self.position = self.add_weight(
            name="position",
            shape=(self.steps, self.dim),
            initializer=keras.initializers.RandomNormal(stddev=0.1),
        )

    def call(self, x: Any) -> Any:
        return x + self.position  # [batch, time, dim] + [time, dim]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "steps": self.steps, "dim": self.dim}


@keras.saving.register_keras_serializable(package=PACKAGE)
class PinballLoss(keras.losses.Loss):
    """Mean quantile (pinball) loss over quantiles ``[..., q]``; NaN targets are ignored.

    y_true: ``[batch, ...]``; y_pred: ``[batch, ..., len(quantiles)]``.
    """

    def __init__(self, quantiles: tuple[float, ...] = QUANTILE_LEVELS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.quantiles = tuple(float(q) for q in quantiles)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y = ops.expand_dims(ops.cast(y_true, y_pred.dtype), -1)  # [batch, ..., 1]
        known = ops.logical_not(ops.isnan(y))
        err = ops.where(known, y, ops.zeros_like(y)) - y_pred  # [batch, ..., q]
        q = ops.convert_to_tensor(self.quantiles, dtype=y_pred.dtype)
        loss = ops.where(known, ops.maximum(q * err, (q - 1.0) * err), ops.zeros_like(err))
        axes = tuple(range(1, len(y_pred.shape)))
        count = ops.sum(ops.cast(known, y_pred.dtype), axis=axes) * len(self.quantiles)
        return ops.sum(loss, axis=axes) / ops.maximum(count, 1.0)  # [batch]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "quantiles": list(self.quantiles)}


@dataclass(frozen=True)
class NetworkShape:
    """Sizes the network is built for (all from the fitted encoder and window config)."""

    n_static: int
    n_tasks: int  # vocabulary size including id 0 (unknown)
    n_operators: int
    prefix_steps: int
    prefix_extra: int
    horizon_steps: int
    dims: int
    embedding_dim: int = 8
    units: int = 32
    hidden: int = 64


def build_model(shape: NetworkShape) -> keras.Model:
    """The functional model with inputs static/task_id/operator_id/prefix/prefix_extra."""
    nq = len(QUANTILE_LEVELS)
    h, d = shape.horizon_steps, shape.dims
    static = keras.Input((shape.n_static,), name="static")  # [batch, features]
    task_id = keras.Input((), dtype="int32", name="task_id")  # [batch]
    operator_id = keras.Input((), dtype="int32", name="operator_id")  # [batch]
    prefix = keras.Input((shape.prefix_steps, d + 1), name="prefix")  # [batch, prefix, dims + 1]
    prefix_extra = keras.Input((shape.prefix_extra,), name="prefix_extra")  # [batch, extra]

    task_vec = layers.Embedding(shape.n_tasks, shape.embedding_dim, name="task_embedding")(task_id)
    op_vec = layers.Embedding(shape.n_operators, 4, name="operator_embedding")(operator_id)
    prefix_vec = layers.LSTM(shape.units, name="prefix_encoder")(prefix)  # [batch, units]
    ctx = layers.Concatenate()([static, task_vec, op_vec, prefix_vec, prefix_extra])
    ctx = layers.Dense(shape.hidden, activation="relu", name="context_1")(ctx)
    ctx = layers.Dense(shape.hidden, activation="relu", name="context_2")(ctx)  # [batch, hidden]

    seq = layers.RepeatVector(h)(ctx)  # [batch, time, hidden]
    seq = TimelinePosition(h, shape.hidden, name="timeline_position")(seq)
    seq = layers.LSTM(shape.units, return_sequences=True, name="decoder")(seq)  # [batch, time, units]
    raw = layers.TimeDistributed(layers.Dense(d * nq), name="curve_raw")(seq)  # [batch, time, dims*q]
    adapter = layers.Embedding(
        shape.n_tasks, h * d * nq, embeddings_initializer="zeros", name=ADAPTER_LAYERS[0]
    )(task_id)  # [batch, time*dims*q]
    raw = layers.Add()([raw, layers.Reshape((h, d * nq))(adapter)])
    curve = MonotoneQuantiles(name="curve")(layers.Reshape((h, d, nq))(raw))  # [batch, time, dims, q]

    dur_raw = layers.Dense(nq, name="duration_raw")(ctx)  # [batch, q]
    dur_adapter = layers.Embedding(shape.n_tasks, nq, embeddings_initializer="zeros", name=ADAPTER_LAYERS[1])(
        task_id
    )
    duration = MonotoneQuantiles(name="duration")(layers.Add()([dur_raw, dur_adapter]))  # [batch, q]

    model = keras.Model(
        inputs={
            "static": static,
            "task_id": task_id,
            "operator_id": operator_id,
            "prefix": prefix,
            "prefix_extra": prefix_extra,
        },
        outputs={"curve": curve, "duration": duration},
        name="demand_lstm",
    )
    set_stage(model, fine_tune=False)
    return model


def set_stage(model: keras.Model, *, fine_tune: bool) -> None:
    """Global stage: everything trains but the per-task adapters; fine-tune: only the adapters."""
    for layer in model.layers:
        layer.trainable = (layer.name in ADAPTER_LAYERS) == fine_tune or not layer.weights


def compile_model(model: keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate, clipnorm=1.0),
        loss={"curve": PinballLoss(), "duration": PinballLoss()},
        loss_weights={"curve": 1.0, "duration": 0.2},
    )


def train(
    model: keras.Model,
    inputs: dict[str, Any],
    targets: dict[str, Any],
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    validation: tuple[dict[str, Any], dict[str, Any]] | None,
    patience: int,
) -> list[float]:
    """Fit with early stopping on the validation loss (when given); returns the loss per epoch."""
    compile_model(model, learning_rate)
    callbacks = []
    if validation is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
        )
    history = model.fit(
        inputs,
        targets,
        epochs=epochs,
        batch_size=batch_size,
        validation_data=validation,
        callbacks=callbacks,
        verbose=0,
        shuffle=True,
    )
    return [float(v) for v in history.history["loss"]]


def seed(value: int) -> None:
    keras.utils.set_random_seed(value)


def predict(model: keras.Model, inputs: dict[str, Any]) -> tuple[Any, Any]:
    """(curve [batch, time, dims, q], duration [batch, q]) as numpy, in one compiled call.

    The batch is padded to a power of two (>= 8) so that the traced predict function is reused
    across calls with different numbers of tasks instead of being traced again (~1 s each).
    """
    n = len(inputs["task_id"])
    size = max(8, 1 << (n - 1).bit_length())
    padded = {k: np.concatenate([v, np.repeat(v[-1:], size - n, axis=0)]) for k, v in inputs.items()}
    out = model.predict_on_batch(padded)
    return np.asarray(out["curve"])[:n], np.asarray(out["duration"])[:n]


def save(model: keras.Model, path: str) -> None:
    model.save(path)


def weight_arrays(model: keras.Model) -> dict[str, np.ndarray]:
    """Every layer's weights as ``"<layer>/<index>"`` -> float32 array (what ``lstm_numpy`` replays)."""
    return {
        f"{layer.name}/{i}": np.asarray(w, dtype=np.float32)
        for layer in model.layers
        for i, w in enumerate(layer.get_weights())
    }


def load(path: str) -> keras.Model:
    """Keras native format, ``safe_mode=True`` (refuses lambdas / arbitrary code), not compiled."""
    model: keras.Model = keras.saving.load_model(path, safe_mode=True, compile=False)
    return model
