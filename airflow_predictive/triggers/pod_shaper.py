"""One shaping round over the pods a label selector finds: what the trigger runs every interval
(in a thread, off the triggerer's event loop) and what the sensor's poke mode runs in the worker.

Why a round and not a loop: the trigger owns time (``asyncio.sleep``) and the sensor owns it in
poke mode (``poke_interval``); both call ``round()``. A round costs two list calls for all pods
(pods + their metrics, ``KubernetesPodBackend.snapshot``), plus one call per pod that is being
resized, plus one store query for all pods when the pods carry the in-pod sampler
(``backends/kubernetes/pod_samples.SidecarUsage``: its newest sample when fresher than ~3 s, else
metrics.k8s.io; the round's report counts the pods per usage origin). Nothing here survives a triggerer restart but the primitives it was built from: pods
and their resizes in flight are found again in the cluster (``attach``), the run's start time
comes back from ``started_at``. It never raises for cluster or storage failures.

With the try's at-start forecast (``expectation``) and plan, each pod is shaped along them as a
local task is: grown ahead of a predicted rise, reclaimed to the forecast, re-forecast from its
observed prefix (``reforecast``, ``Runtime.shaping_reforecast``). Without one it shapes on usage
(near-limit grows, idle reclaims). ``forecast_primitives`` / ``expectation_from_primitives`` carry
the forecast into a trigger's kwargs (JSON, never pickled).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_predictive.backends.kubernetes.translate import task_state
from airflow_predictive.core.model.backend import ExitKind, TaskState
from airflow_predictive.core.ports import SystemClock
from airflow_predictive.core.shaping.controller import ShapingController

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from airflow_predictive.backends.kubernetes.backend import KubernetesPodBackend
    from airflow_predictive.backends.kubernetes.pod_samples import SidecarUsage
    from airflow_predictive.core.model.backend import (
        Allocation,
        Capabilities,
        Capacity,
        Handle,
        ProvisionSpec,
        ResizeResult,
    )
    from airflow_predictive.core.model.plan import AllocationPlan
    from airflow_predictive.core.model.resources import Metric, ResourceVector
    from airflow_predictive.core.model.series import Forecast, UsageSeries
    from airflow_predictive.core.ports import Clock
    from airflow_predictive.core.shaping.controller import ControllerOptions, EventSink, LedgerAdjuster
    from airflow_predictive.core.shaping.expectation import ForecastExpectation
    from airflow_predictive.core.shaping.policy import Expectation, PlanView, ShapingSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PodTarget:
    """Which pods to shape, as primitives (trigger kwargs).

    selector: label selector of the pods (the operator / executor labels them).
    container: the container to shape ("base" for KubernetesPodOperator pods).
    conn_id / kubeconfig: how to reach the cluster (a kubeconfig path wins; neither: the
        runtime's ``[predictive] kubernetes_conn_id``).
    """

    selector: str
    namespace: str = "default"
    container: str = "task"
    conn_id: str | None = None
    kubeconfig: str | None = None


class SnapshotPods:
    """The controller's view of the pods: state and usage from this round's snapshot (usage from
    the in-pod sampler when ``sidecar`` has a fresh sample), resizes through the backend (submit
    now, poll on later rounds)."""

    def __init__(
        self, backend: KubernetesPodBackend, container: str, sidecar: SidecarUsage | None = None
    ) -> None:
        self.backend = backend
        self.name = backend.name
        self.container = container
        self.sidecar = sidecar
        self.pods: dict[str, Any] = {}
        self.usage_by_ref: dict[str, ResourceVector] = {}
        self._caps: Capabilities | None = None

    def refresh(self, selector: str) -> None:
        self.pods, metrics = self.backend.snapshot(selector)
        if self.sidecar is None:
            self.usage_by_ref = metrics
            return
        sampled = sorted(ref for ref, pod in self.pods.items() if _has_sampler(pod))
        if not sampled:  # no pod carries the in-pod sampler: no store query this round
            self.usage_by_ref = metrics
            return
        chosen = self.sidecar.merge(sampled, metrics)
        self.usage_by_ref = {**metrics, **{ref: c.usage for ref, c in chosen.items() if c.usage is not None}}

    def capabilities(self) -> Capabilities:
        if self._caps is None:
            self._caps = self.backend.capabilities()
        return self._caps

    def capacity(self) -> Capacity:
        return self.backend.capacity()

    def provision(self, spec: ProvisionSpec, allocation: Allocation) -> Handle:
        raise NotImplementedError("the shaper adopts pods, it never creates them")

    def state(self, handle: Handle) -> TaskState:
        pod = self.pods.get(handle.ref)
        if pod is None:
            return TaskState(ExitKind.GONE, reason="pod not found (deleted?)")
        return task_state(pod, self.container)

    def usage(self, handle: Handle) -> ResourceVector | None:
        return self.usage_by_ref.get(handle.ref)

    def resize(self, handle: Handle, allocation: Allocation) -> ResizeResult:
        return self.backend.submit_resize(handle, allocation)

    def submit_resize(self, handle: Handle, allocation: Allocation) -> ResizeResult:
        return self.backend.submit_resize(handle, allocation, self.pods.get(handle.ref))

    def poll_resize(self, handle: Handle) -> ResizeResult | None:
        # the round's pod list already holds each pod's status: following a resize costs no request
        return self.backend.poll_resize(handle, self.pods.get(handle.ref))

    def release(self, handle: Handle) -> None:
        """Shaping never deletes the pods it shapes."""

    def find(self, selector: str) -> list[Handle]:
        """Handles of this round's pods whose labels match ``selector`` (``k=v`` terms joined by
        commas, as the executor's try selectors), from the snapshot: no request."""
        wanted = dict(term.split("=", 1) for term in selector.split(",") if "=" in term)
        out = []
        for pod in self.pods.values():
            labels = (pod.get("metadata") or {}).get("labels") or {}
            if all(labels.get(k) == v for k, v in wanted.items()):
                handle = self.backend.attach_pod(pod)
                if handle is not None:
                    out.append(handle)
        return out

    def protect(self, ref: str, *, on: bool = True) -> bool:
        return self.backend.protect(ref, on=on)


@dataclass
class RoundReport:
    found: int
    running: int
    finished: dict[str, str] = field(default_factory=dict)  # ref -> ExitKind value
    resizes: int = 0
    applied: int = 0
    note: str = ""
    usage_sources: dict[str, int] = field(default_factory=dict)  # origin -> pods this round

    @property
    def done(self) -> bool:
        return self.found > 0 and self.running == 0

    def as_event(self) -> dict[str, Any]:
        return {
            "found": self.found,
            "running": self.running,
            "finished": dict(self.finished),
            "resizes": self.resizes,
            "applied": self.applied,
            "note": self.note,
            "usage_sources": dict(self.usage_sources),
        }


class PodShaper:
    """Shapes every pod matching ``target.selector``, one ``round()`` at a time."""

    def __init__(
        self,
        target: PodTarget,
        settings: ShapingSettings,
        *,
        backend: KubernetesPodBackend | None = None,
        started_at: float | None = None,
        clock: Clock | None = None,
        events: EventSink | None = None,
        ledger: LedgerAdjuster | None = None,
        reservation_id: str | None = None,
        run_key: str = "",
        sidecar: SidecarUsage | None = None,
        expectation: Expectation | None = None,
        plan: PlanView | None = None,
        reforecast: Callable[[UsageSeries], Expectation | None] | None = None,
        options: ControllerOptions | None = None,
    ) -> None:
        self.target = target
        self.sidecar = sidecar
        self.expectation = expectation
        self.plan = plan
        self.reforecast = reforecast
        self.options = options
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.started_at = time.time() if started_at is None else started_at
        self._backend = backend
        self._view: SnapshotPods | None = None
        self.events = events
        self.ledger = ledger
        self.reservation_id = reservation_id
        self.run_key = run_key
        self.controllers: dict[str, ShapingController] = {}
        self._protected: set[str] = set()  # pods carrying do-not-disrupt while shaped

    def _pods(self) -> SnapshotPods:
        if self._view is None:
            self._view = SnapshotPods(
                self._backend or build_backend(self.target), self.target.container, self.sidecar
            )
        return self._view

    def round(self) -> RoundReport:
        try:
            view = self._pods()
            view.refresh(self.target.selector)
        except Exception as exc:  # cluster unreachable: try again next round, the pods run on
            log.warning("shaping %s: cluster unavailable this round: %s", self.target.selector, exc)
            return RoundReport(len(self.controllers), self._running(), note=f"cluster unavailable: {exc}")
        for ref, pod in view.pods.items():
            if ref not in self.controllers:
                self._adopt(view, pod)
        for ctrl in self.controllers.values():
            if ctrl.finished is None:
                ctrl.tick()
        self._unprotect_finished(view)
        report = RoundReport(len(self.controllers), self._running())
        if self.sidecar is not None:
            report.usage_sources = self.sidecar.counts()
        for ref, ctrl in self.controllers.items():
            report.resizes += ctrl.resizes
            report.applied += ctrl.applied
            if ctrl.finished is not None:
                report.finished[ref] = ctrl.finished.value
        return report

    def _running(self) -> int:
        return sum(1 for c in self.controllers.values() if c.finished is None)

    def _adopt(self, view: SnapshotPods, pod: Any) -> None:
        handle = view.backend.attach_pod(pod)
        if handle is None:
            return
        now = time.time()
        started = pod_started_at(pod, self.target.container)
        # how long the pod has run: from its container's start when the pod says (a trigger rebuilt
        # after a triggerer restart, or one that began after the pod, still follows the plan's
        # clock), else since this shaper was made
        elapsed = max(0.0, now - (started if started is not None and started <= now else self.started_at))
        self.controllers[handle.ref] = ShapingController(
            view,  # type: ignore[arg-type]  # the ResourceBackend shape, state/usage from the snapshot
            handle,
            self.settings,
            clock=self.clock,
            events=self.events,
            ledger=self.ledger,
            reservation_id=self.reservation_id,
            run_key=self.run_key,
            started_s=self.clock.monotonic() - elapsed,
            expectation=self.expectation,
            plan=self.plan,
            reforecast=self.reforecast,
            options=self.options,
        )
        log.info("shaping %s (memory limit in force: %s)", handle.ref, handle.allocation.limits.memory_bytes)
        self._protect(view, handle.ref, on=True)

    def _protect(self, view: SnapshotPods, ref: str, *, on: bool) -> None:
        """do-not-disrupt / safe-to-evict annotations while shaped (docs/nodes.md)."""
        protect = getattr(view.backend, "protect", None)  # KubernetesPodBackend.protect
        if protect is None:
            return
        if protect(ref, on=on) and on:
            self._protected.add(ref)
        elif not on:
            self._protected.discard(ref)

    def _unprotect_finished(self, view: SnapshotPods) -> None:
        for ref, ctrl in self.controllers.items():
            if ctrl.finished is not None and ref in self._protected:
                self._protect(view, ref, on=False)

    def close(self) -> None:
        if self._view is not None:
            self._view.backend.close()


def _has_sampler(pod: Any) -> bool:
    """Whether the pod carries the in-pod sampler (``with_pod_sampler``'s init container)."""
    from airflow_predictive.backends.kubernetes.pod_sampler import SAMPLER_CONTAINER

    spec = (pod.get("spec") or {}) if isinstance(pod, dict) else {}
    return any(c.get("name") == SAMPLER_CONTAINER for c in spec.get("initContainers") or [])


def store_sidecar_usage(store: Any = None) -> SidecarUsage | None:
    """Usage from the in-pod sampler's samples in ``store`` (default: the runtime's run store);
    None when no store is configured (the shaper then reads metrics.k8s.io only)."""
    from airflow_predictive.backends.kubernetes.pod_samples import SidecarUsage, store_samples

    if store is None:
        try:
            from airflow_predictive.runtime import get_runtime

            store = get_runtime().run_store()
        except Exception as exc:
            log.info("in-pod sampler samples unavailable (%s); shaping from metrics.k8s.io", exc)
            return None
    return SidecarUsage(store_samples(store))


def build_backend(target: PodTarget) -> KubernetesPodBackend:
    """The sync pod backend for ``target`` (kubeconfig, connection, or the runtime's settings)."""
    from dataclasses import replace

    from airflow_predictive.backends.kubernetes.backend import KubernetesPodBackend
    from airflow_predictive.runtime import get_runtime

    try:
        base = get_runtime().kubernetes_settings()
    except Exception:  # no Airflow configuration readable (tests, a bare triggerer): defaults
        from airflow_predictive.backends.kubernetes.settings import KubernetesSettings

        base = KubernetesSettings()
    settings = replace(base, namespace=target.namespace, container_name=target.container)
    if target.kubeconfig:
        return KubernetesPodBackend.from_kubeconfig(target.kubeconfig, settings=settings)
    conn_id = target.conn_id or get_runtime().kubernetes_conn_id()
    return KubernetesPodBackend.from_connection(conn_id, settings=settings)


def forecast_primitives(forecast: Forecast, quantiles: Mapping[Metric, float]) -> dict[str, Any]:
    """The at-start forecast a pod is shaped along, as JSON-safe primitives (trigger kwargs)."""
    from airflow_predictive.storage.profile_store import forecast_to_json

    curves, duration = forecast_to_json(forecast)
    return {
        "curves": curves,
        "duration": duration,
        "estimator": forecast.estimator,
        "peak_only": forecast.peak_only,
        "quantiles": {m.value: float(q) for m, q in quantiles.items()},
    }


def expectation_from_primitives(raw: Mapping[str, Any] | None) -> ForecastExpectation | None:
    """``forecast_primitives`` back into an expectation; None (logged) when absent or unreadable:
    the pods are then shaped on usage alone."""
    if not raw:
        return None
    from airflow_predictive.core.model.resources import Metric
    from airflow_predictive.core.shaping.expectation import ForecastExpectation
    from airflow_predictive.storage.profile_store import forecast_from_json

    try:
        forecast = forecast_from_json(
            str(raw["curves"]), str(raw["duration"]), str(raw["estimator"]), bool(raw["peak_only"])
        )
        quantiles = {Metric(k): float(v) for k, v in dict(raw.get("quantiles") or {}).items()}
    except (KeyError, ValueError, TypeError) as exc:
        log.warning("shaping on usage only: the forecast passed to the shaper is unreadable (%s)", exc)
        return None
    return ForecastExpectation(forecast, quantiles=quantiles)


def pod_started_at(pod: Any, container: str) -> float | None:
    """When ``container`` of ``pod`` (an API body) started running, else when the pod started (epoch
    seconds); None when the body does not say."""
    from datetime import datetime

    status = (pod.get("status") or {}) if isinstance(pod, dict) else {}
    stamps = [
        ((c.get("state") or {}).get("running") or {}).get("startedAt")
        for c in status.get("containerStatuses") or ()
        if isinstance(c, dict) and c.get("name") == container
    ]
    for stamp in [*stamps, status.get("startTime")]:
        if not stamp:
            continue
        try:
            return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
    return None


def plan_from_primitives(raw: Mapping[str, Any] | None) -> AllocationPlan | None:
    """``codec.plan_to_dict`` back into a plan; None (logged) when absent or unreadable: the pod is
    then shaped along its forecast without the plan's timed steps."""
    if not raw:
        return None
    from airflow_predictive.core.scheduling.codec import plan_from_dict

    try:
        return plan_from_dict(raw)
    except ValueError as exc:
        log.warning(
            "shaping without the plan's timed steps: the plan passed to the shaper is unreadable (%s)", exc
        )
        return None


def shaping_along(expectation: ForecastExpectation | None) -> dict[str, Any]:
    """``PodShaper`` kwargs that shape along ``expectation``: it, and the runtime's mid-run
    re-forecast when ``[predictive] shaping_reforecast_interval`` is on ({}: no expectation)."""
    if expectation is None:
        return {}
    kwargs: dict[str, Any] = {"expectation": expectation}
    try:
        from airflow_predictive.runtime import get_runtime

        kwargs.update(get_runtime().shaping_reforecast(expectation, None))
    except Exception as exc:  # no runtime here: shape along the at-start forecast only
        log.warning("shaping along the at-start forecast without re-forecasts: %s", exc)
    return kwargs
