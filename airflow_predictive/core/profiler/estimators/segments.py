"""k-Segments-style re-forecast: the rest of a running try from its prefix *and* the task's history.

Why: ``core/profiler/prefix.condition_on_prefix`` knows only the at-start forecast and the prefix,
so it can say "above the forecast so far, so higher later" but not how much a run that looks like
this at this point went on to use: on kseg-eager the peaks come late, and trusting the prefix's
ratio to the forecast made the rest-of-run peak *worse* than ignoring the prefix. The task's
finished runs answer that question directly. In the manner of k-Segments / KS+ (per-segment peak
models on the input size), ``segment_reforecast`` cuts every earlier run of the task at the same
elapsed time and fits, across those runs, one log-linear model per segment of what comes next:

    log(peak of segment j) = a_j + b_j log(peak so far) + c_j log(level now) + d_j log(input size)

Segment 0 is the next ``window_s`` seconds (what the shaping controller sizes next); the rest of
each earlier run after it is split into ``k`` equal segments. The fit is least squares
re-weighted ``robust`` times (Huber), so that one odd earlier run does not move it. The query
run's observed peak so far, level now and input size give each segment's expected peak; the
at-start forecast keeps its *shape* and quantile spread, and each segment of it is multiplied so that its p50 peak is the
predicted one (factor clipped to ``[1/max_ratio, max_ratio]``). The next ``window_s`` hold at
least the level now (memory in use now is still in use). A task with fewer than ``min_runs``
usable earlier runs (or a metric the prefix does not show) falls back to ``condition_on_prefix``.
Hyper-parameters (k, recent, robust) were chosen on the training half of kseg-eager only
(``bench/profiler_prefix.py`` grids them there). Pure numpy, a few ms per re-forecast: servable in
the shaping loop; ``KSegments`` wraps it as an estimator (``uses_prefix = True``) whose at-start
forecast is the scaled curve's.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Self

import numpy as np

from airflow_predictive.core.model.series import DemandCurve
from airflow_predictive.core.profiler.estimators.base import NotFitted
from airflow_predictive.core.profiler.estimators.baselines import CONFIG_FILE
from airflow_predictive.core.profiler.estimators.scaled_curve import ScaledCurve
from airflow_predictive.core.profiler.features import clean_array, input_size
from airflow_predictive.core.profiler.prefix import PrefixPolicy, condition_on_prefix

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from airflow_predictive.core.model.resources import Metric
    from airflow_predictive.core.model.runs import FeatureValue
    from airflow_predictive.core.model.series import Forecast, UsageSeries
    from airflow_predictive.core.profiler.estimators.base import ForecastQuery, RunExample


@dataclass(frozen=True)
class SegmentPolicy:
    """k: segments of the rest after the next window; window_s: the next-minutes segment;
    recent: newest earlier runs fitted; ridge: shrinkage of the slopes towards 0 (the mean ratio);
    blend: exponent on each segment's factor (1: the model's peak, 0: the at-start forecast's);
    robust: Huber re-weightings of the fit; min_runs: fewer usable earlier runs -> ``fallback``;
    recent_s: "the level now" window."""

    k: int = 8
    window_s: float = 300.0
    recent: int = 30
    ridge: float = 1e-3
    blend: float = 1.0
    robust: int = 3
    min_runs: int = 4
    max_ratio: float = 4.0
    recent_s: float = 30.0
    overrun: float = 0.1
    fallback: PrefixPolicy = field(default_factory=PrefixPolicy)

    def __post_init__(self) -> None:
        if self.k < 1 or self.min_runs < 2 or not self.window_s > 0 or not self.ridge >= 0:
            raise ValueError(f"invalid segment policy {self!r}")


@dataclass(frozen=True)
class _Cut:
    """What a prefix shows at its elapsed time: peak so far and level now (one metric)."""

    elapsed: float
    seen: float
    now: float


def _cut(times: np.ndarray, values: np.ndarray, elapsed: float, recent_s: float) -> _Cut | None:
    end = int(np.searchsorted(times, elapsed, side="right"))
    head = values[:end]
    ok = np.isfinite(head)
    if not ok.any():
        return None
    if not ok.all():
        times, head = times[:end][ok], head[ok]
    seen = float(np.max(head))
    begin = int(np.searchsorted(times[: head.size], elapsed - recent_s, side="left"))
    now = float(np.max(head[begin:])) if begin < head.size else float(head[-1])
    return _Cut(elapsed, seen, now)


def _clean(example: RunExample, metric: Metric) -> tuple[np.ndarray, np.ndarray] | None:
    """A finished run's finite readings of ``metric`` on its own clock from 0, memoised on the run."""
    key = ("segments.clean", metric)
    if key in example.facts:
        return example.facts[key]  # type: ignore[return-value]
    out = None
    s = example.series
    raw = s.get(metric) if s is not None else None
    if s is not None and raw is not None and len(s) > 1:
        v = clean_array(metric, raw)
        ok = np.isfinite(v)
        if ok.sum() > 1:
            t = (s.times - s.times[0])[ok]
            out = (t, v[ok])
    example.facts[key] = out
    return out


def segment_targets(
    times: np.ndarray, values: np.ndarray, elapsed: float, window_s: float, k: int
) -> np.ndarray:
    """Peaks of a finished run after ``elapsed``: the next ``window_s``, then ``k`` equal parts of
    what is left ([k + 1]; NaN where the run has no reading there)."""
    out = np.full(k + 1, np.nan)
    end = float(times[-1])
    edges = [elapsed, elapsed + window_s]
    rest = max(end - edges[1], 0.0)
    edges += [edges[1] + rest * (j + 1) / k for j in range(k)]
    idx = np.searchsorted(times, edges, side="right")  # (edge_j, edge_j+1]
    for j in range(k + 1):
        a, b = int(idx[j]), int(idx[j + 1])
        if b > a:
            out[j] = float(np.max(values[a:b]))
    return out


def _design(seen: np.ndarray, now: np.ndarray, size: np.ndarray | None) -> np.ndarray:
    cols = [np.log(seen), np.log(now)]
    if size is not None:
        cols.append(np.log(size))
    return np.stack(cols, axis=1)


def fit_segments(
    x: np.ndarray, y: np.ndarray, query: np.ndarray, ridge: float, robust: int = 0
) -> np.ndarray:
    """Per column of ``y`` ([n, J], NaN = no target), the least-squares fit of it on the columns of
    ``x`` ([n, p], centred per target; slopes shrunk by ``ridge`` x n), evaluated at ``query``
    ([p]): [J]. ``robust`` > 0: that many Huber re-weightings (k = 1.345 robust sigmas), so that
    one odd earlier run does not move the fit. All targets are solved at once (one batched solve)."""
    p = x.shape[1]
    known = np.isfinite(y)
    w = known.astype(float)  # [n, J]
    y0 = np.where(known, y, 0.0)
    pred = np.full(y.shape[1], np.nan)
    eye = np.eye(p)
    for i in range(robust + 1):
        total = np.maximum(w.sum(axis=0), 1e-12)  # [J]
        mu_x = (w.T @ x) / total[:, None]  # [J, p]
        mu_y = (w * y0).sum(axis=0) / total  # [J]
        xc = x[None, :, :] - mu_x[:, None, :]  # [J, n, p]
        wt = w.T[:, :, None]  # [J, n, 1]
        a = np.einsum("jni,jnk->jik", xc * wt, xc) + ridge * known.sum(axis=0)[:, None, None] * eye
        rhs = np.einsum("jni,jn->ji", xc * wt, (y0 - mu_y).T)
        slopes = _solve(a, rhs)  # [J, p]
        pred = mu_y + np.einsum("ji,ji->j", query[None, :] - mu_x, slopes)
        if i == robust:
            break
        fitted = mu_y[None, :] + np.einsum("jni,ji->nj", xc, slopes)
        res = np.where(known, np.abs(y0 - fitted), np.nan)
        with np.errstate(all="ignore"):
            scale = np.maximum(np.nanmedian(np.where(known, res, np.nan), axis=0) * 1.4826, 1e-9)
            w = np.where(known, np.minimum(1.0, 1.345 * scale[None, :] / np.maximum(res, 1e-12)), 0.0)
    return pred


def _solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched normal equations ([J, p, p] x [J, p]); minimum-norm least squares for a system that
    is singular (collinear columns without ridge: the peak so far equal to the level now in every
    run)."""
    regular = np.linalg.cond(a) < 1e10
    out = np.zeros(b.shape)
    if regular.any():
        out[regular] = np.linalg.solve(a[regular], b[regular][:, :, None])[:, :, 0]
    for j in np.flatnonzero(~regular):
        out[j] = np.linalg.lstsq(a[j], b[j], rcond=None)[0]
    return out


@dataclass(frozen=True)
class SegmentPeaks:
    """The expected p50 peak of each segment of the rest of a try (the next window, then k equal
    parts of what is left) and how many earlier runs said so."""

    peaks: np.ndarray  # [k + 1], NaN where no earlier run says anything
    runs: int


def predict_segments(
    history: Sequence[RunExample],
    metric: Metric,
    cut: _Cut,
    size: float | None,
    policy: SegmentPolicy,
) -> SegmentPeaks | None:
    """Each segment's expected peak from the task's earlier runs cut at the same elapsed time."""
    seen, now, sizes, targets = [], [], [], []
    for e in list(history)[-policy.recent :]:
        got = _clean(e, metric)
        if got is None or float(got[0][-1]) <= cut.elapsed:
            continue
        c = _cut(got[0], got[1], cut.elapsed, policy.recent_s)
        if c is None or c.seen <= 0 or c.now <= 0:
            continue
        seen.append(c.seen)
        now.append(c.now)
        z = input_size(e.record.features)
        sizes.append(z if z is not None and math.isfinite(z) and z > 0 else math.nan)
        targets.append(segment_targets(got[0], got[1], cut.elapsed, policy.window_s, policy.k))
    if len(seen) < policy.min_runs or cut.seen <= 0 or cut.now <= 0:
        return None
    s_arr, n_arr, z_arr, y = np.array(seen), np.array(now), np.array(sizes), np.array(targets)
    use_size = size is not None and math.isfinite(size) and size > 0
    rows = np.isfinite(z_arr) if use_size else np.ones(len(seen), dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(y[rows] > 0, np.log(y[rows]), np.nan)  # [n, k + 1]
    enough = np.isfinite(logs).sum(axis=0) >= policy.min_runs
    if not enough.any():
        return None
    x = _design(s_arr[rows], n_arr[rows], z_arr[rows] if use_size else None)
    q = _design(np.array([cut.seen]), np.array([cut.now]), np.array([size]) if use_size else None)[0]
    out = np.full(policy.k + 1, np.nan)
    out[enough] = np.exp(fit_segments(x, logs[:, enough], q, policy.ridge, policy.robust))
    if not np.isfinite(out).any():
        return None
    return SegmentPeaks(out, len(seen))


def segment_reforecast(
    forecast: Forecast,
    prefix: UsageSeries | None,
    history: Sequence[RunExample],
    features: Mapping[str, FeatureValue] | None = None,
    policy: SegmentPolicy | None = None,
    fell_back: set[Metric] | None = None,
) -> Forecast:
    """The forecast of the rest of a try from its ``prefix`` and its task's finished ``history``
    (oldest first), see the module docstring; unchanged without a prefix. ``fell_back``: gets the
    metrics the history could not answer for (re-forecast by ``condition_on_prefix``)."""
    policy = policy or SegmentPolicy()
    if prefix is None or len(prefix) == 0:
        return forecast
    t = prefix.times - prefix.times[0]
    elapsed = float(t[-1])
    size = input_size(features or {})
    fallback: list[Metric] = []
    curves = dict(forecast.curves)
    for metric, curve in forecast.curves.items():
        raw = prefix.get(metric)
        cut = _cut(t, clean_array(metric, raw), elapsed, policy.recent_s) if raw is not None else None
        seg = predict_segments(history, metric, cut, size, policy) if cut is not None else None
        if cut is None or seg is None:
            fallback.append(metric)
            continue
        curves[metric] = _rescaled(curve, forecast, cut, seg, policy)
    if fell_back is not None:
        fell_back.update(fallback)
    duration = dict(forecast.duration_s)
    if duration and elapsed > 0:
        floor = elapsed * (1 + policy.overrun)
        duration = {q: max(v, floor) for q, v in duration.items()}
    out = replace(
        forecast, curves=curves, duration_s=duration, peak_only=False if not fallback else forecast.peak_only
    )
    if not fallback:
        return out
    # metrics without a segment model: today's prefix policy, on those metrics only
    conditioned = condition_on_prefix(forecast, prefix, policy.fallback)
    return replace(out, curves={**curves, **{m: conditioned.curves[m] for m in fallback}})


def _rescaled(
    curve: DemandCurve, forecast: Forecast, cut: _Cut, seg: SegmentPeaks, policy: SegmentPolicy
) -> DemandCurve:
    step = curve.step_s
    d50 = forecast.duration_s.get(0.5, curve.horizon_s)
    end = max(d50, cut.elapsed * (1 + policy.overrun), cut.elapsed + policy.window_s)
    edges = [cut.elapsed, cut.elapsed + policy.window_s]
    rest = max(end - edges[1], 0.0)
    edges += [edges[1] + rest * (j + 1) / policy.k for j in range(policy.k)]
    n = max(curve.steps, math.ceil(edges[-1] / step) + 1)
    p50 = _extended(curve.at(0.5), n)
    bounds = [min(int(e // step), n) for e in edges]
    bounds[-1] = n  # the last segment holds to the end of the (extended) curve
    factors = np.ones(n)
    last = 1.0
    for j in range(policy.k + 1):
        a, b = bounds[j], max(bounds[j + 1], bounds[j] + 1)
        b = min(b, n)
        if a >= n:
            break
        want = float(seg.peaks[j])
        have = float(np.max(p50[a:b]))
        if math.isfinite(want) and have > 0:
            last = float(np.clip((want / have) ** policy.blend, 1 / policy.max_ratio, policy.max_ratio))
        factors[a:b] = last  # a segment no earlier run reached keeps the factor before it
    persist = max(1, math.ceil(policy.window_s / step))
    first = bounds[0]
    out: dict[float, np.ndarray] = {}
    for q, arr in curve.quantiles.items():
        new = _extended(np.array(arr, dtype=float), n)
        new[first:] = new[first:] * factors[first:]
        new[first : first + persist] = np.maximum(new[first : first + persist], cut.now)
        out[q] = new
    return DemandCurve(curve.metric, step, out)


def _extended(values: np.ndarray, n: int) -> np.ndarray:
    """``values`` held at their last value up to ``n`` steps (a try running past its forecast)."""
    if values.size >= n:
        return np.array(values, dtype=float)
    return np.concatenate([values, np.full(n - values.size, values[-1] if values.size else 0.0)])


@dataclass
class KSegments:
    """Estimator contract: the scaled curve at start; with ``query.prefix``, ``segment_reforecast``
    of it over ``query.history`` (so ``uses_prefix``: callers must not condition it again)."""

    name: str = "segments"
    uses_prefix: bool = True
    policy: SegmentPolicy = field(default_factory=SegmentPolicy)
    base: ScaledCurve = field(default_factory=ScaledCurve)

    def fit(self, examples: Sequence[RunExample]) -> Self:
        self.base.fit(examples)
        return self

    def predict(self, query: ForecastQuery) -> Forecast:
        at_start = replace(self.base.predict(query), estimator=self.name)
        if query.prefix is None:
            return at_start
        return segment_reforecast(at_start, query.prefix, query.history, query.features, self.policy)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.base.save(directory / "base")
        policy = asdict(self.policy)
        (directory / CONFIG_FILE).write_text(
            json.dumps({"name": self.name, "policy": policy}, sort_keys=True)
        )

    @classmethod
    def load(cls, directory: Path) -> Self:
        try:
            state = json.loads((directory / CONFIG_FILE).read_text())
            raw = dict(state["policy"])
            fallback = PrefixPolicy(**raw.pop("fallback"))
            policy = SegmentPolicy(**raw, fallback=fallback)
            return cls(name=state["name"], policy=policy, base=ScaledCurve.load(directory / "base"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise NotFitted(f"cannot load {cls.__name__} from {directory}: {exc}") from exc
