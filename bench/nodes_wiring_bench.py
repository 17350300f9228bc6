"""What the node-pool wiring costs the executor's heartbeat (the scheduler loop), and its thread's round.

Setup: the simulated Kubernetes emulator (real HTTP API, manual clock) with two Karpenter
NodePools, a real SQLite ledger, a Coordinator as the PredictiveKubernetesExecutor builds it with
node pools, and ``--tasks`` held-back tasks whose plans fit no Ready node (each wants a node).
One heartbeat's node-related work on the loop = admission round (reads the coming capacity, start
choices remade every 5 s), ``warms_for_waiting`` + ``want`` (pure), the node-bound capacity
(cached), and ``steer`` of one launched pod (cached pools). The cluster calls run in the wiring's
round, measured apart, with the API up and down (connection refused).

    .venv/bin/python bench/nodes_wiring_bench.py --tasks 64 --beats 200
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from airflow_predictive.backends.nodes.backend import NodePoolBackend
from airflow_predictive.core.model.nodes import InstanceType, NodePool
from airflow_predictive.core.model.query import ForecastQuery
from airflow_predictive.core.model.resources import GIB, ResourceVector
from airflow_predictive.core.model.runs import RunIdentity, TaskKey
from airflow_predictive.emulator.kubernetes.emulator import Emulator, NodeSpec
from airflow_predictive.executors.coordinator import Coordinator, CoordinatorSettings
from airflow_predictive.executors.kubernetes_nodes import NodeWiring, warms_for_waiting
from airflow_predictive.executors.kubernetes_pool import namespace_capacity, namespace_pool
from airflow_predictive.executors.opt_in import task_settings
from airflow_predictive.storage import migrate
from airflow_predictive.storage.engine import engine_for
from airflow_predictive.storage.ledger_store import SqlLedger

EPOCH0 = 1767225600.0


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def now(self):  # type: ignore[no-untyped-def]
        from datetime import UTC, datetime, timedelta

        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.t)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def run(tasks: int, beats: int, down: bool, tmp: Path, choices: bool = True) -> dict[str, float]:
    clock = Clock()
    pools = (
        NodePool(
            "general",
            (InstanceType("e2-standard-4", ResourceVector(cpu_cores=4, memory_bytes=16 * GIB), 0.13),),
        ),
        NodePool(
            "highmem",
            (InstanceType("n2-highmem-8", ResourceVector(cpu_cores=8, memory_bytes=64 * GIB), 0.52),),
        ),
    )
    em = Emulator(
        clock=clock, nodes=(NodeSpec(cpu="4", memory="16Gi"),), auto_tick=False, node_pools=pools
    ).start()
    try:
        kubeconfig = em.write_kubeconfig(tmp / f"kubeconfig-{down}-{choices}")
        if down:
            dead = tmp / "dead"
            dead.write_text(re.sub(r"server: \S+", "server: http://127.0.0.1:1", kubeconfig.read_text()))
            kubeconfig = dead
        now = lambda: EPOCH0 + clock.t  # noqa: E731
        engine = engine_for(f"sqlite:///{tmp / f'p-{down}-{choices}.db'}")
        migrate.upgrade(engine)
        ledger = SqlLedger(engine, clock=now)
        wiring = NodeWiring(NodePoolBackend.from_kubeconfig(str(kubeconfig), now=now), ledger, "k8s:default")
        rounds = []
        t0 = time.perf_counter()
        wiring.round()
        rounds.append(time.perf_counter() - t0)
        c = Coordinator(
            ledger=ledger,
            forecasts=None,
            pool=namespace_pool("default", namespace_capacity([], nodes=wiring.node_capacity())),
            holder="bench",
            settings=CoordinatorSettings(grow_wait_s=10_000.0),
            clock=now,
            grows=lambda: wiring.node_capacity() is not None,
        )
        if not choices:  # the admission round as it was before the start choice was wired
            c._choose_start = lambda *a, **k: None  # type: ignore[method-assign]
        settings = task_settings({"predictive": {"memory": "40Gi", "cpu": 2}})
        for i in range(tasks):
            r = RunIdentity(TaskKey("d", f"t{i}"), "r1")
            c.submit(f"t{i}", r, settings, ForecastQuery(r.key, declared=settings.declared), 1)
        beat, admit, steer = [], [], []
        admitted = 0
        peak = ResourceVector(cpu_cores=2, memory_bytes=40 * GIB)
        for _ in range(beats):
            clock.t += 1.0
            t0 = time.perf_counter()
            capacity = namespace_capacity([], nodes=wiring.node_capacity())
            changed = capacity != c.pool.capacity
            t1 = time.perf_counter()
            if changed:  # a ledger write (set_pool), the same as a quota change without node pools
                c.set_capacity(namespace_pool("default", capacity))
            t2 = time.perf_counter()
            launches = c.admit()
            t3 = time.perf_counter()
            wiring.want(warms_for_waiting(wiring, list(c.waiting.values()), now()))
            t4 = time.perf_counter()
            beat.append((t1 - t0) + (t4 - t3))
            admit.append((t2 - t1) + (t3 - t2))
            admitted += sum(1 for x in launches if x.decision.value == "admitted")
            t0 = time.perf_counter()
            wiring.steer({}, peak, "d.t0.r1")
            steer.append(time.perf_counter() - t0)
            if _ % 5 == 0:  # the thread's period (5 s)
                t0 = time.perf_counter()
                wiring.round()
                rounds.append(time.perf_counter() - t0)
                em.tick()
        engine.dispose()
        return {
            "beat_p50_ms": 1000 * statistics.median(beat),
            "beat_p95_ms": 1000 * pct(beat, 0.95),
            "beat_max_ms": 1000 * max(beat),
            "admit_p50_ms": 1000 * statistics.median(admit),
            "admit_p95_ms": 1000 * pct(admit, 0.95),
            "admit_max_ms": 1000 * max(admit),
            "admitted": float(admitted),
            "steer_p50_ms": 1000 * statistics.median(steer),
            "round_p50_ms": 1000 * statistics.median(rounds),
            "round_max_ms": 1000 * max(rounds),
            "placeholders": float(len(wiring.backend.placeholders())) if not down else 0.0,
        }
    finally:
        em.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=64)
    ap.add_argument("--beats", type=int, default=200)
    ap.add_argument("--out", default="docs/benchmarks/nodes-wiring.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        up = run(args.tasks, args.beats, False, Path(tmp))
        down = run(args.tasks, args.beats, True, Path(tmp))
        plain = run(args.tasks, args.beats, False, Path(tmp), choices=False)
    rows = "\n".join(
        f"| {name} | {r['beat_p50_ms']:.3f} | {r['beat_p95_ms']:.3f} | {r['beat_max_ms']:.3f} | "
        f"{r['steer_p50_ms']:.3f} | {r['admit_p50_ms']:.1f} | {r['admit_p95_ms']:.1f} | {r['admit_max_ms']:.1f} | "
        f"{r['round_p50_ms']:.1f} | {r['round_max_ms']:.1f} | {int(r['placeholders'])} | {int(r['admitted'])} |"
        for name, r in (("API up", up), ("API down", down), ("API up, no start choices", plain))
    )
    text = f"""# Node-pool wiring: cost on the executor's heartbeat

Reproduce: `.venv/bin/python bench/nodes_wiring_bench.py --tasks {args.tasks} --beats {args.beats}`
(writes this file). {args.tasks} held-back tasks (40Gi each, above every Ready node: each wants a
node), simulated emulator with two NodePools, SQLite ledger, one heartbeat per simulated second.

*node work* = what node pools add to the executor's heartbeat on the scheduler loop: the
node-bound capacity from the cached round, `warms_for_waiting` + `want` (pure). *steer*: one
pod_override steered (cached pools). *admission* = `set_capacity` when the node bound changed (a
ledger write) + the admission round (ledger reads including the coming capacity; the start
choice of a waiting task remade every 5 s, at most 8 per round plus the head of the queue): the
coordinator's round, which runs without node pools too (the start choices are new with this
wiring), shown for scale. *round*: the wiring thread's round (every cluster call: NodePools, nodes, pods,
placeholders create / list / delete; `set_coming`), off the loop.

| cluster | node work p50 (ms) | p95 | max | steer p50 (ms) | admission p50 (ms) | p95 | max | round p50 (ms) | round max (ms) | placeholders at the end | tasks admitted |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{rows}

*no start choices*: the same run with the coordinator's start choice switched off (admission as
before it was wired; tasks never-fitting then get no warm capacity: nothing wants a node).

No cluster call is on the heartbeat. The admission round's p95 is the rounds that remake start
choices; its max is the first round (a plan decision stored per task, and the first start
decisions). API up: the tasks are admitted as the nodes their placeholders
brought become Ready (the last column). No task pod is created here, so no placeholder is
consumed; the node bound is a sum over the Ready nodes (no bin packing): 48 nodes of 64 GiB sum to
room for 64 tasks of 40 GiB, of which only 48 would find a node (the other pods would wait for the
autoscaler as without warm capacity). With the API
down the round fails fast (connection refused) and nothing is steered or warmed: no pool is
known, so the never-fitting tasks get no grow wait and run on their declared resources at the
first admission (as without node pools); the later heartbeats have nothing left to admit.
"""
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
