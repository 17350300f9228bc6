"""The policy's "next time I could act" (core/shaping/quiet.py): inside the promised band, until the
promised time, every tick decides nothing and keeps the history but the ratio guard's peak so far
(which a loop folds in once for all its skipped ticks); outside it, the promise says so."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pytest

from airflow_predictive.core.model.backend import Allocation
from airflow_predictive.core.model.resources import GIB, MIB, Metric, ResourceVector
from airflow_predictive.core.model.series import DemandCurve, Forecast
from airflow_predictive.core.shaping.expectation import ForecastExpectation
from airflow_predictive.core.shaping.policy import (
    MetricHistory,
    MetricObservation,
    PolicyInput,
    ShapingSettings,
    decide,
    seen_ratio,
)
from airflow_predictive.core.shaping.quiet import Quiet, QuietBand, quiet

if TYPE_CHECKING:
    from collections.abc import Callable

MEM = Metric.MEMORY_BYTES
CPU = Metric.CPU_CORES


def _expectation(rng: np.random.Generator) -> ForecastExpectation:
    n = int(rng.integers(2, 12))
    step = float(rng.uniform(5, 60))
    mem = rng.uniform(0.5, 4.0, n) * GIB
    cpu = rng.uniform(0.5, 3.0, n)
    curves = {
        MEM: DemandCurve(MEM, step, {0.5: mem, 0.9: mem * rng.uniform(1.0, 1.3)}),
        CPU: DemandCurve(CPU, step, {0.5: cpu, 0.9: cpu * 1.1}),
    }
    return ForecastExpectation(Forecast(curves, {0.5: n * step}, "test"))


def _allocation(mem: float, cpu: float) -> Allocation:
    return Allocation(
        requests=ResourceVector(memory_bytes=mem, cpu_cores=cpu),
        limits=ResourceVector(memory_bytes=mem, cpu_cores=cpu),
    )


def _observations(mem: tuple[float, float], cpu: tuple[float, float]) -> dict[Metric, MetricObservation]:
    return {MEM: MetricObservation(mem[0], mem[1]), CPU: MetricObservation(cpu[0], cpu[1])}


def _sample(rng: np.random.Generator, band: QuietBand, scale: float) -> tuple[float, float] | None:
    lo = max(band.usage_min, 0.0)
    hi = min(band.usage_max, band.peak_max, 6 * scale)
    if not lo < hi:
        return None
    u = float(rng.uniform(lo, hi))
    w_lo = max(u, band.peak_min)
    w_hi = min(band.peak_max, 6 * scale)
    if not w_lo < w_hi:
        return None
    return u, float(rng.uniform(w_lo, w_hi))


def _promised(
    inp: PolicyInput, settings: ShapingSettings, histories: dict[Metric, MetricHistory]
) -> tuple[dict[Metric, MetricHistory], Quiet] | None:
    """The histories a tick that changes nothing leaves, and the promise made on them (None: the
    tick changed something, or no promise)."""
    out = decide(inp, settings, histories)
    if out.changes():
        return None
    after = dict(out.histories)
    promise = quiet(inp, settings, after)
    return None if promise is None else (after, promise)


def _random_state(
    rng: np.random.Generator,
) -> tuple[ForecastExpectation, Allocation, float, dict[Metric, MetricHistory], float, float]:
    """A random expectation, allocation, time (the ratio guard scales the guard from 300 s),
    histories and usage (memory, CPU) for the promise checks."""
    exp = _expectation(rng)
    current = _allocation(float(rng.uniform(0.5, 5.0)) * GIB, float(rng.uniform(0.5, 3.0)))
    t = float(rng.uniform(0, 700))
    histories = {
        m: MetricHistory(
            last_change_s=None if rng.random() < 0.3 else t - float(rng.uniform(0, 90)),
            below_since_s=None if rng.random() < 0.5 else t - float(rng.uniform(0, 30)),
        )
        for m in (MEM, CPU)
    }
    return exp, current, t, histories, float(rng.uniform(0.2, 5.0)) * GIB, float(rng.uniform(0.2, 3.0))


@pytest.mark.parametrize("reclaim_margin", [None, 0.15])  # 0.15: the reclaim above the need, on
@pytest.mark.parametrize("seed", range(6))
def test_inside_the_quiet_band_later_ticks_decide_nothing_and_keep_the_history_but_the_peak_so_far(
    seed: int, reclaim_margin: float | None
) -> None:
    rng = np.random.default_rng(seed)
    settings = ShapingSettings(forecast_reclaim_margin=reclaim_margin)
    checked = promised = 0
    for _ in range(400 if reclaim_margin is None else 1000):  # the reclaim promises less often
        exp, current, t, histories, mem_u, cpu_u = _random_state(rng)
        obs = _observations(
            (mem_u, mem_u * float(rng.uniform(1, 1.3))), (cpu_u, cpu_u * float(rng.uniform(1, 1.3)))
        )
        found = _promised(PolicyInput(t, current, obs, exp), settings, histories)
        if found is None:
            continue
        after, promise = found
        promised += 1
        assert promise.until_s > t
        for _ in range(6):  # a few later ticks in turn, each on the history the one before left
            times = np.sort(rng.uniform(t, min(promise.until_s, t + 400), 4))
            samples = [
                (_sample(rng, promise.bands[MEM], GIB), _sample(rng, promise.bands[CPU], 1.0)) for _ in times
            ]
            if any(m is None or c is None for m, c in samples) or times[-1] >= promise.until_s:
                continue
            history = after
            for t2, (mem, cpu) in zip(times, samples, strict=True):
                assert mem is not None and cpu is not None
                later = decide(
                    PolicyInput(float(t2), current, _observations(mem, cpu), exp), settings, history
                )
                assert not later.changes(), (t, t2, mem, cpu, later.decisions)
                history = dict(later.histories)
                checked += 1
            # the history is the same but for the ratio guard's peak so far, which one fold of the
            # largest usage gives (ShapingController.observe_skipped relies on it)
            top = {MEM: max(m[0] for m, _ in samples), CPU: max(c[0] for _, c in samples)}  # type: ignore[index]
            assert history == {m: seen_ratio(exp, m, t, settings, top[m], after[m]) for m in after}
    assert promised > 20 and checked > 600  # the promise is not vacuous


def test_a_usage_reaching_the_near_limit_line_leaves_the_band() -> None:
    exp = ForecastExpectation(
        Forecast(
            {MEM: DemandCurve(MEM, 60.0, {0.5: np.full(10, 2 * GIB), 0.9: np.full(10, 2 * GIB)})},
            {0.5: 600.0},
            "flat",
        )
    )
    settings = ShapingSettings(metrics=(MEM,))
    current = _allocation(2.5 * GIB, 1.0)
    obs = {MEM: MetricObservation(1.9 * GIB, 1.9 * GIB)}
    out = decide(PolicyInput(100.0, current, obs, exp), settings, {})
    promise = quiet(PolicyInput(100.0, current, obs, exp), settings, dict(out.histories))
    assert isinstance(promise, Quiet)
    band = promise.bands[MEM]
    # usage within 10 % of the limit is a grow signal: the band must end before it
    assert band.usage_max <= 2.5 * GIB * 0.9
    near = decide(
        PolicyInput(101.0, current, {MEM: MetricObservation(2.3 * GIB, 2.3 * GIB)}, exp),
        settings,
        dict(out.histories),
    )
    assert near.changes()  # and outside it the policy does act
    assert not band.holds(2.3 * GIB, 2.3 * GIB)


def test_the_promise_ends_at_the_next_timer_and_a_resize_just_made_promises_nothing() -> None:
    exp = ForecastExpectation(
        Forecast({MEM: DemandCurve(MEM, 600.0, {0.5: np.full(4, 2 * GIB)})}, {0.5: 2400.0}, "flat")
    )
    settings = ShapingSettings(metrics=(MEM,))
    current = _allocation(4 * GIB, 1.0)
    obs = {MEM: MetricObservation(1.0 * GIB, 1.0 * GIB)}
    # below the band since t=95 and changed at t=80: the dwell ends at 110, the shrink cooldown at 140
    history = {MEM: MetricHistory(last_change_s=80.0, below_since_s=95.0)}
    out = decide(PolicyInput(100.0, current, obs, exp), settings, history)
    assert not out.changes()
    promise = quiet(PolicyInput(100.0, current, obs, exp), settings, dict(out.histories))
    assert promise is not None and promise.until_s == pytest.approx(110.0, abs=1e-5)
    assert quiet(PolicyInput(100.0, current, {MEM: MetricObservation(None)}, exp), settings, history) is None
    assert math.isinf(QuietBand().usage_max)
    assert MIB > 0


Rates = tuple[float | None, float | None]  # (memory, CPU) rise rates of one tick


def _skipped_ticks_hold_at_any_rate(
    rng: np.random.Generator,
    settings: ShapingSettings,
    first: Callable[[float, float], Rates],
    later: Callable[[float, float], list[Rates]],
) -> tuple[int, int]:
    """Random promises; inside each band, later ticks at every rate ``later`` gives decide nothing
    and keep the history but the ratio guard's peak so far: (promises, ticks checked)."""
    checked = promised = 0
    for _ in range(1000):
        exp, current, t, histories, mem_u, cpu_u = _random_state(rng)
        mem_rate, cpu_rate = first(mem_u, cpu_u)
        obs = {
            MEM: MetricObservation(mem_u, mem_u * float(rng.uniform(1, 1.3)), mem_rate),
            CPU: MetricObservation(cpu_u, cpu_u * float(rng.uniform(1, 1.3)), cpu_rate),
        }
        found = _promised(PolicyInput(t, current, obs, exp), settings, histories)
        if found is None:
            continue
        after, promise = found
        promised += 1
        for _ in range(6):
            t2 = float(rng.uniform(t, min(promise.until_s, t + 400)))
            mem, cpu = _sample(rng, promise.bands[MEM], GIB), _sample(rng, promise.bands[CPU], 1.0)
            if mem is None or cpu is None or t2 >= promise.until_s:
                continue
            for later_mem, later_cpu in later(mem[0], cpu[0]):
                later_obs = {
                    MEM: MetricObservation(mem[0], mem[1], later_mem),
                    CPU: MetricObservation(cpu[0], cpu[1], later_cpu),
                }
                out = decide(PolicyInput(t2, current, later_obs, exp), settings, after)
                assert not out.changes(), (t, t2, mem, cpu, later_mem, later_cpu, out.decisions)
                top = {MEM: mem[0], CPU: cpu[0]}
                assert out.histories == {m: seen_ratio(exp, m, t, settings, top[m], after[m]) for m in after}
                checked += 1
    return promised, checked


@pytest.mark.parametrize("seed", range(4))
def test_with_the_rise_aware_headroom_the_band_holds_whatever_the_rise_rate_of_the_skipped_ticks(
    seed: int,
) -> None:
    """The promise cannot know the rise rate of the ticks it skips: inside its band every one of
    them decides nothing and keeps the history, at any rate (the headroom anywhere between its
    floor and near_limit), with the reclaim above the need on."""
    rng = np.random.default_rng(100 + seed)
    settings = ShapingSettings(
        forecast_reclaim_margin=0.05, rise_horizon_s=10.0, rise_floor=0.02, rise_keeps_margin=False
    )
    promised, checked = _skipped_ticks_hold_at_any_rate(
        rng,
        settings,
        lambda mem, _cpu: (float(rng.choice([0.0, rng.uniform(0, 0.05) * mem])), None),
        lambda mem, _cpu: [(r, None) for r in (0.0, float(rng.uniform(0, 0.02)) * mem, 0.5 * mem, None)],
    )
    assert promised > 20 and checked > 300


@pytest.mark.parametrize("seed", range(3))
def test_with_the_ramp_aware_grow_margin_the_band_holds_whatever_the_rise_rate_of_the_skipped_ticks(
    seed: int,
) -> None:
    """The grow margin follows the rise rate (the default ``ramp_margin_s``), which the promise
    cannot know: inside its band every skipped tick decides nothing and keeps the history at any
    rate of either metric (flat, slow, a steep ramp, unknown)."""
    rng = np.random.default_rng(200 + seed)
    settings = ShapingSettings(forecast_reclaim_margin=0.15)
    assert settings.ramp_margin_s is not None

    def later(mem: float, cpu: float) -> list[Rates]:
        shares = (0.0, float(rng.uniform(0, 0.02)), 0.5, None)
        return [(None, None) if k is None else (k * mem, k * cpu) for k in shares]

    promised, checked = _skipped_ticks_hold_at_any_rate(rng, settings, lambda _m, _c: (0.0, 0.0), later)
    assert promised > 20 and checked > 300
