"""``PredictiveKubernetesPodOperator``: KubernetesPodOperator sized from the forecast and shaped
while its pod runs.

A drop-in subclass extended only through the parent's seams: ``build_pod_request_obj`` (size the
base container from the plan, label the pod for shaping, make cpu / memory resizable in place)
and ``callbacks`` (``on_pod_starting`` starts a shaping thread in the worker, ``on_pod_completion``
/ ``on_pod_teardown`` stop it). Whenever anything predictive is unavailable (no forecast, storage
down, planner error, cluster API failing) the pod runs with the declared ``container_resources``
and one log line says why: the user's task never fails for prediction's sake.

Deferrable mode: ``defer`` wraps the parent's ``KubernetesPodTrigger`` into
``PredictiveKubernetesPodTrigger`` (the same trigger, plus a shaping loop beside its ``run``).

Shadow run (``shadow_run``): before the real pod is sized, when the policy says so (cold start,
drift, or asked), a shadow pod of the same image and command (or ``shadow_cmds``) runs with small
resources, env ``AIRFLOW_PREDICTIVE_SHADOW=1`` and a hard deadline (deleted when it is reached);
its observed prefix re-forecasts the real pod's plan (``operators/shadow_run.ShadowCalibration``).
A shadow that fails in any way leaves the un-shadowed plan. Not yet: reservations in the ledger.

Node pools (``[predictive] node_pools``): the pod gets a nodeSelector on the Karpenter NodePool
one node of which holds the plan's peak; the shadow pod (small by design) keeps its default
placement. Cluster API down or forbidden: default placement, one log line.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from airflow.providers.cncf.kubernetes.callbacks import KubernetesPodOperatorCallback
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

if TYPE_CHECKING:
    from airflow.sdk import Context
    from kubernetes.client import models as k8s

    from airflow_predictive.backends.kubernetes.payloads import ResourceRequirements
    from airflow_predictive.core.model.backend import Allocation
    from airflow_predictive.core.model.resources import ResourceVector

from airflow_predictive.triggers.kubernetes_pod import SHAPING_LABEL

log = logging.getLogger(__name__)


class _Shaping(KubernetesPodOperatorCallback):
    """Starts / stops the operator's shaping thread around the pod's run (sync mode)."""

    @staticmethod
    def on_pod_starting(*, pod: k8s.V1Pod, operator: Any, **kwargs: Any) -> None:
        if isinstance(operator, PredictiveKubernetesPodOperator):
            operator.start_shaping(pod)

    @staticmethod
    def on_pod_completion(*, operator: Any, **kwargs: Any) -> None:
        if isinstance(operator, PredictiveKubernetesPodOperator):
            operator.stop_shaping()

    @staticmethod
    def on_pod_teardown(*, operator: Any, **kwargs: Any) -> None:
        if isinstance(operator, PredictiveKubernetesPodOperator):
            operator.stop_shaping()


class PredictiveKubernetesPodOperator(KubernetesPodOperator):
    """KubernetesPodOperator with ``predictive=True``: planned resources and in-flight shaping.

    predictive: size from the forecast and shape (False: exactly the parent).
    shadow_run: "auto" (shadow on cold start or drift) | True | False.
    shadow_cmds: the command of the shadow pod (a dry variant of a side-effecting task); default
        the real pod's command and args.
    tolerance: the shaping band around the forecast (0.15 = +-15 %).
    risk: forecast quantile the pod is sized at, per metric name ({"memory": 0.99, "cpu": 0.9}).
    min_resources / max_resources: bounds, {"cpu": cores, "memory": bytes}.
    shaping_interval_s: seconds between two shaping rounds while the pod runs.
    shaping: further ``ShapingSettings`` as primitives (grow_margin, cooldowns ...).
    pod_sampler: add the in-pod sampler (a native sidecar in a shared PID namespace,
        ``backends/kubernetes/pod_sampler``): the pod is shaped from its 1 s samples instead of
        metrics.k8s.io. Off by default: its image must have this provider installed.
    pod_sampler_image: the sampler's image (default: the pod's base image).
    pod_sampler_store_secret: "secret-name:key" of a Secret holding the store URL; without it the
        URL (``[predictive] sql_alchemy_conn``) is put into the sampler's env as a literal.
    """

    def __init__(
        self,
        *,
        predictive: bool = True,
        shadow_run: str | bool = "auto",
        shadow_cmds: list[str] | None = None,
        tolerance: float = 0.15,
        risk: dict[str, float] | None = None,
        min_resources: dict[str, float] | None = None,
        max_resources: dict[str, float] | None = None,
        shaping_interval_s: float = 2.0,
        shaping: dict[str, Any] | None = None,
        pod_sampler: bool = False,
        pod_sampler_image: str | None = None,
        pod_sampler_store_secret: str | None = None,
        **kwargs: Any,
    ) -> None:
        callbacks = kwargs.pop("callbacks", None)
        listed = [] if not callbacks else list(callbacks) if isinstance(callbacks, list) else [callbacks]
        if predictive:
            listed.append(_Shaping)
        super().__init__(callbacks=listed, **kwargs)
        if shadow_run not in ("auto", True, False):
            raise ValueError(f"shadow_run must be 'auto', True or False, not {shadow_run!r}")
        self.predictive = predictive
        self.shadow_run = shadow_run
        self.shadow_cmds = list(shadow_cmds) if shadow_cmds else None
        self.shadow_summary: dict[str, Any] | None = None
        self.planned_peak: ResourceVector | None = None  # what a node must hold (steering)
        self.tolerance = tolerance
        self.risk = dict(risk or {})
        self.min_resources = dict(min_resources or {})
        self.max_resources = dict(max_resources or {})
        self.shaping_interval_s = shaping_interval_s
        self.shaping = {"tolerance": tolerance, **(shaping or {})}
        self.shaping_settings()  # a bad setting fails when the DAG is parsed
        self._shaping_stop = threading.Event()
        self._shaping_thread: threading.Thread | None = None
        self.shaping_rounds = 0
        self.plan_note = ""
        # what the pod is shaped along: the served forecast, its quantiles, the plan (None: usage only)
        self._along: tuple[Any, dict[Any, float], Any] | None = None
        if pod_sampler_store_secret is not None and ":" not in pod_sampler_store_secret:
            raise ValueError("pod_sampler_store_secret must be 'secret-name:key'")
        self.pod_sampler = pod_sampler
        self.pod_sampler_image = pod_sampler_image
        self.pod_sampler_store_secret = pod_sampler_store_secret

    # ---- settings ------------------------------------------------------------------------------
    def shaping_settings(self) -> Any:
        from dataclasses import replace

        from airflow_predictive.core.model.resources import ResourceVector
        from airflow_predictive.core.shaping.codec import settings_from_dict

        settings = settings_from_dict(self.shaping)
        if self.min_resources:
            low = ResourceVector(
                cpu_cores=self.min_resources.get("cpu"), memory_bytes=self.min_resources.get("memory")
            )
            settings = replace(settings, minimum=settings.minimum.combine(low, max))
        if self.max_resources:
            high = ResourceVector(
                cpu_cores=self.max_resources.get("cpu"), memory_bytes=self.max_resources.get("memory")
            )
            settings = replace(settings, maximum=high)
        along = getattr(self, "_along", None)
        floor = along[2].memory_floor if along is not None else None
        if floor:  # the plan holds memory at the declared value (planner.held_at_declared)
            settings = replace(
                settings, minimum=settings.minimum.combine(ResourceVector(memory_bytes=floor), max)
            )
        return settings

    # ---- sizing (seam: build_pod_request_obj) ----------------------------------------------------
    def build_pod_request_obj(self, context: Context | None = None, *, dry_run: bool = False) -> k8s.V1Pod:
        pod = super().build_pod_request_obj(context, dry_run=dry_run)
        if not self.predictive:
            return pod
        pod.metadata.labels[SHAPING_LABEL] = _label(pod.metadata.name)
        base = next((c for c in pod.spec.containers if c.name == self.base_container_name), None)
        if base is None:
            return pod
        _resizable(base)
        if self.pod_sampler and context is not None:
            self._add_sampler(pod, base, context)
        if not dry_run and context is not None and self.shadow_summary is None:
            self.shadow_summary = self._shadow(context, pod, base)
        try:
            planned = self._planned(base, context)
        except Exception as exc:  # never hurt the task: declared resources, one line
            self.plan_note = (
                f"predictive sizing unavailable ({type(exc).__name__}: {exc}); declared resources"
            )
            self.log.warning("%s", self.plan_note)
            return pod
        if planned is not None:
            from airflow_predictive.backends.kubernetes.translate import resource_requirements
            from airflow_predictive.core.model.resources import ResourceVector

            body = resource_requirements(planned, ResourceVector(), current=_as_dict(base.resources))
            base.resources.requests = dict(body.get("requests") or {})
            base.resources.limits = dict(body.get("limits") or {})
        if not dry_run and self.planned_peak is not None:
            self._steer(pod, self.planned_peak)
        return pod

    def _add_sampler(self, pod: k8s.V1Pod, base: k8s.V1Container, context: Context) -> None:
        """The in-pod sampler under this try's identity; without it the pod is shaped from
        metrics.k8s.io (one log line says why)."""
        from airflow_predictive.backends.kubernetes.pod_sampler import with_pod_sampler

        try:
            ti = context.get("ti")
            secret = None
            url = None
            if self.pod_sampler_store_secret:
                name, _, key = self.pod_sampler_store_secret.partition(":")
                secret = (name, key)
            else:
                from airflow_predictive import config

                url = config.storage_url()
            map_index = getattr(ti, "map_index", -1)
            with_pod_sampler(
                pod,
                self.dag_id,
                self.task_id,
                str(context["run_id"]),
                image=self.pod_sampler_image or base.image,
                try_number=int(getattr(ti, "try_number", 1) or 1),
                map_index=map_index if isinstance(map_index, int) else -1,
                store_url=url,
                store_secret=secret,
            )
        except Exception as exc:  # never hurt the task: shaped from metrics.k8s.io
            self.log.warning(
                "predictive: no in-pod sampler (%s: %s); shaping from metrics.k8s.io", type(exc).__name__, exc
            )

    def _steer(self, pod: k8s.V1Pod, peak: ResourceVector) -> None:
        """``[predictive] node_pools``: select the Karpenter NodePool whose node holds the plan's
        peak (docs/nodes.md#wiring). Cluster API failing or no pool holding it: default placement."""
        from airflow_predictive.runtime import get_runtime

        try:
            backend = get_runtime().node_pools(pod.metadata.namespace)
            if backend is None:
                return
            backend.log_errors = False  # one line, below, saying what it means for the pod
            try:
                choice = backend.steer(peak)
                cause = backend.last_error
            finally:
                backend.close()
        except Exception as exc:
            choice, cause = None, f"{type(exc).__name__}: {exc}"
        if choice is None:
            if cause:
                self.log.warning("predictive: node pools unavailable (%s); default placement", cause)
            else:
                self.log.info("predictive: no node pool holds %s; default placement", peak)
            return
        # a Karpenter NodePool by karpenter.sh/nodepool, a cluster-autoscaler group by its node label
        pod.spec.node_selector = {**(pod.spec.node_selector or {}), **choice.pool.node_selector()}
        self.log.info("predictive: steered to node pool %s (%s)", choice.pool.name, choice.instance_type.name)

    def _planned(self, base: k8s.V1Container, context: Context | None = None) -> Allocation | None:
        """The plan's initial allocation for this try, or None to keep the declared resources."""
        from airflow_predictive.backends.kubernetes.translate import allocation_of
        from airflow_predictive.core.model.query import ForecastQuery, ForecastSource
        from airflow_predictive.core.model.resources import Metric, ResourceVector
        from airflow_predictive.core.model.runs import TaskKey
        from airflow_predictive.core.scheduling.planner import (
            PlanSettings,
            held_at_declared,
            plan_from_forecast,
        )
        from airflow_predictive.runtime import get_runtime

        self._along = None
        declared_alloc = allocation_of(_as_dict(base.resources))
        declared = declared_alloc.limits.combine(declared_alloc.requests, lambda lim, _req: lim)
        key = TaskKey(self.dag_id, self.task_id, getattr(self, "map_index", -1) or -1)
        run_id = str(context["run_id"]) if context is not None and context.get("run_id") else None
        served = get_runtime().forecasts().forecast_for(ForecastQuery(key, declared=declared, run_id=run_id))
        if served.forecast is None or served.source in (ForecastSource.DECLARED, ForecastSource.NONE):
            self.plan_note = f"no forecast ({served.note or served.source}); declared resources"
            self.log.info("%s", self.plan_note)
            return None
        names = {"memory": Metric.MEMORY_BYTES, "cpu": Metric.CPU_CORES}
        settings = PlanSettings(
            risk={names[k]: v for k, v in self.risk.items() if k in names} or PlanSettings().risk,
            minimum=ResourceVector(
                cpu_cores=self.min_resources.get("cpu"), memory_bytes=self.min_resources.get("memory")
            ),
            maximum=ResourceVector(
                cpu_cores=self.max_resources.get("cpu"), memory_bytes=self.max_resources.get("memory")
            ),
        )
        outcome = plan_from_forecast(
            served.forecast, declared=declared, settings=settings, model_version=served.model_version
        )
        if served.limit_bound:
            outcome = held_at_declared(outcome, declared)
        from airflow_predictive.executors.kubernetes_nodes import plan_peak

        self.planned_peak = plan_peak(outcome.plan)
        self._along = (served.forecast, dict(settings.risk), outcome.plan)
        self.plan_note = f"planned from {served.source}: {outcome.decision} ({outcome.reason})"
        self.log.info("%s", self.plan_note)
        return outcome.plan.initial

    # ---- shadow run (before the real pod is sized) -------------------------------------------------
    def _shadow(self, context: Context, pod: k8s.V1Pod, base: k8s.V1Container) -> dict[str, Any]:
        """Run the shadow pod when the policy says so; never raises (the summary says what happened)."""
        try:
            return self._run_shadow(context, pod, base)
        except Exception as exc:  # a shadow never fails the real pod
            self.log.warning(
                "predictive: shadow pod unavailable (%s: %s); the pod is planned un-shadowed",
                type(exc).__name__,
                exc,
            )
            return {"shadowed": False, "reason": "error", "note": f"{type(exc).__name__}: {exc}"}

    def _run_shadow(self, context: Context, pod: k8s.V1Pod, base: k8s.V1Container) -> dict[str, Any]:
        from airflow_predictive.backends.kubernetes.translate import allocation_of
        from airflow_predictive.core.model.backend import ProvisionSpec
        from airflow_predictive.core.model.runs import TaskKey
        from airflow_predictive.core.ports import SystemClock
        from airflow_predictive.core.shadow.runner import run_shadow
        from airflow_predictive.operators.shadow_run import SHADOW_ENV, ShadowCalibration, shadow_settings

        if self.shadow_run is False:
            return {"shadowed": False, "reason": "disabled", "note": "shadow_run=False"}
        self._along = None
        declared_alloc = allocation_of(_as_dict(base.resources))
        declared = declared_alloc.limits.combine(declared_alloc.requests, lambda lim, _req: lim)
        key = TaskKey(self.dag_id, self.task_id, getattr(self, "map_index", -1) or -1)
        run_id = str(context["run_id"])
        settings = shadow_settings()
        calibration = ShadowCalibration(key, run_id, settings, declared)
        plan = calibration.plan(self.shadow_run)
        if not plan.decision.run or plan.budget is None:
            self.log.info("predictive: no shadow pod: %s", plan.decision.note)
            return {"shadowed": False, "reason": plan.decision.reason.value, "note": plan.decision.note}
        backend = self._shadow_backend(pod.metadata.namespace)
        env = {e.name: e.value for e in (base.env or []) if e.value is not None}
        command = tuple(self.shadow_cmds or [*(base.command or []), *(base.args or [])])
        spec = ProvisionSpec(
            name=_label(f"{pod.metadata.name}-shadow"),
            command=command,
            image=base.image,
            env={**env, SHADOW_ENV: "1"},
            # the cluster ends it even if this worker dies mid-shadow
            deadline_s=plan.budget.seconds + SHADOW_DEADLINE_GRACE_S,
            labels={
                "dag_id": key.dag_id,
                "task_id": key.task_id,
                "predictive.airflow.apache.org/shadow": "1",
            },
        )
        self.log.info(
            "predictive: shadow pod %s (%s), budget %s", spec.name, plan.decision.note, plan.budget.note
        )
        try:
            run = run_shadow(
                backend,
                lambda allocation: backend.provision(spec, allocation),
                plan.budget,
                clock=SystemClock(),
                sample_interval_s=settings.sample_interval_s,
            )
        finally:
            close = getattr(backend, "close", None)
            if close is not None:
                close()
        ti = context.get("ti")
        return calibration.finish(
            plan, run, try_number=int(getattr(ti, "try_number", 1) or 1), operator=type(self).__name__
        )

    def _shadow_backend(self, namespace: str | None) -> Any:
        """The pod backend on this operator's cluster (its kubeconfig, else its connection)."""
        from dataclasses import replace

        from airflow_predictive.backends.kubernetes.backend import KubernetesPodBackend
        from airflow_predictive.runtime import get_runtime

        settings = get_runtime().kubernetes_settings()
        if namespace:
            settings = replace(settings, namespace=namespace)
        if self.config_file:
            return KubernetesPodBackend.from_kubeconfig(self.config_file, settings=settings)
        conn_id = self.kubernetes_conn_id or get_runtime().kubernetes_conn_id()
        return KubernetesPodBackend.from_connection(conn_id, settings=settings)

    # ---- shaping (seam: callbacks) ------------------------------------------------------------------
    def start_shaping(self, pod: k8s.V1Pod) -> None:
        if self._shaping_thread is not None:
            return
        try:
            shaper = self._shaper(pod)
        except Exception as exc:
            self.log.warning("shaping unavailable, the pod keeps its resources: %s", exc)
            return
        self._shaping_stop.clear()

        def run() -> None:
            try:
                while not self._shaping_stop.is_set():
                    report = shaper.round()
                    self.shaping_rounds += 1
                    if report.done:
                        return
                    self._shaping_stop.wait(self.shaping_interval_s)
            except Exception:
                log.exception("shaping thread of %s stopped; the pod keeps its resources", pod.metadata.name)
            finally:
                shaper.close()

        self._shaping_thread = threading.Thread(target=run, name=f"shaping-{pod.metadata.name}", daemon=True)
        self._shaping_thread.start()
        self.log.info("shaping pod %s every %.1fs", pod.metadata.name, self.shaping_interval_s)

    def stop_shaping(self) -> None:
        self._shaping_stop.set()
        if self._shaping_thread is not None:
            self._shaping_thread.join(timeout=10)
            self._shaping_thread = None

    def _shaping_along(self) -> dict[str, Any]:
        """``PodShaper`` kwargs that shape the pod along its plan and forecast ({}: none planned)."""
        from airflow_predictive.core.shaping.expectation import ForecastExpectation
        from airflow_predictive.triggers.pod_shaper import shaping_along

        if self._along is None:
            return {}
        forecast, quantiles, plan = self._along
        return {**shaping_along(ForecastExpectation(forecast, quantiles=quantiles)), "plan": plan}

    def _forecast_primitives(self) -> dict[str, Any] | None:
        """The planned forecast for the deferred trigger's kwargs (None: none planned or not
        encodable; the trigger then shapes on usage)."""
        from airflow_predictive.triggers.pod_shaper import forecast_primitives

        if self._along is None:
            return None
        try:
            return forecast_primitives(self._along[0], self._along[1])
        except Exception as exc:
            self.log.warning("predictive: the trigger shapes on usage only (forecast not encodable: %s)", exc)
            return None

    def _plan_primitives(self) -> dict[str, Any] | None:
        """The try's plan (initial allocation and timed steps) for the deferred trigger's kwargs
        (None: none planned; the trigger then shapes along the forecast alone)."""
        from airflow_predictive.core.scheduling.codec import plan_to_dict

        return None if self._along is None else plan_to_dict(self._along[2])

    def _shaper(self, pod: k8s.V1Pod) -> Any:
        from airflow_predictive.triggers.pod_shaper import PodShaper, PodTarget, store_sidecar_usage

        events = None
        try:
            from airflow_predictive.runtime import get_runtime

            events = get_runtime().shaping_events()
        except Exception as exc:
            self.log.info("shaping events will not be stored: %s", exc)
        target = PodTarget(
            selector=f"{SHAPING_LABEL}={_label(pod.metadata.name)}",
            namespace=pod.metadata.namespace,
            container=self.base_container_name,
            conn_id=self.kubernetes_conn_id,
            kubeconfig=self.config_file,
        )
        return PodShaper(
            target,
            self.shaping_settings(),
            events=events,
            run_key=f"{self.dag_id}/{self.task_id}",
            sidecar=store_sidecar_usage(),
            **self._shaping_along(),
        )

    # ---- deferrable mode (seam: the parent's trigger) ------------------------------------------------
    def defer(
        self, *, trigger: Any, method_name: str, kwargs: dict[str, Any] | None = None, timeout: Any = None
    ) -> Any:
        """Deferrable mode: the parent's KubernetesPodTrigger, wrapped so that it also shapes the pod."""
        from airflow.providers.cncf.kubernetes.triggers.pod import KubernetesPodTrigger

        from airflow_predictive.triggers.kubernetes_pod import PredictiveKubernetesPodTrigger

        if self.predictive and type(trigger) is KubernetesPodTrigger:
            try:
                trigger = PredictiveKubernetesPodTrigger.wrapping(
                    trigger,
                    shaping=self.shaping_primitives(),
                    shaping_interval_s=self.shaping_interval_s,
                    shaping_kubeconfig=self.config_file,
                    shaping_run_key=f"{self.dag_id}/{self.task_id}",
                    shaping_forecast=self._forecast_primitives(),
                    shaping_plan=self._plan_primitives(),
                )
            except Exception as exc:  # never hurt the task: defer unshaped
                self.log.warning(
                    "shaping unavailable in deferrable mode, the pod keeps its resources: %s", exc
                )
        return super().defer(trigger=trigger, method_name=method_name, kwargs=kwargs, timeout=timeout)

    def shaping_primitives(self) -> dict[str, Any]:
        from airflow_predictive.core.shaping.codec import settings_to_dict

        return settings_to_dict(self.shaping_settings())

    def on_kill(self) -> None:
        self.stop_shaping()
        super().on_kill()


#: seconds a shadow pod may outlive its budget before the kubelet ends it (activeDeadlineSeconds);
#: the worker deletes it at the budget itself, this covers a worker that died mid-shadow
SHADOW_DEADLINE_GRACE_S = 30.0


def _label(value: str) -> str:
    from airflow_predictive.backends.kubernetes.translate import label_value

    return label_value(value)


def _as_dict(resources: Any) -> ResourceRequirements:
    if resources is None:
        return {}
    return {"requests": dict(resources.requests or {}), "limits": dict(resources.limits or {})}


def _resizable(container: k8s.V1Container) -> None:
    """cpu and memory resizable in place without a restart (the default, made explicit)."""
    from kubernetes.client import models as k8s_models

    if container.resources is None:
        container.resources = k8s_models.V1ResourceRequirements(requests={}, limits={})
    if not container.resize_policy:
        container.resize_policy = [
            k8s_models.V1ContainerResizePolicy(resource_name="cpu", restart_policy="NotRequired"),
            k8s_models.V1ContainerResizePolicy(resource_name="memory", restart_policy="NotRequired"),
        ]
