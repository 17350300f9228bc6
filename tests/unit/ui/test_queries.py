"""The UI's read side on a real database: paging, downsampled curves that keep the peak, the
allocation in force, pools, and filtering by the DAGs the user may read."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest

from airflow_predictive.core.model.resources import MIB
from airflow_predictive.ui.queries import Forbidden, NotFound, UiQueries
from tests.integration.ui.seed import (
    DEMO,
    FORECAST_P99_PEAK,
    PLAN_INITIAL,
    PLAN_STEP,
    POOL,
    SECRET,
    SHAPED_TO,
    SPIKE_AT_S,
    SPIKE_BYTES,
)
from tests.unit.ui.conftest import AllowDags

if TYPE_CHECKING:
    from airflow_predictive.ui.queries import UiStores
    from tests.integration.ui.seed import Seeded


def test_runs_are_paged_newest_first_with_the_total(seeded: tuple[UiStores, Seeded]) -> None:
    stores, data = seeded
    q = UiQueries(stores)
    first = q.runs(AllowDags("ui_demo"), DEMO, offset=0, limit=2)
    second = q.runs(AllowDags("ui_demo"), DEMO, offset=2, limit=2)
    last = q.runs(AllowDags("ui_demo"), DEMO, offset=4, limit=2)
    assert (first.total, len(first.items), len(second.items), len(last.items)) == (5, 2, 2, 1)
    starts = [r.start for r in first.items + second.items + last.items]
    assert starts == sorted(starts, reverse=True)
    assert first.items[0].run_id == data.run_id
    assert len({r.run_pk for r in first.items + second.items + last.items}) == 5


def test_page_size_is_capped(seeded: tuple[UiStores, Seeded]) -> None:
    stores, _ = seeded
    page = UiQueries(stores).runs(AllowDags("ui_demo"), DEMO, offset=0, limit=10_000)
    assert page.limit == 500


def test_try_curve_is_downsampled_and_keeps_the_spike(seeded: tuple[UiStores, Seeded]) -> None:
    stores, data = seeded
    detail = UiQueries(stores, max_points=100).try_detail(AllowDags("ui_demo"), data.latest.run_pk or 0)
    memory = next(c for c in detail.curves if c.metric == "memory_bytes")
    assert memory.unit == "bytes"
    assert memory.source_points == 600
    assert len(memory.t) <= 100
    assert max(v for v in memory.v if v is not None) == SPIKE_BYTES
    assert SPIKE_AT_S in memory.t


def test_try_shows_forecast_bands_plan_and_champion(seeded: tuple[UiStores, Seeded]) -> None:
    stores, data = seeded
    detail = UiQueries(stores).try_detail(AllowDags("ui_demo"), data.latest.run_pk or 0)
    assert detail.forecast is not None
    band = next(b for b in detail.forecast.bands if b.metric == "memory_bytes")
    assert max(band.p99) == pytest.approx(FORECAST_P99_PEAK)
    assert all(a <= b <= c for a, b, c in zip(band.p50, band.p90, band.p99, strict=True))
    assert detail.plan is not None
    assert detail.plan.initial.limits["memory_bytes"] == PLAN_INITIAL
    assert [s.at_s for s in detail.plan.steps] == [200.0]
    assert detail.champion is not None and detail.champion.champion == "scaled_curve"
    assert {s.estimator for s in detail.champion.scores} == {"scaled_curve", "flat_peak"}
    assert detail.tries == [1]


def test_limit_in_force_follows_the_plan_then_the_applied_shaping_event(
    seeded: tuple[UiStores, Seeded],
) -> None:
    stores, data = seeded
    detail = UiQueries(stores).try_detail(AllowDags("ui_demo"), data.latest.run_pk or 0)
    memory = next(s for s in detail.in_force if s.metric == "memory_bytes")
    assert list(zip(memory.t, memory.v, strict=True)) == [
        (0.0, PLAN_INITIAL),
        (200.0, PLAN_STEP),
        (250.0, SHAPED_TO),
        (600.0, SHAPED_TO),  # held until the try's end
    ]
    assert [e.verdict for e in detail.shaping] == ["applied"]
    planned = next(s for s in detail.planned if s.metric == "memory_bytes")
    assert planned.v[-1] == PLAN_STEP  # the plan itself knows nothing of shaping


def test_try_of_a_task_instance_is_found_without_its_try_number(seeded: tuple[UiStores, Seeded]) -> None:
    stores, data = seeded
    q = UiQueries(stores)
    detail = q.find_try(AllowDags("ui_demo"), DEMO, data.run_id, None)
    assert detail.run.run_pk == data.latest.run_pk
    with pytest.raises(NotFound):
        q.find_try(AllowDags("ui_demo"), DEMO, data.run_id, 7)
    with pytest.raises(NotFound):
        q.find_try(AllowDags("ui_demo"), DEMO, "no-such-run", None)


def test_overview_lists_only_readable_dags(seeded: tuple[UiStores, Seeded]) -> None:
    stores, _ = seeded
    q = UiQueries(stores)
    mine = q.overview(AllowDags("ui_demo"))
    assert [(t.dag_id, t.task_id) for t in mine.tasks] == [("ui_demo", "transform")]
    task = mine.tasks[0]
    assert (task.runs, task.oom_killed, task.champion) == (5, 1, "scaled_curve")
    assert task.memory_saved_bytes == pytest.approx(1024 * MIB - FORECAST_P99_PEAK)
    assert task.backtest_memory_under_rate == pytest.approx(0.083)
    assert task.live_coverage == 1.0  # every try's peak (the 700 MiB spike) is under the 760 MiB p99
    assert sum(d.runs for d in mine.daily) == 5
    both = q.overview(AllowDags("ui_demo", "ui_secret"))
    assert {t.dag_id for t in both.tasks} == {"ui_demo", "ui_secret"}
    assert sum(d.runs for d in both.daily) == 6
    assert q.overview(AllowDags()).tasks == []


def test_unreadable_dag_is_forbidden_for_runs_and_tries(seeded: tuple[UiStores, Seeded]) -> None:
    stores, data = seeded
    q = UiQueries(stores)
    with pytest.raises(Forbidden):
        q.runs(AllowDags("ui_secret"), DEMO, offset=0, limit=10)
    with pytest.raises(Forbidden):
        q.try_detail(AllowDags("ui_secret"), data.latest.run_pk or 0)
    with pytest.raises(Forbidden):
        q.find_try(AllowDags(), SECRET, "manual__1", 1)


def test_pool_shows_reserved_memory_and_hides_unreadable_held_back_tasks(
    seeded: tuple[UiStores, Seeded],
) -> None:
    stores, _ = seeded
    q = UiQueries(stores)
    assert [p.name for p in q.pools().pools] == [POOL]
    detail = q.pool_detail(AllowDags("ui_demo"), POOL, window_s=3600)
    assert max(detail.reserved_memory_bytes) >= PLAN_INITIAL
    assert detail.pool.capacity_requests["memory_bytes"] == 4 * 1024 * MIB
    used = [v for v in detail.used_memory_bytes if v is not None]
    assert used and 100 * MIB <= max(used) <= 700 * MIB  # the newest try's samples on the wall clock
    assert [(h.dag_id, h.decision) for h in detail.held_back] == [("ui_demo", "queued")]
    assert "0.5 GiB free" in detail.held_back[0].reason
    with pytest.raises(NotFound):
        q.pool_detail(AllowDags("ui_demo"), "no-such-pool", window_s=3600)


def test_column_wise_series_read_equals_the_stores_series(seeded: tuple[UiStores, Seeded]) -> None:
    stores, data = seeded
    pk = data.latest.run_pk or 0
    slow, fast = stores.runs.series(pk), stores.runs.series_fast(pk)
    assert fast.metrics == slow.metrics
    assert np.array_equal(fast.times, slow.times)
    for metric in slow.metrics:
        assert np.allclose(fast.values[metric], slow.values[metric], equal_nan=True)
    assert len(stores.runs.series_fast(10**9)) == 0
