"""Real `airflow scheduler` processes running the PredictiveKubernetesExecutor on the emulator's
process kubelet (each pod's container is a real process under a real cgroup), one DAG run for the
module (dags_kubernetes_restart.py), and the first scheduler SIGKILLed mid-run:

- live shaping: the memory ramp past its planned 400Mi completes with shaping on -- its pod resized
  in place (pod spec, container status and the limit in the container's real cgroup change; same
  pod, no restart), every grow stored and followed by the ledger's reservation, the pod protected
  from node consolidation -- and is OOM-killed with shaping off;
- the restart: the second scheduler adopts the running pods (KubernetesExecutor's own adoption,
  the pods relabelled to its job) and with them the tries' predictive state: the reservations the
  dead executor held are taken over (their plans and the plans' clock), the shaped pod is grown
  again by the new executor's shaping in the ramp's second phase, the plan's timed step due after
  the restart is applied in place by the new executor, and nothing is left reserved.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_predictive.backends.nodes.karpenter import DO_NOT_DISRUPT
from airflow_predictive.core.model.quantity import parse_quantity
from airflow_predictive.core.model.resources import MIB, Metric
from airflow_predictive.core.model.runs import RunIdentity, TaskKey
from airflow_predictive.core.shaping.events import Action, ShapingEvent, Verdict
from airflow_predictive.emulator.kubernetes.resources import PODS
from airflow_predictive.storage.engine import engine_for
from airflow_predictive.storage.ledger_store import DecisionLog, SqlLedger
from airflow_predictive.storage.run_store import SqlRunStore
from airflow_predictive.storage.shaping_store import SqlShapingEventStore
from tests.integration.airflow_runs.airflow_env import AirflowEnv, assert_nothing_left_reserved
from tests.integration.executors.kube_env import CgroupWatch, drop_quota, executor_env, seed_stepped

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import datetime

    from airflow_predictive.emulator.kubernetes.emulator import Emulator

pytestmark = [pytest.mark.airflow, pytest.mark.cgroups]

HERE = Path(__file__).resolve().parent
DAG = "predictive_k8s_restart"
LIMIT = 400 * MIB  # as in dags_kubernetes_restart.py
LOW_MIB, HIGH_MIB, STEP_AT_S = 400, 560, 40  # `stepped`'s seeded curve: its step is due after the restart
PAGE = 4096


class Run:
    def __init__(self, env: AirflowEnv, emulator: Emulator, watch: CgroupWatch) -> None:
        self.env, self.emulator, self.watch = env, emulator, watch
        self.engine = engine_for(env.predictive_url)
        self.new_pid = 0
        self.killed_at: datetime | None = None
        self.logs = ""

    def tis(self) -> dict[str, tuple[str, int, str]]:
        with sqlite3.connect(self.env.home / "airflow.db") as db:
            rows = db.execute(
                "select task_id, state, try_number, run_id from task_instance where dag_id = ?", (DAG,)
            ).fetchall()
        return {t: (s, n, r) for t, s, n, r in rows}

    def decisions(self, task: str, kind: str | None = None) -> list[dict[str, Any]]:
        rows = reversed(list(DecisionLog(self.engine).recent(TaskKey(DAG, task), limit=200)))
        return [r for r in rows if kind is None or r["kind"] == kind]

    def grows(self, task: str) -> list[ShapingEvent]:
        return [
            e
            for e in SqlShapingEventStore(self.engine).events(limit=100_000)
            if e.run_key.startswith(f"{DAG}/{task}/")
            and e.metric is Metric.MEMORY_BYTES
            and e.action is Action.GROW
            and e.verdict is Verdict.APPLIED
        ]

    def pods(self, task: str | None = None) -> list[dict[str, Any]]:
        return [
            p
            for p in self.emulator.store.list(PODS, "default")[0]
            if (p["metadata"].get("labels") or {}).get("dag_id") == DAG
            and (task is None or p["metadata"]["labels"].get("task_id") == task)
        ]


def _wait(what: str, check: Any, timeout: float, logs: Any) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n{logs()}")


@pytest.fixture(scope="module")
def run(process_emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    home = tmp_path_factory.mktemp("airflow-k8s-restart")
    env = executor_env(
        process_emulator,
        home,
        "dags_kubernetes_restart.py",
        "4Gi",
        {
            "AIRFLOW__PREDICTIVE__KUBERNETES_SHAPING_INTERVAL": "0.5",
            "AIRFLOW__PREDICTIVE__PLAN_MIN_STEP": "5",
            # a dead scheduler is seen as dead after 20 s; orphans are looked for every 2 s. Not
            # less: a live scheduler whose loop stalls past the threshold (seen on a loaded 2-core
            # machine: 10 s) marks itself failed and resets its own running tasks
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "20",
            "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "2",
        },
    )
    env.migrate()
    seed_stepped(
        SqlRunStore(engine_for(env.predictive_url)), TaskKey(DAG, "stepped"), LOW_MIB, HIGH_MIB, STEP_AT_S, 80
    )
    for args in (("dags", "reserialize"), ("dags", "trigger", DAG)):  # unpaused on creation
        out = env.airflow(*args)
        assert out.returncode == 0, (args, out.stdout[-2000:], out.stderr[-3000:])
    env.start_api_server()
    watch = CgroupWatch(process_emulator, DAG.replace("_", "-"))
    watch.start()
    result = Run(env, process_emulator, watch)

    def logs() -> str:
        files = sorted(home.glob("scheduler-*.log"))
        return "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-4000:]}" for p in files)

    try:
        old = env.start_scheduler()
        # the first scheduler shapes the ramp's first phase; its pods run when it dies
        _wait("the first scheduler's first grow", lambda: result.grows("ramp_shaped"), 240, logs)
        _wait("`stepped`'s pod", lambda: result.pods("stepped"), 60, logs)
        assert not result.decisions("stepped", "step")  # its step is not due yet
        os.killpg(old.pid, 9)  # as a crash or an OOM-killed scheduler container: nothing released
        old.wait(timeout=30)
        result.killed_at = max(e.at for e in result.grows("ramp_shaped"))  # no decision of it after this
        new = env.start_scheduler()
        result.new_pid = new.pid
        for task in ("ramp_shaped", "stepped"):
            _wait(f"the adoption of {task}", lambda t=task: result.decisions(t, "adoption"), 120, logs)
        (home / "restarted").write_text("")  # the ramps' second phase starts
        _wait(
            "the DAG run's end",
            lambda: all(s in ("success", "failed") for s, _n, _r in result.tis().values()),
            240,
            logs,
        )
        # a task reports its end before its worker process exits; a pod's end releases its
        # reservation (the executor's watcher sees it)
        _wait(
            "the pods' end",
            lambda: all(p["status"]["phase"] in ("Succeeded", "Failed") for p in result.pods()),
            60,
            logs,
        )
        _wait("the releases", lambda: not SqlLedger(result.engine).reservations(), 60, logs)
        watch.stop()
        result.logs = logs()
        yield result
    finally:
        watch.stop()
        env.stop()
        drop_quota(process_emulator)


def test_every_task_ends_as_it_must(run: Run) -> None:
    states = {t: s for t, (s, _n, _r) in run.tis().items()}
    expected = {"ramp_shaped": "success", "ramp_unshaped": "failed", "stepped": "success"}
    assert states == expected, run.logs[-6000:]


def test_the_unshaped_ramp_is_oom_killed_at_its_planned_limit(run: Run) -> None:
    [killed] = run.pods("ramp_unshaped")
    term = killed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["reason"] == "OOMKilled", json.dumps(killed["status"])[:800]
    assert parse_quantity(killed["spec"]["containers"][0]["resources"]["limits"]["memory"]) == LIMIT
    assert run.grows("ramp_unshaped") == []  # shaping off: nothing decided, nothing stored
    assert DO_NOT_DISRUPT not in (killed["metadata"].get("annotations") or {})


def test_the_shaped_pod_is_grown_in_place_by_both_schedulers(run: Run) -> None:
    [pod] = run.pods("ramp_shaped")
    name = pod["metadata"]["name"]
    limits = run.watch.limits[name]
    print("cgroup memory limits MiB:", [round(v / MIB) for v in limits])
    assert limits[0] == LIMIT and len(limits) >= 3 and limits == sorted(limits), limits  # grown only
    spec = parse_quantity(pod["spec"]["containers"][0]["resources"]["limits"]["memory"])
    status = pod["status"]["containerStatuses"][0]
    assert spec > LIMIT and parse_quantity(status["resources"]["limits"]["memory"]) == spec  # what runs
    assert abs(limits[-1] - spec) < PAGE  # ... and what the kernel enforces (rounded to a page)
    assert status.get("restartCount", 0) == 0 and pod["status"]["phase"] == "Succeeded"  # same pod
    assert run.watch.peaks[name] > LIMIT  # it really used more than it was planned with
    [adoption] = run.decisions("ramp_shaped", "adoption")
    grows = run.grows("ramp_shaped")
    before = [g for g in grows if run.killed_at is not None and g.at <= run.killed_at]
    after = [g for g in grows if g.at >= adoption["at"].replace(tzinfo=g.at.tzinfo)]
    assert before and after, [(g.at, g.after) for g in grows]  # the first scheduler's, then the second's
    assert max(g.after or 0 for g in after) > max(g.after or 0 for g in before)
    assert (pod["metadata"].get("annotations") or {}).get(DO_NOT_DISRUPT) == "true"  # while shaped


def test_the_dead_executors_reservations_are_taken_over_and_released(run: Run) -> None:
    ledger = SqlLedger(run.engine)
    for task in ("ramp_shaped", "stepped"):
        _state, try_number, run_id = run.tis()[task]
        [reservation] = ledger.of_run(RunIdentity(TaskKey(DAG, task), run_id, try_number))
        assert reservation.holder.split(":")[1] == str(run.new_pid)  # the second scheduler's executor
        assert reservation.state.value == "released"
        [adoption] = run.decisions(task, "adoption")
        assert (
            "taken over from" in adoption["reason"] and adoption["payload"]["reservation"] == reservation.id
        )
    # the shaped pod's grows are in its reservation: it held more than its plan's 400Mi
    _s, n, r = run.tis()["ramp_shaped"]
    [shaped] = ledger.of_run(RunIdentity(TaskKey(DAG, "ramp_shaped"), r, n))
    assert max(a.limits.memory_bytes or 0 for _s0, _e, a in shaped.pieces()) > LIMIT
    assert_nothing_left_reserved(ledger, (run.logs,))


def test_the_plans_step_is_applied_in_place_by_the_new_executor(run: Run) -> None:
    kinds = [d["kind"] for d in run.decisions("stepped")]
    [plan] = run.decisions("stepped", "plan")
    stepped = plan["payload"]["plan"]["steps"][0]["limits"]["memory_bytes"]
    assert plan["payload"]["plan"]["initial"]["limits"]["memory_bytes"] < stepped
    [step] = run.decisions("stepped", "step")
    assert kinds.index("adoption") < kinds.index("step")  # sent after the restart, by the new one
    assert step["decision"] in ("applied", "pending"), step
    [pod] = run.pods("stepped")
    resources = pod["spec"]["containers"][0]["resources"]
    assert parse_quantity(resources["limits"]["memory"]) == stepped  # the same pod, resized in place
