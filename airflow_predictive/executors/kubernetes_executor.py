"""PredictiveKubernetesExecutor: KubernetesExecutor that plans, reserves against the namespace's
quota and holds tasks back instead of letting pod creation fail on quota.

``[core] executor = airflow_predictive.executors.kubernetes_executor.PredictiveKubernetesExecutor``
(or aliased in a list). Opted-in tasks (as for the local executor) get the forecast for this try,
a plan, and wait QUEUED while the plan does not fit the namespace pool (ResourceQuota hard less
other pods' use, nodes' allocatable less other pods' requests; refreshed every
``CAPACITY_REFRESH_S``). Once admitted and reserved, the plan's initial requests/limits go into
the worker pod through ``pod_override`` in ``execute_async``; timed steps are sent through the
resize subresource (the provider's Kubernetes backend, found by the executor's pod labels); a
task with ``"shaping": True`` has its pod shaped live instead (``kubernetes_shaping.py``: grown
near its limit, reclaimed when idle, along the forecast and the plan, grows reserved first); the
reservation is released when the pod's task ends (shaping stopped before). A restarted scheduler
that adopts a running pod takes over its try's reservation, plan steps and shaping
(``adopt_launched_task``). Any failure of this machinery launches the task as KubernetesExecutor
would (declared resources), with one log line.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

from airflow.providers.cncf.kubernetes.executors.kubernetes_executor import KubernetesExecutor

from airflow_predictive.core.model.plan import AdmissionDecision, charge_of
from airflow_predictive.core.model.query import ForecastQuery
from airflow_predictive.core.profiler.run_features import run_features
from airflow_predictive.executors.kubernetes_pool import (
    namespace_capacity,
    namespace_pool,
    with_env,
    with_planned_resources,
)
from airflow_predictive.executors.local_executor import run_identity
from airflow_predictive.executors.opt_in import task_settings

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow_predictive.executors.coordinator import Coordinator, Launch, Running
    from airflow_predictive.executors.kubernetes_nodes import NodeWiring
    from airflow_predictive.executors.kubernetes_shaping import KubernetesShaping

log = logging.getLogger(__name__)

CAPACITY_REFRESH_S = 30.0
NOT_ENDED = {"running", "queued", "scheduled"}


class PredictiveKubernetesExecutor(KubernetesExecutor):
    """KubernetesExecutor + forecast -> plan -> admission against the namespace -> pod_override."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._coordinator: Coordinator | None = None
        self._held: dict[Any, Any] = {}
        self._default_enabled = False
        self._capacity_at = 0.0
        self._pod_backend: Any = None
        self._nodes: NodeWiring | None = None
        self._ahead: Any = None  # warm capacity for downstream tasks of running ones (node pools)
        self._quotas: list[dict[str, Any]] = []
        self._store_env: dict[str, str] = {}
        self._shaping: KubernetesShaping | None = None
        self._unplanned: set[Any] = set()  # tries this executor runs without a plan (not opted in)

    def start(self) -> None:
        super().start()
        try:
            from airflow_predictive.core.scheduling.admission import AdmissionSettings
            from airflow_predictive.core.scheduling.planner import PlanSettings
            from airflow_predictive.executors.coordinator import Coordinator, CoordinatorSettings
            from airflow_predictive.runtime import get_runtime

            runtime = get_runtime()
            settings = runtime.scheduler_settings()
            self._default_enabled = settings.default_enabled
            self._nodes = self._node_wiring(runtime)
            try:
                forecasts = runtime.forecasts()
            except Exception as exc:
                log.warning("predictive: no forecast service (%s); declared resources are the plans", exc)
                forecasts = None
            self._coordinator = Coordinator(
                ledger=runtime.ledger(),
                forecasts=forecasts,
                pool=namespace_pool(self._namespace(), self._read_capacity()),
                holder=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}",
                settings=CoordinatorSettings(
                    plan=PlanSettings(min_step_s=settings.plan_min_step_s),
                    admission=AdmissionSettings(max_wait_s=settings.max_wait_s, fail_fast=settings.fail_fast),
                    lease_s=settings.lease_s,
                    grow_wait_s=settings.node_pools_wait_s if self._nodes is not None else None,
                    trust_after_runs=settings.trust_after_runs,
                ),
                decisions=runtime.decision_log(),
                grows=self._nodes_known,
            )
            self._capacity_at = time.monotonic()
            self._store_env = _store_env(runtime)
            if self._nodes is not None:
                self._nodes.wake()  # its first round ran before the pool existed: publish coming now
        except Exception as exc:
            log.warning("predictive: executor runs as a plain KubernetesExecutor (%s)", exc)
            self._coordinator = None
            self._stop_nodes()
            return
        self._shaping = self._shaping_thread()

    def _shaping_thread(self) -> KubernetesShaping | None:
        """Live shaping of the worker pods of tasks with ``"shaping": True`` (kubernetes_shaping.py);
        without it (no cluster client, a failure: logged) their plans' timed steps apply."""
        try:
            api_client = getattr(getattr(self, "kube_client", None), "api_client", None)
            if api_client is None:
                log.warning("predictive: no shaping of worker pods (the executor has no cluster client)")
                return None
            from airflow_predictive.executors.wiring import kubernetes_shaping

            return kubernetes_shaping(api_client, self._pod_settings(), self._workers_selector())
        except Exception as exc:
            log.warning("predictive: no shaping of worker pods (%s); their plans' steps apply", exc)
            return None

    def _workers_selector(self) -> str:
        """This scheduler's worker pods (KubernetesExecutor's labels; adopted pods are relabelled
        to it): what the shaping thread lists once per round."""
        job = getattr(self, "scheduler_job_id", None)
        return "kubernetes_executor=True" + (f",airflow-worker={_label(str(job))}" if job else "")

    # -- node pools (docs/nodes.md#wiring) ---------------------------------------------------------

    def _node_wiring(self, runtime: Any) -> NodeWiring | None:
        """Steering, warm capacity and coming capacity when ``[predictive] node_pools`` is on; a
        failure to build it leaves the executor without them (one log line)."""
        try:
            backend = runtime.node_pools(self._namespace())
            if backend is None:
                return None
            from airflow_predictive.executors.kubernetes_nodes import NodeWiring, NodeWiringSettings

            wiring = NodeWiring(
                backend,
                runtime.ledger(),
                namespace_pool(self._namespace(), namespace_capacity([])).name,
                NodeWiringSettings(interval_s=runtime.scheduler_settings().node_pools_interval_s),
            )
            return wiring.start()
        except Exception as exc:
            log.warning("predictive: node pools not wired (%s); tasks keep their default placement", exc)
            return None

    def _nodes_known(self) -> bool:
        """The pool grows on demand only while the pools' nodes are known (API down: as before)."""
        return self._nodes is not None and self._nodes.node_capacity() is not None

    def _stop_nodes(self) -> None:
        if self._nodes is not None:
            self._nodes.stop()

    def _want_warm(self) -> None:
        """Warm capacity for the held-back tasks that wait for node capacity (a node booting or to
        boot), ready at their predicted start; the wiring's thread makes it when it is due."""
        from airflow_predictive.executors.kubernetes_nodes import warms_for_waiting

        wiring, coordinator = self._nodes, self._coordinator
        if wiring is None or coordinator is None:
            return
        warms = warms_for_waiting(wiring, list(coordinator.waiting.values()), coordinator.clock())
        if self._ahead is None:  # docs/nodes.md#ahead: the tasks queued when running ones end
            from airflow_predictive.executors.kubernetes_nodes_ahead import AheadWarms

            self._ahead = AheadWarms(wiring)
        held = {w.for_plan for w in warms}
        ahead = self._ahead.warms(coordinator, list(self.running), self._default_enabled, coordinator.clock())
        wiring.want(warms + [w for w in ahead if w.for_plan not in held])

    # -- the namespace pool ------------------------------------------------------------------------

    def _namespace(self) -> str:
        return str(getattr(self.kube_config, "kube_namespace", None) or "default")

    def _read_capacity(self) -> Any:
        """Quota hard less other pods' use (our reservations are in the ledger already)."""
        quotas: list[dict[str, Any]] = []
        try:
            client = self.kube_client
            if client is not None:
                items = client.list_namespaced_resource_quota(self._namespace()).items
                quotas = [client.api_client.sanitize_for_serialization(q) for q in items]
        except Exception as exc:
            log.warning("predictive: cannot read ResourceQuotas of %s (%s)", self._namespace(), exc)
        self._quotas = quotas
        return self._pool_capacity()

    def _refresh_node_bound(self) -> None:
        """Re-bound the pool by the node pools' cached Ready nodes (no API call), when wired."""
        coordinator = self._coordinator
        if self._nodes is None or coordinator is None:
            return
        capacity = self._pool_capacity()
        if capacity != coordinator.pool.capacity:
            coordinator.set_capacity(namespace_pool(self._namespace(), capacity))

    def _pool_capacity(self) -> Any:
        """The quotas as last read, bounded by the node pools' Ready nodes when wired."""
        ours = self._our_holdings()
        nodes = None
        if self._nodes is not None and self._coordinator is not None:  # bin packing of the waiting peaks
            peaks = [w.outcome.plan.peak().requests for w in self._coordinator.waiting.values()]
            nodes = self._nodes.node_capacity(peaks)
        elif self._nodes is not None:
            nodes = self._nodes.node_capacity()
        return namespace_capacity(self._quotas, ours_used=ours[0], ours_limits=ours[1], nodes=nodes)

    def _our_holdings(self) -> tuple[Any, Any]:
        from airflow_predictive.core.model.resources import ResourceVector

        coordinator = self._coordinator
        req, lim = ResourceVector(), ResourceVector()
        if coordinator is None:
            return req, lim
        for item in coordinator.running.values():
            if item.allocation is not None:
                req = req.plus(item.allocation.requests)
                lim = lim.plus(item.allocation.limits)
        return req, lim

    # -- queueing ------------------------------------------------------------------------------------

    def _process_workloads(self, workloads: Sequence[Any]) -> None:
        passthrough = [w for w in workloads if not self._intake(w)]
        self._unplanned.update(w.ti.key for w in passthrough if getattr(w, "ti", None) is not None)
        if passthrough:
            super()._process_workloads(passthrough)
        self._admit()

    def _intake(self, workload: Any) -> bool:
        coordinator = self._coordinator
        if coordinator is None:
            return False
        from airflow.executors import workloads as wl

        if not isinstance(workload, wl.ExecuteTask):
            return False
        ti = workload.ti
        try:
            settings = task_settings(ti.executor_config, default_enabled=self._default_enabled)
            if not settings.enabled:
                return False
            run = run_identity(ti)
            coordinator.submit(ti.key, run, settings, _query(ti, run, settings), _priority(ti))
        except Exception as exc:
            log.warning("predictive: %s.%s runs unplanned (%s)", ti.dag_id, ti.task_id, exc)
            return False
        self.queued_tasks.pop(ti.key, None)
        self._held[ti.key] = workload
        return True

    def _admit(self) -> None:
        coordinator = self._coordinator
        if coordinator is None or not self._held:
            return
        try:
            self._refresh_node_bound()  # the node bound packs the waiting peaks: new ones count now
            launches = coordinator.admit()
        except Exception as exc:
            launches = coordinator._all_declared(f"admission failed: {exc}")
        for launch in launches:
            self._launch(launch)

    def _launch(self, launch: Launch) -> None:
        workload = self._held.pop(launch.key, None)
        if workload is None:
            return
        if launch.decision is AdmissionDecision.FAILED_FAST:
            self.fail(launch.key, launch.reason)
            return
        assert self._coordinator is not None
        config = workload.ti.executor_config or {}
        if launch.allocation is not None and launch.plan is not None:
            try:
                config = with_planned_resources(config, launch.allocation)
            except Exception as exc:
                log.warning("predictive: %s keeps its declared pod resources (%s)", launch.run.key, exc)
        if self._nodes is not None:
            config = self._steered(config, launch)
        if self._store_env:
            config = with_env(config, self._store_env)
        # the handle is the pod's label selector: due plan steps find the pod through it (a launch
        # without a handle never gets its steps: that was the case here before)
        item = self._coordinator.started(launch, _selector(launch.run))
        if self._shaping is not None and launch.settings is not None and launch.settings.shaping:
            self._shaping.start(item, launch.settings, launch.forecast)  # no I/O: the thread finds the pod
        get_key = getattr(self, "get_task_key", None)
        use_uuid = getattr(self, "supports_task_instance_uuid", False)
        key = get_key(workload.ti) if use_uuid and get_key is not None else workload.ti.key
        self.running.add(key)
        self.execute_async(key=key, command=[workload], queue=workload.ti.queue, executor_config=config)

    def _steered(self, config: Any, launch: Launch) -> Any:
        """The pod steered to the node pool that holds its peak (cached pools: no cluster call)."""
        from airflow_predictive.executors.kubernetes_nodes import plan_key, plan_peak

        assert self._nodes is not None
        if launch.plan is not None:
            peak = plan_peak(launch.plan)
        elif launch.allocation is not None:
            peak = charge_of(launch.allocation).limits
        else:
            return config
        try:
            return self._nodes.steer(config, peak, plan_key(launch.run))
        except Exception as exc:
            log.warning("predictive: %s keeps its default placement (%s)", launch.run.key, exc)
            return config

    # -- adoption (a restarted scheduler) -----------------------------------------------------------

    def adopt_launched_task(self, kube_client: Any, pod: Any, tis_to_flush_by_key: dict[Any, Any]) -> None:
        """KubernetesExecutor relabels the pod of a try whose scheduler is gone; an opted-in try
        then gets its reservation (taken over, or made anew), its plan's remaining steps and its
        shaping back (``Coordinator.adopted``). Any failure: logged, the pod runs on as it is."""
        before = dict(tis_to_flush_by_key)
        super().adopt_launched_task(kube_client, pod, tis_to_flush_by_key)
        adopted = [ti for key, ti in before.items() if key not in tis_to_flush_by_key]
        for ti in adopted:  # adopted by the call above
            self._adopted(ti, pod)
        if not adopted:
            self._not_adopted(pod)

    def _not_adopted(self, pod: Any) -> None:
        """A dead scheduler's pod whose task instance is not up for adoption: its try ended (the
        task reported its end, the executor died before seeing the pod's). Once the pod has ended
        too, the try's reservation is released now rather than at its lease's end, and an
        ``OOMKilled`` end is remembered for the retry (``Coordinator.ended_elsewhere``)."""
        if self._coordinator is None:
            return
        try:
            from airflow.providers.cncf.kubernetes.kubernetes_helper_functions import annotations_to_key

            from airflow_predictive.backends.kubernetes.translate import task_state
            from airflow_predictive.core.model.backend import ExitKind

            state = task_state(self._full_pod(pod) or None, "base")
            if state.kind not in (ExitKind.SUCCEEDED, ExitKind.FAILED, ExitKind.OOM_KILLED):
                return
            key = annotations_to_key(pod.metadata.annotations or {})
        except Exception as exc:
            log.warning("predictive: an ended pod's reservation is left to its lease (%s)", exc)
            return
        self._ended_elsewhere(key, state.kind is ExitKind.OOM_KILLED)

    def _adopted(self, ti: Any, pod: Any) -> None:
        coordinator = self._coordinator
        if coordinator is None:
            return
        try:
            settings = task_settings(ti.executor_config, default_enabled=self._default_enabled)
            if not settings.enabled:
                self._unplanned.add(ti.key)
                return
            from airflow_predictive.backends.kubernetes.procedures import in_force
            from airflow_predictive.triggers.pod_shaper import pod_started_at

            run = run_identity(ti)
            body = self._full_pod(pod)
            item, forecast = coordinator.adopted(
                ti.key,
                run,
                settings,
                _query(ti, run, settings),
                handle=_selector(run),
                allocation=in_force(body, "base") if body else None,
                started=pod_started_at(body, "base"),
                priority=_priority(ti),
            )
            if self._shaping is not None and settings.shaping:
                self._shaping.start(item, settings, forecast)  # no I/O: the thread finds the pod
        except Exception as exc:
            log.warning("predictive: adopted %s.%s runs on as it is (%s)", ti.dag_id, ti.task_id, exc)

    def _full_pod(self, pod: Any) -> Any:
        """The adopted pod as a dict with its spec and status: KubernetesExecutor lists pods for
        adoption as metadata only (PartialObjectMetadata), so one read; {} when it fails (logged:
        the try is adopted without the pod's resources and start time)."""
        try:
            meta, client = pod.metadata, self.kube_client
            assert client is not None  # the base executor adopts only through its client
            full = client.read_namespaced_pod(
                name=meta.name, namespace=meta.namespace, **self.kube_config.kube_client_request_args
            )
            return dict(client.api_client.sanitize_for_serialization(full))
        except Exception as exc:
            log.warning("predictive: adopted pod not read (%s); its plan's clock is its reservation's", exc)
            return {}

    # -- heartbeat -----------------------------------------------------------------------------------

    def sync(self) -> None:
        super().sync()
        coordinator = self._coordinator
        if coordinator is None:
            return
        try:
            if time.monotonic() - self._capacity_at >= CAPACITY_REFRESH_S:
                self._capacity_at = time.monotonic()
                coordinator.set_capacity(namespace_pool(self._namespace(), self._read_capacity()))
            else:  # nodes change faster than quotas: cached, no API call here
                self._refresh_node_bound()
            self._follow_shaping()
            self._apply_steps()
            coordinator.keep_alive(coordinator.clock())
        except Exception as exc:
            log.warning("predictive: executor tick failed (%s)", exc)
        self._admit()
        try:
            self._want_warm()
        except Exception as exc:
            log.warning("predictive: warm capacity not planned this round (%s)", exc)

    def _apply_steps(self) -> None:
        coordinator = self._coordinator
        assert coordinator is not None
        first = {id(item): item.next_step for item in coordinator.running.values()}
        due = coordinator.due_steps(coordinator.clock())
        if not due:
            return
        backend = self._pod_backend
        if backend is None:
            backend = self._pod_backend = self._steps_backend()
        waiting: set[int] = set()  # tries whose pod is not there yet: their steps wait a heartbeat
        for item, target, reason in due:
            if id(item) in waiting:
                continue
            handles = backend.find(item.handle)
            if not handles:
                log.info(
                    "predictive: %s: no pod yet for plan step (%s); next heartbeat", item.run.key, reason
                )
                waiting.add(id(item))
                item.next_step = first[id(item)]  # due again at the next heartbeat
                continue
            result = backend.submit_resize(handles[0], target)
            coordinator.step_applied(
                item,
                target,
                reason,
                status=result.status.value,
                detail=result.reason,
                allocated=target if result.status.value in ("applied", "pending") else None,
            )

    def _follow_shaping(self) -> None:
        """What shaping applied is what the task holds (the namespace pool counts it, an OOM kill
        is planned from it); a pod shaping gave up on before owning it is the timed steps' again."""
        shaping, coordinator = self._shaping, self._coordinator
        if shaping is None or coordinator is None:
            return
        for key, item in coordinator.running.items():
            if not item.shaped:
                continue
            why = shaping.given_up(key)
            if why is not None:
                shaping.stop(key)
                item.shaped = False  # its due steps are sent from this heartbeat on
                log.warning("predictive: %s: shaping gave up (%s); its plan's steps apply", item.run.key, why)
                continue
            allocation = shaping.allocation(key)
            if allocation is not None:
                item.allocation = allocation

    def _stop_shaping(self, key: Any, item: Running | None) -> None:
        """Before the reservation is released: no tick of the pod runs past this (a bounded wait,
        ``kubernetes_shaping.STOP_WAIT_S``); the task holds what shaping last applied."""
        if self._shaping is None or item is None or not item.shaped:
            return
        try:
            shaped = self._shaping.stop(key)
        except Exception as exc:
            log.warning("predictive: shaping of %s did not stop cleanly (%s)", item.run.key, exc)
            return
        if shaped is not None and shaped.allocation is not None:
            item.allocation = shaped.allocation  # an OOM kill is planned from the limit it died at

    def _pod_settings(self) -> Any:
        """The pod backend's settings for this executor's worker pods: its namespace, and the
        container named "base" (where KubernetesExecutor runs the task)."""
        from dataclasses import replace

        from airflow_predictive.runtime import get_runtime

        return replace(
            get_runtime().kubernetes_settings(), namespace=self._namespace(), container_name="base"
        )

    def _steps_backend(self) -> Any:
        """The pod backend the plan steps go through: on this executor's own cluster client,
        namespace and base container (where its worker pods are); ``[predictive]
        kubernetes_conn_id`` without a client."""
        from airflow_predictive.backends.kubernetes.backend import KubernetesPodBackend
        from airflow_predictive.runtime import get_runtime

        client = getattr(self, "kube_client", None)
        api_client = getattr(client, "api_client", None)
        if api_client is None:
            return get_runtime().kubernetes_backend()
        return KubernetesPodBackend(api_client, settings=self._pod_settings())

    def _change_state(self, results: Any, **kwargs: Any) -> None:
        super()._change_state(results, **kwargs)
        coordinator = self._coordinator
        state = getattr(results.state, "value", results.state)
        # the watcher reports a Succeeded pod with state None; RUNNING / QUEUED are not an end
        if coordinator is None or (state is not None and str(state) in NOT_ENDED):
            return
        key = results.key
        details = getattr(results, "failure_details", None) or {}
        oom = str(details.get("container_reason", "")) == "OOMKilled"
        item = coordinator.running.get(key)
        if item is None and key not in self._unplanned and key not in self._held:
            self._ended_elsewhere(key, oom)
            return
        self._unplanned.discard(key)
        self._stop_shaping(key, item)
        peak = None
        if oom and item is not None and item.allocation is not None:
            peak = item.allocation.limits  # killed at its limit: that is the peak seen
        coordinator.finished(key, oom_killed=oom, peak=peak, still_rising=oom)

    def _ended_elsewhere(self, key: Any, oom: bool) -> None:
        """A pod of a dead scheduler's executor that ended before this one adopted it (the base
        executor hands completed pods over to this watcher): its try's reservation goes now."""
        if self._coordinator is None or not hasattr(key, "dag_id"):
            return
        try:
            self._coordinator.ended_elsewhere(key, run_identity(key), oom_killed=oom)
        except Exception as exc:
            log.warning("predictive: %s's reservation is left to its lease (%s)", key, exc)

    def end(self) -> None:
        try:
            super().end()
        finally:
            self._release_everything()

    def terminate(self) -> None:
        try:
            super().terminate()
        finally:
            self._release_everything()

    def _release_everything(self) -> None:
        """Pods still finishing: their reservations end with this executor (as the local one's)."""
        self._stop_nodes()
        if self._shaping is not None:
            try:
                self._shaping.close()  # the thread stops first: nothing resizes a pod past this
            except Exception as exc:
                log.warning("predictive: shaping did not stop cleanly (%s)", exc)
            self._shaping = None
        if self._coordinator is not None:
            self._coordinator.release_all()

    def has_task(self, task_instance: Any) -> bool:
        return super().has_task(task_instance) or task_instance.key in self._held

    @property
    def slots_available(self) -> int:
        return super().slots_available - len(self._held)

    @property
    def slots_occupied(self) -> int:
        return super().slots_occupied + len(self._held)


def _store_env(runtime: Any) -> dict[str, str]:
    """What this executor's worker pods need to record their tasks: the SQLite sibling store the
    scheduler passes to local tasks (``[predictive] sql_alchemy_conn`` empty, Airflow on SQLite;
    reachable when the pods share the scheduler's file system, as on the process kubelet). Never a
    URL with credentials: a PostgreSQL store reaches pods through their own ``[predictive]``
    configuration or the ``store_conn_id`` connection, not through pod specs."""
    from airflow_predictive.runtime import INHERITED_STORE_ENV

    try:
        url = runtime.inherited_store()
    except Exception as exc:
        log.debug("predictive: no store to pass to worker pods (%s)", exc)
        return {}
    return {INHERITED_STORE_ENV: url} if url else {}


def _query(ti: Any, run: Any, settings: Any) -> ForecastQuery:
    return ForecastQuery(
        run.key,
        features=run_features(None, executor_config=ti.executor_config, try_number=run.try_number),
        declared=settings.declared,
        run_id=run.run_id,  # a shadow run's re-forecast for this DAG run, when there is one
    )


def _priority(ti: Any) -> int:
    return int(getattr(ti, "priority_weight", 1) or 1)


def _selector(run: Any) -> str:
    """The label selector of a try's worker pod (KubernetesExecutor's own labels)."""
    key = run.key
    out = f"dag_id={_label(key.dag_id)},task_id={_label(key.task_id)},try_number={run.try_number}"
    return out + (f",map_index={key.map_index}" if key.map_index >= 0 else "")


def _label(value: str) -> str:
    from airflow.providers.cncf.kubernetes.pod_generator import make_safe_label_value

    return str(make_safe_label_value(value))
