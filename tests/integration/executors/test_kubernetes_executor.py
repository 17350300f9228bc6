"""Real Airflow (`dags test --use-executor`, API server) with the PredictiveKubernetesExecutor on the
emulator's process kubelet (worker pods are real processes under real cgroups), one DAG run for the
module (dags_kubernetes.py):

- two tasks plan 800Mi each under a 1.5Gi ResourceQuota: the second waits (QUEUED, held by
  admission) instead of its pod being refused by the quota, runs once the first ends, and each
  worker pod carries the planned requests/limits;
- a task whose seeded history plans a low start and a timed step: its pod starts on the plan's
  initial resources, the step is applied in place (resize subresource: pod spec and status, and
  the limit in the container's real cgroup), the ledger's reservation follows, the step is stored;
- the worker pods record their tasks in the scheduler's store (the executor passes it on);
- a task whose pod is OOM-killed by its cgroup is retried with a plan from that kill (max(+100 MiB,
  x1.2), more when still rising) and succeeds; the kill is stored, the retry says why.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_predictive.core.model.quantity import parse_quantity
from airflow_predictive.core.model.query import ForecastQuery
from airflow_predictive.core.model.resources import MIB, ResourceVector
from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunSource, TaskKey
from airflow_predictive.core.scheduling.planner import PlanSettings, plan_from_forecast
from airflow_predictive.emulator.kubernetes.resources import PODS
from airflow_predictive.storage.engine import engine_for
from airflow_predictive.storage.ledger_store import DecisionLog, SqlLedger
from airflow_predictive.storage.run_store import SqlRunStore
from airflow_predictive.training.serving import StoredForecastService
from tests.integration.airflow_runs.airflow_env import AirflowEnv, assert_nothing_left_reserved
from tests.integration.executors.kube_env import CgroupWatch, drop_quota, executor_env, seed_stepped

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_predictive.core.model.plan import AllocationPlan
    from airflow_predictive.emulator.kubernetes.emulator import Emulator

pytestmark = [pytest.mark.airflow, pytest.mark.cgroups]

HERE = Path(__file__).resolve().parent
DAG = "predictive_k8s_quota"
MIN_STEP_S = 5.0  # [predictive] plan_min_step: a step a few seconds in (default 30 s)
OOM_DECLARED_MIB = 400  # as in dags_kubernetes.py
LOW_MIB, HIGH_MIB, STEP_AT_S = 400, 560, 6  # `stepped`'s seeded curve: LOW until STEP_AT_S, then HIGH


class Run:
    def __init__(self, env: AirflowEnv, out: str, watch: CgroupWatch, step_plan: AllocationPlan) -> None:
        self.env, self.out, self.watch, self.step_plan = env, out, watch, step_plan
        self.engine = engine_for(env.predictive_url)

    def tis(self) -> dict[str, tuple[str, int, str]]:
        with sqlite3.connect(self.env.home / "airflow.db") as db:
            rows = db.execute(
                "select task_id, state, try_number, run_id from task_instance where dag_id = ?", (DAG,)
            ).fetchall()
        return {t: (s, n, r) for t, s, n, r in rows}

    def decisions(self, task: str, kind: str) -> list[dict[str, Any]]:
        rows = DecisionLog(self.engine).recent(TaskKey(DAG, task), limit=200)
        return [r for r in reversed(list(rows)) if r["kind"] == kind]


@pytest.fixture(scope="module")
def run(process_emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    home = tmp_path_factory.mktemp("airflow-k8s-predictive")
    env = executor_env(
        process_emulator,
        home,
        "dags_kubernetes.py",
        "1536Mi",
        {
            "AIRFLOW__PREDICTIVE__PLAN_MIN_STEP": str(MIN_STEP_S),
        },
    )
    env.migrate()
    engine = engine_for(env.predictive_url)
    seed_stepped(SqlRunStore(engine), TaskKey(DAG, "stepped"), LOW_MIB, HIGH_MIB, STEP_AT_S)
    # what the executor will plan for `stepped` (the same service and planner, on the same history)
    served = StoredForecastService(engine).forecast_for(ForecastQuery(TaskKey(DAG, "stepped")))
    assert served.forecast is not None, (served.source, served.note)
    step_plan = plan_from_forecast(
        served.forecast, declared=ResourceVector(), settings=PlanSettings(min_step_s=MIN_STEP_S)
    ).plan
    assert step_plan.steps and 0 < step_plan.steps[0].at_s <= 10, step_plan
    env.start_api_server()
    watch = CgroupWatch(process_emulator, DAG.replace("_", "-"))
    watch.start()
    try:
        out = env.dags_test(DAG, {})
        (home / "dags-test.log").write_text(out.stdout + out.stderr)  # the executor's log lines
        watch_pods_end(process_emulator)
        watch.stop()
        yield Run(env, out.stdout + out.stderr, watch, step_plan)
    finally:
        watch.stop()
        env.stop()
        drop_quota(process_emulator)


def ours(emulator: Emulator, task: str | None = None) -> list[dict[str, Any]]:
    pods = [
        p
        for p in emulator.store.list(PODS, "default")[0]
        if (p["metadata"].get("labels") or {}).get("dag_id") == DAG
    ]
    if task is not None:
        pods = [p for p in pods if p["metadata"]["labels"].get("task_id") == task]
    return sorted(pods, key=lambda p: int(p["metadata"]["labels"].get("try_number", 0)))


def watch_pods_end(emulator: Emulator) -> None:
    """A task reports success through the API before its worker process has exited."""
    deadline = time.monotonic() + 60
    while any(p["status"]["phase"] == "Running" for p in ours(emulator)) and time.monotonic() < deadline:
        time.sleep(0.2)


def _memory(resources: dict[str, Any], side: str) -> float:
    return parse_quantity(resources[side]["memory"])


def test_every_task_succeeds(run: Run) -> None:
    tis = run.tis()
    states = {t: s for t, (s, _n, _r) in tis.items()}
    assert states == {t: "success" for t in ("pod_0", "pod_1", "stepped", "oom")}, run.out[-4000:]
    assert tis["oom"][1] == 2  # succeeded on its retry
    print("cgroup peaks MiB:", {n: round(p / MIB) for n, p in run.watch.peaks.items()})


def test_the_second_task_waits_for_the_quota_instead_of_failing(run: Run) -> None:
    decisions = {t: [d["decision"] for d in run.decisions(t, "admission")] for t in ("pod_0", "pod_1")}
    assert sorted(len(d) for d in decisions.values()) == [1, 2], decisions
    assert any("queued" in d for d in decisions.values())
    assert "exceeded quota" not in run.out
    assert_nothing_left_reserved(SqlLedger(run.engine), (run.out,))


def test_each_quota_worker_pod_carries_the_planned_resources(run: Run, process_emulator: Emulator) -> None:
    pods = ours(process_emulator, "pod_0") + ours(process_emulator, "pod_1")
    assert len(pods) == 2, [p["metadata"]["name"] for p in pods]
    for pod in pods:
        res = pod["spec"]["containers"][0]["resources"]
        assert _memory(res, "requests") == 800 * MIB == _memory(res, "limits")
        assert pod["status"]["phase"] == "Succeeded", json.dumps(pod["status"])[:500]


def test_a_timed_step_is_applied_in_place_to_the_pod_and_its_cgroup(
    run: Run, process_emulator: Emulator
) -> None:
    plan = run.step_plan
    initial = plan.initial.limits.memory_bytes
    stepped = plan.steps[0].allocation.limits.memory_bytes
    assert initial is not None and stepped is not None and stepped > initial
    [plan_row] = run.decisions("stepped", "plan")
    planned = plan_row["payload"]["plan"]
    assert planned["initial"]["limits"]["memory_bytes"] == initial, planned  # the executor's own plan
    assert planned["steps"][0]["limits"]["memory_bytes"] == stepped
    [pod] = ours(process_emulator, "stepped")
    name = pod["metadata"]["name"]
    # the pod was created with the initial plan, then resized in place: the same pod, no restart
    assert run.watch.limits[name][:2] == [int(initial), int(stepped)], run.watch.limits
    res = pod["spec"]["containers"][0]["resources"]
    assert _memory(res, "limits") == stepped  # the resize subresource changed the spec ...
    status = pod["status"]["containerStatuses"][0]
    assert parse_quantity(status["resources"]["limits"]["memory"]) == stepped  # ... and what runs
    assert status.get("restartCount", 0) == 0 and pod["status"]["phase"] == "Succeeded"
    assert run.watch.peaks[name] > initial  # it really grew past the initial limit after the step


def test_the_ledger_follows_the_step_and_the_step_is_stored(run: Run) -> None:
    step_plan = run.step_plan.steps[0]
    stepped = step_plan.allocation.limits.memory_bytes
    [step] = run.decisions("stepped", "step")
    assert step["decision"] in ("applied", "pending"), step  # pending: sent, the kubelet actuates it
    assert step["payload"]["allocated"]["limits"]["memory_bytes"] == stepped
    sent_at = step["payload"]["at_s"]
    assert sent_at >= step_plan.at_s
    _state, try_number, run_id = run.tis()["stepped"]
    [reservation] = SqlLedger(run.engine).of_run(RunIdentity(TaskKey(DAG, "stepped"), run_id, try_number))
    assert reservation.id == step["payload"]["reservation"]
    pieces = list(reservation.pieces())
    assert pieces[0][2].limits.memory_bytes == run.step_plan.initial.limits.memory_bytes
    assert all(a.limits.memory_bytes == stepped for _s, _e, a in pieces[1:]), pieces
    # the adjust after the resize: a piece from when the step was really sent (the heartbeat after
    # the plan's time), beside the planned one
    starts = [s - reservation.start for s, _e, _a in pieces]
    assert any(abs(t - sent_at) < 1.0 for t in starts[1:]), (starts, sent_at)
    assert reservation.state.value == "released"


def test_an_oom_killed_pod_is_retried_from_the_kill_and_succeeds(
    run: Run, process_emulator: Emulator
) -> None:
    first, retry_pod = ours(process_emulator, "oom")
    killed = first["status"]["containerStatuses"][0]["state"]["terminated"]
    assert killed["reason"] == "OOMKilled", json.dumps(first["status"])[:800]
    assert _memory(first["spec"]["containers"][0]["resources"], "limits") == OOM_DECLARED_MIB * MIB
    [oom] = run.decisions("oom", "oom")
    assert oom["try_number"] == 1 and oom["payload"]["peak"]["memory_bytes"] == OOM_DECLARED_MIB * MIB
    plans = {d["try_number"]: d for d in run.decisions("oom", "plan")}
    assert set(plans) == {1, 2}, plans
    retry = plans[2]["payload"]["plan"]
    assert retry["source"] == "oom_retry" and "OOM retry: peak 400.0 MiB" in retry["why"], retry
    limit = retry["initial"]["limits"]["memory_bytes"]
    declared = OOM_DECLARED_MIB * MIB
    assert limit >= max(declared + 100 * MIB, 1.2 * declared)
    assert _memory(retry_pod["spec"]["containers"][0]["resources"], "limits") == limit
    assert retry_pod["status"]["phase"] == "Succeeded"
    assert "was OOM-killed" in run.out and "OOM retry: peak" in run.out


def test_the_worker_pods_record_their_tasks_in_the_schedulers_store(run: Run) -> None:
    """The executor passes its store to the pods it launches (the SQLite sibling, as to local
    tasks): each pod's task is recorded with its samples where the scheduler plans from."""
    store = SqlRunStore(run.engine)
    for task in ("pod_0", "pod_1", "stepped"):
        live = [r for r in store.runs(TaskKey(DAG, task)) if r.identity.source is RunSource.LISTENER]
        assert live and live[-1].outcome is Outcome.SUCCESS and live[-1].n_samples > 0, (task, live)
    [stepped] = [r for r in store.runs(TaskKey(DAG, "stepped")) if r.identity.source is RunSource.LISTENER]
    assert (stepped.peak.memory_bytes or 0) > run.step_plan.initial.limits.memory_bytes  # grew after the step
