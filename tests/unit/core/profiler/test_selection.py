from __future__ import annotations

import dataclasses

import pytest

from airflow_predictive.core.model.resources import Metric
from airflow_predictive.core.model.runs import TaskKey
from airflow_predictive.core.profiler.selection import (
    NO_CANDIDATE,
    NO_HISTORY,
    CandidateScore,
    SelectionPolicy,
    _choose,
    backtest,
    fold_wins,
    origins,
    prefer_combination,
    query_for,
    task_default,
)
from tests.unit.core.profiler.synthetic_runs import Broken, FlatHistoryPeak, example


def test_origins_leave_room_for_training() -> None:
    policy = SelectionPolicy(folds=3, min_train_runs=3)
    assert origins(3, policy) == []
    assert origins(4, policy) == [3]
    assert origins(12, policy) == [3, 6, 9]


def _runs(task: str, n: int, *, series: bool = True) -> list:
    return [example(task, i, 1.0 + 0.01 * (i % 3), series=series) for i in range(n)]


def test_champion_avoids_memory_under_prediction() -> None:
    candidates = {
        "exact": lambda: FlatHistoryPeak("exact", 1.0),
        "low": lambda: FlatHistoryPeak("low", 0.7),
        "broken": lambda: Broken("broken"),
    }
    [record] = backtest(candidates, _runs("a", 10))
    assert record.champion == "exact"
    assert record.folds == 3 and record.runs == 10
    low = record.score_of("low")
    assert low is not None and low.memory_under_rate > 0.9 and low.score > record.score_of("exact").score
    broken = record.score_of("broken")
    assert broken is not None and not broken.eligible and "corrupt" in (broken.error or "")
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.champion = "low"  # type: ignore[misc]


def test_task_with_one_run_gets_no_champion() -> None:
    records = backtest({"exact": lambda: FlatHistoryPeak("exact")}, _runs("a", 6) + _runs("b", 1))
    by_task = {r.key: r for r in records}
    assert by_task[TaskKey("wf", "b")].champion is None
    assert by_task[TaskKey("wf", "b")].reason == NO_HISTORY
    assert by_task[TaskKey("wf", "a")].champion == "exact"


def test_model_of_other_dimensions_cannot_win() -> None:
    cpu_only = {"cpu_only": lambda: FlatHistoryPeak("cpu_only", 1.0, metrics=(Metric.CPU_CORES,))}
    [record] = backtest(cpu_only, _runs("a", 8))
    assert record.champion is None and record.reason == NO_CANDIDATE
    assert "memory_bytes" in (record.scores[0].error or "")


def test_peak_only_runs_are_backtested_on_peaks() -> None:
    [record] = backtest(
        {"exact": lambda: FlatHistoryPeak("exact"), "high": lambda: FlatHistoryPeak("high", 2.0)},
        _runs("nf", 9, series=False),
    )
    assert record.champion == "exact"
    assert record.score_of("high").memory_under_rate == 0.0  # type: ignore[union-attr]


def test_failing_fit_is_recorded_not_raised() -> None:
    class NoFit(FlatHistoryPeak):
        def fit(self, examples):  # type: ignore[no-untyped-def]
            raise ValueError("needs tensorflow")

    [record] = backtest(
        {"nofit": lambda: NoFit("nofit"), "exact": lambda: FlatHistoryPeak("exact")}, _runs("a", 6)
    )
    assert record.champion == "exact"
    assert "needs tensorflow" in (record.score_of("nofit").error or "")  # type: ignore[union-attr]


def test_champion_bands_widen_to_what_its_backtest_missed() -> None:
    import numpy as np

    from airflow_predictive.core.profiler.selection import calibrated

    # memory peaks swing +-30% around the last run: the flat estimator's own p99 (x1.2) is too narrow
    runs = [example("a", i, 1.0 + 0.3 * (-1) ** i) for i in range(12)]
    [record] = backtest(
        {"flat": lambda: FlatHistoryPeak("flat")}, runs, SelectionPolicy(calibration_mode="widen")
    )
    factors = record.calibration[Metric.MEMORY_BYTES]
    assert factors[0.99] > 1.2 and factors[0.99] >= factors[0.9]
    forecast = FlatHistoryPeak("flat").predict(query_for(runs[-1], runs[:-1], (Metric.MEMORY_BYTES,)))
    wide = calibrated(forecast, record.calibration)
    mem, raw = wide.curves[Metric.MEMORY_BYTES], forecast.curves[Metric.MEMORY_BYTES]
    assert np.allclose(mem.at(0.5), raw.at(0.5))  # the median stays
    assert mem.peak(0.99) == pytest.approx(raw.peak(0.5) * factors[0.99])
    assert calibrated(forecast, {}) is forecast


def test_conformal_mode_also_narrows_bands_wider_than_the_past_errors() -> None:
    from airflow_predictive.core.profiler.selection import calibrated

    runs = [example("a", i, 1.0) for i in range(12)]  # identical peaks: the median is exact
    policy = SelectionPolicy(calibration_mode="conformal")
    [record] = backtest({"wide": lambda: FlatHistoryPeak("wide", 1.0)}, runs, policy)
    forecast = FlatHistoryPeak("wide").predict(query_for(runs[-1], runs[:-1], (Metric.MEMORY_BYTES,)))
    tight = calibrated(forecast, record.calibration).curves[Metric.MEMORY_BYTES]
    raw = forecast.curves[Metric.MEMORY_BYTES]
    assert raw.peak(0.99) == pytest.approx(raw.peak(0.5) * 1.2)
    assert tight.peak(0.99) == pytest.approx(raw.peak(0.5))  # past errors were zero: p99 = p50
    widen_only = backtest({"wide": lambda: FlatHistoryPeak("wide", 1.0)}, runs)[0]  # the default
    assert calibrated(forecast, widen_only.calibration).curves[Metric.MEMORY_BYTES].peak(0.99) == raw.peak(
        0.99
    )


def test_curve_mode_band_follows_the_curve_and_covers_an_earlier_peak() -> None:
    import numpy as np

    from airflow_predictive.core.model.series import DemandCurve, Forecast
    from airflow_predictive.core.profiler.selection import CONFORMAL, LOOKAHEAD, calibrated, forward_max

    ramp = np.array([1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 8.0, 8.0, 1.0, 1.0])  # peak at 60-80% of the run
    levels = {0.5: ramp, 0.9: ramp * 1.02, 0.99: ramp * 5}
    forecast = Forecast(
        curves={Metric.MEMORY_BYTES: DemandCurve(Metric.MEMORY_BYTES, 10.0, levels)},
        duration_s={0.5: 100.0},
        estimator="test",
    )
    cal = {Metric.MEMORY_BYTES: {0.9: 1.05, 0.99: 1.1, CONFORMAL: 1.0, LOOKAHEAD: 0.2}}
    band = calibrated(forecast, cal).curves[Metric.MEMORY_BYTES]
    assert np.allclose(band.at(0.5), ramp)
    # each point holds the p50 maximum of the next 2 steps (20% of 10), times the backtest factor
    assert np.allclose(band.at(0.99), 1.1 * np.array([2, 2, 4, 4, 8, 8, 8, 8, 1, 1]))
    assert band.peak(0.99) == pytest.approx(8.0 * 1.1)  # far below the raw p99 (40)
    # a run that goes through the same phases two steps early is still covered at every step,
    # where the p50 x factor band of the plain conformal mode would be exceeded (an OOM)
    early = np.concatenate([ramp[2:], [1.0, 1.0]])
    assert np.all(early <= band.at(0.99))
    plain = {Metric.MEMORY_BYTES: {0.99: 1.1, CONFORMAL: 1.0}}
    assert np.any(early > calibrated(forecast, plain).curves[Metric.MEMORY_BYTES].at(0.99))
    assert np.array_equal(forward_max(np.array([3.0, 1.0, 2.0]), 0), np.array([3.0, 1.0, 2.0]))
    assert np.array_equal(forward_max(np.array([1.0, 3.0, 2.0, 0.0]), 1), np.array([3.0, 3.0, 2.0, 0.0]))


def test_curve_mode_is_recorded_by_the_backtest() -> None:
    from airflow_predictive.core.profiler.selection import CONFORMAL, LOOKAHEAD

    runs = [example("a", i, 1.0 + 0.1 * (i % 2)) for i in range(12)]
    policy = SelectionPolicy(calibration_mode="curve", curve_lookahead=0.3)
    [record] = backtest({"flat": lambda: FlatHistoryPeak("flat")}, runs, policy)
    factors = record.calibration[Metric.MEMORY_BYTES]
    assert factors[CONFORMAL] == 1.0 and factors[LOOKAHEAD] == pytest.approx(0.3)
    assert factors[0.99] >= 1.0


def test_curve_mode_pools_the_spread_of_all_tasks_so_a_lucky_task_is_not_too_tight() -> None:
    steady = [example("steady", i, 1.0) for i in range(12)]  # its own past errors are all zero
    swinging = [example("swinging", i, 1.0 + 0.3 * (-1) ** i) for i in range(12)]
    curve = SelectionPolicy(calibration_mode="curve")
    records = {
        r.key.task_id: r
        for r in backtest({"flat": lambda: FlatHistoryPeak("flat")}, steady + swinging, curve)
    }
    lucky = records["steady"].calibration[Metric.MEMORY_BYTES][0.99]
    alone = backtest({"flat": lambda: FlatHistoryPeak("flat")}, steady, curve)[0]
    assert alone.calibration[Metric.MEMORY_BYTES][0.99] == pytest.approx(1.0)
    assert lucky > 1.2  # widened by the other task's normalised spread


def test_the_robust_default_stays_champion_unless_another_candidate_is_clearly_better():
    from airflow_predictive.core.profiler.selection import CandidateScore, _choose

    def score(name: str, value: float) -> CandidateScore:
        return CandidateScore(name, 30, value, 0.0, 0.0, value)

    policy = SelectionPolicy(default="scaled_curve", min_gain=0.05, short_history=20)
    close = [score("scaled_curve", 0.100), score("lstm", 0.097)]
    assert _choose(close, policy, n_runs=100)[0].estimator == "scaled_curve"
    clear = [score("scaled_curve", 0.100), score("lstm", 0.091)]
    assert _choose(clear, policy, n_runs=100)[0].estimator == "lstm"
    assert _choose(clear, policy, n_runs=10)[0].estimator == "scaled_curve"  # short history: 10% needed
    assert _choose([score("vpa", 0.2), score("median_peak", 0.1)], policy, 100)[0].estimator == "median_peak"


def test_the_pooled_default_is_the_candidate_best_across_tasks():
    from airflow_predictive.core.profiler.selection import CandidateScore, pooled_default

    def score(name: str, value: float, error: str | None = None) -> CandidateScore:
        return CandidateScore(name, 30, value, 0.0, 0.0, value, error)

    tasks = [
        [score("lstm", 0.10), score("median_peak", 0.11)],
        [score("lstm", 0.20), score("median_peak", 0.30)],
        [score("lstm", 0.50), score("median_peak", 0.40)],  # one task prefers the baseline
    ]
    assert pooled_default(tasks) == "lstm"
    # a candidate that cannot forecast most tasks (the LSTM on peak-only traces) is never the default
    peaks_only = [[score("lstm", 0.01), score("median_peak", 0.2)]] + [
        [score("lstm", float("inf"), "fit failed"), score("median_peak", 0.2)] for _ in range(3)
    ]
    assert pooled_default(peaks_only) == "median_peak"
    assert pooled_default([]) is None


def _scored(name: str, score: float, errors: tuple[float, ...]):  # type: ignore[no-untyped-def]
    from airflow_predictive.core.profiler.selection import CandidateScore

    return CandidateScore(name, len(errors), score, 0.0, 0.0, score, peak_errors=errors)


def test_the_champion_is_ranked_by_the_upper_quartile_of_its_backtest_peak_errors() -> None:
    from airflow_predictive.core.profiler.selection import _choose

    steady = _scored("steady", 0.20, (0.05,) * 20)
    # a lower pinball loss, but one run in three is 50% off: the p75 peak error is 0.5
    spiky = _scored("spiky", 0.10, (0.0, 0.0, 0.5) * 7)
    policy = SelectionPolicy(default="none", criterion="peak_error")
    assert _choose([steady, spiky], policy, n_runs=40)[0].estimator == "steady"
    assert (
        _choose([steady, spiky], dataclasses.replace(policy, criterion="score"), 40)[0].estimator == "spiky"
    )
    # heavy tail: two runs 30x off do not decide against a candidate that is closer on the rest
    tail = _scored("tail", 0.90, (0.01,) * 18 + (30.0, 30.0))
    champion, reason = _choose([steady, tail], policy, n_runs=40)
    assert champion.estimator == "tail" and "p75 memory peak error" in reason


def test_candidates_without_peak_errors_are_ranked_by_their_score() -> None:
    from airflow_predictive.core.profiler.selection import _choose, ranking

    policy = SelectionPolicy(default="none")
    cpu_only = [_scored("a", 0.3, ()), _scored("b", 0.2, (0.5,) * 5)]
    assert ranking(cpu_only, policy) == {"a": 0.3, "b": 0.2}
    assert _choose(cpu_only, policy, n_runs=40)[0].estimator == "b"


def test_the_backtest_ranks_by_peak_error_and_keeps_the_errors() -> None:
    # "high" forecasts 1.15x the last peak: on steady peaks it is 15% off; "exact" about 1%
    runs = [example("a", i, 1.0 + 0.01 * (i % 3)) for i in range(12)]
    [record] = backtest(
        {"exact": lambda: FlatHistoryPeak("exact"), "high": lambda: FlatHistoryPeak("high", 1.15)},
        runs,
        SelectionPolicy(default="none"),
    )
    assert record.champion == "exact" and "peak error" in record.reason
    high = record.score_of("high")
    assert high is not None and len(high.peak_errors) == high.forecasts
    assert high.peak_error_median == pytest.approx(0.15, abs=0.02)


def test_p99_widens_where_the_earlier_folds_calibration_missed_the_last_folds_peaks() -> None:
    from airflow_predictive.core.profiler.selection import WIDEN, calibrated

    # peaks swing 5% for the first two thirds, then 40%: factors from the early folds miss them
    runs = [example("a", i, 1.0 + (0.05 if i < 14 else 0.4) * (-1) ** i) for i in range(25)]
    flat = {"flat": lambda: FlatHistoryPeak("flat")}
    [record] = backtest(flat, runs, SelectionPolicy(folds=2))
    factors = record.calibration[Metric.MEMORY_BYTES]
    assert factors[WIDEN] > 1.0
    forecast = FlatHistoryPeak("flat").predict(query_for(runs[-1], runs[:-1], (Metric.MEMORY_BYTES,)))
    wide = calibrated(forecast, record.calibration).curves[Metric.MEMORY_BYTES]
    p50 = forecast.curves[Metric.MEMORY_BYTES].peak(0.5)
    assert wide.peak(0.99) == pytest.approx(p50 * factors[0.99] * factors[WIDEN])
    assert wide.peak(0.9) == pytest.approx(
        max(p50 * factors[0.9], forecast.curves[Metric.MEMORY_BYTES].peak(0.9))
    )
    [off] = backtest(flat, runs, SelectionPolicy(folds=2, coverage_target=0.0))
    assert WIDEN not in off.calibration[Metric.MEMORY_BYTES]


class _Counted(FlatHistoryPeak):
    fits: list[str] = []

    def fit(self, examples):  # type: ignore[no-untyped-def]
        _Counted.fits.append(self.name)
        return self


def test_combination_is_backtested_from_its_members_forecasts_without_fitting_them_again() -> None:
    from airflow_predictive.core.profiler.estimators.combination import MedianCombination

    _Counted.fits = []
    candidates = {
        "low": lambda: _Counted("low", 0.8),
        "high": lambda: _Counted("high", 1.2),
        "combined": lambda: MedianCombination([_Counted("low", 0.8), _Counted("high", 1.2)]),
    }
    runs = [example("a", i, 1.0) for i in range(10)]
    [record] = backtest(candidates, runs, SelectionPolicy(folds=3))
    assert sorted(_Counted.fits) == ["high"] * 3 + ["low"] * 3  # one fit per member and fold, none for it
    # members at 0.8x and 1.2x the last peak: their combination forecasts the peak exactly
    combined, low = record.score_of("combined"), record.score_of("low")
    assert combined is not None and low is not None and combined.forecasts == low.forecasts
    assert max(combined.peak_errors) == pytest.approx(0.0, abs=1e-9)
    assert record.champion == "combined"


def _score(name: str, errors: list[float], folds: list[int]) -> CandidateScore:
    return CandidateScore(
        name, len(errors), 0.1, 0.0, 0.0, 0.1, peak_errors=tuple(errors), peak_folds=tuple(folds)
    )


def test_with_fold_majority_a_candidate_that_wins_one_lucky_fold_is_not_champion() -> None:
    folds = [0] * 8 + [1] * 2 + [2] * 2  # a long first fold (a burst of easy runs)
    default = _score("robust", [0.10] * 12, folds)
    lucky = _score("lucky", [0.01] * 8 + [0.11] * 4, folds)  # far better in fold 0, worse in 1 and 2
    steady = _score("steady", [0.05] * 8 + [0.08] * 2 + [0.20] * 2, folds)  # better in two of three
    base = SelectionPolicy(default="robust", min_gain=0.05, peak_quantile=0.5, short_history=0)
    assert _choose([default, lucky], base, 100)[0].estimator == "lucky"  # the pooled median alone is fooled
    strict = dataclasses.replace(base, fold_majority=True)
    best, reason = _choose([default, lucky], strict, 100)
    assert best.estimator == "robust" and "1 of 3" in reason
    assert fold_wins(lucky, default, strict) == (1, 3)
    assert _choose([default, steady], strict, 100)[0].estimator == "steady"


def test_a_member_champion_gives_way_to_its_combination_unless_clearly_better() -> None:
    folds = [0] * 6 + [1] * 6
    lstm = _score("lstm", [0.05] * 12, folds)
    combo = _score("combined", [0.055] * 12, folds)
    other = _score("median_peak", [0.2] * 12, folds)
    composites = {"combined": ("lstm", "scaled_curve")}
    policy = SelectionPolicy(combination_gain=0.2)
    best, reason = prefer_combination(lstm, "lowest", [lstm, combo, other], policy, composites)
    assert best.estimator == "combined" and "not 20% below" in reason
    clearly = _score("lstm", [0.03] * 12, folds)  # 45% below the combination: stays champion
    assert prefer_combination(clearly, "lowest", [clearly, combo, other], policy, composites)[0] is clearly
    # a champion outside the combination, or no eligible combination: unchanged
    assert prefer_combination(other, "x", [lstm, combo, other], policy, composites)[0] is other
    assert prefer_combination(lstm, "x", [lstm, other], policy, composites)[0] is lstm


def test_simple_default_is_the_simple_baseline_the_task_backtest_ranks_first() -> None:
    folds = [0] * 12
    last = _score("last_run", [0.04] * 12, folds)
    median = _score("median_peak", [0.06] * 12, folds)
    scaled = _score("scaled_curve", [0.05] * 12, folds)
    policy = SelectionPolicy(default="simple")
    assert task_default([last, median, scaled], policy, "scaled_curve") == "last_run"
    assert task_default([scaled], policy, "scaled_curve") == "scaled_curve"  # no simple baseline
    # with the tail guard, a simple baseline with a far heavier tail leaves the pooled default
    heavy = _score("last_run", [0.01] * 10 + [2.0] * 2, folds)
    guarded = dataclasses.replace(policy, tail_quantile=0.9)
    assert task_default([heavy, scaled], guarded, "scaled_curve") == "scaled_curve"
    assert task_default([heavy, scaled], policy, "scaled_curve") == "last_run"
    assert task_default([last, scaled], SelectionPolicy(), "scaled_curve") == "scaled_curve"  # "auto"


def test_combination_without_its_members_as_candidates_cannot_win_and_fits_nothing() -> None:
    from airflow_predictive.core.profiler.estimators.combination import MedianCombination

    _Counted.fits = []
    candidates = {
        "low": lambda: _Counted("low", 0.8),
        "combined": lambda: MedianCombination([_Counted("low", 0.8), _Counted("high", 1.2)]),
    }
    [record] = backtest(candidates, [example("a", i, 1.0) for i in range(10)], SelectionPolicy(folds=2))
    combined = record.score_of("combined")
    assert combined is not None and not combined.eligible and "must be candidates" in (combined.error or "")
    assert _Counted.fits == ["low", "low"]  # "high" (not a candidate) was never fitted
    assert record.champion == "low"
