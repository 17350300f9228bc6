"""Mid-run re-forecast for the shaping loop: the at-start forecast conditioned on the observed prefix.

Why: a forecast made before the try starts is all the shaping policy knows about the rest of the
run; what the try has already used says more (a run above its forecast will not come back under
it; a run well below it is, more often than not, a small run). ``PrefixReforecaster`` is the
controller's ``reforecast`` hook (``ShapingController(reforecast=..., options=ControllerOptions(
reforecast_every_s=...))``): called with the prefix the controller observed, it conditions the
try's *at-start* forecast through the profiler's own prefix path
(``core/profiler/prefix.condition_on_prefix``, numpy: what the product serves, no TensorFlow in a
shaping loop) and returns the expectation the policy follows until the next re-forecast. It always
starts from the at-start forecast, so re-forecasts never compound.

With the task's history (its earlier finished runs as ``RunExample``s, oldest first, bounded to the
newest ``SegmentPolicy.recent``) and ``ReforecastSettings.segments`` set, the re-forecast is
``core/profiler/estimators/segments.segment_reforecast`` instead: how the task's earlier runs that
looked like this one at the same elapsed time went on (k-Segments); a metric or a try the history
cannot answer for (too few earlier runs that lasted this long, no prefix of the metric) falls back
to ``condition_on_prefix`` with the same ``prefix`` policy. Without history it is
``condition_on_prefix`` exactly.

Bounds (the re-forecast can move the band, never the floors):
- the policy's own floors are untouched: a reclaim never goes below usage + the memory margin nor
  below the dwell window's peak, whatever the re-forecast says;
- ``keep_guard``: every other quantile the policy reads (the guard's median, the ratio guard's
  reference) is the larger of the at-start and the re-forecast one, so the median-forecast guard
  stays the floor against kills (a re-forecast can raise it, never lower it);
- the reclaim above the need: only a memory re-forecast the history answered offers the policy
  ``reclaim_margin`` (an accurate band keeps usage inside it, so the band rule alone would never
  reclaim; see ``ShapingSettings.forecast_reclaim_margin``), and that reclaim is bounded like any
  other: never below the guard, the window peak, usage + the memory margin, nor inside the
  shrink cooldown.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from airflow_predictive.core.model.resources import Metric
from airflow_predictive.core.model.series import UsageSeries
from airflow_predictive.core.profiler.estimators.segments import SegmentPolicy, segment_reforecast
from airflow_predictive.core.profiler.prefix import PrefixPolicy, condition_on_prefix
from airflow_predictive.core.shaping.expectation import ForecastExpectation

MEMORY = Metric.MEMORY_BYTES
# shaping's k-Segments policy: the one the cluster benchmark validated (session 8's defaults)
SHAPING_SEGMENTS = SegmentPolicy(k=8, recent=30, robust=3, mean_so_far=False, rest=False, capped_size=False)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow_predictive.core.model.resources import ResourceVector
    from airflow_predictive.core.model.runs import FeatureValue
    from airflow_predictive.core.model.series import Forecast
    from airflow_predictive.core.profiler.estimators.base import RunExample


class UsagePrefix:
    """The usage a running try has shown so far (its last ``limit`` samples), kept column by column:
    a re-forecast reads it as arrays without a Python object per sample, and a loop that skipped ticks
    (the cluster simulator) adds their samples in bulk (``extend``). ``series()`` is what
    ``UsageSeries.from_samples`` gives for the same samples (sorted, a repeated time: the last wins,
    metrics seen at least once)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        self.limit = limit
        self._times: list[float] = []  # appended one by one since the last flush
        self._values: dict[Metric, list[float]] = {}
        self._chunks: list[tuple[np.ndarray, dict[Metric, np.ndarray]]] = []
        self._count = 0

    def __len__(self) -> int:
        return min(self._count, self.limit)

    def append(self, t_s: float, usage: ResourceVector) -> None:
        n = len(self._times)
        for metric, value in usage.present().items():
            column = self._values.get(metric)
            if column is None:
                column = self._values[metric] = [math.nan] * n
            column.append(value)
        self._times.append(float(t_s))
        for column in self._values.values():
            if len(column) == n:
                column.append(math.nan)
        self._count += 1
        if len(self._times) >= self.limit:
            self._flush()

    def extend(self, times: np.ndarray, values: Mapping[Metric, np.ndarray]) -> None:
        """Samples at ``times`` (after every one added before), one array per metric."""
        self._flush()
        t = np.asarray(times, dtype=float)
        if t.size == 0:
            return
        self._chunks.append((t, {m: np.asarray(v, dtype=float) for m, v in values.items()}))
        self._count += int(t.size)
        self._trim()

    def series(self) -> UsageSeries:
        self._flush()
        if not self._chunks:
            return UsageSeries(np.zeros(0), {})
        if len(self._chunks) > 1:
            metrics = {m for _, cols in self._chunks for m in cols}
            times = np.concatenate([t for t, _ in self._chunks])
            merged = {
                m: np.concatenate([cols.get(m, np.full(t.size, np.nan)) for t, cols in self._chunks])
                for m in metrics
            }
            self._chunks = [(times, merged)]
        times, cols = self._chunks[0]
        keep = slice(max(0, times.size - self.limit), None)
        t, values = times[keep], {m: v[keep] for m, v in cols.items()}
        if t.size > 1 and not (np.all(np.isfinite(t)) and np.all(np.diff(t) > 0)):
            finite = np.flatnonzero(np.isfinite(t))
            order = finite[np.argsort(t[finite], kind="stable")]
            ordered = t[order]
            last = np.append(ordered[1:] != ordered[:-1], True)  # a repeated time: the last wins
            t, values = ordered[last], {m: v[order][last] for m, v in values.items()}
        values = {m: v for m, v in values.items() if np.isfinite(v).any()}
        return UsageSeries(t, values)

    def _flush(self) -> None:
        if self._times:
            n = len(self._times)
            self._chunks.append(
                (np.array(self._times), {m: np.array(v[:n], dtype=float) for m, v in self._values.items()})
            )
            self._times, self._values = [], {}
        self._trim()

    def _trim(self) -> None:
        """Forget whole chunks older than the last ``limit`` samples."""
        total = sum(t.size for t, _ in self._chunks)
        while len(self._chunks) > 1 and total - self._chunks[0][0].size >= self.limit:
            total -= self._chunks.pop(0)[0].size
        self._count = min(self._count, total)


@dataclass(frozen=True)
class ReforecastSettings:
    """every_s: re-forecast this often while the try runs (0: never; the controller's
    ``reforecast_every_s``). prefix: how much the prefix moves the forecast (the profiler's
    ``PrefixPolicy``). keep_guard: the guard's quantiles never fall below the at-start forecast's.
    segments: re-forecast from the task's history with this policy when the hook has one (the
    default, adopted on the training half's own split of kseg-eager: docs/benchmarks/
    cluster_training.md; None: ``condition_on_prefix`` only; its ``fallback`` is replaced by
    ``prefix``). reclaim_margin: what
    a memory re-forecast the history answered offers the policy (``ReforecastExpectation.
    reclaim_margin``: a limit above its need is reclaimed inside the band, see
    ``ShapingSettings.forecast_reclaim_margin``); None: never offered. 0.15; 0.05 (with
    ``ShapingSettings`` guard margin 0 and ratio floor 0.3; the policy widens it to 0.133 at
    ``near_limit`` 0.1) gave 26.8 % slack against 28.5 %, 0 kills both, on the training half's own
    split (bench/cluster_sweep.py) but OOM kills on the held-out half: not adopted. Session 10:
    0.05 with the ratio floor 0.3 and the rise-aware headroom, the guard margin kept at +10 % (the
    policy widens it to 0.122 on a flat phase, 0.133 on a rise): 26.8 % at 0 kills on the training
    split, 2.5 / 1,000 on the held-out half: not adopted either (``ShapingSettings.rise_horizon_s``).
    segments: the k-Segments policy of shaping's re-forecast, pinned to the one validated on the
    cluster benchmark (``SHAPING_SEGMENTS``: k=8, 30 runs, without the mean-so-far and whole-rest
    models and the capped input size that ``SegmentPolicy()`` gained in sessions 9 and 10 on the
    profiler's accuracy benchmark, not yet on the cluster's training split; with the flat next
    window of session 10, which removed three OOM kills there)."""

    every_s: float = 0.0
    prefix: PrefixPolicy = field(default_factory=PrefixPolicy)
    keep_guard: bool = True
    segments: SegmentPolicy | None = field(default_factory=lambda: SHAPING_SEGMENTS)
    reclaim_margin: float | None = 0.15

    def __post_init__(self) -> None:
        if not self.every_s >= 0:
            raise ValueError(f"every_s must be >= 0, got {self.every_s!r}")


def from_start(prefix: UsageSeries) -> UsageSeries:
    """``prefix`` starting at t = 0 (the run's start), so that its elapsed time is the run's: the
    controller's first sample comes one tick after the start, and a long run's kept prefix has lost
    its oldest samples. The added first sample repeats the first one (the peak is unchanged)."""
    if len(prefix) == 0 or prefix.times[0] <= 0:
        return prefix
    times = np.concatenate([[0.0], prefix.times])
    values = {m: np.concatenate([a[:1], a]) for m, a in prefix.values.items()}
    return UsageSeries(times, values)


class PrefixReforecaster:
    """The controller's re-forecast hook over one try's at-start ``forecast`` (see the module)."""

    def __init__(
        self,
        forecast: Forecast,
        *,
        quantile: float = 0.9,
        quantiles: Mapping[Metric, float] | None = None,
        settings: ReforecastSettings | None = None,
        history: Sequence[RunExample] = (),
        features: Mapping[str, FeatureValue] | None = None,
    ) -> None:
        """``history``: the task's earlier finished runs, oldest first (only the newest
        ``settings.segments.recent`` are kept); ``features``: this try's (its input size)."""
        self.forecast = forecast
        self.quantile = quantile
        self.quantiles = dict(quantiles or {})
        self.settings = settings or ReforecastSettings()
        self.at_start = ForecastExpectation(forecast, quantile=quantile, quantiles=self.quantiles)
        segments = self.settings.segments
        self.segments = replace(segments, fallback=self.settings.prefix) if segments is not None else None
        self.history: tuple[RunExample, ...] = (
            tuple(history)[-self.segments.recent :] if self.segments is not None else ()
        )
        self.features = dict(features or {})
        self.calls = 0

    @classmethod
    def following(
        cls,
        expectation: object,
        settings: ReforecastSettings,
        history: Sequence[RunExample] = (),
        features: Mapping[str, FeatureValue] | None = None,
    ) -> PrefixReforecaster | None:
        """The hook for a controller shaping along ``expectation`` (None: re-forecast off, or an
        expectation that is not an at-start forecast's, so there is nothing to condition)."""
        if (
            settings.every_s <= 0
            or not isinstance(expectation, ForecastExpectation)
            or expectation.offset_s != 0
        ):
            return None
        return cls(
            expectation.forecast,
            quantile=expectation.quantile,
            quantiles=expectation.quantiles,
            settings=settings,
            history=history,
            features=features,
        )

    def reforecast(self, prefix: UsageSeries) -> Forecast:
        """The rest-of-try forecast given ``prefix`` (segments over the history, else the prefix path)."""
        return self._reforecast(prefix)[0]

    def _reforecast(self, prefix: UsageSeries) -> tuple[Forecast, bool]:
        """(forecast, whether the history answered for memory)."""
        observed = from_start(prefix)
        if self.segments is not None and self.history and len(observed) > 0:
            fell_back: set[Metric] = set()
            out = segment_reforecast(
                self.forecast, observed, self.history, self.features, self.segments, fell_back
            )
            return out, MEMORY in out.curves and MEMORY not in fell_back
        return condition_on_prefix(self.forecast, observed, self.settings.prefix), False

    def __call__(self, prefix: UsageSeries) -> ForecastExpectation | ReforecastExpectation:
        self.calls += 1
        forecast, answered = self._reforecast(prefix)
        fresh = ForecastExpectation(forecast, quantile=self.quantile, quantiles=self.quantiles)
        margin = self.settings.reclaim_margin if answered else None
        if not self.settings.keep_guard:
            return fresh if margin is None else ReforecastExpectation(fresh, fresh, margin)
        return ReforecastExpectation(fresh, self.at_start, margin)


@dataclass(frozen=True)
class ReforecastExpectation:
    """The re-forecast's band quantile; any other quantile at least the at-start forecast's.
    reclaim_margin: offered to the policy when the task's history answered for memory."""

    fresh: ForecastExpectation
    at_start: ForecastExpectation
    reclaim_margin: float | None = None

    def predicted(self, metric: Metric, t_s: float) -> float | None:
        return self.fresh.predicted(metric, t_s)

    def ahead(self, metric: Metric, t_s: float, horizon_s: float) -> float | None:
        return self.fresh.ahead(metric, t_s, horizon_s)

    def ahead_at(self, metric: Metric, t_s: float, horizon_s: float, quantile: float) -> float | None:
        new = self.fresh.ahead_at(metric, t_s, horizon_s, quantile)
        old = self.at_start.ahead_at(metric, t_s, horizon_s, quantile)
        if new is None or old is None:
            return old if new is None else new
        return max(new, old)

    def next_change_s(
        self, metric: Metric, t_s: float, horizons: tuple[float, ...] = (), before: float = math.inf
    ) -> float:
        return min(
            self.fresh.next_change_s(metric, t_s, horizons, before),
            self.at_start.next_change_s(metric, t_s, horizons, before),
            math.inf,
        )
