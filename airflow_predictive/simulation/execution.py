"""One try of one run against a policy's allocation: OOM kills, CPU throttling, actuation delay.

The try advances over the run's grid steps (``grid_s`` seconds of the task's own progress each).
Between two moments where the policy wants to look (its ``next_wakeup``), the allocation is
constant and the segment is evaluated with numpy:

- memory: the first step whose true usage is above the memory limit kills the try (OOM);
- CPU: a step whose usage is above the CPU limit is throttled and lasts ``usage / limit`` times
  longer in wall time (the work is the same, it runs slower);
- a resize the policy asks for at step k is in force from the first step at least
  ``actuation_delay_s`` later (the delay is rounded up to the grid).

A driver whose limits per step are fixed before the try starts (the oracle) may expose them as
``static = (memory, cpu)`` arrays: the whole try is then one pass of array operations. Policies
that never change a running try's allocation cost one segment per try; closed-loop ones
(reactive, shaping) are woken at the steps they ask for. Decisions happen at step boundaries of the
task's progress; while throttled, one step spans more than ``grid_s`` of wall time.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from airflow_predictive.simulation.workload import SimRun

NEVER = 1 << 62


@dataclass(frozen=True, slots=True)
class Limits:
    """A simulated allocation: the memory limit (bytes, also its request) and the CPU limit (cores).

    cpu_request: what the try reserves of CPU when it differs from its limit (a plan that sets a
    CPU request but no limit runs with the node as its limit: never throttled below the node).
    The CPU the try holds in the pool and in the slack figures is ``cpu_allocated``.
    """

    memory_bytes: float
    cpu_cores: float
    cpu_request: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.memory_bytes) and self.memory_bytes >= 0):
            raise ValueError(f"memory limit must be finite and >= 0, got {self.memory_bytes!r}")
        if not (math.isfinite(self.cpu_cores) and self.cpu_cores > 0):
            raise ValueError(f"CPU limit must be finite and > 0, got {self.cpu_cores!r}")
        if self.cpu_request is not None and not (0 < self.cpu_request <= self.cpu_cores + 1e-9):
            raise ValueError(f"CPU request must lie in (0, limit], got {self.cpu_request!r}")

    @property
    def cpu_allocated(self) -> float:
        return self.cpu_cores if self.cpu_request is None else self.cpu_request


@dataclass(frozen=True)
class SimSettings:
    """What the simulated cluster does and how fast it reacts.

    grid_s: seconds of progress per simulated step (and the usage sampling interval of ours).
    actuation_delay_s: from a resize decision to the new limits being in force.
    metrics_resolution_s: how fresh the usage is that VPA-style policies see (metrics-server).
    vpa_loop_s: the VPA-style updater's loop.
    oracle_step_s: the oracle changes its allocation at most this often.
    max_tries: tries per run (an OOM-killed last try makes the run fail).
    """

    grid_s: float = 1.0
    actuation_delay_s: float = 1.8
    metrics_resolution_s: float = 15.0
    vpa_loop_s: float = 60.0
    oracle_step_s: float = 30.0
    max_tries: int = 4

    @property
    def delay_steps(self) -> int:
        return max(1, math.ceil(self.actuation_delay_s / self.grid_s - 1e-9))


class TryDriver(Protocol):
    """A policy's control of one running try.

    initial(): the allocation the try starts with.
    next_wakeup(k, current): the next step index (> k) at which ``decide`` must be called
        (``NEVER``: not again); it may search the run's usage up to that step (observing it).
    decide(k, now_s, current): at step k (``now_s`` wall seconds into the try), the new limits to
        ask for, or None.

    Optional attributes: ``static`` (limits per step fixed in advance), ``setup_s`` (time the
    policy spent planning the try, counted as its first decision), ``overhead`` (an allocation
    spent before the try, e.g. a shadow run: ``memory_alloc`` / ``cpu_alloc``, charged as waste).
    """

    def initial(self) -> Limits: ...

    def next_wakeup(self, k: int, current: Limits) -> int: ...

    def decide(self, k: int, now_s: float, current: Limits) -> Limits | None: ...


@dataclass(frozen=True)
class TryResult:
    """How a try went.

    steps: grid steps completed (all of them for a successful try). oom: killed during step
    ``steps`` (that step counts in the integrals, its usage capped at the limit).
    wall_s: wall seconds the try ran. *_alloc / *_used: integrals (bytes*s, cores*s) over the try.
    throttled_s: wall seconds during which CPU usage was above the limit. resizes: applied changes.
    change_at / change_memory / change_cpu: where the allocation changed (seconds after start; the
    first is the start) and to what; ``changes`` gives them as (seconds, limits).
    peak_seen: the highest memory usage observed (at a kill: the limit it hit). limit_at_end: the
    limits in force when it ended. decision_s: wall-clock seconds the policy spent deciding, per decision.
    """

    steps: int
    oom: bool
    wall_s: float
    memory_alloc: float
    memory_used: float
    cpu_alloc: float
    cpu_used: float
    throttled_s: float
    resizes: int
    change_at: tuple[float, ...]
    change_memory: tuple[float, ...]
    change_cpu: tuple[float, ...]  # CPU allocated (the request when it differs from the limit)
    peak_seen: float
    limit_at_end: Limits
    decision_s: tuple[float, ...] = field(default=())
    change_limits: tuple[Limits, ...] | None = None  # None: limits = (memory, cpu) as allocated
    min_headroom: float = math.inf

    @property
    def changes(self) -> tuple[tuple[float, Limits], ...]:
        if self.change_limits is not None:
            return tuple(zip(self.change_at, self.change_limits, strict=True))
        return tuple(
            (t, Limits(m, c))
            for t, m, c in zip(self.change_at, self.change_memory, self.change_cpu, strict=True)
        )


def run_try(run: SimRun, driver: TryDriver, settings: SimSettings) -> TryResult:
    """Simulate ``driver`` controlling one try of ``run`` (see the module docstring)."""
    t0 = time.perf_counter()
    current = driver.initial()
    decision_s = [time.perf_counter() - t0 + float(getattr(driver, "setup_s", 0.0))]
    static = getattr(driver, "static", None)
    if static is not None:
        return _run_static(run, static[0], static[1], tuple(decision_s))
    acc = _Accumulator(run)
    pending: deque[tuple[int, Limits]] = deque()
    delay = settings.delay_steps
    n = run.steps
    peak = run.peak_memory
    resizes = 0
    k = 0
    oom = False
    headroom = math.inf
    wake = _wakeup(driver, 0, current)
    while k < n:
        stop = max(min(wake, pending[0][0] if pending else NEVER, n), k + 1)
        if current.memory_bytes < peak:  # else no step can be above the limit
            hit = run.memory[k:stop] > current.memory_bytes
            if hit.any():
                stop, oom = k + int(hit.argmax()), True
        headroom = min(headroom, _headroom(current.memory_bytes, run.memory[k : stop + 1 if oom else stop]))
        acc.segment(k, stop, current)
        k = stop
        if oom:
            acc.killed_step(k, current)
            break
        while pending and pending[0][0] <= k:
            target = pending.popleft()[1]
            if target is not current and target != current:
                current = target
                resizes += 1
        if k >= n:
            break
        if k >= wake:
            t1 = time.perf_counter()
            asked = driver.decide(k, acc.wall, current)
            decision_s.append(time.perf_counter() - t1)
            latest = pending[-1][1] if pending else current
            if asked is not None and asked != latest:
                pending.append((k + delay, asked))
            wake = _wakeup(driver, k, current)
    overhead = getattr(driver, "overhead", None)  # e.g. a shadow run before the try: pure cost
    changes = acc.changes or [(0.0, current)]
    return TryResult(
        steps=k,
        oom=oom,
        wall_s=acc.wall,
        memory_alloc=acc.mem_alloc + (overhead.memory_alloc if overhead is not None else 0.0),
        memory_used=acc.mem_used,
        cpu_alloc=acc.cpu_alloc + (overhead.cpu_alloc if overhead is not None else 0.0),
        cpu_used=acc.cpu_used,
        throttled_s=acc.throttled,
        resizes=resizes,
        change_at=tuple(t for t, _ in changes),
        change_memory=tuple(lim.memory_bytes for _, lim in changes),
        change_cpu=tuple(lim.cpu_allocated for _, lim in changes),
        change_limits=tuple(lim for _, lim in changes),
        peak_seen=current.memory_bytes if oom else (run.peak_memory if k else 0.0),
        limit_at_end=current,
        decision_s=tuple(decision_s),
        min_headroom=headroom,
    )


def _headroom(limit: float, usage: np.ndarray) -> float:
    """The smallest (limit - usage) / usage over ``usage`` (inf: none above 0)."""
    top = float(usage.max()) if usage.size else 0.0
    return limit / top - 1.0 if top > 0 else math.inf


def _run_static(run: SimRun, mem: np.ndarray, cpu: np.ndarray, decision_s: tuple[float, ...]) -> TryResult:
    """A try whose limits per step are known before it starts (no feedback): one pass of arrays."""
    g, m, u = run.grid_s, run.memory, run.cpu
    hit = m > mem
    oom = bool(hit.any())
    k = int(hit.argmax()) if oom else m.size
    done = k + 1 if oom else k
    mem, cpu, m, u = mem[:done], cpu[:done], m[:done], u[:done]
    used_m = np.minimum(m, mem) if oom else m
    slow = np.flatnonzero(u > cpu)
    factor = u[slow] / cpu[slow] - 1.0  # extra wall time per throttled step, in steps
    extra = g * factor
    wall = g * done + float(extra.sum())
    changed = np.flatnonzero((mem[1:] != mem[:-1]) | (cpu[1:] != cpu[:-1])) + 1
    before = np.concatenate([[0.0], np.cumsum(extra)])[np.searchsorted(slow, changed)]
    at = g * changed + before
    first = np.zeros(1, dtype=int)
    idx = np.concatenate([first, changed])
    cpu_used = g * float(u.sum()) + (float((cpu[slow] * extra).sum()) if oom else 0.0)
    return TryResult(
        steps=k,
        oom=oom,
        wall_s=wall,
        memory_alloc=g * float(mem.sum()) + float((mem[slow] * extra).sum()),
        memory_used=g * float(used_m.sum()) + float((used_m[slow] * extra).sum()),
        cpu_alloc=g * float(cpu.sum()) + float((cpu[slow] * extra).sum()),
        cpu_used=cpu_used,
        throttled_s=float(g * slow.size + extra.sum()),
        resizes=int(changed.size),
        change_at=tuple([0.0, *at.tolist()]),
        change_memory=tuple(mem[idx].tolist()),
        change_cpu=tuple(cpu[idx].tolist()),
        peak_seen=float(mem[-1]) if oom else run.peak_memory,
        limit_at_end=Limits(float(mem[-1]), float(cpu[-1])),
        decision_s=decision_s,
        min_headroom=_static_headroom(mem, m),
    )


def _static_headroom(limit: np.ndarray, usage: np.ndarray) -> float:
    """``_headroom`` step by step, for limits per step."""
    used = usage > 0
    return float((limit[used] / usage[used]).min() - 1.0) if used.any() else math.inf


def _wakeup(driver: TryDriver, k: int, current: Limits) -> int:
    w = driver.next_wakeup(k, current)
    return w if w > k else k + 1


class _Accumulator:
    """Integrals of one try, segment by segment (prefix sums for the unthrottled part; only the
    throttled steps of a segment are visited one by one, as arrays)."""

    __slots__ = ("changes", "cpu_alloc", "cpu_used", "g", "mem_alloc", "mem_used", "run", "throttled", "wall")

    def __init__(self, run: SimRun) -> None:
        self.run = run
        self.g = run.grid_s
        self.wall = self.mem_alloc = self.mem_used = self.cpu_alloc = self.cpu_used = self.throttled = 0.0
        self.changes: list[tuple[float, Limits]] = []

    def segment(self, k: int, stop: int, lim: Limits) -> None:
        if stop <= k:
            return
        if not self.changes or (self.changes[-1][1] is not lim and self.changes[-1][1] != lim):
            self.changes.append((self.wall, lim))
        run, g = self.run, self.g
        wall = g * (stop - k)
        mem_used = g * float(run.memory_cumsum[stop] - run.memory_cumsum[k])
        if lim.cpu_cores < run.peak_cpu and (slow := run.cpu[k:stop] > lim.cpu_cores).any():
            u = run.cpu[k:stop]
            factor = u[slow] / lim.cpu_cores  # wall seconds per grid step on the throttled steps
            extra = g * float(factor.sum() - factor.size)
            self.throttled += g * float(factor.sum())
            wall += extra
            mem_used += g * float((run.memory[k:stop][slow] * (factor - 1.0)).sum())
        self.wall += wall
        self.mem_alloc += lim.memory_bytes * wall
        self.cpu_alloc += lim.cpu_allocated * wall
        self.mem_used += mem_used
        self.cpu_used += g * float(run.cpu_cumsum[stop] - run.cpu_cumsum[k])

    def killed_step(self, k: int, lim: Limits) -> None:
        """The step during which usage rose past the limit: it ran (at the limit) until the kill."""
        if not self.changes or self.changes[-1][1] != lim:
            self.changes.append((self.wall, lim))
        u = float(self.run.cpu[k])
        wall = self.g * max(1.0, u / lim.cpu_cores)
        self.wall += wall
        self.mem_alloc += lim.memory_bytes * wall
        self.mem_used += lim.memory_bytes * wall
        self.cpu_alloc += lim.cpu_allocated * wall
        self.cpu_used += min(u, lim.cpu_cores) * wall
