from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest

from airflow_predictive.core.model.resources import Metric
from airflow_predictive.core.model.series import UsageSeries
from airflow_predictive.core.profiler.selection import SelectionPolicy
from airflow_predictive.training.candidates import REFERENCES, factories
from airflow_predictive.training.dataset import load_examples
from airflow_predictive.training.evaluation import PROFILER, evaluate, truncated

if TYPE_CHECKING:
    from airflow_predictive.storage.run_store import SqlRunStore


def test_profiler_is_scored_against_references_on_held_out_runs(filled_store: SqlRunStore) -> None:
    result = evaluate(
        load_examples(filled_store),
        factories(("median_peak", "linear_input")),
        factories(REFERENCES),
        policy=SelectionPolicy(folds=2),
    )
    assert result.test_runs == 12 and result.train_runs == 13
    assert set(result.reports) == {PROFILER, "median_peak", "linear_input", *REFERENCES}
    d = result.as_dict()
    mem = d["overall"]["memory"]
    assert set(mem["peak_error"]) == {"median", "p90"}
    assert 0.0 <= mem["coverage"]["p99"] <= 1.0
    assert d["tasks"]["wf.align"]["champion"] == "linear_input"
    # the declared 8 GiB leaves far more memory idle than the profiler's stepped p99 curve
    declared = d["estimators"]["declared"]["overall"]["memory"]["unused_fraction"]["p99"]
    assert mem["unused_fraction"]["p99"] < declared
    assert d["prefix"]["runs"] == 12


def test_truncated_prefix_needs_two_samples() -> None:
    s = UsageSeries(np.arange(0.0, 11.0), {Metric.MEMORY_BYTES: np.ones(11)})  # 10 s long
    pre = truncated(s, 0.2)
    assert pre is not None and len(pre) == 3
    assert truncated(UsageSeries(np.array([0.0, 100.0]), {Metric.MEMORY_BYTES: np.ones(2)}), 0.2) is None


def test_no_candidates_still_reports_references(filled_store: SqlRunStore) -> None:
    result = evaluate(load_examples(filled_store), {}, factories(("vpa",)), prefix_fraction=None)
    assert result.champion_counts() == {"cold_start": 3}
    assert result.reports[PROFILER].overall[Metric.MEMORY_BYTES].runs == 12
    assert result.reports["vpa"].overall[Metric.MEMORY_BYTES].coverage[0.99] == pytest.approx(1.0)


def test_per_task_report_names_the_candidates_that_beat_the_champion(filled_store) -> None:
    result = evaluate(
        load_examples(filled_store), factories(("median_peak", "vpa")), factories(("declared",))
    )
    tasks = result.as_dict()["tasks"]
    for name, figures in tasks.items():
        mine = figures["memory"]["peak_error"]["median"]
        for other, theirs in figures["beaten_by"].items():
            assert theirs < mine and other != "profiler", name
    # the declared resources (a flat 8 GiB) never forecast these runs better than the champion
    assert all("declared" not in f["beaten_by"] for f in tasks.values())


def test_memory_composition_is_recorded_but_never_a_forecast_dimension() -> None:
    """A run that recorded anon / file memory still trains CPU + memory (+ what else it measured):
    the composition metrics are parts of memory_bytes, not demands of their own."""
    from dataclasses import replace

    from airflow_predictive.core.model.resources import GIB
    from airflow_predictive.core.profiler.estimators.base import RunExample
    from airflow_predictive.training.evaluation import measured_metrics
    from tests.unit.core.profiler.synthetic_runs import example

    ex = example("t", 1, 2.0)
    s = ex.series
    assert s is not None
    n = s.times.size
    series = UsageSeries(
        s.times,
        {
            **s.values,
            Metric.MEMORY_ANON_BYTES: np.full(n, 1.5 * GIB),
            Metric.MEMORY_FILE_BYTES: np.full(n, 0.5 * GIB),
            Metric.DISK_READ_BPS: np.full(n, 1e6),
        },
    )
    rec = replace(ex.record, peak=series.peaks())
    assert rec.peak.get(Metric.MEMORY_ANON_BYTES) == 1.5 * GIB  # recorded
    assert measured_metrics([RunExample(rec, series)]) == (
        Metric.CPU_CORES,
        Metric.MEMORY_BYTES,
        Metric.DISK_READ_BPS,
    )


def _combo_candidates() -> dict:
    from airflow_predictive.core.profiler.estimators.baselines import LastRunCurve, MedianPeak
    from airflow_predictive.core.profiler.estimators.combination import MedianCombination

    return {
        **factories(("median_peak", "last_run")),
        "combo": lambda: MedianCombination([MedianPeak(), LastRunCurve()], name="combo"),
    }


def test_combination_is_evaluated_as_the_combination_of_its_members_held_out_forecasts(
    filled_store: SqlRunStore,
) -> None:
    from airflow_predictive.core.profiler.estimators.combination import combine_curves

    result = evaluate(
        load_examples(filled_store), _combo_candidates(), policy=SelectionPolicy(folds=2), prefix_fraction=0.2
    )
    combo, a, b = (result.forecasts[n] for n in ("combo", "median_peak", "last_run"))
    assert combo and set(combo) == set(a) & set(b)
    for i, f in combo.items():
        for metric, curve in f.curves.items():
            expected = combine_curves(metric, [a[i].curves[metric], b[i].curves[metric]])
            assert np.array_equal(curve.at(0.5), expected.at(0.5))
    assert result.reports["combo"].prefix is not None and result.reports["combo"].prefix.runs > 0


def test_combination_champion_is_served_as_training_forecast_it(filled_store: SqlRunStore, tmp_path) -> None:
    from airflow_predictive.core.model.query import ForecastQuery as ServingQuery
    from airflow_predictive.core.profiler.estimators.baselines import DeclaredResources, FallbackChain
    from airflow_predictive.core.profiler.estimators.combination import MedianCombination
    from airflow_predictive.core.profiler.selection import calibrated
    from airflow_predictive.core.profiler.serving import ServingProfile, estimator_query, serve
    from airflow_predictive.training.pipeline import fit_all

    examples = load_examples(filled_store)
    fitted, _ = fit_all({"combo"}, _combo_candidates(), examples)
    assert set(fitted) == {"combo"}  # its members are fitted for it, not returned as champions
    fitted["combo"].save(tmp_path / "combo")
    loaded = MedianCombination.load(tmp_path / "combo")
    keys = [e.key for e in examples]
    runs = [e for e in examples if e.key == max(set(keys), key=keys.count)]  # the task with most runs
    history, run = runs[:-1], runs[-1]
    calibration = {Metric.MEMORY_BYTES: {0.9: 1.3, 0.99: 1.6}}
    rec = run.record
    query = ServingQuery(key=rec.key, features=rec.features, declared=rec.declared, operator=rec.operator)
    metrics = (Metric.CPU_CORES, Metric.MEMORY_BYTES)
    at_training = calibrated(fitted["combo"].predict(estimator_query(query, history, metrics)), calibration)
    served = serve(
        query,
        history,
        ServingProfile(champion="combo", estimator=loaded, calibration=calibration),
        FallbackChain([DeclaredResources()]),
        metrics=metrics,
    )
    assert served.forecast is not None and served.forecast.estimator == "combo"
    for metric, curve in at_training.curves.items():
        for q in (0.5, 0.9, 0.99):
            assert np.array_equal(served.forecast.curves[metric].at(q), curve.at(q))
