"""A real `airflow scheduler` running the PredictiveKubernetesExecutor on the emulator's process
kubelet is SIGKILLed while its task's worker pod runs; a second scheduler adopts the pod
(KubernetesExecutor's own adoption: the pod relabelled to the new scheduler's job) and with it the
try's predictive state: the reservation the dead executor held is taken over (its plan and the
plan's clock), the plan's timed step still due is applied by the new executor in place, the task
succeeds on the same pod, and nothing is left reserved (dags_kubernetes_adoption.py)."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_predictive.core.model.quantity import parse_quantity
from airflow_predictive.core.model.runs import RunIdentity, TaskKey
from airflow_predictive.emulator.kubernetes.resources import PODS
from airflow_predictive.storage.engine import engine_for
from airflow_predictive.storage.ledger_store import DecisionLog, SqlLedger
from airflow_predictive.storage.run_store import SqlRunStore
from tests.integration.airflow_runs.airflow_env import AirflowEnv, assert_nothing_left_reserved, free_port
from tests.integration.executors.test_kubernetes_executor import seed_stepped
from tests.integration.kubernetes.test_kube_airflow import POD_TEMPLATE

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_predictive.emulator.kubernetes.emulator import Emulator

pytestmark = [pytest.mark.airflow, pytest.mark.cgroups]

HERE = Path(__file__).resolve().parent
DAG, TASK = "predictive_k8s_adoption", "stepped"
LOW_MIB, HIGH_MIB, STEP_AT_S = 400, 560, 25  # the seeded curve: the step comes after the restart


class Run:
    def __init__(self, env: AirflowEnv, emulator: Emulator, new_pid: int, logs: str) -> None:
        self.env, self.emulator, self.new_pid, self.logs = env, emulator, new_pid, logs
        self.engine = engine_for(env.predictive_url)

    def ti(self) -> tuple[str, int, str]:
        with sqlite3.connect(self.env.home / "airflow.db") as db:
            row = db.execute(
                "select state, try_number, run_id from task_instance where dag_id = ? and task_id = ?",
                (DAG, TASK),
            ).fetchone()
        return (str(row[0]), int(row[1]), str(row[2])) if row else ("", 0, "")

    def decisions(self) -> list[dict[str, Any]]:
        return list(reversed(list(DecisionLog(self.engine).recent(TaskKey(DAG, TASK), limit=100))))

    def pod(self) -> dict[str, Any]:
        [pod] = [
            p
            for p in self.emulator.store.list(PODS, "default")[0]
            if (p["metadata"].get("labels") or {}).get("dag_id") == DAG
        ]
        return pod


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
    home = tmp_path_factory.mktemp("airflow-k8s-adoption")
    dags = home / "dags"
    dags.mkdir()
    shutil.copy(HERE / "dags_kubernetes_adoption.py", dags / "dags_kubernetes_adoption.py")
    kubeconfig = process_emulator.write_kubeconfig(home / "kubeconfig")
    port = free_port()
    template = home / "pod_template.yaml"
    template.write_text(POD_TEMPLATE.format(home=home, dags=dags, port=port))
    env = AirflowEnv.create(
        home,
        {
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__CORE__EXECUTOR": "airflow_predictive.executors.kubernetes_executor.PredictiveKubernetesExecutor",
            "AIRFLOW__KUBERNETES_EXECUTOR__CONFIG_FILE": str(kubeconfig),
            "AIRFLOW__KUBERNETES_EXECUTOR__IN_CLUSTER": "False",
            "AIRFLOW__KUBERNETES_EXECUTOR__NAMESPACE": "default",
            "AIRFLOW__KUBERNETES_EXECUTOR__POD_TEMPLATE_FILE": str(template),
            "AIRFLOW__KUBERNETES_EXECUTOR__DELETE_WORKER_PODS": "False",
            "AIRFLOW__PREDICTIVE__PLAN_MIN_STEP": "5",
            # a dead scheduler is seen as dead after 6 s; orphans are looked for every 2 s
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "6",
            "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "2",
        },
    )
    env.migrate()
    seed_stepped(
        SqlRunStore(engine_for(env.predictive_url)), TaskKey(DAG, TASK), LOW_MIB, HIGH_MIB, STEP_AT_S, 40
    )
    for args in (("dags", "reserialize"), ("dags", "trigger", DAG)):  # unpaused on creation
        out = env.airflow(*args)
        assert out.returncode == 0, (args, out.stdout[-2000:], out.stderr[-3000:])
    env.start_api_server()

    def logs() -> str:
        return "\n".join(
            f"--- {p.name} ---\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(home.glob("scheduler-*.log"))
        )

    try:
        old = env.start_scheduler()
        result = Run(env, process_emulator, 0, "")
        _wait(
            "the worker pod to run",
            lambda: any(
                (p["metadata"].get("labels") or {}).get("dag_id") == DAG
                and p["status"].get("phase") == "Running"
                for p in process_emulator.store.list(PODS, "default")[0]
            ),
            180,
            logs,
        )
        assert not [d for d in result.decisions() if d["kind"] == "step"]  # nothing stepped yet
        _kill(old)  # as a crash or an OOM-killed scheduler container: no clean stop, nothing released
        new = env.start_scheduler()
        _wait("the adoption", lambda: [d for d in result.decisions() if d["kind"] == "adoption"], 120, logs)
        _wait("the task's end", lambda: result.ti()[0] in ("success", "failed"), 180, logs)
        # the task reports its end before its worker process exits; the pod's end releases the
        # reservation (the executor's watcher sees it)
        _wait("the pod's end", lambda: result.pod()["status"]["phase"] in ("Succeeded", "Failed"), 60, logs)
        _wait("the release", lambda: not SqlLedger(result.engine).reservations(), 60, logs)
        yield Run(env, process_emulator, new.pid, logs())
    finally:
        env.stop()


def _kill(proc: Any) -> None:
    import os

    os.killpg(proc.pid, 9)
    proc.wait(timeout=30)


def test_the_task_succeeds_on_the_same_pod_relabelled_to_the_new_scheduler(run: Run) -> None:
    assert run.ti()[0] == "success", run.logs[-6000:]
    pod = run.pod()
    status = pod["status"]["containerStatuses"][0]
    assert pod["status"]["phase"] == "Succeeded" and status.get("restartCount", 0) == 0
    assert "adopt" in run.logs  # KubernetesExecutor's own adoption ran in the second scheduler


def test_the_dead_executors_reservation_is_taken_over_and_released_at_the_end(run: Run) -> None:
    _state, try_number, run_id = run.ti()
    [reservation] = SqlLedger(run.engine).of_run(RunIdentity(TaskKey(DAG, TASK), run_id, try_number))
    assert reservation.holder.split(":")[1] == str(run.new_pid)  # the second scheduler's executor
    assert reservation.state.value == "released"
    [adoption] = [d for d in run.decisions() if d["kind"] == "adoption"]
    assert "taken over from" in adoption["reason"] and adoption["payload"]["reservation"] == reservation.id
    assert_nothing_left_reserved(SqlLedger(run.engine), (run.logs,))


def test_the_plans_step_is_applied_in_place_by_the_new_executor(run: Run) -> None:
    decisions = run.decisions()
    kinds = [d["kind"] for d in decisions]
    [plan] = [d for d in decisions if d["kind"] == "plan"]
    stepped = plan["payload"]["plan"]["steps"][0]["limits"]["memory_bytes"]
    initial = plan["payload"]["plan"]["initial"]["limits"]["memory_bytes"]
    assert initial < stepped
    [step] = [d for d in decisions if d["kind"] == "step"]
    assert kinds.index("adoption") < kinds.index("step")  # sent after the restart, by the new one
    assert step["decision"] in ("applied", "pending"), step
    resources = run.pod()["spec"]["containers"][0]["resources"]
    assert parse_quantity(resources["limits"]["memory"]) == stepped  # the same pod, resized in place
