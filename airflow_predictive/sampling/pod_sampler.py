"""The in-pod sampler: ``python -m airflow_predictive.sampling.pod_sampler`` as a native sidecar.

Why it exists: a pod shaped from metrics.k8s.io sees a spike 15 s or more late on a real cluster
(metrics-server resolution), too late to grow a ramping task before the kernel OOM-kills it. Run as
an init container with ``restartPolicy: Always`` in a pod with ``shareProcessNamespace: true``
(``backends/kubernetes/pod_sampler.with_pod_sampler`` adds both), it sees the pod's other
containers' processes in ``/proc`` and samples them every second, as the recording sidecar samples a
local task: the process trees (``PatternTreeSource``: ``ProcessTreeSource`` plus anon / file
memory) of every process whose parent is outside the pod's view (a container's first process) or the pod's sandbox (PID 1, which adopts orphans), its
own container left out. Samples go to the predictive store through the recording sidecar's
``Sampler`` and ``RunWriter``, as a run of source ``pod`` under the try's identity, with
``hostname`` = ``namespace/pod``: the shaper reads the newest sample of each pod it shapes from
there (``storage.run_store.SqlRunStore.newest_samples``).

It never hurts the task: nothing here can stop the pod's other containers; a store that is down
keeps samples in the sampler's bounded buffer (retried every flush); a sampler that is not in a pod
pod's shared PID namespace (it would see the host's processes) samples nothing and says so once.
Like the recording sidecar it never imports Airflow; the store URL comes from an environment
variable (a Secret in production).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psutil

from airflow_predictive.backends.kubernetes.pod_sampler import POD_NAME_ENV, POD_NAMESPACE_ENV, URL_ENV
from airflow_predictive.core.model.resources import Metric, ResourceVector
from airflow_predictive.sampling.sources import PatternTreeSource

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from airflow_predictive.core.ports import Clock

log = logging.getLogger("airflow_predictive.sampling.pod_sampler")

SANDBOX_PID = 1  # the pod's pause process in a shared PID namespace
SUMMED = (
    Metric.CPU_CORES,
    Metric.MEMORY_BYTES,
    Metric.MEMORY_ANON_BYTES,
    Metric.MEMORY_FILE_BYTES,
    Metric.DISK_READ_BPS,
    Metric.DISK_WRITE_BPS,
)
NETWORK = (Metric.NET_RX_BPS, Metric.NET_TX_BPS)  # one network namespace per pod: read once


# ---- target discovery (pure) ----------------------------------------------------------------------
def ancestors(pid: int, parents: Mapping[int, int]) -> set[int]:
    """``pid`` and every ancestor of it visible in ``parents`` (pid -> ppid)."""
    chain: set[int] = set()
    while pid in parents and pid not in chain:
        chain.add(pid)
        pid = parents[pid]
    return chain


def target_roots(parents: Mapping[int, int], own: int) -> tuple[int, ...]:
    """The roots of the other containers' process trees, oldest pid first.

    A root is a visible process whose parent is not visible (a container's first process: its
    parent, the runtime's shim, lives outside the pod's PID namespace) or is the sandbox (PID 1
    adopts orphans of every container). Left out: the sandbox itself and the sampler's own
    container (``own`` and its ancestors; ``own``'s descendants are never roots).
    """
    mine = ancestors(own, parents)
    roots = []
    for pid, ppid in parents.items():
        if pid == SANDBOX_PID or pid in mine:
            continue
        if ppid not in parents or ppid == SANDBOX_PID or ppid == 0:
            roots.append(pid)
    return tuple(sorted(roots))


def in_shared_pod_namespace(parents: Mapping[int, int], own: int) -> bool:
    """Whether the sampler runs beside a pod sandbox rather than under an init: in a pod's shared
    PID namespace the sandbox is PID 1 and the sampler's container hangs from outside the
    namespace (its first process has a parent we cannot see), so PID 1 is no ancestor of it. In
    the host's namespace (or a container of its own) every process descends from PID 1: sampling
    there would count the whole machine (or nothing)."""
    return SANDBOX_PID not in ancestors(own, parents)


def read_parents(proc: str = "/proc") -> dict[int, int]:
    """pid -> ppid of every process visible in ``proc`` (vanishing ones skipped)."""
    out: dict[int, int] = {}
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            out[int(name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    return out


# ---- the usage of every other container ------------------------------------------------------------
class PodProcessesSource:
    """Sums the process trees of ``target_roots``; roots are found again at every ``refresh``.

    CPU and disk rates of a tree start at its second reading (the first is the baseline of its
    counters); a tree whose root exited (a container that ended or restarts) is dropped.
    """

    def __init__(
        self,
        *,
        own: int | None = None,
        clock: Clock | None = None,
        parents: Callable[[], Mapping[int, int]] = read_parents,
    ) -> None:
        self.own = os.getpid() if own is None else own
        self._clock = clock
        self._parents = parents
        self.trees: dict[int, PatternTreeSource] = {}
        self._net_root: int | None = None

    @property
    def roots(self) -> tuple[int, ...]:
        return tuple(sorted(self.trees))

    def refresh(self) -> bool:
        """Find the roots again; True when there is something to sample."""
        try:
            roots = set(target_roots(self._parents(), self.own))
        except OSError as exc:
            log.warning("predictive pod sampler: cannot list processes (%s)", exc)
            return bool(self.trees)
        for pid in set(self.trees) - roots:
            self.trees.pop(pid).close()
        for pid in sorted(roots - set(self.trees)):
            try:
                self.trees[pid] = PatternTreeSource(  # anon / file memory from /proc, as a local task's
                    pid, clock=self._clock, network=self._net_root is None, exclude=(self.own,)
                )
            except psutil.Error:
                continue  # exited meanwhile, or hidden from us
            if self._net_root is None:
                self._net_root = pid
        if self._net_root not in self.trees:
            self._net_root = None
        return bool(self.trees)

    def read(self) -> ResourceVector | None:
        readings = []
        for pid, tree in list(self.trees.items()):
            reading = tree.read()
            if reading is None:  # the root is gone: the next refresh finds what replaced it
                self.trees.pop(pid).close()
                if self._net_root == pid:
                    self._net_root = None
                continue
            readings.append((pid, reading))
        return sum_readings(readings, self._net_root) if readings else ResourceVector()

    def close(self) -> None:
        for tree in self.trees.values():
            tree.close()
        self.trees.clear()


def sum_readings(readings: Sequence[tuple[int, ResourceVector]], net_root: int | None) -> ResourceVector:
    """CPU, memory and disk summed over the trees (absent when no tree measured it); network from
    the one tree that reads it (the pod's network namespace is shared)."""
    values: dict[Metric, float | None] = {}
    for metric in SUMMED:
        present = [r.get(metric) for _, r in readings if r.get(metric) is not None]
        values[metric] = float(sum(v for v in present if v is not None)) if present else None
    for pid, reading in readings:
        if pid == net_root:
            for metric in NETWORK:
                values[metric] = reading.get(metric)
    return ResourceVector.lenient(values)


# ---- the entry point -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PodSamplerArgs:
    dag_id: str
    task_id: str
    run_id: str
    try_number: int = 1
    map_index: int = -1
    url_env: str = URL_ENV
    interval: float = 1.0
    flush: float = 1.0
    timeout: float = 1.0


def parse_args(argv: Sequence[str]) -> PodSamplerArgs:
    p = argparse.ArgumentParser(prog="python -m airflow_predictive.sampling.pod_sampler")
    p.add_argument("--dag-id", required=True)
    p.add_argument("--task-id", required=True)
    p.add_argument("--run-id", required=True)
    p.add_argument("--try-number", type=int, default=1)
    p.add_argument("--map-index", type=int, default=-1)
    p.add_argument("--url-env", default=URL_ENV, help="environment variable holding the store URL")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    p.add_argument("--flush", type=float, default=1.0, help="seconds between writes")
    p.add_argument("--timeout", type=float, default=1.0, help="seconds per database operation")
    ns = p.parse_args(list(argv))
    for name in ("interval", "flush", "timeout"):
        if not getattr(ns, name) > 0:
            p.error(f"--{name} must be positive")
    return PodSamplerArgs(**vars(ns))


def pod_ref(env: Mapping[str, str]) -> str:
    """``namespace/pod`` (the shaper's handle ref) from the downward API variables."""
    import socket

    name = env.get(POD_NAME_ENV) or socket.gethostname()  # a pod's hostname is its name by default
    return f"{env.get(POD_NAMESPACE_ENV) or 'default'}/{name}"


class _PodSampling:
    """The loop's view of the sampler: find the roots, then take a reading when there are any."""

    def __init__(self, source: PodProcessesSource, sampler: object, *, usable: bool) -> None:
        self.source = source
        self.sampler = sampler
        self.usable = usable
        self._said_empty = False

    def tick(self) -> bool:
        if not self.usable or not self.source.refresh():
            if not self._said_empty:
                self._said_empty = True
                log.info("predictive pod sampler: no other container's process visible yet")
            return True
        self._said_empty = False
        return bool(self.sampler.tick())  # type: ignore[attr-defined]


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        return 2 if exc.code else 0
    from datetime import UTC, datetime

    from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord, RunSource, TaskKey
    from airflow_predictive.sampling.clock import MonotonicClock
    from airflow_predictive.sampling.control import EndMessage
    from airflow_predictive.sampling.recorder import RunWriter
    from airflow_predictive.sampling.sampler import Sampler
    from airflow_predictive.sampling.sidecar import SidecarLoop, StoreOpener, _Signals, run_loop, safe_url

    signals = _Signals()
    clock = MonotonicClock()
    usable = in_shared_pod_namespace(read_parents(), os.getpid())
    if not usable:
        log.error(
            "predictive pod sampler: not in a pod's shared PID namespace (PID 1 is an ancestor: the "
            "host's or its own container's); nothing is sampled: set shareProcessNamespace: true"
        )
    ref = pod_ref(os.environ)
    began = clock.now()
    record = RunRecord(
        identity=RunIdentity(
            TaskKey(args.dag_id, args.task_id, args.map_index), args.run_id, args.try_number, RunSource.POD
        ),
        start=began,
        hostname=ref,
        sample_interval_s=args.interval,
        note="in-pod sampler (shared process namespace)",
    )
    source = PodProcessesSource(clock=clock)
    sampler = Sampler(0, source, clock)
    writer = RunWriter(record, sampler, clock, leg_started_at_s=began.timestamp())
    url = os.environ.get(args.url_env, "")
    if not url:
        log.error("predictive pod sampler: %s is not set; nothing is recorded", args.url_env)
        return 2

    # SQLAlchemy takes a second or more to import on a busy node: sampling starts at once, samples
    # wait in the sampler's buffer until the store is open (as the recording sidecar does)
    def unusable(exc: Exception) -> None:  # a bad URL or a missing driver: say it once, keep the pod going
        log.error("predictive pod sampler: cannot use the database %s (%s)", safe_url(url), exc)

    opener = StoreOpener(lambda: url, args.timeout, on_error=unusable, writer=writer)
    loop = SidecarLoop(
        _PodSampling(source, sampler, usable=usable),  # type: ignore[arg-type]
        clock,
        interval=args.interval,
        flush_every=args.flush,
        flusher=opener,
    )
    log.info("predictive pod sampler: sampling pod %s every %.2fs for %s", ref, args.interval, record.key)
    run_loop(loop, signals.wait, signals.requested)  # until the kubelet stops the sidecar
    opener.join(timeout=30)
    if opener.store is None:
        log.error(
            "predictive pod sampler: no store; %d samples of %s not recorded", sampler.stats.buffered, ref
        )
        source.close()
        return 4
    writer.store = opener.store
    end = EndMessage(
        Outcome.UNKNOWN,
        datetime.now(UTC),
        note="in-pod sampler stopped with its pod (the try's outcome is in its listener record)",
    )
    writer.catch_up(end, budget_s=10.0, wait=signals.wait, oom_killed=lambda: False)
    stats = sampler.stats
    log.info(
        "predictive pod sampler: %s stopped: %d samples, %d written, %d dropped",
        ref, stats.samples, stats.written, stats.dropped,
    )  # fmt: skip
    source.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
