"""The LSTM forecaster's network evaluated in numpy only: serving without TensorFlow.

Why: the executor, the operators and the shaping loop ask "what will this run need" inside
Airflow's hot processes, where TensorFlow must never be imported (seconds of import, hundreds of
MB). Training saves the network's weights next to the Keras file (``weights.npz``, plain float
arrays, loaded with ``allow_pickle=False``); this module replays the same layers as
``lstm_network.build_model`` on them: embeddings, the prefix LSTM encoder, two dense context
layers, the repeated timeline with its learned position, the LSTM decoder, the per-step quantile
heads with the per-task adapters, and the monotone quantile construction. A test checks equality
with Keras on a small trained model; any change to ``build_model`` must be mirrored here.

Keras LSTM conventions replayed: ``kernel`` [in, 4u], ``recurrent_kernel`` [u, 4u], ``bias``
[4u], gates in the order input, forget, cell, output; sigmoid gates, tanh cell and output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Mapping

WEIGHTS_FILE = "weights.npz"
QUANTILE_COUNT = 3
# layer name -> number of weight arrays (what ``lstm_network.weight_arrays`` exports)
LAYERS: dict[str, int] = {
    "task_embedding": 1,
    "operator_embedding": 1,
    "prefix_encoder": 3,
    "context_1": 2,
    "context_2": 2,
    "timeline_position": 1,
    "decoder": 3,
    "curve_raw": 2,
    "task_curve_adapter": 1,
    "duration_raw": 2,
    "task_duration_adapter": 1,
}


class WeightsInvalid(ValueError):
    """The weight arrays do not describe the network (missing layer, wrong shape)."""


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)))


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.logaddexp(0.0, x))


def _monotone(x: np.ndarray) -> np.ndarray:
    """``[..., q]`` -> first as is, then + cumulative softplus increments (MonotoneQuantiles)."""
    base = x[..., :1]
    return np.concatenate([base, base + np.cumsum(_softplus(x[..., 1:]), axis=-1)], axis=-1)


def lstm(x: np.ndarray, kernel: np.ndarray, recurrent: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Keras LSTM over ``x`` [batch, time, in] from zero state: every step's output [batch, time, u]."""
    batch, steps, _ = x.shape
    units = recurrent.shape[0]
    h = np.zeros((batch, units))
    c = np.zeros((batch, units))
    projected = x @ kernel + bias  # [batch, time, 4u]
    out = np.empty((batch, steps, units))
    for t in range(steps):
        z = projected[:, t] + h @ recurrent
        i = _sigmoid(z[:, :units])
        f = _sigmoid(z[:, units : 2 * units])
        g = np.tanh(z[:, 2 * units : 3 * units])
        o = _sigmoid(z[:, 3 * units :])
        c = f * c + i * g
        h = o * np.tanh(c)
        out[:, t] = h
    return out


class NumpyNetwork:
    """``predict(inputs) -> (curve [batch, time, dims, q], duration [batch, q])`` like the Keras model."""

    def __init__(self, weights: Mapping[str, np.ndarray]) -> None:
        w: dict[str, list[np.ndarray]] = {}
        for layer, count in LAYERS.items():
            try:
                w[layer] = [np.asarray(weights[f"{layer}/{i}"], dtype=np.float64) for i in range(count)]
            except KeyError as exc:
                raise WeightsInvalid(f"weights lack {exc.args[0]}") from exc
        self.w = w
        self.horizon, self.hidden = w["timeline_position"][0].shape
        total = w["curve_raw"][0].shape[1]
        if total % QUANTILE_COUNT or w["task_curve_adapter"][0].shape[1] != self.horizon * total:
            raise WeightsInvalid("curve head and adapter shapes disagree")
        self.dims = total // QUANTILE_COUNT

    @classmethod
    def load(cls, path: str) -> NumpyNetwork:
        with np.load(path, allow_pickle=False) as data:
            return cls({k: data[k] for k in data.files})

    def predict(self, inputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        w = self.w
        task = np.asarray(inputs["task_id"], dtype=np.int64)
        op = np.asarray(inputs["operator_id"], dtype=np.int64)
        task = np.where((task >= 0) & (task < w["task_embedding"][0].shape[0]), task, 0)
        op = np.where((op >= 0) & (op < w["operator_embedding"][0].shape[0]), op, 0)
        static = np.asarray(inputs["static"], dtype=np.float64)  # [batch, features]
        prefix = np.asarray(inputs["prefix"], dtype=np.float64)  # [batch, prefix, dims + 1]
        extra = np.asarray(inputs["prefix_extra"], dtype=np.float64)  # [batch, extra]
        batch = static.shape[0]
        encoded = lstm(prefix, *w["prefix_encoder"])[:, -1]  # [batch, units]
        ctx = np.concatenate(
            [static, w["task_embedding"][0][task], w["operator_embedding"][0][op], encoded, extra], axis=1
        )
        ctx = np.maximum(ctx @ w["context_1"][0] + w["context_1"][1], 0.0)
        ctx = np.maximum(ctx @ w["context_2"][0] + w["context_2"][1], 0.0)  # [batch, hidden]
        seq = ctx[:, None, :] + w["timeline_position"][0][None]  # [batch, time, hidden]
        seq = lstm(seq, *w["decoder"])  # [batch, time, units]
        raw = seq @ w["curve_raw"][0] + w["curve_raw"][1]  # [batch, time, dims * q]
        raw = raw + w["task_curve_adapter"][0][task].reshape(batch, self.horizon, -1)
        curve = _monotone(raw.reshape(batch, self.horizon, self.dims, QUANTILE_COUNT))
        dur = ctx @ w["duration_raw"][0] + w["duration_raw"][1] + w["task_duration_adapter"][0][task]
        return curve, _monotone(dur)
