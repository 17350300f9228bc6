"""Live shaping of the PredictiveKubernetesExecutor's worker pods (in-place resize), one thread.

Why a module of its own next to ``local_shaping.py`` rather than one generalised class: what a
member waits for and how a resize is sent differ (a pod found by its labels whose container runs
and reports metrics, against a process in a cgroup; a resize submitted and followed on later
rounds, against a cgroup write that is done at once), while everything else is shared and imported
from there: the ``ShapingGroup`` thread, ``PoolGate``'s ledger-first grows (``PodPoolGate`` adds
submit / poll to it), the task's bounds and retry floor, the warm-up, the events' run key.

How it works: ``KubernetesShaping.start`` (from ``_launch``, no I/O) adds a ``PodShapedTask`` to
the group; each round (``[predictive] kubernetes_shaping_interval``) it looks for its pod with the
same label selector and backend call as the plan's timed steps (``find``), and once the pod's
container runs and metrics.k8s.io answers for it, builds the runtime's controller
(``runtime.shaper``: events stored, applied changes adjusting the reservation, the mid-run
re-forecast) along the served forecast at the task's risk quantiles and the plan, on the plan's
clock (t = 0 when the executor launched the try). From then on the controller owns the pod: the
executor sends it no timed step (``Running.shaped``), the controller follows the plan's steps
itself. If shaping gives up before it owns the pod (the controller cannot be built), the executor
takes the pod back and its timed steps apply again (``given_up``).

Never hurting the task: every failure (API error, pod not found, metrics absent) is one log line
and the pod keeps the resources it has. Bounded delays: ``start`` never waits; ``stop`` waits at
most ``STOP_WAIT_S`` for a tick in progress; the shaping thread's own requests are bounded by
``SHAPING_REQUEST_TIMEOUT_S`` per request and ``SHAPING_MAX_RETRIES``, so a stuck API server slows
the shaping rounds, never the executor loop. Requests: with the executor's worker selector (the
default wiring) a round lists the pods and their metrics once for all members (``SnapshotPods``, two
calls however many pods are shaped), and a member reads nothing of its own unless it sends a resize
(the patch, and the nodes when not cached); without it, each member reads its pod and metrics.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from airflow_predictive.core.model.backend import ExitKind, ResizeResult, ResizeStatus
from airflow_predictive.core.model.resources import format_bytes
from airflow_predictive.core.shaping.runner import ShapingGroup
from airflow_predictive.executors.local_shaping import (
    PoolGate,
    ShapedMember,
    forecast_expectation,
    log_shaping_ended,
    retry_floor,
    shaping_run_key,
    shaping_settings_for,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_predictive.core.model.backend import Allocation, Handle
    from airflow_predictive.core.shaping.controller import ShapingController, TickReport
    from airflow_predictive.executors.coordinator import Running
    from airflow_predictive.executors.opt_in import TaskSettings

log = logging.getLogger(__name__)

STOP_WAIT_S = 1.0  # the executor loop waits at most this for a tick in progress when a pod ends
SHAPING_REQUEST_TIMEOUT_S = 5.0  # per request of the shaping thread (the backend's own is 10 s)
SHAPING_MAX_RETRIES = 1  # a failed request is retried once; the next round tries again anyway


class PodPoolGate(PoolGate):
    """``PoolGate`` for a pod backend whose resizes are submitted now and observed later: a grow is
    reserved in the ledger before the patch is sent ("pool full" when the pool cannot hold it), and
    given back when the resize ends without being applied (refused, infeasible, timed out)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # ref -> (target, allocation before it, reserved ahead, until) of the resize in flight
        self._flight: dict[str, tuple[Allocation, Allocation, bool, float | None]] = {}

    def submit_resize(self, handle: Handle, allocation: Allocation) -> ResizeResult:
        current = self._in_force.get(handle.ref, handle.allocation)
        now = self.clock()
        until = self._segment_end(now)
        self._flight.pop(handle.ref, None)  # a new target replaces the one in flight (the ledger too)
        reserved = self._reserve_grow(handle, current, allocation, now, until)
        if isinstance(reserved, ResizeResult):
            return reserved
        out: ResizeResult = self.backend.submit_resize(handle, allocation)  # type: ignore[attr-defined]
        if out.status is ResizeStatus.PENDING:
            self._flight[handle.ref] = (allocation, current, reserved, until)
        else:
            self._settle(handle, out, allocation, current, reserved_ahead=reserved, now=now, until=until)
        return out

    def poll_resize(self, handle: Handle) -> ResizeResult | None:
        out: ResizeResult | None = self.backend.poll_resize(handle)  # type: ignore[attr-defined]
        flight = self._flight.get(handle.ref)
        if flight is None or (out is not None and out.status is ResizeStatus.PENDING):
            return out
        del self._flight[handle.ref]
        target, current, reserved, until = flight
        if out is None:  # the backend lost track of it: nothing known to be in force, give back
            out = ResizeResult(ResizeStatus.ERROR, "the resize in flight vanished", allocation=current)
        self._settle(handle, out, target, current, reserved_ahead=reserved, now=self.clock(), until=until)
        return out


class PodShapedTask(ShapedMember):
    """One worker pod in the executor's shaping group: found by its labels (``find``), its
    controller built (``build``) once its container runs and reports usage, then ticked every
    round; for its first ``warmup_s`` it is only grown, never reclaimed below its start (an Airflow
    worker starts small, then imports and parses faster than a grow follows). ``given_up`` says why
    shaping stopped before it owned the pod (the executor's timed steps take it back)."""

    def __init__(
        self,
        name: str,
        find: Callable[[], list[Handle]],
        backend: Any,
        build: Callable[[Handle], ShapingController],
        *,
        warmup_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name, warmup_s=warmup_s, clock=clock)
        self._find = find
        self.backend = backend
        self._build = build
        self.given_up: str | None = None
        self.protected = False  # the pod carries the do-not-disrupt annotations (``_protect``)
        self._waiting_for = ""  # what the last round waited for (logged when it changes)

    def tick(self) -> TickReport | None:
        if self.given_up is not None:
            return None
        if self.controller is None:
            handle = self._running_pod()
            if handle is None:
                return None
            try:
                controller = self._build(handle)
            except Exception as exc:  # never hurts the task: its pod keeps what it has
                self.given_up = f"controller not built: {exc}"
                log.warning("predictive: %s is not shaped (%s); its plan's steps apply", self.name, exc)
                return None
            log.info("predictive: shaping pod %s from %s", handle.ref, _fmt(handle.allocation))
            self._joined(controller)
            self._protect(handle)
        assert self.controller is not None
        return self._tick_controller(self.controller)

    def _protect(self, handle: Handle) -> None:
        """do-not-disrupt / safe-to-evict on the pod once shaping owns it (docs/nodes.md): node
        consolidation would otherwise evict exactly the pods being resized. One patch, from this
        thread; the annotations stay for the pod's life (a worker pod runs one try). Best effort."""
        protect = getattr(self.backend, "protect", None)
        if protect is not None:
            self.protected = bool(protect(handle.ref, on=True))

    def _running_pod(self) -> Handle | None:
        """The try's pod once its container runs and its metrics answer; None meanwhile (one log
        line each time what it waits for changes)."""
        try:
            handles = self._find()
        except Exception as exc:
            return self._wait(f"pod lookup failed ({exc})")
        if not handles:
            return self._wait("no pod yet")
        handle = handles[0]
        try:
            state = self.backend.state(handle)
            if state.kind is not ExitKind.RUNNING or state.reason != "Running":
                return self._wait(f"pod {handle.ref}: {state.kind.value} ({state.reason})")
            usage = self.backend.usage(handle)
        except Exception as exc:
            return self._wait(f"pod {handle.ref} unreadable ({exc})")
        if usage is None or usage.memory_bytes is None:
            return self._wait(f"pod {handle.ref}: no metrics yet")
        return handle

    def _wait(self, why: str) -> Handle | None:
        """No pod to shape this round (``why`` logged when it differs from the last round's)."""
        kind = why.split(" (")[0]
        if kind != self._waiting_for:
            self._waiting_for = kind
            log.info("predictive: shaping of %s waits: %s", self.name, why)
        return None


def _fmt(allocation: Allocation) -> str:
    mem = allocation.limits.memory_bytes
    cpu = allocation.limits.cpu_cores
    return f"memory limit {format_bytes(mem)}, cpu limit {cpu}" if mem else f"cpu limit {cpu}"


def shaping_backend(api_client: Any, settings: Any) -> Any:
    """The shaping thread's own pod backend: a client of its own on the executor's configuration
    (its connection pool is not the executor loop's), the executor's namespace and container, and
    bounded requests (``SHAPING_REQUEST_TIMEOUT_S``, ``SHAPING_MAX_RETRIES``)."""
    from kubernetes import client

    from airflow_predictive.backends.kubernetes.backend import KubernetesPodBackend

    bounded = replace(
        settings,
        request_timeout_s=min(settings.request_timeout_s, SHAPING_REQUEST_TIMEOUT_S),
        max_retries=min(settings.max_retries, SHAPING_MAX_RETRIES),
    )
    return KubernetesPodBackend(client.ApiClient(configuration=api_client.configuration), settings=bounded)


class KubernetesShaping:
    """The executor's shaping of its worker pods: ``start`` a try at its launch, ``stop`` it when
    its pod ends (before the reservation is released), ``close`` on executor end. ``runtime``
    builds the controllers (``runtime.shaper``), ``backend`` is a ``KubernetesPodBackend``."""

    def __init__(self, runtime: Any, backend: Any, interval_s: float, *, selector: str | None = None) -> None:
        self.runtime = runtime
        self.backend = backend
        self.tasks: dict[Any, PodShapedTask] = {}
        # batched: with ``selector`` (the executor's worker pods), each round reads every shaped
        # pod and its usage in two list calls (``SnapshotPods``), not two reads per pod
        self.view: Any = None
        self.selector = selector
        if selector is not None and hasattr(backend, "snapshot"):
            from airflow_predictive.triggers.pod_shaper import SnapshotPods

            self.view = SnapshotPods(backend, backend.settings.container_name)
        refresh = self._refresh if self.view is not None else None
        self.group = ShapingGroup(interval_s, name="predictive-kubernetes-shaping", before_round=refresh)

    def _refresh(self) -> None:
        assert self.view is not None and self.selector is not None
        self.view.refresh(self.selector)

    def start(self, item: Running, task: TaskSettings, forecast: Any = None) -> bool:
        """Shape ``item`` (its handle is its pod's label selector); False (logged) when it cannot."""
        selector = item.handle
        if not isinstance(selector, str) or not selector:
            return False
        try:
            settings = retry_floor(shaping_settings_for(task), item.plan)
            pods: Any = self.view if self.view is not None else self.backend  # batched, or per pod
            backend: Any = pods
            if item.reservation_id is not None:
                backend = PodPoolGate(
                    pods,
                    self.runtime.ledger(),
                    item.reservation_id,
                    plan=item.plan,
                    started=item.started,
                )
            expectation = forecast_expectation(forecast, task)
            plan, started, run_key = item.plan, item.started, shaping_run_key(item.run)

            def build(handle: Handle) -> ShapingController:
                # the plan's clock: t = 0 when the executor launched the try, not when it was found
                started_s = time.monotonic() - max(0.0, time.time() - started)
                return self.runtime.shaper(  # type: ignore[no-any-return]
                    backend,
                    handle,
                    settings,
                    expectation=expectation,
                    plan=plan,
                    reservation_id=item.reservation_id,
                    run_key=run_key,
                    started_s=started_s,
                )

            shaped = PodShapedTask(
                str(item.run.key),
                lambda: list(pods.find(selector)),
                pods,
                build,
                warmup_s=task.shaping_warmup_s,
            )
            self.tasks[item.key] = shaped
            self.group.add(item.key, shaped)
        except Exception as exc:
            log.warning("predictive: %s is not shaped (%s); its plan's steps apply", item.run.key, exc)
            self.tasks.pop(item.key, None)
            return False
        item.shaped = True
        log.info(
            "predictive: shaping %s's pod every %.1fs (%s)",
            item.run.key,
            self.group.interval_s,
            "forecast" if expectation is not None else "no forecast: near-limit grows, idle reclaims",
        )
        return True

    def stop(self, key: Any) -> PodShapedTask | None:
        """Stop shaping ``key``; returns once no tick of it runs, or after ``STOP_WAIT_S``."""
        self.group.remove(key, wait_s=STOP_WAIT_S)
        shaped = self.tasks.pop(key, None)
        log_shaping_ended(shaped)
        return shaped

    def allocation(self, key: Any) -> Allocation | None:
        shaped = self.tasks.get(key)
        return None if shaped is None else shaped.allocation

    def given_up(self, key: Any) -> str | None:
        shaped = self.tasks.get(key)
        return None if shaped is None else shaped.given_up

    def close(self) -> None:
        self.group.close()
        for shaped in self.tasks.values():
            if shaped.controller is not None:
                log.info("predictive: shaping of %s ended with the executor", shaped.name)
        self.tasks.clear()
        self.backend.close()
