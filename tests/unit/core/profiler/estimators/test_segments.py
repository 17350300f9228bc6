"""k-Segments-style re-forecast: the rest of a try from its prefix and its task's earlier runs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pytest

from airflow_predictive.core.model.resources import GIB, Metric, ResourceVector
from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord, RunSource, TaskKey
from airflow_predictive.core.model.series import DemandCurve, Forecast, UsageSeries
from airflow_predictive.core.profiler.estimators.base import ForecastQuery, NotFitted, RunExample
from airflow_predictive.core.profiler.estimators.segments import (
    KSegments,
    SegmentPolicy,
    segment_reforecast,
    segment_targets,
)
from airflow_predictive.core.profiler.prefix import condition_on_prefix, needs_conditioning

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

MEM = Metric.MEMORY_BYTES
KEY = TaskKey("wf", "two_phase")
DURATION = 600.0
SPLIT = 240.0  # the first phase ends here; the peak comes in the second phase


def _series(early_gib: float, late_gib: float) -> UsageSeries:
    t = np.arange(0.0, DURATION + 1, 2.0)
    mem = np.where(t < SPLIT, early_gib, late_gib) * GIB
    return UsageSeries(t, {MEM: mem, Metric.CPU_CORES: np.full(t.size, 1.0)})


def _run(i: int, early_gib: float, late_gib: float) -> RunExample:
    s = _series(early_gib, late_gib)
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=i)
    rec = RunRecord(
        identity=RunIdentity(KEY, f"r{i}", 1, RunSource.TRACE),
        start=start,
        end=start + timedelta(seconds=DURATION),
        outcome=Outcome.SUCCESS,
        declared=ResourceVector(cpu_cores=2, memory_bytes=16 * GIB),
        peak=s.peaks(),
        features={"input_bytes": 1e9},  # the same input every time: the start cannot tell runs apart
        run_pk=i + 1,
    )
    return RunExample(rec, s)


def _history(late: Callable[[float], float], n: int = 12) -> list[RunExample]:
    earlies = np.linspace(1.0, 3.0, n)
    return [_run(i, float(e), late(float(e))) for i, e in enumerate(earlies)]


def _at_start(level_gib: float = 4.0) -> Forecast:
    flat = np.full(300, level_gib * GIB)
    curve = DemandCurve(MEM, 2.0, {0.5: flat, 0.9: flat * 1.2, 0.99: flat * 1.5})
    return Forecast(
        curves={MEM: curve}, duration_s={0.5: DURATION, 0.9: DURATION, 0.99: DURATION}, estimator="x"
    )


def _prefix(early_gib: float, seconds: float = 200.0) -> UsageSeries:
    t = np.arange(0.0, seconds + 1, 2.0)
    return UsageSeries(t, {MEM: np.full(t.size, early_gib * GIB)})


def _rest_peak(f: Forecast, after_s: float = 200.0) -> float:
    c = f.curve(MEM)
    assert c is not None
    return float(np.max(c.at(0.5)[int(after_s // c.step_s) :]))


def test_the_rest_follows_the_history_when_a_higher_start_meant_a_higher_peak() -> None:
    history = _history(lambda e: 2 * e)
    f = _at_start()
    low = segment_reforecast(f, _prefix(1.5), history, {"input_bytes": 1e9})
    high = segment_reforecast(f, _prefix(2.5), history, {"input_bytes": 1e9})
    assert _rest_peak(low) == pytest.approx(3.0 * GIB, rel=0.03)
    assert _rest_peak(high) == pytest.approx(5.0 * GIB, rel=0.03)
    # dropping the prefix gives back the at-start forecast, which is wrong for both runs
    assert segment_reforecast(f, None, history) is f
    assert _rest_peak(f) == 4.0 * GIB


def test_the_rest_follows_the_history_when_a_higher_start_meant_a_lower_peak() -> None:
    history = _history(lambda e: 7.0 - e)  # the run holds a fixed total: a big start, a small finish
    f = _at_start()
    low = segment_reforecast(f, _prefix(1.5), history, {"input_bytes": 1e9})
    high = segment_reforecast(f, _prefix(2.5), history, {"input_bytes": 1e9})
    assert _rest_peak(low) == pytest.approx(5.5 * GIB, rel=0.03)
    assert _rest_peak(high) == pytest.approx(4.5 * GIB, rel=0.03)
    # today's ratio policy cannot see this: a prefix below the forecast never lowers its rest
    assert _rest_peak(condition_on_prefix(f, _prefix(2.5))) >= 4.0 * GIB


def test_the_next_minutes_hold_at_least_the_level_now_and_quantiles_keep_their_spread() -> None:
    history = _history(lambda e: 0.5 * e)  # the run drops after its start
    out = segment_reforecast(_at_start(), _prefix(2.0), history)
    c = out.curve(MEM)
    assert c is not None
    assert c.value_at(210.0, 0.5) >= 2.0 * GIB  # in use now, still in use in the next minutes
    assert c.value_at(550.0, 0.5) == pytest.approx(1.0 * GIB, rel=0.03)
    assert c.value_at(550.0, 0.99) == pytest.approx(1.5 * c.value_at(550.0, 0.5), rel=1e-6)


def test_too_little_history_falls_back_to_todays_prefix_policy() -> None:
    history = _history(lambda e: 2 * e, n=3)
    f, pre = _at_start(), _prefix(2.5)
    out = segment_reforecast(f, pre, history, policy=SegmentPolicy(min_runs=4))
    expected = condition_on_prefix(f, pre)
    assert np.array_equal(out.curve(MEM).at(0.5), expected.curve(MEM).at(0.5))


def test_a_try_past_its_forecast_gets_a_longer_curve_and_duration() -> None:
    history = [_run(i, 1.0 + 0.1 * i, 2.0 + 0.2 * i) for i in range(8)]
    short = _at_start()
    long_prefix = _prefix(2.0, seconds=560.0)
    out = segment_reforecast(short, long_prefix, history)
    assert out.duration_s[0.5] >= 560.0 * 1.1
    c = out.curve(MEM)
    assert c is not None and c.horizon_s >= 560.0 + 300.0


def test_segment_targets_are_the_peaks_of_the_next_window_and_the_rest_in_k_parts() -> None:
    t = np.arange(0.0, 101.0)
    v = t.copy()
    out = segment_targets(t, v, elapsed=20.0, window_s=10.0, k=2)
    assert list(out) == [30.0, 65.0, 100.0]
    assert np.isnan(segment_targets(t, v, elapsed=100.0, window_s=10.0, k=2)).all()


def test_invalid_policies_are_refused() -> None:
    with pytest.raises(ValueError):
        SegmentPolicy(k=0)
    with pytest.raises(ValueError):
        SegmentPolicy(window_s=0)


def _query(history: list[RunExample], prefix: UsageSeries | None) -> ForecastQuery:
    return ForecastQuery(
        key=KEY, features={"input_bytes": 1e9}, history=history, prefix=prefix, metrics=(MEM,)
    )


def test_estimator_conditions_on_the_prefix_itself_and_round_trips(tmp_path: Path) -> None:
    history = _history(lambda e: 2 * e)
    est = KSegments(policy=SegmentPolicy(k=2, recent=50)).fit(history)
    assert not needs_conditioning(est)
    at_start = est.predict(_query(history, None))
    low, high = est.predict(_query(history, _prefix(1.5))), est.predict(_query(history, _prefix(2.5)))
    assert at_start.estimator == "segments"
    assert _rest_peak(at_start) == pytest.approx(5.27 * GIB, rel=0.01)  # the newest runs' level
    assert _rest_peak(low) == pytest.approx(3.0 * GIB, rel=0.1)
    assert _rest_peak(high) == pytest.approx(5.0 * GIB, rel=0.1)
    est.save(tmp_path / "seg")
    loaded = KSegments.load(tmp_path / "seg")
    assert loaded.policy == est.policy
    again = loaded.predict(_query(history, _prefix(2.5)))
    assert np.allclose(again.curve(MEM).at(0.5), high.curve(MEM).at(0.5))


def test_estimator_without_history_or_with_damaged_state_raises_not_fitted(tmp_path: Path) -> None:
    with pytest.raises(NotFitted):
        KSegments().fit([]).predict(_query([], _prefix(1.0)))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "estimator.json").write_text("{not json")
    with pytest.raises(NotFitted):
        KSegments.load(tmp_path / "bad")


def _example(i: int, t: np.ndarray, mem: np.ndarray) -> RunExample:
    s = UsageSeries(t, {MEM: mem})
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=i)
    rec = RunRecord(
        identity=RunIdentity(KEY, f"r{i}", 1, RunSource.TRACE),
        start=start,
        end=start + timedelta(seconds=float(t[-1])),
        outcome=Outcome.SUCCESS,
        declared=ResourceVector(cpu_cores=2, memory_bytes=16 * GIB),
        peak=s.peaks(),
        features={"input_bytes": 1e9},
        run_pk=i + 1,
    )
    return RunExample(rec, s)


def _ramp(a_gib: float) -> tuple[np.ndarray, np.ndarray, float]:
    """A run at ``a_gib`` (< 3) for 150 s, then 3 GiB: at 200 s its peak so far and level now are
    3 GiB whatever ``a_gib``, only its mean so far tells; the rest is at 2 x mean**2 (log-linear)."""
    t = np.arange(0.0, DURATION + 1, 2.0)
    mem = np.where(t < 150, a_gib, 3.0) * GIB
    late = 2 * float(np.mean(mem[t <= 200.0])) ** 2 / GIB
    return t, np.where(t <= 200.0, mem, late), late


def test_the_mean_so_far_tells_a_ramp_from_a_plateau_at_the_same_peak() -> None:
    history = [_example(i, *_ramp(float(a))[:2]) for i, a in enumerate(np.linspace(1.0, 2.8, 12))]
    t, mem, late = _ramp(1.3)
    prefix = UsageSeries(t[t <= 200.0], {MEM: mem[t <= 200.0]})
    f = _at_start()
    got = segment_reforecast(f, prefix, history, {"input_bytes": 1e9})
    assert _rest_peak(got) == pytest.approx(late, rel=0.03)
    # without the mean so far every earlier run looks the same at the cut: their average level
    blind = segment_reforecast(f, prefix, history, {"input_bytes": 1e9}, SegmentPolicy(mean_so_far=False))
    assert abs(_rest_peak(blind) / late - 1) > 0.1


def test_a_peak_whose_timing_varies_between_runs_still_gets_its_height() -> None:
    t = np.arange(0.0, 2001.0, 2.0)
    runs = []
    for i in range(12):  # 2 GiB with a 30 s spike to 6 GiB somewhere after the next minutes
        at = 550.0 + 110.0 * i
        runs.append(_example(i, t, np.where((t >= at) & (t < at + 30), 6.0, 2.0) * GIB))
    flat = np.full(1001, 4.0 * GIB)
    f = Forecast(
        curves={MEM: DemandCurve(MEM, 2.0, {0.5: flat, 0.9: flat * 1.2})},
        duration_s={0.5: 2000.0, 0.9: 2000.0},
        estimator="x",
    )
    prefix = UsageSeries(t[t <= 200.0], {MEM: np.full(int(np.sum(t <= 200.0)), 2.0 * GIB)})
    got = segment_reforecast(f, prefix, runs, {"input_bytes": 1e9})
    assert _rest_peak(got) == pytest.approx(6.0 * GIB, rel=0.05)
    c = got.curve(MEM)
    assert c is not None and c.value_at(300.0, 0.5) == pytest.approx(2.0 * GIB, rel=0.05)
    # per segment the spike is one odd run out of twelve: the maximum of the segments' medians misses it
    per_segment = segment_reforecast(f, prefix, runs, {"input_bytes": 1e9}, SegmentPolicy(rest=False))
    assert _rest_peak(per_segment) == pytest.approx(2.0 * GIB, rel=0.1)


def _sized(i: int, size: float, late_gib: float) -> RunExample:
    ex = _run(i, 1.0, late_gib)
    return RunExample(replace(ex.record, features={"input_bytes": size}), ex.series)


def test_a_capped_input_size_stops_the_rest_at_the_cap_the_earlier_runs_reached() -> None:
    # the late phase grows with the input up to 3 GB, then stays at a configured maximum (a JVM's
    # -Xmx); the prefix is the same 1 GiB in every run, so only the input size tells them apart
    sizes = np.linspace(1e9, 6e9, 24)
    history = [_sized(i, float(z), min(1.0 + 2.0 * z / 1e9, 7.0)) for i, z in enumerate(sizes)]
    f, prefix = _at_start(), _prefix(1.0)
    capped = segment_reforecast(f, prefix, history, {"input_bytes": 9e9}, SegmentPolicy())
    assert _rest_peak(capped) == pytest.approx(7.0 * GIB, rel=0.05)
    straight = segment_reforecast(f, prefix, history, {"input_bytes": 9e9}, SegmentPolicy(capped_size=False))
    assert _rest_peak(straight) > 7.7 * GIB  # log-linear in the size: past the cap


def test_the_next_window_holds_its_peak_from_now_when_the_at_start_curve_puts_the_jump_late() -> None:
    # every earlier run jumps from its start level to 2x at 240 s; the at-start curve (a stretched
    # mean shape) puts the jump at 400 s: within the next window the re-forecast must not keep that
    # timing, or a reclaim just before 240 s meets the jump under a low limit
    history = _history(lambda e: 2 * e)
    t = np.arange(0.0, DURATION + 1, 2.0)
    late = np.where(t < 400.0, 2.0, 4.0) * GIB
    f = Forecast(
        curves={MEM: DemandCurve(MEM, 2.0, {0.5: late, 0.99: late * 1.5})},
        duration_s={0.5: DURATION},
        estimator="x",
    )
    flat = segment_reforecast(f, _prefix(2.0), history, {"input_bytes": 1e9}).curve(MEM)
    blind = SegmentPolicy(flat_window=False)
    shaped = segment_reforecast(f, _prefix(2.0), history, {"input_bytes": 1e9}, blind).curve(MEM)
    assert flat is not None and shaped is not None
    assert flat.value_at(210.0, 0.5) == pytest.approx(4.0 * GIB, rel=0.03)  # the jump's level, now
    assert flat.value_at(210.0, 0.99) == pytest.approx(6.0 * GIB, rel=0.03)
    assert shaped.value_at(210.0, 0.5) < 3.0 * GIB  # the at-start curve's late timing kept
