"""The mid-run re-forecast hook: the at-start forecast conditioned on the observed prefix, never
compounding, the guard's quantiles never below the at-start forecast, and inside the controller a
limit never below usage + the memory margin whatever the re-forecast says."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from airflow_predictive.backends.fake import FakeBackend, ManualClock, curve_script
from airflow_predictive.core.model.backend import Allocation, MemoryMargin, ProvisionSpec
from airflow_predictive.core.model.resources import GIB, MIB, Metric, ResourceVector
from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord, RunSource, TaskKey
from airflow_predictive.core.model.series import DemandCurve, Forecast, UsageSeries
from airflow_predictive.core.profiler.estimators.base import RunExample
from airflow_predictive.core.profiler.estimators.segments import SegmentPolicy
from airflow_predictive.core.profiler.prefix import PrefixPolicy, condition_on_prefix
from airflow_predictive.core.shaping.controller import ControllerOptions, ShapingController
from airflow_predictive.core.shaping.expectation import ForecastExpectation
from airflow_predictive.core.shaping.policy import ShapingSettings
from airflow_predictive.core.shaping.reforecast import (
    PrefixReforecaster,
    ReforecastExpectation,
    ReforecastSettings,
    from_start,
)

MEM = Metric.MEMORY_BYTES


def _forecast(level_gib: float = 2.0, steps: int = 60, step_s: float = 10.0) -> Forecast:
    mem = np.full(steps, level_gib * GIB)
    curve = DemandCurve(MEM, step_s, {0.5: mem, 0.9: mem * 1.1, 0.99: mem * 1.2})
    return Forecast({MEM: curve}, {0.5: steps * step_s, 0.9: steps * step_s}, "test")


def _prefix(values_gib: list[float], start_s: float = 1.0) -> UsageSeries:
    times = start_s + np.arange(len(values_gib), dtype=float)
    return UsageSeries(times, {MEM: np.array(values_gib) * GIB})


def test_a_prefix_above_the_forecast_raises_the_rest_of_the_run() -> None:
    hook = PrefixReforecaster(_forecast(2.0))
    before = hook.at_start.predicted(MEM, 200.0)
    after = hook(_prefix([4.0] * 100)).predicted(MEM, 200.0)
    assert before is not None and after is not None
    assert after > before * 1.3  # the prefix at 2x the median moves the rest up (shrink 0.5: x1.41)
    # without the prefix nothing moves: the re-forecast is the prefix's doing
    assert hook(UsageSeries(np.zeros(0), {})).predicted(MEM, 200.0) == pytest.approx(before)


def test_a_prefix_below_the_forecast_lowers_the_band_only_as_far_as_shrink_down_says() -> None:
    low = _prefix([1.0] * 100)
    kept = PrefixReforecaster(_forecast(2.0))(low).predicted(MEM, 400.0)
    lowered = PrefixReforecaster(
        _forecast(2.0), settings=ReforecastSettings(60, PrefixPolicy(shrink_down=1.0))
    )(low).predicted(MEM, 400.0)
    assert kept == pytest.approx(2.2 * GIB)  # the profiler's default: a low start says little
    assert lowered == pytest.approx(1.1 * GIB)  # shrink_down 1: the run's level


def test_re_forecasts_start_from_the_at_start_forecast_and_never_compound() -> None:
    hook = PrefixReforecaster(_forecast(2.0))
    prefix = _prefix([4.0] * 100)
    first = hook(prefix).predicted(MEM, 300.0)
    second = hook(prefix).predicted(MEM, 300.0)
    assert first == pytest.approx(second)
    assert hook.calls == 2


def test_the_guards_quantiles_never_fall_below_the_at_start_forecast() -> None:
    settings = ReforecastSettings(60, PrefixPolicy(shrink_down=1.0))
    low = _prefix([0.5] * 100)
    kept = PrefixReforecaster(_forecast(2.0), settings=settings)(low)
    assert isinstance(kept, ReforecastExpectation)
    assert kept.predicted(MEM, 400.0) == pytest.approx(0.55 * GIB)  # the band follows the prefix
    assert kept.ahead_at(MEM, 400.0, 120.0, 0.5) == pytest.approx(2.0 * GIB)  # the guard does not
    free = PrefixReforecaster(
        _forecast(2.0), settings=ReforecastSettings(60, settings.prefix, keep_guard=False)
    )
    assert free(low).ahead_at(MEM, 400.0, 120.0, 0.5) == pytest.approx(0.5 * GIB)  # type: ignore[union-attr]


def test_the_re_forecast_changes_when_either_forecast_does() -> None:
    hook = PrefixReforecaster(_forecast(2.0))
    fresh = hook(_prefix([4.0] * 100))
    assert isinstance(fresh, ReforecastExpectation)
    at_start = ForecastExpectation(_forecast(2.0), quantile=0.9)
    # the at-start forecast is flat: every change comes from the re-forecast's persistence edge
    assert at_start.next_change_s(MEM, 0.0) == np.inf
    assert fresh.next_change_s(MEM, 100.0) < np.inf


def test_a_kept_prefix_that_lost_its_start_still_counts_the_runs_elapsed_time() -> None:
    """The controller keeps the last two hours of samples; a run past its forecast duration gets
    at least elapsed x 1.1, the elapsed time being the run's, not the kept prefix's."""
    truncated = _prefix([2.0] * 100, start_s=900.0)
    shifted = from_start(truncated)
    assert shifted.times[0] == 0.0 and shifted.times[-1] == truncated.times[-1]
    assert float(np.max(shifted.get(MEM))) == float(np.max(truncated.get(MEM)))  # type: ignore[arg-type]
    fresh = PrefixReforecaster(_forecast(2.0, steps=60))(truncated)  # 600 s forecast, 999 s run
    assert isinstance(fresh, ReforecastExpectation)
    assert fresh.fresh.forecast.duration_s[0.5] == pytest.approx(999.0 * 1.1)


def test_a_hook_follows_only_an_at_start_forecast_and_only_when_switched_on() -> None:
    exp = ForecastExpectation(_forecast(2.0), quantile=0.8)
    hook = PrefixReforecaster.following(exp, ReforecastSettings(60))
    assert hook is not None and hook.quantile == 0.8 and hook.forecast is exp.forecast
    assert PrefixReforecaster.following(exp, ReforecastSettings(0)) is None
    assert PrefixReforecaster.following(object(), ReforecastSettings(60)) is None
    shifted = ForecastExpectation(_forecast(2.0), offset_s=60.0)  # already a re-forecast
    assert PrefixReforecaster.following(shifted, ReforecastSettings(60)) is None


@pytest.mark.parametrize("seed", range(6))
def test_a_re_forecast_never_lets_the_memory_limit_below_usage_plus_the_margin(seed: int) -> None:
    """The most aggressive re-forecast (the band and the guard follow a low prefix all the way)
    on random curves: after every tick the memory limit in force covers usage + margin."""
    rng = np.random.default_rng(seed)
    clock = ManualClock()
    backend = FakeBackend(clock)
    points = np.cumsum(rng.uniform(-150, 150, 40)) + 900
    values = np.clip(points, 100, 3000)
    times = [10.0 * i for i in range(values.size)]
    backend.add_script("t", curve_script(times, {MEM: [float(v) * MIB for v in values]}))
    handle = backend.provision(
        ProvisionSpec("t"),
        Allocation(ResourceVector(memory_bytes=3 * GIB), ResourceVector(memory_bytes=3 * GIB)),
    )
    settings = ReforecastSettings(20, PrefixPolicy(shrink_down=1.0), keep_guard=False)
    ctrl = ShapingController(
        backend,
        handle,
        ShapingSettings(metrics=(MEM,), shrink_cooldown_s=10, reclaim_after_s=5),
        clock=clock,
        expectation=ForecastExpectation(_forecast(2.5, steps=40), quantile=0.9),
        reforecast=PrefixReforecaster(_forecast(2.5, steps=40), settings=settings),
        options=ControllerOptions(reforecast_every_s=settings.every_s),
    )
    margin = MemoryMargin()
    reclaims = 0
    for _ in range(int(times[-1]) - 5):
        report = ctrl.tick()
        usage = backend.usage(handle)
        limit = ctrl.allocation.limits.memory_bytes
        if usage is not None and usage.memory_bytes is not None and limit is not None:
            assert limit >= margin.floor(usage.memory_bytes) - 1.0
        reclaims += sum(1 for d in report.decisions if d.action.value == "reclaim" and d.wants_change)
        clock.advance(1.0)
    assert reclaims > 0  # the re-forecast made the controller reclaim
    assert isinstance(ctrl.expectation, ForecastExpectation)  # re-forecast (keep_guard off: plain)


def test_the_prefix_kept_by_columns_is_what_from_samples_gives_for_the_same_samples() -> None:
    """Samples one by one and in bulk, a metric seen only later, a repeated time, and more samples
    than the limit: ``series()`` equals ``UsageSeries.from_samples`` of the last ``limit`` samples."""
    from airflow_predictive.core.model.series import ResourceSample
    from airflow_predictive.core.shaping.reforecast import UsagePrefix

    rng = np.random.default_rng(3)
    prefix, samples = UsagePrefix(limit=50), []
    t = 0.0
    for i in range(120):
        t += 1.0
        if i % 30 == 10:  # a bulk of skipped ticks
            times = t + np.arange(7, dtype=float)
            mem, cpu = rng.uniform(1, 2, 7) * GIB, rng.uniform(0, 1, 7)
            prefix.extend(times, {MEM: mem, Metric.CPU_CORES: cpu})
            samples += [
                ResourceSample(float(x), ResourceVector(cpu_cores=float(c), memory_bytes=float(m)))
                for x, m, c in zip(times, mem, cpu, strict=True)
            ]
            t = float(times[-1])
            continue
        usage = ResourceVector(
            memory_bytes=float(rng.uniform(1, 2) * GIB),
            cpu_cores=float(rng.uniform(0, 1)) if i > 40 else None,  # CPU appears later
        )
        prefix.append(t, usage)
        samples.append(ResourceSample(t, usage))
    got, want = prefix.series(), UsageSeries.from_samples(samples[-50:])
    assert len(prefix) == 50
    np.testing.assert_array_equal(got.times, want.times)
    assert set(got.values) == set(want.values)
    for metric, values in want.values.items():
        np.testing.assert_array_equal(got.values[metric], values)
    repeated = UsagePrefix(limit=10)
    repeated.append(1.0, ResourceVector(memory_bytes=1.0))
    repeated.append(1.0, ResourceVector(memory_bytes=2.0))  # the same time again: the last wins
    assert repeated.series().get(MEM).tolist() == [2.0]  # type: ignore[union-attr]


# -- with the task's history: the k-Segments re-forecast ------------------------------------------

SPLIT_S = 240.0  # the earlier runs' first phase ends here; their peak comes in the second phase
SEGMENTS = ReforecastSettings(60, segments=SegmentPolicy())


def _earlier_run(i: int, early_gib: float, late_gib: float, duration_s: float = 600.0) -> RunExample:
    t = np.arange(0.0, duration_s + 1, 2.0)
    series = UsageSeries(t, {MEM: np.where(t < SPLIT_S, early_gib, late_gib) * GIB})
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=i)
    record = RunRecord(
        identity=RunIdentity(TaskKey("wf", "two_phase"), f"r{i}", 1, RunSource.TRACE),
        start=start,
        end=start + timedelta(seconds=duration_s),
        outcome=Outcome.SUCCESS,
        declared=ResourceVector(memory_bytes=16 * GIB),
        peak=series.peaks(),
        features={"input_bytes": 1e9},
        run_pk=i + 1,
    )
    return RunExample(record, series)


def _doubling_history(n: int = 12, first: int = 0) -> list[RunExample]:
    """Earlier runs whose second phase was twice their first."""
    return [_earlier_run(first + i, e, 2 * e) for i, e in enumerate(np.linspace(1.0, 3.0, n))]


def test_with_history_the_re_forecast_follows_how_the_earlier_runs_went_on() -> None:
    history = _doubling_history()
    hook = PrefixReforecaster(
        _forecast(4.0), settings=SEGMENTS, history=history, features={"input_bytes": 1e9}
    )
    low, high = _prefix([1.5] * 200), _prefix([2.5] * 200)
    # the band (p90 = 1.1 x p50) after the split: the earlier runs say 2 x the level so far
    assert hook(low).predicted(MEM, 400.0) == pytest.approx(3.0 * 1.1 * GIB, rel=0.03)
    assert hook(high).predicted(MEM, 400.0) == pytest.approx(5.0 * 1.1 * GIB, rel=0.03)
    # the same prefix without the history: today's prefix path, which never lowers a low start
    alone = PrefixReforecaster(_forecast(4.0), settings=SEGMENTS)
    assert alone(low).predicted(MEM, 400.0) == pytest.approx(4.4 * GIB)
    # the history without a prefix: nothing to cut the earlier runs at, the at-start forecast
    assert hook(UsageSeries(np.zeros(0), {})).predicted(MEM, 400.0) == pytest.approx(4.4 * GIB)
    assert hook.calls == 3


def test_with_history_the_guards_quantiles_still_never_fall_below_the_at_start_forecast() -> None:
    hook = PrefixReforecaster(_forecast(4.0), settings=SEGMENTS, history=_doubling_history())
    lowered = hook(_prefix([1.5] * 200))
    assert isinstance(lowered, ReforecastExpectation)
    assert lowered.predicted(MEM, 400.0) == pytest.approx(3.3 * GIB, rel=0.03)
    assert lowered.ahead_at(MEM, 400.0, 120.0, 0.5) == pytest.approx(4.0 * GIB)  # the guard's median
    # the next minutes still hold at least the level now (memory in use now is still in use)
    assert lowered.predicted(MEM, 205.0) >= 1.5 * GIB  # type: ignore[operator]


def test_only_the_newest_runs_of_the_history_are_kept_and_followed() -> None:
    recent = 10
    halving = [_earlier_run(i, e, e / 2) for i, e in enumerate(np.linspace(1.0, 3.0, 30))]
    history = halving + _doubling_history(recent, first=30)
    settings = ReforecastSettings(60, segments=SegmentPolicy(recent=recent))
    hook = PrefixReforecaster(_forecast(4.0), settings=settings, history=history)
    assert hook.history == tuple(history[-recent:])
    assert hook(_prefix([2.5] * 200)).predicted(MEM, 400.0) == pytest.approx(5.5 * GIB, rel=0.03)


def test_too_little_history_or_segments_off_is_exactly_todays_prefix_path() -> None:
    prefix = _prefix([5.0] * 200)
    expected = condition_on_prefix(_forecast(4.0), from_start(prefix)).curve(MEM)
    assert expected is not None
    for hook in (
        PrefixReforecaster(_forecast(4.0), settings=SEGMENTS, history=_doubling_history(3)),  # < min_runs
        PrefixReforecaster(
            _forecast(4.0), settings=ReforecastSettings(60, segments=None), history=_doubling_history()
        ),
    ):
        got = hook.reforecast(prefix).curve(MEM)
        assert got is not None
        np.testing.assert_allclose(got.at(0.9), expected.at(0.9))
    off = ReforecastSettings(60, segments=None)
    assert PrefixReforecaster(_forecast(4.0), settings=off, history=_doubling_history()).history == ()


def test_only_a_re_forecast_the_history_answered_offers_the_reclaim_above_the_need() -> None:
    prefix = _prefix([1.5] * 200)
    answered = PrefixReforecaster(_forecast(4.0), settings=SEGMENTS, history=_doubling_history())(prefix)
    assert (
        isinstance(answered, ReforecastExpectation)
        and answered.reclaim_margin == ReforecastSettings().reclaim_margin == 0.15
    )
    for hook in (
        PrefixReforecaster(_forecast(4.0), settings=SEGMENTS, history=_doubling_history(3)),  # too few
        PrefixReforecaster(_forecast(4.0), settings=SEGMENTS),  # no history: the prefix path
    ):
        got = hook(prefix)
        assert isinstance(got, ReforecastExpectation) and got.reclaim_margin is None
    off = replace(SEGMENTS, reclaim_margin=None)
    kept = PrefixReforecaster(_forecast(4.0), settings=off, history=_doubling_history())(prefix)
    assert kept.reclaim_margin is None  # type: ignore[union-attr]
