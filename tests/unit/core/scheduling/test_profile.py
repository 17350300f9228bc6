from __future__ import annotations

import random

import numpy as np

from airflow_predictive.core.model.backend import Allocation
from airflow_predictive.core.model.plan import PoolCapacity
from airflow_predictive.core.model.resources import Metric, ResourceVector
from airflow_predictive.core.scheduling.profile import Profile, charge_array

CAP = PoolCapacity(limits=ResourceVector(memory_bytes=10.0, cpu_cores=4.0))


def _mem(v: float) -> Allocation:
    return Allocation.exactly(ResourceVector(memory_bytes=v))


def test_fits_in_an_empty_pool_and_reports_the_bottleneck_when_full() -> None:
    prof = Profile(CAP, [(0.0, 100.0, _mem(8.0))])
    assert prof.fit([(0.0, 10.0, _mem(2.0))], 50.0).fits
    fit = prof.fit([(0.0, 10.0, _mem(1.0)), (10.0, 20.0, _mem(3.0))], 50.0)
    assert not fit.fits
    b = fit.bottleneck
    assert b is not None and b.metric is Metric.MEMORY_BYTES and b.side == "limits"
    assert b.at == 60.0 and b.available == 2.0 and b.over_by == 1.0


def test_earliest_start_is_when_the_conflicting_reservation_ends() -> None:
    prof = Profile(CAP, [(0.0, 100.0, _mem(8.0)), (150.0, 200.0, _mem(9.0))])
    plan = [(0.0, 30.0, _mem(3.0))]
    assert prof.earliest_start(plan, 0.0) == 100.0
    # a 60 s task does not fit in the 50 s gap: after the second one
    assert prof.earliest_start([(0.0, 60.0, _mem(3.0))], 0.0) == 200.0
    assert prof.earliest_start([(0.0, 10.0, _mem(11.0))], 0.0) is None


def test_add_matches_a_profile_built_at_once() -> None:
    rng = random.Random(3)
    pieces = []
    for _ in range(60):
        a = rng.uniform(0, 100)
        pieces.append((a, a + rng.uniform(1, 40), _mem(rng.uniform(0, 2))))
    whole = Profile(CAP, pieces)
    grown = Profile(CAP, pieces[:10])
    grown.add(pieces[10:])
    for t in np.linspace(-5, 150, 400):
        assert np.allclose(whole.held_at(float(t)), grown.held_at(float(t)))


def test_earliest_start_agrees_with_a_brute_force_scan() -> None:
    rng = random.Random(7)
    for _ in range(30):
        pieces = []
        for _ in range(15):
            a = rng.uniform(0, 100)
            pieces.append((a, a + rng.uniform(1, 30), _mem(rng.uniform(0, 6))))
        prof = Profile(CAP, pieces)
        plan = [(0.0, 5.0, _mem(rng.uniform(0, 4))), (5.0, 12.0, _mem(rng.uniform(0, 8)))]
        s = prof.earliest_start(plan, 0.0)
        assert s is not None
        assert prof.fit(plan, s).fits
        for cand in np.arange(0.0, s - 0.01, 0.25):
            assert not prof.fit(plan, float(cand)).fits, (cand, s)


def test_charge_array_counts_absent_as_zero() -> None:
    arr = charge_array(Allocation(limits=ResourceVector(memory_bytes=5.0)))
    assert arr.sum() == 5.0
