"""Online profile updates: calibration from the newest runs, drift detection."""

from __future__ import annotations

import numpy as np

from airflow_predictive.core.model.resources import GIB, Metric, ResourceVector
from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord, TaskKey
from airflow_predictive.core.model.series import DemandCurve, Forecast
from airflow_predictive.core.profiler.estimators.base import RunExample
from airflow_predictive.core.profiler.online import OnlineProfile, PageHinkley

MEM = Metric.MEMORY_BYTES


def _run(peak: float, i: int = 0) -> RunExample:
    rec = RunRecord(
        identity=RunIdentity(TaskKey("d", "t"), f"r{i}"),
        outcome=Outcome.SUCCESS,
        peak=ResourceVector(memory_bytes=peak),
    )
    return RunExample(rec, None)


def _served(p50: float) -> Forecast:
    c = DemandCurve(MEM, 1.0, {0.5: np.full(4, p50), 0.9: np.full(4, p50 * 1.1), 0.99: np.full(4, p50 * 1.2)})
    return Forecast(curves={MEM: c}, duration_s={}, estimator="x")


def test_page_hinkley_stays_quiet_on_noise_and_fires_on_a_shift():
    rng = np.random.default_rng(0)
    ph = PageHinkley(delta=0.05, threshold=1.0)
    assert not any(ph.add(float(x)) for x in rng.normal(0, 0.05, 200))
    fired = [ph.add(float(x)) for x in rng.normal(0.5, 0.05, 20)]
    assert any(fired) and fired.index(True) < 6


def test_runs_above_their_forecast_widen_the_band_from_the_next_run_on():
    online = OnlineProfile(base={MEM: {0.9: 1.1, 0.99: 1.2}}, min_runs=5)
    for i in range(4):
        assert online.update(_run(1.5 * GIB, i), _served(GIB)).calibration[MEM][0.99] == 1.2  # too few yet
    update = online.update(_run(1.5 * GIB, 5), _served(GIB))
    assert update.calibration[MEM][0.99] >= 1.5 and update.runs_seen == 5


def test_a_regime_change_is_reported_as_drift():
    online = OnlineProfile()
    quiet = [online.update(_run(GIB * (1 + 0.02 * (i % 3)), i), _served(GIB)).drifted for i in range(30)]
    assert not any(quiet)
    loud = [online.update(_run(2 * GIB, 100 + i), _served(GIB)).drifted for i in range(5)]
    assert (MEM,) in loud


def test_without_a_served_forecast_nothing_is_learned():
    online = OnlineProfile()
    assert online.update(_run(GIB), None).calibration == {}


def test_online_recalibration_keeps_the_trainings_coverage_widening():
    from airflow_predictive.core.profiler.selection import WIDEN, calibrated

    online = OnlineProfile(base={MEM: {0.9: 1.1, 0.99: 1.2, WIDEN: 1.05}}, min_runs=5)
    for i in range(6):
        update = online.update(_run(1.5 * GIB, i), _served(GIB))
    factors = update.calibration[MEM]
    assert factors[0.99] >= 1.5 and factors[WIDEN] == 1.05
    band = calibrated(_served(GIB), update.calibration).curves[MEM]
    assert np.isclose(band.peak(0.99), factors[0.99] * 1.05 * GIB)
