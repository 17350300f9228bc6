"""The simulated pool: nodes, the queue waiting for capacity, placement, retries after OOM kills.

Discrete events in cluster time: a run arrives at its recorded start (relative to the replay's
first run), its try is queued with the limits the policy gives it, and placed on the first node
whose free capacity holds those limits (queued tries are considered in arrival order; a later try
that fits may start before an earlier one that does not, as Kubernetes' scheduler does) on the
node with the most memory left. Once
placed, the try is simulated on its own (``execution.run_try``); its allocation changes are
charged to the node as they happen. A grow that finds its node full is still applied (counted as
``overcommitted_grows``: a real cluster would defer it, so a high count says the figures for that
policy are optimistic). A killed try frees its node and the run is queued again under the
policy's retry rule, up to ``max_tries``.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from airflow_predictive.core.model.resources import GIB
from airflow_predictive.simulation.execution import run_try
from airflow_predictive.simulation.policies.base import NodeShape, TryContext

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_predictive.simulation.execution import Limits, SimSettings, TryResult
    from airflow_predictive.simulation.policies.base import Policy
    from airflow_predictive.simulation.workload import SimRun, Workload


@dataclass(frozen=True)
class PoolSpec:
    """``nodes`` identical nodes of ``cpu_cores`` and ``memory_bytes`` each."""

    nodes: int = 4
    cpu_cores: float = 32.0
    memory_bytes: float = 128 * GIB

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.cpu_cores <= 0 or self.memory_bytes <= 0:
            raise ValueError("a pool needs at least one node with positive CPU and memory")

    @property
    def node(self) -> NodeShape:
        return NodeShape(self.memory_bytes, self.cpu_cores)

    def describe(self) -> str:
        return f"{self.nodes} nodes x {self.cpu_cores:g} cores / {self.memory_bytes / GIB:g} GiB"


@dataclass(frozen=True)
class TryRecord:
    """One try as replayed: which run, when it was queued and started, and how it went."""

    run: int
    attempt: int
    queued_s: float
    started_s: float
    result: TryResult

    @property
    def wait_s(self) -> float:
        return self.started_s - self.queued_s

    @property
    def ended_s(self) -> float:
        return self.started_s + self.result.wall_s


@dataclass(frozen=True)
class Replay:
    """Every try of every run under one policy."""

    policy: str
    tries: tuple[TryRecord, ...]
    runs: int
    failed_runs: int
    overcommitted_grows: int
    seconds: float
    first_arrival_s: float
    last_end_s: float

    @property
    def makespan_s(self) -> float:
        return self.last_end_s - self.first_arrival_s


@dataclass
class _Queued:
    ctx: TryContext
    limits: Limits
    driver: object


_ARRIVE, _CHANGE, _END = 0, 1, 2


class _Node:
    """What a node holds (sums of the tries' allocations) and how many tries run on it: an idle
    node is reset to exactly 0, so that float residue of many resizes (~1e-5 bytes on 64 GiB) never
    keeps a whole-node try queued for ever."""

    __slots__ = ("cpu", "mem", "running")

    def __init__(self) -> None:
        self.mem = 0.0
        self.cpu = 0.0
        self.running = 0


def _least_allocated(nodes: list[_Node], shape: NodeShape, limits: Limits) -> int | None:
    """The node that fits ``limits`` with the most memory left (Kubernetes' default LeastAllocated
    scoring spreads pods the same way), or None when none fits."""
    best, room = None, -1.0
    for i, nd in enumerate(nodes):
        free = shape.memory_bytes - nd.mem
        if (
            free + 1e-6 >= limits.memory_bytes
            and nd.cpu + limits.cpu_allocated <= shape.cpu_cores + 1e-9
            and free > room
        ):
            best, room = i, free
    return best


def replay(
    workload: Workload,
    policy: Policy,
    pool: PoolSpec,
    settings: SimSettings,
    progress: Callable[[int, int], None] | None = None,
) -> Replay:
    """Replay every run of ``workload`` under ``policy`` on ``pool``."""
    began = time.perf_counter()
    policy.prepare(workload, settings)
    shape = pool.node
    nodes = [_Node() for _ in range(pool.nodes)]
    events: list[tuple[float, int, int, object]] = []
    seq = 0

    def push(t: float, kind: int, payload: object) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, kind, seq, payload))

    for run in workload.runs:
        push(run.arrival_s, _ARRIVE, run)
    queue: list[_Queued] = []
    tries: list[TryRecord] = []
    failed = overcommit = done = 0
    total = len(workload.runs)
    last_end = 0.0

    def enqueue(ctx: TryContext) -> None:
        driver = policy.driver(ctx)
        queue.append(_Queued(ctx, driver.initial(), driver))

    def place(now: float) -> None:
        nonlocal overcommit
        if not queue:
            return
        kept = []
        free_mem = max(shape.memory_bytes - nd.mem for nd in nodes)
        free_cpu = max(shape.cpu_cores - nd.cpu for nd in nodes)
        for item in queue:  # in queueing order: events are handled in time order
            if item.limits.memory_bytes > free_mem + 1e-6 or item.limits.cpu_allocated > free_cpu + 1e-9:
                kept.append(item)
                continue
            node = _least_allocated(nodes, shape, item.limits)
            if node is None:
                kept.append(item)
                continue
            result = run_try(item.ctx.run, item.driver, settings)  # type: ignore[arg-type]
            record = TryRecord(item.ctx.run.index, item.ctx.attempt, item.ctx.now_s, now, result)
            at, mem, cpu = result.change_at, result.change_memory, result.change_cpu
            nodes[node].mem += mem[0]
            nodes[node].cpu += cpu[0]
            nodes[node].running += 1
            for i in range(1, len(at)):
                push(now + at[i], _CHANGE, (node, mem[i] - mem[i - 1], cpu[i] - cpu[i - 1]))
            held = (mem[-1], cpu[-1])
            push(now + result.wall_s, _END, (node, held, item.ctx, record))
            free_mem = max(shape.memory_bytes - nd.mem for nd in nodes)
            free_cpu = max(shape.cpu_cores - nd.cpu for nd in nodes)
        queue[:] = kept

    while events:
        now, kind, _, payload = heapq.heappop(events)
        if kind == _ARRIVE:
            enqueue(TryContext(cast("SimRun", payload), 1, None, now, settings, shape))
        elif kind == _CHANGE:
            node, dmem, dcpu = cast("tuple[int, float, float]", payload)
            nd = nodes[node]
            nd.mem += dmem
            nd.cpu += dcpu
            if (dmem > 0 or dcpu > 0) and (
                nd.mem > shape.memory_bytes + 1e-6 or nd.cpu > shape.cpu_cores + 1e-9
            ):
                overcommit += 1
            if dmem >= 0 and dcpu >= 0:
                continue  # nothing was freed: no queued try can start now
        else:
            node, held, ctx, record = cast("tuple[int, tuple[float, float], TryContext, TryRecord]", payload)
            nd = nodes[node]
            nd.mem -= held[0]
            nd.cpu -= held[1]
            nd.running -= 1
            if nd.running == 0:
                nd.mem = nd.cpu = 0.0
            tries.append(record)
            last_end = max(last_end, now)
            policy.finished(ctx, record.result)
            if record.result.oom and ctx.attempt < settings.max_tries:
                enqueue(TryContext(ctx.run, ctx.attempt + 1, record.result, now, settings, shape))
            else:
                failed += record.result.oom
                done += 1
                if progress is not None:
                    progress(done, total)
        place(now)
    first = min((r.arrival_s for r in workload.runs), default=0.0)
    return Replay(
        policy=policy.name,
        tries=tuple(tries),
        runs=total,
        failed_runs=failed,
        overcommitted_grows=overcommit,
        seconds=time.perf_counter() - began,
        first_arrival_s=first,
        last_end_s=last_end,
    )
