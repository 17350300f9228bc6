"""The LSTM forecaster: one global model with a task embedding, per-task fine-tuning, prefix re-forecast.

Why: baselines give one number per task; this model forecasts the curve over the run's timeline
(p50/p90/p99 per dimension) and its duration, from the run's features, the task's history and, when
given, the observed prefix of the running try (``query.prefix``), so the shaping loop can re-forecast
mid-flight. ``predict_many`` answers many running tasks in one network call.

Training: windows from ``windows.training_windows`` (each run as it would have been asked for,
plus prefix variants); a held-out share of runs drives early stopping and then calibrates the
p90 / p99 outputs (split-conformal factors, saved with the model); tasks with enough runs get
their per-task adapter fine-tuned (still one model, one predict call).

This module must stay importable without TensorFlow: the network (``lstm_network``) is imported
lazily, and a missing TensorFlow surfaces as ``LstmUnavailable`` (an ``ImportError`` with a clear
message) that the fallback chain logs once and moves past. Saved state is ``model.keras`` (loaded
with ``safe_mode=True``) plus ``state.json``; never pickle.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from airflow_predictive.core.model.resources import Metric
from airflow_predictive.core.model.series import QUANTILES, DemandCurve, Forecast
from airflow_predictive.core.profiler.estimators.base import ForecastQuery, NotFitted, RunExample
from airflow_predictive.core.profiler.estimators.lstm_numpy import WEIGHTS_FILE, NumpyNetwork
from airflow_predictive.core.profiler.features import FeatureEncoder, example_peak, forward_max
from airflow_predictive.core.profiler.windows import (
    WindowConfig,
    Windows,
    chronological,
    query_windows,
    training_windows,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path
    from types import ModuleType

log = logging.getLogger(__name__)

NETWORK_MODULE = "airflow_predictive.core.profiler.estimators.lstm_network"
MODEL_FILE = "model.keras"
STATE_FILE = "state.json"
STATE_VERSION = 1


class LstmUnavailable(ImportError):
    """TensorFlow / Keras cannot be imported here: the LSTM cannot train or forecast."""


def _network() -> ModuleType:
    try:  # import_module consults sys.modules, so an uninstalled (or blocked) TensorFlow shows here
        lstm_network = importlib.import_module(NETWORK_MODULE)
    except ImportError as exc:
        raise LstmUnavailable(
            f"the LSTM forecaster needs TensorFlow (pip install 'airflow-provider-predictive[lstm]'): {exc}"
        ) from exc
    return lstm_network


@dataclass(frozen=True)
class LstmConfig:
    """Training settings (saved with the model).

    metrics: dimensions to learn (those never measured in the training runs are dropped at fit).
    validation_fraction: share of runs held out for early stopping and quantile calibration.
    fine_tune_min_runs: tasks with at least this many training runs get their own adapter.
    unknown_task_rate: share of training windows shown with the "unknown task" id, so that the
        global model answers for tasks it never saw.
    max_windows: at most this many training windows per fit (a seeded sample, the newest runs
        of each task kept preferentially): beyond it more runs add little to a model of this
        size, and the fit's cost stops growing with the history (linear-cost training).
    """

    metrics: tuple[Metric, ...] = (Metric.CPU_CORES, Metric.MEMORY_BYTES)
    window: WindowConfig = field(default_factory=WindowConfig)
    embedding_dim: int = 8
    units: int = 32
    hidden: int = 64
    epochs: int = 40
    batch_size: int = 128
    learning_rate: float = 3e-3
    patience: int = 5
    validation_fraction: float = 0.1
    fine_tune_min_runs: int = 20
    fine_tune_epochs: int = 10
    unknown_task_rate: float = 0.1
    min_windows: int = 8
    max_windows: int = 6000
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["metrics"] = [m.value for m in self.metrics]
        data["window"]["prefix_fractions"] = list(self.window.prefix_fractions)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LstmConfig:
        window = dict(data["window"])
        window["prefix_fractions"] = tuple(window["prefix_fractions"])
        return cls(
            **{
                **data,
                "metrics": tuple(Metric(m) for m in data["metrics"]),
                "window": WindowConfig(**window),
            }
        )


@dataclass(frozen=True)
class TrainingReport:
    """What the last fit did (for logs, the model store's manifest and benchmarks)."""

    windows: int
    tasks: int
    fine_tuned_tasks: int
    epochs_global: int
    final_loss: float
    seconds: float


class LstmForecaster:
    """Estimator contract (``fit`` / ``predict`` / ``save`` / ``load``) plus ``predict_many``."""

    name = "lstm"
    uses_prefix = True  # conditions on query.prefix itself (see core/profiler/prefix.py)

    def __init__(self, config: LstmConfig | None = None) -> None:
        self.config = config or LstmConfig()
        self.encoder: FeatureEncoder | None = None
        self.fine_tuned: tuple[str, ...] = ()
        self.calibration: dict[str, dict[str, float]] = {}
        self.report: TrainingReport | None = None
        self._model: Any = None
        self._numpy: NumpyNetwork | None = None

    # ------------------------------------------------------------------ training

    def fit(self, examples: Sequence[RunExample]) -> Self:
        net = _network()
        started = time.monotonic()
        cfg = self.config
        metrics = tuple(
            m
            for m in cfg.metrics
            if any(e.series is not None and e.series.get(m) is not None for e in examples)
        )
        if not metrics:
            raise NotFitted(f"{self.name}: no training run has a series for {[m.value for m in cfg.metrics]}")
        encoder = FeatureEncoder.fit(examples, metrics)
        windows = training_windows(examples, encoder, cfg.window)
        if len(windows) < cfg.min_windows:
            raise NotFitted(f"{self.name}: {len(windows)} training windows, need at least {cfg.min_windows}")
        net.seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        if len(windows) > cfg.max_windows:
            windows = windows.select(_bounded(windows.recency, cfg.max_windows, rng))
        model = net.build_model(
            net.NetworkShape(
                n_static=encoder.n_static,
                n_tasks=len(encoder.tasks) + 1,
                n_operators=len(encoder.operators) + 1,
                prefix_steps=cfg.window.prefix_steps,
                prefix_extra=cfg.window.prefix_extra_size(len(metrics)),
                horizon_steps=cfg.window.horizon_steps,
                dims=len(metrics),
                embedding_dim=cfg.embedding_dim,
                units=cfg.units,
                hidden=cfg.hidden,
            )
        )
        fit_windows, val = self._split(windows, rng)
        shown = fit_windows.task_ids.copy()
        shown[rng.random(len(shown)) < cfg.unknown_task_rate] = 0
        train = replace(fit_windows, task_ids=shown)
        losses = net.train(
            model,
            train.inputs(),
            _targets(train),
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate,
            validation=(val.inputs(), _targets(val)) if val is not None else None,
            patience=cfg.patience,
        )
        self.encoder, self._model = encoder, model
        self.fine_tuned = self._fine_tune(net, examples, fit_windows)
        self.calibration = self._calibrate(net, val) if val is not None else {}
        self.report = TrainingReport(
            windows=len(windows),
            tasks=len(encoder.tasks),
            fine_tuned_tasks=len(self.fine_tuned),
            epochs_global=len(losses),
            final_loss=losses[-1] if losses else math.nan,
            seconds=time.monotonic() - started,
        )
        log.info("%s: trained %s", self.name, self.report)
        return self

    def _calibrate(self, net: ModuleType, val: Windows) -> dict[str, dict[str, float]]:
        """Per dimension and upper quantile, the factor that makes held-out peaks covered as promised.

        Split-conformal on the validation runs (never trained on; their forecast at start, one per
        run): the q-quantile of actual peak / forecast q-peak, kept within [0.8, 3] (1 = the
        network was already calibrated).
        """
        at_start = val.elapsed_s == 0  # one window per run: the ratios are not repeats of one run
        if at_start.sum() >= 20:
            val = val.select(at_start)
        curve, _ = net.predict(self._model, val.inputs())  # [batch, time, dims, q]
        out: dict[str, dict[str, float]] = {}
        for d, metric in enumerate(self.metrics):
            actual = np.nanmax(np.where(np.isfinite(val.curve[:, :, d]), val.curve[:, :, d], -np.inf), axis=1)
            factors = {}
            for j, q in enumerate(QUANTILES):
                predicted = curve[:, :, d, j].max(axis=1)
                ok = np.isfinite(actual) & (actual > 0) & (predicted > 0)
                if q > 0.5 and ok.sum() >= 20:
                    ratio = actual[ok] / predicted[ok]
                    factors[str(q)] = float(np.clip(np.quantile(ratio, q), 0.8, 3.0))
            out[metric.value] = factors
        log.info("%s: calibration factors %s", self.name, out)
        return out

    def _split(self, windows: Windows, rng: np.random.Generator) -> tuple[Windows, Windows | None]:
        """Hold out ``validation_fraction`` of the runs (all windows of a run on one side).

        Whole runs, because a run's prefix variants would otherwise leak into validation; drawn
        at random over time rather than the newest ones, because the newest runs matter most for
        the next forecasts and must stay in training.
        """
        frac = self.config.validation_fraction
        if frac <= 0 or len(windows) < 50:
            return windows, None
        runs = np.stack([windows.task_ids, np.round(windows.recency * 1e6)], axis=1)  # one row per window
        unique, run_of_window = np.unique(runs, axis=0, return_inverse=True)
        val = (rng.random(len(unique)) < frac)[run_of_window.reshape(-1)]
        if val.sum() < 10 or (~val).sum() < 10:
            return windows, None
        return windows.select(~val), windows.select(val)

    def _fine_tune(
        self, net: ModuleType, examples: Sequence[RunExample], windows: Windows
    ) -> tuple[str, ...]:
        """Train only the per-task adapters, on the tasks with enough runs (one model still)."""
        assert self.encoder is not None
        cfg = self.config
        eligible = sorted(
            task for task, runs in chronological(examples).items() if len(runs) >= cfg.fine_tune_min_runs
        )
        if not eligible or cfg.fine_tune_epochs <= 0:
            return ()
        ids = np.array([self.encoder.tasks[t] for t in eligible])
        chosen = windows.select(np.isin(windows.task_ids, ids))
        net.set_stage(self._model, fine_tune=True)
        net.train(
            self._model,
            chosen.inputs(),
            _targets(chosen),
            epochs=cfg.fine_tune_epochs,
            batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate,
            validation=None,
            patience=cfg.patience,
        )
        net.set_stage(self._model, fine_tune=False)
        return tuple(eligible)

    # ------------------------------------------------------------------ forecasting

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return self.encoder.metrics if self.encoder is not None else ()

    def predict(self, query: ForecastQuery) -> Forecast:
        return self.predict_many([query])[0]

    def predict_many(self, queries: Sequence[ForecastQuery]) -> list[Forecast]:
        """Forecast every query in one network call (e.g. all running tasks from their prefixes).

        Raises ``NotFitted`` when the model is not trained, or when a query asks only for metrics
        the model never learned (those it did learn are forecast; the others are left out), or
        when no wanted metric has an anchor (an earlier run's peak or a declared value): a model
        that only knows the training set's median would be guessing, so the chain's next level
        (operator prior, declared) answers instead.
        """
        if (self._model is None and self._numpy is None) or self.encoder is None:
            raise NotFitted(f"{self.name}: predict() before fit() or load()")
        if not queries:
            return []
        wanted = []
        for q in queries:
            dims = [i for i, m in enumerate(self.metrics) if m in q.metrics]
            if not dims:
                raise NotFitted(
                    f"{self.name}: {q.key} asks for {[m.value for m in q.metrics]}, "
                    f"the model learned {[m.value for m in self.metrics]}"
                )
            anchored = [i for i in dims if _anchored(q, self.metrics[i])]
            if not anchored:
                raise NotFitted(
                    f"{self.name}: {q.key} has no earlier run and declares none of "
                    f"{[self.metrics[i].value for i in dims]}: nothing to anchor a forecast on"
                )
            wanted.append(anchored)
        windows = query_windows(queries, self.encoder, self.config.window)
        if self._model is not None:
            curve, log_duration = _network().predict(self._model, windows.inputs())
        else:
            assert self._numpy is not None
            curve, log_duration = self._numpy.predict(windows.inputs())
        return [self._forecast(curve[i], log_duration[i], windows, i, wanted[i]) for i in range(len(queries))]

    def _forecast(
        self, curve: np.ndarray, log_duration: np.ndarray, windows: Windows, i: int, dims: list[int]
    ) -> Forecast:
        """Scale back one row: curve [time, dims, q] / scale, duration quantiles in seconds."""
        h = curve.shape[0]
        dscale, elapsed = float(windows.duration_scales[i]), float(windows.elapsed_s[i])
        duration = {
            q: max(float(np.exp(np.clip(log_duration[j], -12, 12))) * dscale, elapsed)
            for j, q in enumerate(QUANTILES)
        }
        step = max(duration[0.5], 1e-3) / h
        curves: dict[Metric, DemandCurve] = {}
        for d in dims:
            metric = self.metrics[d]
            levels: dict[float, np.ndarray] = {}
            factors = self.calibration.get(metric.value, {})
            for j, q in enumerate(QUANTILES):
                values = np.maximum(curve[:, d, j], 0.0) * windows.scales[i, d] * factors.get(str(q), 1.0)
                if q > 0.5:  # the run may be faster than the p50 duration: look ahead
                    ahead = math.ceil(h * (1.0 - duration[0.5] / max(duration[q], 1e-9)))
                    values = _forward_max(values, ahead)
                levels[q] = values
            curves[metric] = DemandCurve(metric, step, levels)
        return Forecast(curves=curves, duration_s=duration, estimator=self.name)

    # ------------------------------------------------------------------ persistence

    def save(self, directory: Path) -> None:
        if self._model is None or self.encoder is None:
            raise NotFitted(f"{self.name}: nothing to save before fit()")
        directory.mkdir(parents=True, exist_ok=True)
        net = _network()
        net.save(self._model, str(directory / MODEL_FILE))
        np.savez(directory / WEIGHTS_FILE, **net.weight_arrays(self._model))
        state = {
            "version": STATE_VERSION,
            "estimator": self.name,
            "config": self.config.to_json(),
            "encoder": self.encoder.to_json(),
            "fine_tuned": list(self.fine_tuned),
            "calibration": self.calibration,
            "report": asdict(self.report) if self.report else None,
        }
        (directory / STATE_FILE).write_text(json.dumps(state, sort_keys=True))

    @classmethod
    def _from_state(cls, directory: Path) -> Self:
        state = json.loads((directory / STATE_FILE).read_text())
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"state version {state.get('version')!r}, expected {STATE_VERSION}")
        est = cls(LstmConfig.from_json(state["config"]))
        est.encoder = FeatureEncoder.from_json(state["encoder"])
        est.fine_tuned = tuple(state["fine_tuned"])
        est.calibration = {
            str(m): {str(q): float(f) for q, f in qs.items()} for m, qs in state["calibration"].items()
        }
        return est

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Load ``state.json`` + ``model.keras`` (safe mode); any damage raises ``NotFitted``."""
        net = _network()
        try:
            est = cls._from_state(directory)
            est._model = net.load(str(directory / MODEL_FILE))
        except LstmUnavailable:
            raise
        except Exception as exc:  # corrupt zip, tampered config, missing file, wrong shapes ...
            raise NotFitted(
                f"cannot load the LSTM model from {directory}: {type(exc).__name__}: {exc}"
            ) from exc
        return est

    @classmethod
    def load_numpy(cls, directory: Path) -> Self:
        """Load ``state.json`` + ``weights.npz`` for numpy-only forecasting (no TensorFlow import);
        it forecasts like ``load`` (same network, replayed by ``lstm_numpy``) but cannot train.
        A model saved without weights (older versions) or any damage raises ``NotFitted``."""
        try:
            est = cls._from_state(directory)
            est._numpy = NumpyNetwork.load(str(directory / WEIGHTS_FILE))
        except Exception as exc:
            raise NotFitted(
                f"cannot load the LSTM weights from {directory} for numpy serving: {type(exc).__name__}: {exc}"
            ) from exc
        return est


def _anchored(query: ForecastQuery, metric: Metric) -> bool:
    """Whether ``metric`` has something task-specific to scale from (history peak or declared)."""
    declared = query.declared.get(metric)
    return (declared is not None and declared > 0) or any(
        example_peak(e, metric) is not None for e in query.history
    )


def _bounded(recency: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A mask choosing ``n`` windows, each with a weight rising with its run's recency (newest
    runs of a task 3x as likely as its oldest), without replacement."""
    weights = 1.0 + 2.0 * np.clip(recency, 0.0, 1.0)
    chosen = rng.choice(recency.size, size=n, replace=False, p=weights / weights.sum())
    mask = np.zeros(recency.size, dtype=bool)
    mask[chosen] = True
    return mask


def _targets(w: Windows) -> dict[str, np.ndarray]:
    return {"curve": w.curve, "duration": w.log_duration}


def _forward_max(values: np.ndarray, ahead: int) -> np.ndarray:
    """value[i] = max(values[i : i + ahead + 1])."""
    return forward_max(values, ahead)
