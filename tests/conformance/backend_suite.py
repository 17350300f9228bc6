"""One conformance suite for every ``ResourceBackend`` (cgroups, Kubernetes via the emulator, fake).

Why it exists: the planner and the shaping controller treat every backend the same way, so every
backend must answer the same questions the same way (explicit resize outcomes, usage as a
``ResourceVector`` with absent metrics as ``None``, ``ExitKind.OOM_KILLED`` past the memory limit,
idempotent release, capacity accounting). It must never contain backend-specific branches: a
backend that differs says so through its ``Capabilities`` or its ``ConformanceProfile``.

How to plug a backend in: subclass ``BackendConformance`` in a test module (name the subclass
``Test...`` so pytest collects it) and provide these fixtures (module-level or on the subclass):

``backend`` -> ResourceBackend
    A ready backend. The suite provisions, resizes and releases through it and releases every
    handle it provisioned at teardown (the fixture may clean up more).

``make_workload`` -> Callable[[float, bool, float], ProvisionSpec]
    ``make_workload(memory_mb, cpu_busy, seconds)`` returns a spec (unique ``name`` per call) whose
    task allocates ``memory_mb`` MiB in steps of at most 16 MiB within about one second, keeps it
    resident (pages touched), keeps one core busy when ``cpu_busy`` (else sleeps), and exits 0
    after ``seconds`` seconds. If a step cannot be allocated because of the memory limit, the task
    is OOM-killed by the backend's enforcement (it must not catch MemoryError and exit cleanly).

``advance_time`` -> Callable[[float], None]
    Lets ``seconds`` pass for the backend: ``time.sleep`` for real backends, advancing the injected
    clock for simulated ones. The suite only waits through it (polling with a bound, never
    asserting on durations).

``read_back`` -> Callable[[Handle], ResourceVector | None]
    The limits *in force* for a handle, read from where they are enforced, never from the
    backend's own bookkeeping or reports: the cgroup files of the process's cgroup (found through
    ``/proc/<pid>/cgroup``: ``memory.limit_in_bytes`` / ``memory.max``, ``cpu.cfs_quota_us`` /
    ``cpu.max``), the pod's ``status.containerStatuses[].resources`` through the cluster's API, the
    fake's simulated kernel. A metric without a limit in force is ``None``; ``None`` as a whole
    when nothing can be read (task gone, pod not started yet).

``conformance_profile`` -> ConformanceProfile  (optional; defaults to ``ConformanceProfile()``)
    Sizes and waiting bounds for this backend (see the dataclass).

An observe-only backend (``capabilities().enforcing`` False) must answer every resize with
UNSUPPORTED; the suite checks that instead of the enforcing outcomes, and skips only the OOM test.

Every allocation the suite asks for is checked where it is enforced (``read_back``): after
provision, after each applied resize (and that the backend's report matches it), and unchanged
after a rejected or infeasible one. An observe-only backend must have no limit at or below the
one asked in force (it must not pretend).

What the suite checks, in order of a task's life: provision -> usage over time -> resize up ->
resize down (applied above usage, rejected below it) -> capabilities honoured (a metric that is
not live -> UNSUPPORTED; above capacity -> INFEASIBLE) -> OOM past the limit reported as
``ExitKind.OOM_KILLED`` -> a finished task reports SUCCEEDED -> release idempotent -> capacity
accounting (allocated grows by the requests and shrinks back on release).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import pytest

from airflow_predictive.core.model.backend import (
    Allocation,
    ExitKind,
    Handle,
    ProvisionSpec,
    ResizeResult,
    ResizeStatus,
    TaskState,
)
from airflow_predictive.core.model.resources import MIB, Metric, ResourceVector

if TYPE_CHECKING:
    from airflow_predictive.core.ports import ResourceBackend

MakeWorkload = Callable[[float, bool, float], ProvisionSpec]
AdvanceTime = Callable[[float], None]
ReadBack = Callable[[Handle], ResourceVector | None]


def _covers(in_force: Allocation, asked: Allocation) -> bool:
    """Requests at least as asked; limits at least as asked or absent (not enforced: unlimited)."""
    for metric, want in asked.requests.present().items():
        got = in_force.requests.get(metric)
        if got is None or got < want * (1 - 1e-3):
            return False
    for metric, want in asked.limits.present().items():
        got = in_force.limits.get(metric)
        if got is not None and got < want * (1 - 1e-3):
            return False
    return True


@dataclass(frozen=True)
class ConformanceProfile:
    """Per-backend sizes and bounds for the suite.

    memory_limit_mb: memory limit (and request) at provision for the long-running workload.
    workload_mb: memory the long-running workload holds (well below memory_limit_mb).
    cpu_cores: CPU limit (and request) at provision.
    oom_limit_mb / oom_workload_mb: limit and demand of the workload that must be OOM-killed.
    long_seconds: lifetime of workloads that must still run while the suite looks at them.
    short_seconds: lifetime of the workload that must finish on its own.
    settle_seconds: how long the suite waits (through advance_time) for a condition to show.
    poll_seconds: step of that waiting.
    reported: metrics the backend must eventually report for a running, busy task.
    cpu_limit_may_be_unset: the backend may leave CPU without a limit where one was asked (never a
        lower one): the Kubernetes backend leaves the CPU limit out of a pod whose requests would
        equal its limits, so that the pod stays Burstable and can be resized in place.
    memory_tolerance_bytes: how far the memory limit in force may sit from the one asked (the
        kernel rounds it to a page).
    """

    memory_limit_mb: float = 256.0
    workload_mb: float = 48.0
    cpu_cores: float = 1.0
    oom_limit_mb: float = 64.0
    oom_workload_mb: float = 256.0
    long_seconds: float = 60.0
    short_seconds: float = 1.0
    settle_seconds: float = 30.0
    poll_seconds: float = 0.2
    reported: frozenset[Metric] = field(
        default_factory=lambda: frozenset({Metric.CPU_CORES, Metric.MEMORY_BYTES})
    )
    cpu_limit_may_be_unset: bool = False
    memory_tolerance_bytes: float = 4096.0


def check_in_force(
    in_force: ResourceVector | None, asked: Allocation, profile: ConformanceProfile, what: str
) -> None:
    """The limits read back equal the ones asked (memory within a page, CPU within 1%)."""
    assert in_force is not None, f"{what}: no limit could be read back where it is enforced"
    want_mem = asked.limits.memory_bytes
    if want_mem is not None:
        got = in_force.memory_bytes
        assert got is not None, f"{what}: no memory limit in force, {want_mem / MIB:g} MiB asked"
        assert abs(got - want_mem) <= profile.memory_tolerance_bytes, (
            f"{what}: memory limit in force {got / MIB:g} MiB, asked {want_mem / MIB:g} MiB"
        )
    want_cpu = asked.limits.cpu_cores
    if want_cpu is not None:
        got = in_force.cpu_cores
        if got is None:
            assert profile.cpu_limit_may_be_unset, f"{what}: no CPU limit in force, {want_cpu:g} asked"
        else:
            assert abs(got - want_cpu) <= 0.01 * want_cpu + 0.001, (
                f"{what}: CPU limit in force {got:g} cores, asked {want_cpu:g}"
            )


def check_not_enforced(in_force: ResourceVector | None, asked: Allocation, what: str) -> None:
    """Observe-only: nothing at or below the asked memory limit holds the task."""
    want_mem = asked.limits.memory_bytes
    got = None if in_force is None else in_force.memory_bytes
    assert want_mem is None or got is None or got > want_mem, (
        f"{what}: observe-only, yet a memory limit of {got / MIB:g} MiB is in force"
    )


def _alloc(cpu: float, memory_mb: float) -> Allocation:
    return Allocation.exactly(ResourceVector(cpu_cores=cpu, memory_bytes=memory_mb * MIB))


class BackendConformance:
    """Behaviours every backend must show. Subclass it as ``Test<Backend>Conformance``."""

    @pytest.fixture
    def conformance_profile(self) -> ConformanceProfile:
        return ConformanceProfile()

    @pytest.fixture
    def provisioned(self, backend: ResourceBackend) -> Iterator[list[Handle]]:
        """Handles made by a test; released (idempotently) at teardown."""
        handles: list[Handle] = []
        yield handles
        for handle in handles:
            backend.release(handle)

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _eventually(
        what: str,
        check: Callable[[], bool],
        advance_time: AdvanceTime,
        profile: ConformanceProfile,
    ) -> None:
        waited = 0.0
        while not check():
            if waited >= profile.settle_seconds:
                pytest.fail(f"not within {profile.settle_seconds:g}s of backend time: {what}")
            advance_time(profile.poll_seconds)
            waited += profile.poll_seconds

    def _final_state(
        self,
        what: str,
        backend: ResourceBackend,
        handle: Handle,
        advance_time: AdvanceTime,
        profile: ConformanceProfile,
    ) -> TaskState:
        """Wait (in backend time) until the task is no longer RUNNING; its state then."""
        states: list[TaskState] = []

        def ended() -> bool:
            states.append(backend.state(handle))
            return states[-1].kind is not ExitKind.RUNNING

        self._eventually(what, ended, advance_time, profile)
        return states[-1]

    def _start_long(
        self,
        backend: ResourceBackend,
        make_workload: MakeWorkload,
        provisioned: list[Handle],
        profile: ConformanceProfile,
        *,
        cpu_busy: bool = False,
    ) -> Handle:
        spec = make_workload(profile.workload_mb, cpu_busy, profile.long_seconds)
        handle = backend.provision(spec, _alloc(profile.cpu_cores, profile.memory_limit_mb))
        provisioned.append(handle)
        return handle

    def _wait_holding_memory(
        self,
        backend: ResourceBackend,
        handle: Handle,
        advance_time: AdvanceTime,
        profile: ConformanceProfile,
    ) -> ResourceVector:
        seen: list[ResourceVector] = []

        def holds() -> bool:
            usage = backend.usage(handle)
            if usage is None or usage.memory_bytes is None:
                return False
            seen.append(usage)
            return usage.memory_bytes >= 0.8 * profile.workload_mb * MIB

        self._eventually(f"memory usage reaches {profile.workload_mb:g} MiB", holds, advance_time, profile)
        return seen[-1]

    def _in_force(
        self,
        backend: ResourceBackend,
        read_back: ReadBack,
        handle: Handle,
        asked: Allocation,
        advance_time: AdvanceTime,
        profile: ConformanceProfile,
        what: str,
    ) -> ResourceVector | None:
        """Wait (in backend time) until ``asked`` is in force where it is enforced, and check it.

        A task takes effect asynchronously (a process joins its cgroup as it starts, a kubelet
        actuates a pod): the wait absorbs that. An observe-only backend must never show it.
        """
        enforcing = backend.capabilities().enforcing
        seen: list[ResourceVector | None] = []

        def shows() -> bool:
            seen.append(read_back(handle))
            if not enforcing:
                return seen[-1] is not None
            try:
                check_in_force(seen[-1], asked, profile, what)
            except AssertionError:
                return False
            return True

        waited = 0.0
        while not shows() and waited < profile.settle_seconds:
            advance_time(profile.poll_seconds)
            waited += profile.poll_seconds
        if enforcing:
            check_in_force(seen[-1], asked, profile, what)
        else:
            check_not_enforced(seen[-1], asked, what)
        return seen[-1]

    @staticmethod
    def _enforcing_or_unsupported(backend: ResourceBackend, result: ResizeResult) -> bool:
        """True when the backend enforces limits; an observe-only backend must answer UNSUPPORTED."""
        if backend.capabilities().enforcing:
            return True
        assert result.status is ResizeStatus.UNSUPPORTED, result
        assert result.reason
        return False

    # -- provision and usage ---------------------------------------------------------------

    def test_provision_returns_a_running_handle_of_this_backend(
        self,
        backend: ResourceBackend,
        make_workload: MakeWorkload,
        advance_time: AdvanceTime,
        read_back: ReadBack,
        provisioned: list[Handle],
        conformance_profile: ConformanceProfile,
    ) -> None:
        profile = conformance_profile
        handle = self._start_long(backend, make_workload, provisioned, profile)
        asked = _alloc(profile.cpu_cores, profile.memory_limit_mb)
        assert handle.backend == backend.name
        assert handle.ref
        assert handle.allocation == asked
        assert backend.state(handle).kind is ExitKind.RUNNING
        self._in_force(backend, read_back, handle, asked, advance_time, profile, "after provision")

    def test_usage_reports_memory_and_cpu_of_a_running_task(
        self,
        backend: ResourceBackend,
        make_workload: MakeWorkload,
        advance_time: AdvanceTime,
        provisioned: list[Handle],
        conformance_profile: ConformanceProfile,
    ) -> None:
        profile = conformance_profile
        handle = self._start_long(backend, make_workload, provisioned, profile, cpu_busy=True)
        usage = self._wait_holding_memory(backend, handle, advance_time, profile)
        assert usage.memory_bytes is not None
        assert usage.memory_bytes <= profile.memory_limit_mb * MIB
        if Metric.CPU_CORES in profile.reported:

            def busy() -> bool:
                u = backend.usage(handle)
                # Low bar on purpose: on a loaded shared host a busy task may get a fraction of a
                # core; an idle one shows ~0.
                return u is not None and u.cpu_cores is not None and u.cpu_cores >= 0.1

            self._eventually("a busy task shows >= 0.1 cores", busy, advance_time, profile)
            later = backend.usage(handle)
            assert later is not None and later.cpu_cores is not None
            assert later.cpu_cores <= profile.cpu_cores * 1.5 + 0.1
        final = backend.usage(handle)
        assert final is not None
        for metric in profile.reported:
            assert final.get(metric) is not None, f"{metric.value} not reported"

    # -- resize ------------------------------------------------------------------------------

    def test_resize_up_is_applied_and_returned(
        self,
        backend: ResourceBackend,
        make_workload: MakeWorkload,
        advance_time: AdvanceTime,
        read_back: ReadBack,
        provisioned: list[Handle],
        conformance_profile: ConformanceProfile,
    ) -> None:
        profile = conformance_profile
        handle = self._start_long(backend, make_workload, provisioned, profile)
        bigger = _alloc(profile.cpu_cores * 1.5, profile.memory_limit_mb * 1.5)
        before = self._in_force(
            backend, read_back, handle, handle.allocation, advance_time, profile, "before the resize up"
        )
        result = backend.resize(handle, bigger)
        if not self._enforcing_or_unsupported(backend, result):
            assert read_back(handle) == before  # UNSUPPORTED changed nothing in force
            return
        assert result.status is ResizeStatus.APPLIED, result.reason
        assert result.applied
        in_force = read_back(handle)
        check_in_force(in_force, bigger, profile, "after an applied resize up")
        assert result.allocation is not None
        check_in_force(
            in_force, Allocation.exactly(result.allocation.limits), profile, "the reported allocation"
        )
        # the allocation reported is the one in force (read back): it may differ from the one asked
        # by the backend's documented adjustments (Kubernetes drops a CPU limit to stay Burstable),
        # never by giving less than asked
        assert result.allocation is not None and _covers(result.allocation, bigger), result.allocation
        assert backend.state(handle).kind is ExitKind.RUNNING

    def test_resize_down_applies_above_usage_and_is_rejected_below_it(
        self,
        backend: ResourceBackend,
        make_workload: MakeWorkload,
        advance_time: AdvanceTime,
        read_back: ReadBack,
        provisioned: list[Handle],
        conformance_profile: ConformanceProfile,
    ) -> None:
        profile = conformance_profile
        handle = self._start_long(backend, make_workload, provisioned, profile)
        self._wait_holding_memory(backend, handle, advance_time, profile)

        below = _alloc(profile.cpu_cores, profile.workload_mb * 0.5)
        rejected = backend.resize(handle, below)
        if not self._enforcing_or_unsupported(backend, rejected):
            return
        assert rejected.status is ResizeStatus.REJECTED, rejected.reason
        assert rejected.reason  # says why (below usage)
        assert not rejected.applied
        assert backend.state(handle).kind is ExitKind.RUNNING
        check_in_force(read_back(handle), handle.allocation, profile, "after a rejected resize (unchanged)")

        smaller = _alloc(profile.cpu_cores * 0.5, (profile.memory_limit_mb + profile.workload_mb * 2) / 2)
        applied = backend.resize(handle, smaller)
        assert applied.status is ResizeStatus.APPLIED, applied.reason
        assert applied.allocation is not None and _covers(applied.allocation, smaller), applied.allocation
        assert applied.allocation.limits.memory_bytes == smaller.limits.memory_bytes
        assert backend.state(handle).kind is ExitKind.RUNNING
        check_in_force(read_back(handle), smaller, profile, "after an applied resize down")

    def test_resize_of_a_metric_that_is_not_live_is_unsupported(
        self,
        backend: ResourceBackend,
        make_workload: MakeWorkload,
        provisioned: list[Handle],
        conformance_profile: ConformanceProfile,
    ) -> None:
        caps = backend.capabilities()
        not_live = [m for m in Metric if m not in caps.live]
        assert not_live, "a backend that resizes every metric live is not expected"
        metric = not_live[0]
        handle = self._start_long(backend, make_workload, provisioned, conformance_profile)
        current = handle.allocation
        changed = Allocation(
            requests=current.requests,
            limits=current.limits.with_value(metric, (current.limits.get(metric) or 0.0) + 1.0),
        )
        result = backend.resize(handle, changed)
        assert result.status is ResizeStatus.UNSUPPORTED, result.reason
        assert result.reason  # says why (which metric, or observe-only)

    def test_resize_beyond_capacity_is_infeasible(
        self,
        backend: ResourceBackend,
        make_workload: MakeWorkload,
        advance_time: AdvanceTime,
        read_back: ReadBack,
        provisioned: list[Handle],
        conformance_profile: ConformanceProfile,
    ) -> None:
        allocatable = backend.capacity().allocatable.memory_bytes
        assert allocatable is not None and allocatable > 0
        handle = self._start_long(backend, make_workload, provisioned, conformance_profile)
        self._in_force(
            backend, read_back, handle, handle.allocation, advance_time, conformance_profile, "at start"
        )
        huge = Allocation.exactly(
            ResourceVector(cpu_cores=conformance_profile.cpu_cores, memory_bytes=allocatable * 4)
        )
        result = backend.resize(handle, huge)
        if not self._enforcing_or_unsupported(backend, result):
            return
        assert result.status is ResizeStatus.INFEASIBLE, result.reason
        assert result.reason
        assert backend.state(handle).kind is ExitKind.RUNNING
        check_in_force(
            read_back(handle),
            handle.allocation,
            conformance_profile,
            "after an infeasible resize (unchanged)",
        )

    def test_unknown_handle_is_gone_without_usage(
        self,
        backend: ResourceBackend,
        make_workload: MakeWorkload,
        provisioned: list[Handle],
        conformance_profile: ConformanceProfile,
    ) -> None:
        real = self._start_long(backend, make_workload, provisioned, conformance_profile)
        # Well-formed for this backend (derived from a real handle), but never provisioned.
        stranger = replace(real, name=f"{real.name}-x", ref=f"{real.ref}-x")
        assert backend.state(stranger).kind is ExitKind.GONE
        assert backend.usage(stranger) is None
        assert not backend.resize(stranger, _alloc(2, 128)).applied
        backend.release(stranger)  # releasing what is not there is not an error
        assert backend.state(real).kind is ExitKind.RUNNING  # and touches nothing else

    def test_capabilities_are_consistent(self, backend: ResourceBackend) -> None:
        caps = backend.capabilities()
        assert not (caps.live & caps.provision_only)
        for metric, bounds in caps.bounds.items():
            assert isinstance(metric, Metric)
            assert 0 <= bounds.minimum <= bounds.maximum
            assert bounds.granularity > 0
        if caps.enforcing:
            assert Metric.MEMORY_BYTES in caps.live | caps.provision_only

    # -- exits ---------------------------------------------------------------------------------

    def test_task_past_its_memory_limit_is_reported_oom_killed(
        self,
        backend: ResourceBackend,
        make_workload: MakeWorkload,
        advance_time: AdvanceTime,
        provisioned: list[Handle],
        conformance_profile: ConformanceProfile,
    ) -> None:
        profile = conformance_profile
        enforcing = backend.capabilities().enforcing
        # observe-only: the limit is recorded, not enforced, and the backend must not pretend it is:
        # a short task past its "limit" runs to completion
        seconds = profile.long_seconds if enforcing else 1.0
        spec = make_workload(profile.oom_workload_mb, False, seconds)
        handle = backend.provision(spec, _alloc(profile.cpu_cores, profile.oom_limit_mb))
        provisioned.append(handle)
        state = self._final_state("the task exceeding its limit ends", backend, handle, advance_time, profile)
        if not enforcing:
            assert state.kind is ExitKind.SUCCEEDED, state
            return
        assert state.kind is ExitKind.OOM_KILLED, state
        assert state.oom_events >= 1
        assert state.reason

    def test_task_that_finishes_reports_succeeded(
        self,
        backend: ResourceBackend,
        make_workload: MakeWorkload,
        advance_time: AdvanceTime,
        provisioned: list[Handle],
        conformance_profile: ConformanceProfile,
    ) -> None:
        profile = conformance_profile
        spec = make_workload(8.0, False, profile.short_seconds)
        handle = backend.provision(spec, _alloc(profile.cpu_cores, profile.memory_limit_mb))
        provisioned.append(handle)
        state = self._final_state("a short task finishes", backend, handle, advance_time, profile)
        assert state.kind is ExitKind.SUCCEEDED, state
        assert state.exit_code == 0
        assert state.oom_events == 0

    # -- release and capacity ------------------------------------------------------------------

    def test_release_is_idempotent_and_ends_usage(
        self,
        backend: ResourceBackend,
        make_workload: MakeWorkload,
        provisioned: list[Handle],
        conformance_profile: ConformanceProfile,
    ) -> None:
        handle = self._start_long(backend, make_workload, provisioned, conformance_profile)
        backend.release(handle)
        backend.release(handle)
        assert backend.usage(handle) is None
        assert backend.state(handle).kind is not ExitKind.RUNNING
        result = backend.resize(handle, handle.allocation)
        assert result.status is not ResizeStatus.APPLIED

    def test_capacity_accounts_for_provisioned_requests(
        self,
        backend: ResourceBackend,
        make_workload: MakeWorkload,
        advance_time: AdvanceTime,
        read_back: ReadBack,
        provisioned: list[Handle],
        conformance_profile: ConformanceProfile,
    ) -> None:
        profile = conformance_profile
        before = backend.capacity()
        assert before.allocatable.cpu_cores is not None and before.allocatable.cpu_cores > 0
        assert before.allocatable.memory_bytes is not None and before.allocatable.memory_bytes > 0
        base_mem = before.allocated.memory_bytes or 0.0
        base_cpu = before.allocated.cpu_cores or 0.0

        handle = self._start_long(backend, make_workload, provisioned, profile)
        during = backend.capacity()
        assert during.allocated.memory_bytes == pytest.approx(base_mem + profile.memory_limit_mb * MIB)
        assert during.allocated.cpu_cores == pytest.approx(base_cpu + profile.cpu_cores)
        free = during.free.memory_bytes
        assert free is not None
        assert free == pytest.approx(
            max(0.0, during.allocatable.memory_bytes - during.allocated.memory_bytes)
        )

        self._in_force(backend, read_back, handle, handle.allocation, advance_time, profile, "at start")
        bigger = _alloc(profile.cpu_cores, profile.memory_limit_mb * 1.5)
        if self._enforcing_or_unsupported(backend, result := backend.resize(handle, bigger)):
            assert result.applied, result
            check_in_force(read_back(handle), bigger, profile, "after the resize that capacity accounts for")
            resized = backend.capacity()
            assert resized.allocated.memory_bytes == pytest.approx(
                base_mem + profile.memory_limit_mb * 1.5 * MIB
            )

        backend.release(handle)
        after = backend.capacity()
        assert (after.allocated.memory_bytes or 0.0) == pytest.approx(base_mem)
        assert (after.allocated.cpu_cores or 0.0) == pytest.approx(base_cpu)
