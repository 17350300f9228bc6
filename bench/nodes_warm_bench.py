"""Warm capacity through real Airflow (results in docs/benchmarks/nodes.md).

The done-when of issue 15 on the emulator through real Airflow: ``airflow dags test`` runs a plain
KubernetesPodOperator whose predicted peak (24Gi) fits no default node, steered to the
``highmem`` NodePool (nodeSelector ``karpenter.sh/nodepool``), on the process-backed emulator
(every container a real process under its own cgroup) whose node autoscaler needs
``--delay`` seconds to boot a node.

- cold: nothing ahead; the pod is Pending until the autoscaler's new node is Ready.
- warm: the node-pool backend provisions a placeholder from the plan (the task's peak, its start
  time) ``delay`` seconds ahead; the node boots for the placeholder; the task's pod preempts it.

Measured per run: pod created -> pod Running (the task's wait for capacity), the whole
``dags test``, and whether the task's pod landed on a node that existed before it was created.

Consolidation (``--consolidation``): a PredictiveKubernetesPodOperator (shaping on, so its pod
carries ``karpenter.sh/do-not-disrupt`` while shaped) and the same operator with
``predictive=False`` run on a pool node that becomes underused while they run (the pod beside it
ends; another node has room for it) with a 3 s ``consolidateAfter``: whether the pod was evicted
and the task's state.

Through the executor (``--executor``, report ``docs/benchmarks/nodes-executor.md``): ``dags test
--use-executor`` of ``prep >> big`` with the PredictiveKubernetesExecutor (the scenario of
``tests/integration/kubernetes/test_nodes_executor.py``): ``big`` plans 24Gi, no Ready node holds
it. *cold*: ``[predictive] node_pools = False``: big's pod is Pending until the autoscaler's node
boots. *warm*: ``node_pools = True``: the executor sees big coming while prep runs and makes the
placeholder itself (the bench makes none). Measured: big's pod created -> Running, prep's pod
Succeeded -> big's pod Running.

Each run uses a fresh emulator. Needs root (cgroups) and the cncf-kubernetes provider.
Usage: ``.venv/bin/python bench/nodes_warm_bench.py [--delay 20] [--runs 2] [--consolidation]``,
``.venv/bin/python bench/nodes_warm_bench.py --executor [--delay 20] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from airflow_predictive.backends.nodes.backend import NodePoolBackend  # noqa: E402
from airflow_predictive.core.model.nodes import InstanceType, NodePool, WarmCapacity  # noqa: E402
from airflow_predictive.core.model.resources import GIB, ResourceVector  # noqa: E402
from airflow_predictive.emulator.kubernetes.emulator import Emulator, NodeSpec  # noqa: E402
from airflow_predictive.emulator.kubernetes.kubelet import KubeletConfig  # noqa: E402
from airflow_predictive.emulator.kubernetes.resources import NODES, PODS  # noqa: E402
from tests.integration.airflow_runs.airflow_env import AirflowEnv  # noqa: E402

PEAK = ResourceVector(cpu_cores=1, memory_bytes=24 * GIB)
DAG = """
from airflow.sdk import dag
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import models as k8s

@dag(dag_id="warm_capacity_demo", schedule=None, catchup=False)
def warm_capacity_demo():
    KubernetesPodOperator(
        task_id="big",
        name="big-task",
        kubernetes_conn_id="kube_emulator",
        namespace="default",
        image="python:3.11-slim",
        cmds=["python", "-c"],
        arguments=["print('the big task ran', flush=True)"],
        node_selector={"karpenter.sh/nodepool": "highmem"},
        container_resources=k8s.V1ResourceRequirements(
            requests={"cpu": "1", "memory": "24Gi"}, limits={"cpu": "1", "memory": "24Gi"}
        ),
        get_logs=True,
        on_finish_action="delete_pod",
        startup_timeout_seconds=600,
        retries=0,
    )

warm_capacity_demo()
"""
GUARD_DAG = """
from datetime import datetime

from airflow.sdk import DAG
from kubernetes.client import models as k8s

from airflow_predictive.operators.kubernetes_pod import PredictiveKubernetesPodOperator

SLEEP = "import time\\nfor i in range(30):\\n    print('working', i, flush=True)\\n    time.sleep(1)\\n"
for predictive in (True, False):
    with DAG(
        f"consolidation_{'shaped' if predictive else 'unshaped'}",
        start_date=datetime(2026, 1, 1),
        schedule=None,
        catchup=False,
    ):
        PredictiveKubernetesPodOperator(
            task_id="long",
            name="long-task",
            image="python:3.11-slim",
            cmds=["python", "-c", SLEEP],
            kubernetes_conn_id="kube_emulator",
            namespace="default",
            node_selector={"karpenter.sh/nodepool": "highmem"},
            container_resources=k8s.V1ResourceRequirements(
                requests={"cpu": "500m", "memory": "2Gi"}, limits={"cpu": "1", "memory": "2Gi"}
            ),
            predictive=predictive,
            shaping_interval_s=0.5,
            shaping={"metrics": ["memory_bytes"]},
            on_finish_action="keep_pod",
            get_logs=True,
            startup_timeout_seconds=120,
            retries=0,
        )
"""


def emulator(delay: float, consolidate_after_s: float | None = None) -> Emulator:
    highmem = NodePool(
        "highmem",
        (InstanceType("n2-highmem-8", ResourceVector(cpu_cores=8, memory_bytes=64 * GIB), 0.52),),
        limits=ResourceVector(cpu_cores=64),
        provisioning_delay_s=delay,
        consolidate_after_s=consolidate_after_s,
    )
    return Emulator(
        mode="process",
        kubelet=KubeletConfig(actuation_delay_s=0.5, metrics_window_s=2.0),
        nodes=(NodeSpec(cpu="4", memory="8Gi"),),
        watch_poll_s=0.05,
        node_pools=(highmem,),
    ).start()


class Watch(threading.Thread):
    """Polls the emulator's store every 20 ms: when the task pod appeared, ran, and on which node."""

    def __init__(self, em: Emulator) -> None:
        super().__init__(daemon=True)
        self.em = em
        self.created: float | None = None
        self.running: float | None = None
        self.node: str | None = None
        self.nodes_at_create: set[str] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            for pod in self.em.store.snapshot(PODS):
                if not pod["metadata"]["name"].startswith("big-task"):
                    continue
                now = time.monotonic()
                if self.created is None:
                    self.created = now
                    self.nodes_at_create = {n["metadata"]["name"] for n in self.em.store.snapshot(NODES)}
                if self.running is None and pod["status"].get("phase") == "Running":
                    self.running, self.node = now, pod["spec"].get("nodeName")


def one_run(env: AirflowEnv, kubeconfig: Path, delay: float, warm: bool) -> dict[str, Any]:
    em = emulator(delay)
    try:
        em.write_kubeconfig(kubeconfig)
        if warm:
            backend = NodePoolBackend.from_kubeconfig(str(kubeconfig))
            choice = backend.steer(PEAK)
            assert choice is not None and choice.pool.name == "highmem"
            start_at = time.time() + delay + 2.0  # the plan's start, known ahead
            plan = WarmCapacity(
                "highmem", PEAK, ready_by=start_at, expires_at=start_at + 600, for_plan="demo"
            )
            while not backend.provision_due([plan]):
                time.sleep(0.2)
            while time.time() < start_at:  # the task is submitted at its planned start
                time.sleep(0.2)
            backend.close()
        watch = Watch(em)
        watch.start()
        t0 = time.monotonic()
        out = env.airflow("dags", "test", "warm_capacity_demo", timeout=900)
        total = time.monotonic() - t0
        watch.stop.set()
        watch.join()
        ok = out.returncode == 0 and "the big task ran" in out.stdout + out.stderr
        if not ok:
            print((out.stdout + out.stderr)[-3000:], file=sys.stderr)
        assert watch.created is not None and watch.running is not None, "the task pod never ran"
        return {
            "warm": warm,
            "ok": ok,
            "wait_s": watch.running - watch.created,
            "dags_test_s": total,
            "node_existed": watch.node in watch.nodes_at_create,
            "node": watch.node,
        }
    finally:
        em.stop()


def anchor(core: Any, name: str, memory: str, protect: bool) -> None:
    res = {"cpu": "1", "memory": memory}
    meta: dict[str, Any] = {"name": name}
    if protect:
        meta["annotations"] = {"karpenter.sh/do-not-disrupt": "true"}
    core.create_namespaced_pod(
        "default",
        {
            "metadata": meta,
            "spec": {
                "terminationGracePeriodSeconds": 0,
                "nodeSelector": {"karpenter.sh/nodepool": "highmem"},
                "containers": [
                    {
                        "name": "c",
                        "image": "registry.k8s.io/pause:3.10",
                        "resources": {"requests": res, "limits": res},
                    }
                ],
            },
        },
    )


def consolidation_run(env: AirflowEnv, kubeconfig: Path, shaped: bool) -> dict[str, Any]:
    """Node A: anchor-a (60Gi) + the task's pod (2Gi); node B: anchor-b (60Gi, do-not-disrupt).
    Once the task's pod runs, anchor-a is deleted: A holds only the task's pod, which would fit
    on B, so A is underused and consolidated after 3 s unless its pod forbids it."""
    from kubernetes import client, config

    em = emulator(3.0, consolidate_after_s=3.0)
    try:
        em.write_kubeconfig(kubeconfig)
        core = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
        anchor(core, "anchor-a", "60Gi", protect=True)
        while not any(p["spec"].get("nodeName") for p in em.store.snapshot(PODS)):
            time.sleep(0.1)
        anchor(core, "anchor-b", "60Gi", protect=True)
        while sum(bool(p["spec"].get("nodeName")) for p in em.store.snapshot(PODS)) < 2:
            time.sleep(0.1)
        node_a = next(
            p["spec"]["nodeName"] for p in em.store.snapshot(PODS) if p["metadata"]["name"] == "anchor-a"
        )
        evicted: dict[str, Any] = {"seen": False}

        def watch() -> None:
            deleted = False
            while not evicted.get("stop"):
                for pod in em.store.snapshot(PODS):
                    selector = pod["spec"].get("nodeSelector") or {}
                    if (
                        not pod["metadata"]["name"].startswith("long-task")
                        or selector.get("karpenter.sh/nodepool") != "highmem"
                    ):
                        continue  # the task's pod only (not a shadow-run pod beside it)
                    if not deleted and pod["status"].get("phase") == "Running":
                        evicted["node"] = pod["spec"].get("nodeName")
                        evicted["requests"] = pod["spec"]["containers"][0]["resources"].get("requests")
                        evicted["placement"] = {
                            p["metadata"]["name"]: p["spec"].get("nodeName") for p in em.store.snapshot(PODS)
                        }
                        core.delete_namespaced_pod("anchor-a", "default", grace_period_seconds=0)
                        deleted = True
                    if (pod["metadata"].get("annotations") or {}).get(
                        "karpenter.sh/do-not-disrupt"
                    ) == "true":
                        evicted["protected"] = True
                    for c in pod["status"].get("conditions") or []:
                        if c.get("type") == "DisruptionTarget":
                            evicted["seen"] = True
                            evicted["reason"] = c.get("reason")
                time.sleep(0.05)

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        dag_id = f"consolidation_{'shaped' if shaped else 'unshaped'}"
        out = env.airflow("dags", "test", dag_id, timeout=900)
        evicted["stop"] = True
        t.join()
        import sqlite3

        with sqlite3.connect(env.home / "airflow.db") as db:
            row = db.execute("select state from task_instance where dag_id = ?", (dag_id,)).fetchone()
        state = row[0] if row else None
        if state != "success" and shaped:
            print((out.stdout + out.stderr)[-3000:], file=sys.stderr)
        nodes = {n["metadata"]["name"] for n in em.store.snapshot(NODES)}
        return {
            "shaped": shaped,
            "task_state": state,
            "pod_on_anchor_node": evicted.get("node") == node_a,
            "do_not_disrupt_seen": bool(evicted.get("protected")),
            "evicted": evicted["seen"],
            "eviction_reason": evicted.get("reason"),
            "node_a_left_after": node_a in nodes,
            "task_requests": evicted.get("requests"),
            "placement_at_start": evicted.get("placement"),
        }
    finally:
        em.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay", type=float, default=20.0, help="node provisioning delay (s)")
    ap.add_argument("--runs", type=int, default=2, help="runs per mode")
    ap.add_argument("--consolidation", action="store_true", help="also the do-not-disrupt runs")
    ap.add_argument("--executor", action="store_true", help="through the PredictiveKubernetesExecutor")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.executor:
        args.out = args.out or str(ROOT / "docs/benchmarks/nodes-executor.md")
        executor_runs(args)
        return
    args.out = args.out or str(ROOT / "docs/benchmarks/nodes.md")
    with tempfile.TemporaryDirectory(prefix="nodes-bench-") as tmp:
        home = Path(tmp)
        dags = home / "dags"
        dags.mkdir()
        (dags / "warm_capacity_demo.py").write_text(DAG)
        (dags / "consolidation_demo.py").write_text(GUARD_DAG)
        kubeconfig = home / "kubeconfig"
        conn = {
            "conn_type": "kubernetes",
            "extra": {"kube_config_path": str(kubeconfig), "namespace": "default"},
        }
        env = AirflowEnv.create(home, {"AIRFLOW_CONN_KUBE_EMULATOR": json.dumps(conn)}, dags_folder=dags)
        env.migrate()
        results = []
        for i in range(args.runs):
            for warm in (False, True):
                r = one_run(env, kubeconfig, args.delay, warm)
                print(f"run {i} {'warm' if warm else 'cold'}: {r}", flush=True)
                results.append(r)
        guarded = []
        if args.consolidation:
            for shaped in (True, False):
                g = consolidation_run(env, kubeconfig, shaped)
                print(f"consolidation {'shaped' if shaped else 'unshaped'}: {g}", flush=True)
                guarded.append(g)
    write_report(Path(args.out), args, results, guarded)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def executor_runs(args: argparse.Namespace) -> None:
    from tests.integration.kubernetes.test_nodes_executor import run_scenario

    results = []
    with tempfile.TemporaryDirectory(prefix="nodes-exec-bench-") as tmp:
        for i in range(args.runs):
            for node_pools in (False, True):
                r = run_scenario(
                    Path(tmp) / f"run-{i}-{int(node_pools)}",
                    node_pools=node_pools,
                    delay_s=args.delay,
                    prep_s=args.delay + 5,
                    prep_plan_s=args.delay + 10,
                )
                row = r.as_dict()
                print(f"run {i} node_pools={node_pools}: {json.dumps(row)}", flush=True)
                if not r.ok:
                    print(r.output[-3000:], file=sys.stderr)
                results.append(row)
    flags = f"--executor --delay {args.delay:g} --runs {args.runs}"
    lines = [
        "# Warm capacity made by the PredictiveKubernetesExecutor (real Airflow, emulator)",
        "",
        f"Reproduce: `.venv/bin/python bench/nodes_warm_bench.py {flags}` (root for cgroups; writes this file).",
        "",
        "`airflow dags test --use-executor` of `prep >> big` with the PredictiveKubernetesExecutor on the",
        "process-backed emulator (real processes under cgroups; one 4-CPU/8Gi node outside any pool, a",
        f"`highmem` NodePool of 64Gi nodes that boot in {args.delay:g} s). `big` plans 24Gi: no Ready node",
        "holds it. *cold*: `[predictive] node_pools = False` (the pod is Pending until the autoscaler's",
        "node is Ready). *warm*: `node_pools = True`: while `prep` runs, the executor sees `big` coming",
        "(upstream running, predicted start = prep's planned end), makes a placeholder one boot delay",
        "(plus 10 s margin) ahead, steers big's pod to `highmem`; the bench makes no placeholder.",
        "*pod wait* = big's pod created -> Running; *after upstream* = prep's end (its `end_date` in",
        "Airflow) -> big's pod Running (what the DAG run waits between the two tasks, Airflow's own",
        "scheduling included); polled every 20 ms. *placeholder lead* = placeholder created -> big's pod",
        "created: the node stood idle for about lead - boot delay (the cost of warming ahead; the lead",
        "follows prep's plan, here shorter than prep's real run, whose task runner starts slowly).",
        "",
        "| mode | runs | succeeded | pod wait p50 (s) | pod wait p95 (s) | after upstream p50 (s) |"
        " after upstream p95 (s) | landed on a node that already existed | placeholder lead p50 (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for node_pools in (False, True):
        rs = [r for r in results if r["node_pools"] is node_pools]
        waits = [r["wait_s"] for r in rs if r["wait_s"] is not None]
        after = [r["after_upstream_s"] for r in rs if r["after_upstream_s"] is not None]
        leads = [r["placeholder_lead_s"] for r in rs if r["placeholder_lead_s"] is not None]
        lines.append(
            f"| {'warm (node_pools)' if node_pools else 'cold'} | {len(rs)} | {sum(r['ok'] for r in rs)} | "
            + (f"{_pct(waits, 0.5):.2f} | {_pct(waits, 0.95):.2f} | " if waits else "- | - | ")
            + (f"{_pct(after, 0.5):.2f} | {_pct(after, 0.95):.2f} | " if after else "- | - | ")
            + f"{sum(r['node_existed'] for r in rs)}/{len(rs)} | "
            + (f"{_pct(leads, 0.5):.1f} |" if leads else "- |")
        )
    lines += ["", "Raw runs:", "", "```", *(json.dumps(r) for r in results), "```", ""]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


def write_report(
    path: Path, args: argparse.Namespace, results: list[dict[str, Any]], guarded: list[dict[str, Any]]
) -> None:
    flags = f"--delay {args.delay:g} --runs {args.runs}" + (" --consolidation" if args.consolidation else "")
    if Path(args.out).resolve() != (ROOT / "docs/benchmarks/nodes.md").resolve():
        flags += (
            f" --out {Path(args.out).relative_to(ROOT) if Path(args.out).is_relative_to(ROOT) else args.out}"
        )
    lines = [
        "# Node pools through real Airflow (emulator)",
        "",
        f"Reproduce: `.venv/bin/python bench/nodes_warm_bench.py {flags}` (root for cgroups; writes this file).",
        "",
    ]
    if results:
        lines += [
            "## Warm capacity",
            "",
            "`airflow dags test` runs a plain KubernetesPodOperator whose peak (24Gi) fits no default node,",
            "steered to the `highmem` NodePool, on the process-backed emulator (real processes under",
            f"cgroups) whose autoscaler boots a node in {args.delay:g} s. *cold*: nothing ahead. *warm*: the",
            "node-pool backend made a placeholder from the plan one provisioning delay ahead of the task's",
            "start; the task's pod preempted it. *wait* = pod created -> pod Running (polled every 20 ms).",
            "",
            "| mode | runs | succeeded | wait p50 (s) | wait max (s) | landed on a node that already existed"
            " | `dags test` mean (s) |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for warm in (False, True):
            rs = [r for r in results if r["warm"] is warm]
            if not rs:
                continue
            waits = [r["wait_s"] for r in rs]
            lines.append(
                f"| {'warm' if warm else 'cold'} | {len(rs)} | {sum(r['ok'] for r in rs)} | "
                f"{statistics.median(waits):.2f} | {max(waits):.2f} | "
                f"{sum(r['node_existed'] for r in rs)}/{len(rs)} | "
                f"{statistics.mean(r['dags_test_s'] for r in rs):.1f} |"
            )
    if guarded:
        lines += [
            "",
            "## Consolidation of a running pod",
            "",
            "A PredictiveKubernetesPodOperator (shaping on: its pod carries `karpenter.sh/do-not-disrupt`",
            "while shaped) and the same operator with `predictive=False`, each on a pool node that turns",
            "underused while it runs (the pod beside it is deleted; another node has room), pool",
            "`consolidateAfter: 3s`.",
            "",
            "| operator | task pod on the node that turned underused | do-not-disrupt seen on it | task pod evicted"
            " | eviction reason | task state |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for g in guarded:
            lines.append(
                f"| {'shaped (predictive=True)' if g['shaped'] else 'unshaped (predictive=False)'} | "
                f"{'yes' if g['pod_on_anchor_node'] else 'no'} | {'yes' if g['do_not_disrupt_seen'] else 'no'} | "
                f"{'yes' if g['evicted'] else 'no'} | {g['eviction_reason'] or '-'} | {g['task_state']} |"
            )
    lines += ["", "Raw runs:", "", "```", *(json.dumps(r) for r in [*results, *guarded]), "```", ""]
    path.write_text("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
