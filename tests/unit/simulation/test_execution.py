from __future__ import annotations

import numpy as np
import pytest

from airflow_predictive.core.model.resources import GIB
from airflow_predictive.simulation.execution import NEVER, Limits, SimSettings, run_try
from airflow_predictive.simulation.policies.base import FlatDriver, StaticDriver
from tests.unit.simulation.helpers import sim_run

SETTINGS = SimSettings()


class AskOnce:
    """Asks for ``target`` at step ``at``; records the steps it was woken at."""

    def __init__(self, start: Limits, target: Limits, at: int) -> None:
        self.start, self.target, self.at = start, target, at
        self.woken: list[tuple[int, float]] = []

    def initial(self) -> Limits:
        return self.start

    def next_wakeup(self, k: int, current: Limits) -> int:
        return self.at if k < self.at else NEVER

    def decide(self, k: int, now_s: float, current: Limits) -> Limits | None:
        self.woken.append((k, now_s))
        return self.target


def test_memory_above_the_limit_kills_the_try_at_the_first_step_over() -> None:
    mem = np.array([1.0, 2.0, 3.0, 5.0, 2.0]) * GIB
    result = run_try(sim_run(mem), FlatDriver(Limits(4 * GIB, 2.0)), SETTINGS)
    assert result.oom
    assert result.steps == 3
    # the killed step counts, at the limit: 4 steps of 4 GiB allocated
    assert result.memory_alloc == pytest.approx(4 * 4 * GIB)
    assert result.peak_seen == 4 * GIB


def test_a_try_within_its_limits_completes_with_exact_integrals() -> None:
    mem = np.array([1.0, 2.0, 3.0]) * GIB
    result = run_try(sim_run(mem), FlatDriver(Limits(4 * GIB, 2.0)), SETTINGS)
    assert not result.oom and result.steps == 3
    assert result.wall_s == pytest.approx(3.0)
    assert result.memory_alloc == pytest.approx(12 * GIB)
    assert result.memory_used == pytest.approx(6 * GIB)
    assert result.cpu_alloc == pytest.approx(6.0)
    assert result.cpu_used == pytest.approx(3.0)
    assert result.throttled_s == 0.0


def test_cpu_above_the_limit_is_throttled_and_the_try_runs_longer() -> None:
    cpu = np.array([1.0, 4.0, 4.0, 1.0])
    result = run_try(sim_run(np.full(4, GIB), cpu), FlatDriver(Limits(2 * GIB, 2.0)), SETTINGS)
    # two steps of 4 cores' work at 2 cores take 2 s each
    assert result.wall_s == pytest.approx(1 + 2 + 2 + 1)
    assert result.throttled_s == pytest.approx(4.0)
    assert result.cpu_used == pytest.approx(10.0)  # the work is the same
    assert result.cpu_alloc == pytest.approx(12.0)


def test_a_resize_is_in_force_only_after_the_actuation_delay() -> None:
    mem = np.array([1, 1, 1, 1, 3, 3, 3, 3], dtype=float) * GIB
    driver = AskOnce(Limits(2 * GIB, 1.0), Limits(4 * GIB, 1.0), at=2)
    result = run_try(sim_run(mem), driver, SETTINGS)  # asked at 2, in force at 2 + ceil(1.8) = 4
    assert not result.oom
    assert [t for t, _ in result.changes] == [0.0, 4.0]
    late = AskOnce(Limits(2 * GIB, 1.0), Limits(4 * GIB, 1.0), at=3)
    killed = run_try(sim_run(mem), late, SETTINGS)  # in force at 5: step 4 is already over the limit
    assert killed.oom and killed.steps == 4
    assert killed.resizes == 0


def test_the_static_path_gives_the_same_figures_as_the_stepwise_loop() -> None:
    rng = np.random.default_rng(1)
    mem = rng.uniform(1, 3, 90) * GIB
    cpu = rng.uniform(0.5, 3, 90)
    limits_mem = np.repeat([3.0, 3.5, 3.2], 30) * GIB
    limits_cpu = np.repeat([2.0, 3.0, 1.5], 30)
    run = sim_run(mem, cpu)
    static = run_try(run, StaticDriver(limits_mem, limits_cpu), SETTINGS)

    class Stepwise:
        def initial(self) -> Limits:
            return Limits(float(limits_mem[0]), float(limits_cpu[0]))

        def next_wakeup(self, k: int, current: Limits) -> int:
            return k + 1

        def decide(self, k: int, now_s: float, current: Limits) -> Limits | None:
            j = k + SETTINGS.delay_steps
            return Limits(float(limits_mem[j]), float(limits_cpu[j])) if j < 90 else None

    looped = run_try(run, Stepwise(), SETTINGS)
    for name in ("wall_s", "memory_alloc", "memory_used", "cpu_alloc", "cpu_used", "throttled_s"):
        assert getattr(looped, name) == pytest.approx(getattr(static, name)), name
    assert looped.resizes == static.resizes == 2
    assert [lim for _, lim in looped.changes] == [lim for _, lim in static.changes]


def test_a_try_reports_how_near_it_came_to_its_memory_limit() -> None:
    mem = np.array([1.0, 2.0, 3.0, 2.0]) * GIB
    run = sim_run(mem)
    assert run_try(run, FlatDriver(Limits(3.3 * GIB, 1.0)), SETTINGS).min_headroom == pytest.approx(0.1)
    # a grow in force from step 4 (asked at 2): the smallest headroom is 3 GiB under the 3.3 GiB limit
    grown = run_try(run, AskOnce(Limits(3.3 * GIB, 1.0), Limits(6 * GIB, 1.0), at=2), SETTINGS)
    assert grown.min_headroom == pytest.approx(0.1)
    late_jump = sim_run(np.array([1.0, 1.0, 1.0, 3.0]) * GIB)  # the grow lands (step 3) before the jump
    early = run_try(late_jump, AskOnce(Limits(1.2 * GIB, 1.0), Limits(6 * GIB, 1.0), at=1), SETTINGS)
    assert not early.oom and early.min_headroom == pytest.approx(0.2)  # 1.2 over 1 (6 over 3: 100 %)
    killed = run_try(run, FlatDriver(Limits(2.5 * GIB, 1.0)), SETTINGS)
    assert killed.oom and killed.min_headroom == pytest.approx(2.5 / 3 - 1)  # negative at a kill
    static = run_try(run, StaticDriver(np.array([1.5, 3.0, 3.6, 3.6]) * GIB, np.ones(4)), SETTINGS)
    assert static.min_headroom == pytest.approx(0.2)  # 3.6 / 3 (1.5 / 1, 3 / 2 are higher)


def test_limits_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        Limits(float("nan"), 1.0)
    with pytest.raises(ValueError):
        Limits(GIB, 0.0)
