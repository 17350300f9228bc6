"""The PredictiveLocalExecutor's shadow pre-stage: the state machine (injected clock, fake runner,
threads started by hand), the executor glue (held tries go to the coordinator when their shadow
ends), the real runner on a real store and process tree, and the command resolution."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from airflow_predictive import runtime
from airflow_predictive.core.model.query import ForecastQuery, ForecastSource
from airflow_predictive.core.model.resources import MIB, Metric, ResourceVector
from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunSource, TaskKey
from airflow_predictive.core.shadow.policy import ShadowMode
from airflow_predictive.executors.local_shadow import (
    ExecutorShadows,
    LocalShadowRunner,
    Phase,
    ShadowPreStage,
    ShadowRequest,
    ShadowResult,
    render_minimal,
)
from airflow_predictive.executors.opt_in import task_settings
from airflow_predictive.operators.shadow_local import SHADOW_ENV, bash_command_of
from airflow_predictive.storage import migrate

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

KEY = TaskKey("dag", "work")
RUN = RunIdentity(KEY, "manual__1", 1)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Threads:
    """Spawned jobs, run when the test says (no real thread)."""

    jobs: list[Callable[[], None]] = field(default_factory=list)

    def __call__(self, target: Callable[[], None], name: str) -> None:
        self.jobs.append(target)

    def run(self, i: int = 0) -> None:
        self.jobs.pop(i)()


class Runner:
    """A fake runner: says it started (budget ``budget_s``) and returns ``result``, or raises."""

    def __init__(self, result: ShadowResult | None = None, *, budget_s: float | None = 5.0) -> None:
        self.result = result or ShadowResult(True, "budget", "ok", reforecast_stored=True)
        self.budget_s = budget_s
        self.calls: list[ShadowRequest] = []
        self.raise_: Exception | None = None

    def __call__(self, request: ShadowRequest, started: Callable[[str, float], None]) -> ShadowResult:
        self.calls.append(request)
        if self.budget_s is not None:
            started("cold start; budget 5 s", self.budget_s)
        if self.raise_ is not None:
            raise self.raise_
        return self.result


def _stage(runner: Any, *, slots: int = 2) -> tuple[ShadowPreStage, Clock, Threads]:
    clock, threads = Clock(), Threads()
    return ShadowPreStage(runner, clock=clock, grace_s=10.0, slots=slots, spawn=threads), clock, threads


def _request(run: RunIdentity = RUN) -> ShadowRequest:
    return ShadowRequest(run, ShadowMode.ALWAYS, ResourceVector(memory_bytes=64 * MIB))


# -- the state machine -----------------------------------------------------------------------------


def test_a_shadow_is_reported_started_then_done_and_the_heartbeat_never_waits_for_it() -> None:
    stage, _clock, threads = _stage(Runner())
    stage.submit("k", _request())
    assert stage.phase("k") is Phase.DECIDING and len(threads.jobs) == 1
    assert stage.poll() == []  # its thread has not run: nothing to report, nothing waited for
    job = threads.jobs.pop()
    job()  # the thread: started, then ended
    events = stage.poll()
    assert [e.kind for e in events] == ["started", "done"]
    assert events[0].note.startswith("cold start")
    assert events[1].result is not None and events[1].result.reforecast_stored
    assert "k" not in stage and stage.poll() == []


def test_a_shadow_running_past_its_budget_and_grace_is_given_up_and_its_late_result_ignored() -> None:
    import threading

    entered, go = threading.Event(), threading.Event()
    spawned: list[threading.Thread] = []

    def slow(request: ShadowRequest, started: Callable[[str, float], None]) -> ShadowResult:
        started("cold start", 5.0)
        entered.set()
        go.wait(30)  # the shadow "runs" until the test lets it end
        return ShadowResult(True, "budget", "late", reforecast_stored=True)

    def spawn(target: Callable[[], None], name: str) -> None:
        spawned.append(threading.Thread(target=target, name=name, daemon=True))
        spawned[-1].start()

    clock = Clock()
    stage = ShadowPreStage(slow, clock=clock, grace_s=10.0, slots=1, spawn=spawn)
    stage.submit("k", _request())
    assert entered.wait(30)
    clock.t += 14.0
    assert [e.kind for e in stage.poll()] == ["started"]  # within budget (5) + grace (10): still held
    clock.t += 2.0
    [done] = stage.poll()
    assert done.kind == "done" and done.result is not None and done.result.reason == "timed_out"
    stage.submit("k2", _request())
    assert stage.phase("k2") is Phase.WAITING  # the abandoned shadow still holds the only slot
    go.set()
    spawned[0].join(30)
    assert all(e.key == "k2" for e in stage.poll())  # its late result is dropped ...
    assert len(spawned) == 2  # ... and its slot freed: k2's shadow started


def test_a_try_decided_not_worth_a_shadow_is_released_without_a_start() -> None:
    stage, clock, threads = _stage(Runner(budget_s=None))
    stage.submit("k", _request())

    def runner(request: ShadowRequest, started: Callable[[str, float], None]) -> ShadowResult:
        return ShadowResult(False, "well_known", "3 runs, forecast fits")

    stage.runner = runner
    clock.t += 9.0
    assert stage.poll() == []  # deciding, within its 10 s grace
    threads.run()
    [done] = stage.poll()  # decided not to shadow: done, never reported "started"
    assert done.kind == "done" and done.result is not None and done.result.reason == "well_known"


def test_deciding_for_longer_than_the_grace_gives_up() -> None:
    stage, clock, _threads = _stage(Runner())
    stage.submit("k", _request())
    clock.t += 10.5
    [done] = stage.poll()
    assert done.result is not None and done.result.reason == "timed_out" and not done.result.shadowed


def test_a_try_that_waits_for_a_slot_longer_than_the_grace_goes_unshadowed() -> None:
    stage, clock, threads = _stage(Runner(), slots=1)
    stage.submit("a", _request())
    stage.submit("b", _request(RunIdentity(TaskKey("dag", "other"), "manual__1", 1)))
    assert stage.phase("b") is Phase.WAITING and len(threads.jobs) == 1
    clock.t += 11.0
    events = {e.key: e for e in stage.poll()}
    assert events["b"].result is not None and events["b"].result.reason == "no_slot"
    assert events["a"].result is not None and events["a"].result.reason == "timed_out"


def test_a_runner_that_raises_lets_the_task_go_unshadowed() -> None:
    runner = Runner(budget_s=None)
    runner.raise_ = RuntimeError("boom")
    stage, _clock, threads = _stage(runner)
    stage.submit("k", _request())
    threads.run()
    [done] = stage.poll()
    assert done.result is not None and done.result.reason == "error" and "boom" in done.result.note


def test_a_thread_that_cannot_start_lets_the_task_go_unshadowed() -> None:
    def no_threads(target: Callable[[], None], name: str) -> None:
        raise RuntimeError("can't start new thread")

    stage = ShadowPreStage(Runner(), clock=Clock(), spawn=no_threads)
    stage.submit("k", _request())
    [done] = stage.poll()
    assert done.result is not None and done.result.reason == "error"


# -- the executor glue -----------------------------------------------------------------------------


class Coordinator:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def hold_for_shadow(self, run: RunIdentity, note: str) -> None:
        self.calls.append(("hold", note))

    def shadow_ended(self, run: RunIdentity, end: str, note: str, summary: dict[str, Any]) -> None:
        self.calls.append(("ended", end))

    def submit(self, key: Any, run: RunIdentity, settings: Any, query: Any, priority: int) -> None:
        self.calls.append(("submit", key))


def test_a_task_that_asks_is_held_and_planned_only_when_its_shadow_ends() -> None:
    stage, _clock, threads = _stage(Runner())
    coordinator = Coordinator()
    shadows = ExecutorShadows(stage, coordinator)  # type: ignore[arg-type]
    asks = task_settings({"predictive": {"memory": "64Mi", "shadow_run": True}})
    query = ForecastQuery(KEY, run_id=RUN.run_id)
    assert shadows.take("k", RUN, asks, query, 1)
    assert "k" in shadows and coordinator.calls == []
    threads.run()
    assert shadows.release() == ["k"]
    assert coordinator.calls == [("hold", "cold start; budget 5 s"), ("ended", "budget"), ("submit", "k")]
    assert "k" not in shadows


def test_a_task_that_does_not_ask_is_planned_at_once() -> None:
    stage, _clock, threads = _stage(Runner())
    shadows = ExecutorShadows(stage, Coordinator())  # type: ignore[arg-type]
    silent = task_settings({"predictive": {"memory": "64Mi"}})  # local tasks: False by default
    assert silent.shadow_run is ShadowMode.NEVER
    assert not shadows.take("k", RUN, silent, ForecastQuery(KEY), 1)
    assert threads.jobs == [] and "k" not in shadows


# -- the real runner (real store, real process tree) -------------------------------------------------


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sqlalchemy import create_engine

    path = tmp_path_factory.mktemp("local-shadow-store") / "template.db"
    engine = create_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, migrated: Path) -> Iterator[None]:
    shutil.copy(migrated, tmp_path / "p.db")
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN", f"sqlite:///{tmp_path / 'p.db'}")
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__BACKEND", "none")  # observe-only: the process tree
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SHADOW_DEADLINE", "2")
    runtime.reset_runtime()
    yield
    runtime.reset_runtime()


def _runner(resolve: Callable[[RunIdentity], Any] | None = None) -> LocalShadowRunner:
    return LocalShadowRunner(runtime.get_runtime().local_backend(), resolve=resolve or (lambda run: None))


def _starts() -> tuple[list[tuple[str, float]], Callable[[str, float], None]]:
    seen: list[tuple[str, float]] = []
    return seen, lambda note, budget: seen.append((note, budget))


@pytest.mark.usefixtures("store")
def test_a_cold_start_shadow_of_its_shadow_cmds_is_recorded_and_serves_the_real_try(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    cmd = (
        f'{sys.executable} -c "import os, time; b = bytearray(120 * 2**20); '
        f"open('{flag}', 'w').write(os.environ.get('{SHADOW_ENV}', '')); time.sleep(30)\""
    )
    seen, started = _starts()
    request = ShadowRequest(
        RUN, ShadowMode.AUTO, ResourceVector(memory_bytes=64 * MIB), ("/bin/bash", "-c", cmd), 30.0
    )
    result = _runner()(request, started)
    assert result.shadowed and result.reason == "budget" and result.reforecast_stored, result
    assert seen and seen[0][1] == 2.0  # budget: min(deadline 2 s, ...)
    assert flag.read_text() == "1"  # it saw AIRFLOW_PREDICTIVE_SHADOW=1
    rt = runtime.get_runtime()
    [shadow] = rt.run_store().runs(KEY, source=RunSource.SHADOW)
    assert shadow.outcome is Outcome.TIMED_OUT and shadow.operator == "PredictiveLocalExecutor"
    served = rt.forecasts().forecast_for(
        ForecastQuery(KEY, declared=ResourceVector(memory_bytes=64 * MIB), run_id=RUN.run_id)
    )
    assert served.source is ForecastSource.SHADOW
    # the prefix plus the task process the real try runs under, with headroom: above the 64 MiB declared
    assert served.forecast is not None
    assert (served.forecast.peaks(0.99).get(Metric.MEMORY_BYTES) or 0) > (120 + 64) * MIB
    again = _runner()(request, started)  # a retry, or a ShadowRunOperator that ran first
    assert not again.shadowed and again.reason == "already_shadowed"
    assert len(rt.run_store().runs(KEY, source=RunSource.SHADOW)) == 1


@pytest.mark.usefixtures("store")
def test_a_failing_shadow_command_leaves_the_real_try_unshadowed() -> None:
    request = ShadowRequest(RUN, ShadowMode.ALWAYS, ResourceVector(memory_bytes=64 * MIB), ("/bin/false",))
    result = _runner()(request, _starts()[1])
    assert result.shadowed and result.reason == "failed" and not result.reforecast_stored
    rt = runtime.get_runtime()
    [shadow] = rt.run_store().runs(KEY, source=RunSource.SHADOW)
    assert shadow.outcome is Outcome.FAILED
    served = rt.forecasts().forecast_for(ForecastQuery(KEY, run_id=RUN.run_id))
    assert served.source is not ForecastSource.SHADOW


@pytest.mark.usefixtures("store")
def test_the_executor_ending_kills_a_shadow_still_running() -> None:
    import threading

    from airflow_predictive.core.shadow.policy import ShadowSettings

    runner = LocalShadowRunner(
        runtime.get_runtime().local_backend(),
        resolve=lambda run: None,
        settings=lambda: ShadowSettings(deadline_s=120.0, min_s=60.0),  # a 60 s budget
    )
    going = threading.Event()
    results: list[ShadowResult] = []
    request = ShadowRequest(RUN, ShadowMode.ALWAYS, shadow_cmds=("/bin/sleep", "300"))
    job = threading.Thread(target=lambda: results.append(runner(request, lambda n, b: going.set())))
    job.start()
    assert going.wait(30)
    for _ in range(200):  # the process is up once the runner tracks it
        if runner._active:
            break
        threading.Event().wait(0.05)
    runner.close()
    job.join(60)
    assert not job.is_alive() and results, "the shadow outlived the executor's end"
    assert results[0].shadowed and results[0].reason != "budget", results[0]
    assert runner(request, lambda n, b: None).reason != "budget"  # no new shadow once closed


@pytest.mark.usefixtures("store")
def test_auto_leaves_a_well_known_task_alone_and_true_shadows_it_anyway() -> None:
    from datetime import UTC, datetime, timedelta

    from airflow_predictive.core.model.runs import RunRecord

    store = runtime.get_runtime().run_store()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(3):  # [predictive] shadow_min_runs successful runs: no cold start
        pk = store.start_run(RunRecord(RunIdentity(KEY, f"r{i}"), start=t0 + timedelta(hours=i)))
        store.finish_run(pk, outcome=Outcome.SUCCESS, end=t0 + timedelta(hours=i, minutes=1))
    seen, started = _starts()
    auto = _runner()(ShadowRequest(RUN, ShadowMode.AUTO, shadow_cmds=("true",)), started)
    assert not auto.shadowed and auto.reason == "well_known" and seen == []
    asked = _runner()(ShadowRequest(RUN, ShadowMode.ALWAYS, shadow_cmds=("true",)), started)
    assert asked.shadowed and asked.reason == "completed" and seen and "shadow_run=True" in seen[0][0]


@pytest.mark.usefixtures("store")
def test_auto_without_a_command_never_runs_the_tasks_code() -> None:
    seen, started = _starts()
    result = _runner()(ShadowRequest(RUN, ShadowMode.AUTO), started)
    assert not result.shadowed and result.reason == "no_command" and seen == []
    assert runtime.get_runtime().run_store().runs(KEY, source=RunSource.SHADOW) == []


@pytest.mark.usefixtures("store")
def test_a_resolved_bash_command_is_shadowed_and_an_unresolvable_one_is_not(tmp_path: Path) -> None:
    def resolve(run: RunIdentity) -> tuple[tuple[str, ...], dict[str, str]]:
        return ("/bin/bash", "-c", f"echo -n $SHADOW_OUT_VALUE > {tmp_path / 'out'}"), {
            "SHADOW_OUT_VALUE": "seen"
        }

    result = _runner(resolve)(ShadowRequest(RUN, ShadowMode.ALWAYS), _starts()[1])
    assert result.shadowed and result.reason == "completed", result
    assert (tmp_path / "out").read_text() == "seen"  # the task's env reached the shadow

    def unresolvable(run: RunIdentity) -> None:
        raise ValueError("its bash_command needs template context the executor does not have")

    result = _runner(unresolvable)(ShadowRequest(RUN, ShadowMode.ALWAYS), _starts()[1])
    assert not result.shadowed and result.reason == "no_command"


@pytest.mark.usefixtures("store")
def test_local_shadow_run_is_the_shadow_run_of_local_tasks_that_set_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_predictive.executors.local_shadow import executor_shadows

    backend = runtime.get_runtime().local_backend()
    assert executor_shadows(Coordinator(), backend).default is ShadowMode.NEVER  # type: ignore[arg-type]
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__LOCAL_SHADOW_RUN", "auto")
    runtime.reset_runtime()
    shadows = executor_shadows(Coordinator(), runtime.get_runtime().local_backend())  # type: ignore[arg-type]
    assert shadows.default is ShadowMode.AUTO
    assert task_settings({"predictive": {}}, default_shadow=shadows.default).shadow_run is ShadowMode.AUTO
    said = task_settings({"predictive": {"shadow_run": False}}, default_shadow=shadows.default)
    assert said.shadow_run is ShadowMode.NEVER  # a task's own setting wins


# -- what a local shadow replays -------------------------------------------------------------------


def test_a_template_is_rendered_with_what_the_executor_knows_or_refused() -> None:
    context = {"run_id": "manual__7", "params": {"n": 3}}
    assert render_minimal("echo {{ run_id }} {{ params.n }}", context) == "echo manual__7 3"
    assert render_minimal("echo plain", {}) == "echo plain"
    with pytest.raises(ValueError, match="template context"):
        render_minimal("echo {{ ds }}", context)
    with pytest.raises(ValueError, match="template file"):
        render_minimal("scripts/run.sh ", context, (".sh", ".bash"))


def test_only_a_bash_command_is_a_command_to_replay() -> None:
    @dataclass
    class Task:
        task_type: str
        bash_command: Any = None

    assert bash_command_of(Task("BashOperator", "echo {{ x }}"), lambda t: t.upper()) == "ECHO {{ X }}"
    assert bash_command_of(Task("PythonOperator")) is None
    assert bash_command_of(Task("_BashDecoratedOperator", "@task.bash placeholder")) is None
    assert bash_command_of(Task("BashOperator", "  ")) is None
    assert bash_command_of(None) is None
