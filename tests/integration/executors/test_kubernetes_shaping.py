"""Real Airflow (`dags test --use-executor`, API server) with the PredictiveKubernetesExecutor shaping
its worker pods on the emulator's process kubelet (each pod's container is a real process under a
real cgroup), one DAG run for the module (dags_kubernetes_shaping.py): the same memory ramp past
its planned 400Mi limit completes with shaping on -- its pod resized in place (pod spec, container
status and the limit in the container's real cgroup change; same pod, no restart), every grow stored
as a shaping event and followed by the ledger's reservation -- and is OOM-killed with shaping off.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_predictive.backends.nodes.karpenter import DO_NOT_DISRUPT
from airflow_predictive.core.model.quantity import parse_quantity
from airflow_predictive.core.model.resources import MIB, Metric
from airflow_predictive.core.model.runs import RunIdentity, TaskKey
from airflow_predictive.core.shaping.events import Action, ShapingEvent, Verdict
from airflow_predictive.emulator.kubernetes.resources import PODS, QUOTAS
from airflow_predictive.storage.engine import engine_for
from airflow_predictive.storage.ledger_store import SqlLedger
from airflow_predictive.storage.shaping_store import SqlShapingEventStore
from tests.integration.airflow_runs.airflow_env import AirflowEnv, assert_nothing_left_reserved, free_port
from tests.integration.kubernetes.test_kube_airflow import POD_TEMPLATE

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_predictive.emulator.kubernetes.emulator import Emulator

pytestmark = [pytest.mark.airflow, pytest.mark.cgroups]

HERE = Path(__file__).resolve().parent
DAG = "predictive_k8s_shaping"
LIMIT = 400 * MIB  # as in dags_kubernetes_shaping.py
PAGE = 4096


class CgroupWatch(threading.Thread):
    """The memory limit and peak of each of the DAG's container cgroups, every 0.1 s, from the
    kernel's files (what is enforced, not what the pod status says)."""

    def __init__(self, emulator: Emulator) -> None:
        super().__init__(daemon=True)
        self.kubelet: Any = emulator.kubelet
        self.limits: dict[str, list[int]] = {}  # pod name -> distinct memory limits, in order seen
        self.peaks: dict[str, int] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                runtimes = list(self.kubelet.pods.values())
            except RuntimeError:  # changed while copied: next round
                runtimes = []
            for rt in runtimes:
                group = getattr(rt.containers.get("base"), "group", None)
                folder = None if group is None else group.dirs.get("memory")
                if not rt.name.startswith(DAG.replace("_", "-")) or folder is None:
                    continue
                try:
                    limit = int(Path(folder, "memory.limit_in_bytes").read_text())
                    peak = int(Path(folder, "memory.max_usage_in_bytes").read_text())
                except (OSError, ValueError):
                    continue
                seen = self.limits.setdefault(rt.name, [])
                if not seen or seen[-1] != limit:
                    seen.append(limit)
                self.peaks[rt.name] = max(peak, self.peaks.get(rt.name, 0))
            time.sleep(0.1)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


class Run:
    def __init__(self, env: AirflowEnv, out: str, watch: CgroupWatch) -> None:
        self.env, self.out, self.watch = env, out, watch
        self.engine = engine_for(env.predictive_url)
        self.events = SqlShapingEventStore(self.engine).events(limit=100_000)

    def tis(self) -> dict[str, tuple[str, int, str]]:
        with sqlite3.connect(self.env.home / "airflow.db") as db:
            rows = db.execute(
                "select task_id, state, try_number, run_id from task_instance where dag_id = ?", (DAG,)
            ).fetchall()
        return {t: (s, n, r) for t, s, n, r in rows}

    def of(self, task: str) -> list[ShapingEvent]:
        return [e for e in self.events if e.run_key.startswith(f"{DAG}/{task}/")]

    def grows(self, task: str) -> list[ShapingEvent]:
        return [
            e
            for e in self.of(task)
            if e.metric is Metric.MEMORY_BYTES and e.action is Action.GROW and e.verdict is Verdict.APPLIED
        ]


@pytest.fixture(scope="module")
def run(process_emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    home = tmp_path_factory.mktemp("airflow-k8s-shaping")
    dags = home / "dags"
    dags.mkdir()
    shutil.copy(HERE / "dags_kubernetes_shaping.py", dags / "dags_kubernetes_shaping.py")
    kubeconfig = process_emulator.write_kubeconfig(home / "kubeconfig")
    port = free_port()
    template = home / "pod_template.yaml"
    template.write_text(POD_TEMPLATE.format(home=home, dags=dags, port=port))
    # a namespace pool the grows are reserved in (room for them: nothing is held "pool full")
    quota = {
        "metadata": {"name": "shaping-q", "namespace": "default"},
        "spec": {"hard": {"requests.memory": "4Gi", "limits.memory": "4Gi"}},
    }
    process_emulator.store.create(QUOTAS, "default", quota)
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
            "AIRFLOW__PREDICTIVE__KUBERNETES_SHAPING_INTERVAL": "0.5",
        },
    )
    env.migrate()
    env.start_api_server()
    watch = CgroupWatch(process_emulator)
    watch.start()
    try:
        out = env.dags_test(DAG, {})  # fails: ramp_unshaped is OOM-killed, as it must be
        (home / "dags-test.log").write_text(out.stdout + out.stderr)  # the executor's log lines
        watch_pods_end(process_emulator)
        watch.stop()
        yield Run(env, out.stdout + out.stderr, watch)
    finally:
        watch.stop()
        env.stop()
        process_emulator.store.delete(QUOTAS, "default", "shaping-q")


def ours(emulator: Emulator, task: str) -> list[dict[str, Any]]:
    return [
        p
        for p in emulator.store.list(PODS, "default")[0]
        if (p["metadata"].get("labels") or {}).get("dag_id") == DAG
        and p["metadata"]["labels"].get("task_id") == task
    ]


def watch_pods_end(emulator: Emulator) -> None:
    """A task reports its state through the API before its worker process has exited."""
    deadline = time.monotonic() + 60
    pods = ours(emulator, "ramp_shaped") + ours(emulator, "ramp_unshaped")
    while any(p["status"]["phase"] == "Running" for p in pods) and time.monotonic() < deadline:
        time.sleep(0.2)
        pods = ours(emulator, "ramp_shaped") + ours(emulator, "ramp_unshaped")


def test_the_ramp_completes_with_shaping_and_is_oom_killed_without(
    run: Run, process_emulator: Emulator
) -> None:
    states = {t: s for t, (s, _n, _r) in run.tis().items()}
    assert states == {"ramp_shaped": "success", "ramp_unshaped": "failed"}, run.out[-4000:]
    [killed] = ours(process_emulator, "ramp_unshaped")
    term = killed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["reason"] == "OOMKilled", json.dumps(killed["status"])[:800]
    assert parse_quantity(killed["spec"]["containers"][0]["resources"]["limits"]["memory"]) == LIMIT
    assert run.of("ramp_unshaped") == []  # shaping off: nothing decided, nothing stored
    print("cgroup peaks MiB:", {n: round(p / MIB) for n, p in run.watch.peaks.items()})


def test_the_shaped_pod_is_resized_in_place_past_its_planned_limit(
    run: Run, process_emulator: Emulator
) -> None:
    [pod] = ours(process_emulator, "ramp_shaped")
    name = pod["metadata"]["name"]
    limits = run.watch.limits[name]
    print("cgroup memory limits MiB:", [round(v / MIB) for v in limits])
    assert limits[0] == LIMIT and len(limits) >= 2 and limits == sorted(limits), limits  # grown only
    spec = parse_quantity(pod["spec"]["containers"][0]["resources"]["limits"]["memory"])
    status = pod["status"]["containerStatuses"][0]
    assert spec > LIMIT and parse_quantity(status["resources"]["limits"]["memory"]) == spec  # what runs
    assert abs(limits[-1] - spec) < PAGE  # ... and what the kernel enforces (rounded to a page)
    assert status.get("restartCount", 0) == 0 and pod["status"]["phase"] == "Succeeded"  # same pod
    assert run.watch.peaks[name] > LIMIT  # it really used more than it was planned with
    # protected from node consolidation while shaped; its unshaped twin is not
    assert (pod["metadata"].get("annotations") or {}).get(DO_NOT_DISRUPT) == "true"
    [twin] = ours(process_emulator, "ramp_unshaped")
    assert DO_NOT_DISRUPT not in (twin["metadata"].get("annotations") or {})


def test_every_grow_is_stored_and_followed_by_the_reservation(run: Run) -> None:
    grows = run.grows("ramp_shaped")
    print([(round(e.t_s, 1), (e.before or 0) // MIB, (e.after or 0) // MIB, e.cause.value) for e in grows])
    assert grows, [(e.metric.value, e.action.value, e.verdict.value, e.reason) for e in run.of("ramp_shaped")]
    assert grows[0].before == pytest.approx(LIMIT)
    afters = [e.after or 0.0 for e in grows]
    assert afters == sorted(afters) and afters[-1] > LIMIT
    for e in grows:  # each grow went above what the pod used when it was decided
        assert e.usage is not None and e.after is not None and e.after > e.usage
    _state, try_number, run_id = run.tis()["ramp_shaped"]
    [reservation] = SqlLedger(run.engine).of_run(RunIdentity(TaskKey(DAG, "ramp_shaped"), run_id, try_number))
    charged = [a.limits.memory_bytes or 0.0 for _s, _e, a in reservation.pieces()]
    print("reserved memory MiB:", [round(c / MIB) for c in charged])
    assert charged[0] == pytest.approx(LIMIT)
    assert max(charged) >= afters[-1]  # the largest grow was reserved
    assert reservation.state.value == "released"
    assert_nothing_left_reserved(SqlLedger(run.engine), (run.out,))
