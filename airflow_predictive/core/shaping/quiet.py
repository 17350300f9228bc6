"""When the shaping policy could next act: the event-driven form of "tick every second".

After a tick that changed nothing, the policy's next decisions depend on a handful of numbers that
stay constant for a while: the forecast now / ahead / the guard (constant between the forecast's
step edges), the plan (constant between its steps), the timers (grow / shrink cooldown, the
reclaim dwell) and the current allocation. While they stay constant, every later tick decides
"no change" and leaves the metric's history as it is as long as usage (and the dwell window's
peak) stays inside a band: the band is the policy's own thresholds (the forecast band, the near-
limit line, the grow-ahead line, the hysteresis of a grow or a reclaim) solved for usage.

``quiet()`` returns that promise: a time ``until_s`` and, per metric, the band. A loop that
knows usage in advance (the cluster simulator) may skip every tick before ``until_s`` whose
usage stays in its band and tick at the first one that leaves it, handing the skipped samples to
``ShapingController.observe_skipped`` (the dwell window, the re-forecast prefix and the ratio
guard's peak so far see them as if each tick had run): the decisions are those of ticking every
second (tested on scripted curves and on random states against per-second ticking). The one part
of the history a skipped tick may change is that peak so far, and only where a higher peak
decides nothing before ``until_s`` (the ratio guard not started, or the run already at its
median); elsewhere the band stops below it. Conservative by
construction: a band may be narrower than the exact region (ticking too often is harmless), and
``None`` means "tick at the next opportunity" (a resize in flight, a plan step not yet absorbed,
an expectation that cannot say when it changes).

Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from airflow_predictive.core.model.resources import Metric
from airflow_predictive.core.shaping.policy import (
    MetricHistory,
    MetricObservation,
    above_need_level,
    effective_guard,
    grow_margin_max,
    headroom_floor,
    higher_peak_scales_alike,
    median_now,
    reclaim_margin,
    rise_aware,
    shaped_value,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from airflow_predictive.core.shaping.policy import PolicyInput, ShapingSettings

EPS = 1e-9  # relative: every band edge is pulled this far to its safe side (float rounding)
TIME_EPS = 1e-6  # seconds: a timer or forecast edge is due this much early


@dataclass(frozen=True, slots=True)
class QuietBand:
    """Usage values for which the next ticks of one metric decide nothing and keep its history:
    ``usage_min <= usage < usage_max`` and ``peak_min <= peak < peak_max`` (peak: the larger of
    usage and the dwell window's peak, as the policy reads it)."""

    usage_min: float = -math.inf
    usage_max: float = math.inf
    peak_min: float = -math.inf
    peak_max: float = math.inf

    def holds(self, usage: float, peak: float) -> bool:
        return self.usage_min <= usage < self.usage_max and self.peak_min <= peak < self.peak_max


@dataclass(frozen=True, slots=True)
class Quiet:
    """Until ``until_s`` (exclusive), ticks whose usage stays in every metric's band change nothing."""

    until_s: float
    bands: Mapping[Metric, QuietBand]

    def holds(self, t_s: float, observations: Mapping[Metric, MetricObservation]) -> bool:
        if t_s >= self.until_s:
            return False
        for metric, band in self.bands.items():
            obs = observations.get(metric)
            if obs is None or obs.usage is None:
                return False
            if not band.holds(obs.usage, max(obs.usage, obs.window_peak or obs.usage)):
                return False
        return True


def _lo(x: float) -> float:
    """A lower band edge pulled up (towards the safe side)."""
    return x + EPS * abs(x) + 1e-12 if math.isfinite(x) else x


def _hi(x: float) -> float:
    """An upper band edge pulled down."""
    return x - EPS * abs(x) - 1e-12 if math.isfinite(x) else x


def quiet(
    inp: PolicyInput,
    settings: ShapingSettings,
    histories: Mapping[Metric, MetricHistory],
    *,
    plan_next_s: float = math.inf,
) -> Quiet | None:
    """The promise after a tick that changed nothing (see the module docstring).

    ``inp``: the tick's input with ``current`` the allocation in force; ``histories``: the
    histories the tick left; ``plan_next_s``: when the plan's allocation next changes (inf: never).
    """
    until = plan_next_s - TIME_EPS
    bands: dict[Metric, QuietBand] = {}
    for metric in settings.metrics:
        history = histories.get(metric, MetricHistory())
        found = _metric_band(metric, inp, settings, history, plan_next_s)
        if found is None:
            return None
        band, metric_until = found
        near_min = headroom_floor(metric, settings)
        if rise_aware(metric, settings) and near_min < settings.near_limit:
            # the grow trigger's headroom follows the rise rate, anywhere between its floor and
            # near_limit: quiet only where both ends decide nothing (every grow signal is monotone
            # in the headroom and its need is not, so every headroom between decides the same)
            low = _metric_band(metric, inp, replace(settings, near_limit=near_min), history, plan_next_s)
            if low is None:
                return None
            band, metric_until = _both(band, low[0]), min(metric_until, low[1])
        exp = inp.expectation
        if metric is Metric.MEMORY_BYTES and reclaim_margin(settings, exp) is not None:
            # the reclaim above the need (in the band): it cannot act while the peak stays at or
            # above its level, or while the forecast ahead alone is; else tick (its level at the
            # smallest headroom: the highest)
            current = shaped_value(inp.current, metric)
            level = above_need_level(settings, current, exp, near_min) if current is not None else None
            ahead = exp.ahead(metric, inp.t_s, settings.guard_horizon_s) if exp is not None else None
            if level is not None and ahead is not None and ahead >= _lo(level):
                level = None  # the forecast ahead alone keeps it off until its next edge (the promise's end)
            if level is not None:
                obs = inp.observations.get(metric, MetricObservation(None))
                w0 = max(obs.usage or 0.0, obs.window_peak or 0.0)
                if w0 < _lo(level):
                    return None
                band = replace(band, peak_min=max(band.peak_min, _lo(level)))
        if settings.ratio_floor is not None:
            # the ratio guard: a new highest usage / median-now changes the history; its scaling
            # starts at ratio_after_s
            median = median_now(inp.expectation, metric, inp.t_s, settings)
            if median is not None:
                if history.peak_seen is None or history.median_seen is None or median > history.median_seen:
                    return None
                if not higher_peak_scales_alike(inp.t_s, settings, history):
                    band = replace(
                        band, usage_max=min(band.usage_max, _ratio_peak_cap(metric, inp, settings, history))
                    )
                # a higher usage raises the peak so far, which decides nothing before the next
                # promise: the loop folds it in (``ShapingController.observe_skipped``)
            if inp.t_s < settings.ratio_after_s:
                metric_until = min(metric_until, settings.ratio_after_s - TIME_EPS)
        bands[metric] = band
        until = min(until, metric_until)
    if until <= inp.t_s:
        return None
    return Quiet(until, bands)


def _both(a: QuietBand, b: QuietBand) -> QuietBand:
    """The usages for which both bands hold."""
    return QuietBand(
        max(a.usage_min, b.usage_min),
        min(a.usage_max, b.usage_max),
        max(a.peak_min, b.peak_min),
        min(a.peak_max, b.peak_max),
    )


def _ratio_peak_cap(metric: Metric, inp: PolicyInput, s: ShapingSettings, history: MetricHistory) -> float:
    """While the ratio guard scales the guard with the run's peak so far, the usage (exclusive)
    below which a higher peak leaves the promise's decisions as they are: the scaled guard stays
    below the lowest line ``_metric_band`` compares it with (the near-limit line; the grow's
    hysteresis line, or the limit, over the grow margin), so every comparison reads as at the
    tick (a guard rising past a reclaim's line only holds that reclaim back further). At least
    just above the peak so far (usage up to it leaves it as it is: max() of the same floats).
    Checked with the policy's own ``effective_guard`` (monotone in the peak)."""
    assert history.peak_seen is not None and history.median_seen is not None
    keep = math.nextafter(history.peak_seen, math.inf)
    current = shaped_value(inp.current, metric)
    exp = inp.expectation
    if current is None or exp is None:
        return keep
    _, hi = s.bounds(metric)
    line = min(current * (1 + s.hysteresis), hi)
    lowest = min(current * (1 - s.near_limit), min(current, line) / (1 + grow_margin_max(s)))

    def guard_at(peak: float) -> float | None:
        return effective_guard(exp, metric, inp.t_s, s, replace(history, peak_seen=peak))

    now, top = guard_at(history.peak_seen), guard_at(math.inf)  # top: scaled by 1, the most a peak gives
    if now is None or top is None or now >= lowest:
        return keep
    if top < lowest:
        return math.inf
    cap = _hi(lowest / top * history.median_seen / (1 + s.ratio_margin))
    found = guard_at(cap)
    return max(keep, cap) if found is not None and found < lowest else keep


def _metric_band(
    metric: Metric, inp: PolicyInput, s: ShapingSettings, history: MetricHistory, before: float = math.inf
) -> tuple[QuietBand, float] | None:
    """The band of one metric and until when it holds (``before``: the promise ends there anyway)."""
    t = inp.t_s
    current = shaped_value(inp.current, metric)
    if current is None:
        return QuietBand(), math.inf  # not shaped: holds whatever usage does
    plan_value = shaped_value(inp.plan, metric) if inp.plan is not None else None
    if plan_value is not None and history.plan_seen is None:
        return None  # the next tick takes the plan as seen
    plan_step = plan_value if plan_value is not None and plan_value != history.plan_seen else None
    obs = inp.observations.get(metric, MetricObservation(None))
    if obs.usage is None:
        return None
    u0 = obs.usage
    w0 = max(u0, obs.window_peak or u0)
    exp = inp.expectation
    until = math.inf
    predicted = ahead = guard = None
    if exp is not None:
        edge = getattr(exp, "next_change_s", None)
        if edge is None:
            return None
        reads_horizon = s.guard_quantile is not None or reclaim_margin(s, exp) is not None
        horizons = (s.lookahead_s,) + ((s.guard_horizon_s,) if reads_horizon else ())
        until = min(
            until,
            float(edge(metric, t, horizons, before) if before < math.inf else edge(metric, t, horizons))
            - TIME_EPS,
        )
        predicted = exp.predicted(metric, t)
        ahead = exp.ahead(metric, t, s.lookahead_s)
        guard = effective_guard(exp, metric, t, s, history)
    last, below_since = history.last_change_s, history.below_since_s
    grow_cooling = last is not None and t - last < s.grow_cooldown_s
    shrink_cooling = last is not None and t - last < s.shrink_cooldown_s
    dwelling = below_since is not None and t - below_since < s.reclaim_after_s
    for timer, active in (
        (None if last is None else last + s.grow_cooldown_s, grow_cooling),
        (None if last is None else last + s.shrink_cooldown_s, shrink_cooling),
        (None if below_since is None else below_since + s.reclaim_after_s, dwelling),
    ):
        if timer is not None and active:
            until = min(until, timer - TIME_EPS)

    lo, hi = s.bounds(metric)
    has_forecast = predicted is not None and predicted > 0
    # any rise ahead: the policy counts one below the band too once A * w / P reaches its grow line,
    # and every line this band compares the signal with is at or below that one (conservative)
    rises = ahead is not None and predicted is not None and ahead > predicted
    # the grow-ahead signal as a function of the window peak w: max(A * w / P if it rises, guard)
    slope = (ahead / predicted) if rises and has_forecast and ahead is not None and predicted else None

    def peak_below(k: float) -> float | None:
        """The largest peak (exclusive) for which the grow-ahead signal stays below ``k``; None: never."""
        if guard is not None and guard >= k:
            return None
        return _hi(k / slope) if slope is not None else math.inf

    near = current * (1 - s.near_limit)
    below_line = (
        predicted * (1 - s.tolerance)
        if has_forecast and predicted is not None
        else current * (1 - s.hysteresis) / (1 + s.grow_margin)
    )
    above_line = predicted * (1 + s.tolerance) if has_forecast and predicted is not None else math.inf

    if plan_step is not None and plan_step > current:
        # a step above the limit is a demand the hysteresis never holds back: only the cooldown
        # keeps it waiting
        return (QuietBand(), until) if grow_cooling else None
    if plan_step is not None and plan_step < current:
        return _plan_down_band(
            metric, u0, w0, plan_step, near, above_line, peak_below, current, lo, hi, shrink_cooling, s, until
        )

    if below_since is None:
        # stay out of "below the band" (it would start the dwell timer) unless every tick grows
        grow_always = guard is not None and guard >= near
        usage_min = -math.inf if grow_always else _lo(below_line)
        if u0 < usage_min:
            # below the band but growing ahead (the forecast rises): quiet while the rise signal
            # holds (peak above its line) and the grow stays under its hysteresis
            return _rising_band(u0, w0, slope, near, guard, current, lo, hi, grow_cooling, s, until)
        if grow_cooling:
            return QuietBand(usage_min=usage_min), until
        # a grow would act once its need reaches the hysteresis line (or the maximum)
        if hi <= current:
            return QuietBand(usage_min=usage_min), until
        line = min(current * (1 + s.hysteresis), hi)
        acts_at = current if lo >= line else line  # need >= acts_at acts
        # x: below it a grow's need stays under acts_at whatever its margin; x <= current (the
        # settings' near-limit rule implies grow_margin >= hysteresis), so its demand is one the
        # limit covers, which the hysteresis holds back
        x = acts_at / (1 + grow_margin_max(s))
        boxes = []
        if not grow_always:  # inside the band: no grow signal at all
            w_max = peak_below(near)
            if w_max is not None:
                boxes.append(
                    (min(_hi(near), _hi(above_line) if math.isfinite(above_line) else math.inf), w_max)
                )
        w_max = peak_below(x)
        if w_max is not None:
            boxes.append((_hi(x), w_max))
        fits = [b for b in boxes if u0 < b[0] and w0 < b[1]]
        if not fits:
            return None
        u_max, w_max = max(fits, key=lambda b: (b[0], b[1]))
        return QuietBand(usage_min=usage_min, usage_max=u_max, peak_max=w_max), until

    # below the band, the dwell running: stay below and out of every grow signal
    if guard is not None and guard >= near:
        return None
    w_max = peak_below(near)
    if w_max is None:
        return None
    u_max = min(_hi(below_line), _hi(near))
    if not (u0 < u_max and w0 < w_max):
        return None
    band = QuietBand(usage_max=u_max, peak_max=w_max)
    if dwelling or shrink_cooling:
        return band, until
    # the reclaim is held back by its hysteresis only while its target stays above the line
    line = current * (1 - s.hysteresis)
    if hi <= line:
        return None
    if lo > line:
        return band, until
    y = current * (1 - s.hysteresis / s.shrink_fraction) / (1 + s.grow_margin)
    if guard is not None and guard > y:
        return band, until
    options: list[QuietBand] = []
    if w0 > _lo(y):
        options.append(QuietBand(usage_max=u_max, peak_min=_lo(y), peak_max=w_max))
    if ahead is not None and has_forecast and predicted and ahead > 0:
        u_min = _lo(y * predicted / ahead)
        if u0 >= u_min:
            options.append(QuietBand(usage_min=u_min, usage_max=u_max, peak_max=w_max))
    u_min = _lo(_floor_inverse(metric, s, line))
    if u0 >= u_min:
        options.append(QuietBand(usage_min=u_min, usage_max=u_max, peak_max=w_max))
    if not options:
        return None
    # the widest: the most headroom between where usage (or the peak) is now and its lower edge
    best = max(options, key=lambda b: w0 / b.peak_min if b.peak_min > 0 else u0 / max(b.usage_min, 1e-300))
    return best, until


def _rising_band(
    u0: float,
    w0: float,
    slope: float | None,
    near: float,
    guard: float | None,
    current: float,
    lo: float,
    hi: float,
    grow_cooling: bool,
    s: ShapingSettings,
    until: float,
) -> tuple[QuietBand, float] | None:
    if slope is None:
        return None
    peak_min = _lo(near / slope)
    if w0 < peak_min:
        return None
    if grow_cooling or hi <= current:
        return QuietBand(peak_min=peak_min), until
    line = min(current * (1 + s.hysteresis), hi)
    x = (current if lo >= line else line) / (1 + grow_margin_max(s))  # <= current, as above
    if guard is not None and guard >= x:
        return None
    band = QuietBand(usage_max=_hi(x), peak_min=peak_min, peak_max=_hi(x / slope))
    return (band, until) if band.holds(u0, w0) else None


def _floor_inverse(metric: Metric, s: ShapingSettings, level: float) -> float:
    """The usage above which the policy's usage floor (usage + memory margin) exceeds ``level``."""
    if metric is Metric.MEMORY_BYTES:
        m = s.memory_margin
        return min(level - m.minimum_bytes, level / (1 + m.fraction))
    return level


def _plan_down_band(
    metric: Metric,
    u0: float,
    w0: float,
    plan_step: float,
    near: float,
    above_line: float,
    peak_below: Callable[[float], float | None],
    current: float,
    lo: float,
    hi: float,
    shrink_cooling: bool,
    s: ShapingSettings,
    until: float,
) -> tuple[QuietBand, float] | None:
    """A plan step down held back (cooldown or hysteresis): quiet while no grow signal fires, the
    usage floor stays under the limit (else the step is absorbed at the bound) and, once the
    cooldown is over, the step's target stays above the hysteresis line."""
    w_max = peak_below(near)
    if w_max is None:
        return None
    u_max = min(_hi(near), _hi(above_line), _hi(_floor_inverse(metric, s, current)))
    u_min = -math.inf
    line = current * (1 - s.hysteresis)
    if hi <= line:
        return None
    if not shrink_cooling and plan_step <= line and lo <= line:
        u_min = _lo(_floor_inverse(metric, s, line))
    band = QuietBand(usage_min=u_min, usage_max=u_max, peak_max=w_max)
    return (band, until) if band.holds(u0, w0) else None
