"""The composition root: the one place that turns ``[predictive]`` configuration into objects.

Adapters (CLI commands, listeners, the maintenance DAG, executors, operators, triggers, the
plugin) ask ``get_runtime()`` for what they need (a run store, the forecast service, a backend,
settings values) instead of reading configuration themselves. Everything is built lazily, at
most once per process, under one lock, so importing this module costs nothing (no SQLAlchemy, no
Kubernetes client, never TensorFlow: the scheduler, executor and triggerer import it).

A new part gets its builder here: one ``@_once`` method reading its options through ``config``
(the scheduler's ``ledger()`` / ``decision_log()`` / ``scheduler_settings()`` and the shaping
``shaper()`` / ``shaping_events()`` were added that way). ``reset_runtime()`` (or
``config.reset_cache()``) forgets the process-wide instance together with the config cache
(tests, and a long-lived process after a configuration change).
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_predictive import config

# re-exported: adapters use these without reading config themselves
from airflow_predictive.config import INHERITED_STORE_ENV as INHERITED_STORE_ENV
from airflow_predictive.config import ConnectionLookup as ConnectionLookup
from airflow_predictive.config import InvalidConfig as InvalidConfig
from airflow_predictive.config import RecordingUnavailable as RecordingUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine

    from airflow_predictive.backends.kubernetes.settings import KubernetesSettings
    from airflow_predictive.backends.nodes.backend import NodePoolBackend
    from airflow_predictive.core.model.backend import Handle
    from airflow_predictive.core.ports import ForecastService, ResourceBackend
    from airflow_predictive.core.profiler.estimators.base import RunExample
    from airflow_predictive.core.shadow.policy import ShadowSettings
    from airflow_predictive.core.shaping.controller import ShapingController
    from airflow_predictive.core.shaping.policy import ShapingSettings
    from airflow_predictive.core.shaping.reforecast import ReforecastSettings
    from airflow_predictive.storage.ledger_store import DecisionLog, SqlLedger
    from airflow_predictive.storage.model_store import ModelStore
    from airflow_predictive.storage.profile_store import ForecastCache, ProfileStore
    from airflow_predictive.storage.run_store import SqlRunStore
    from airflow_predictive.storage.shadow_store import SqlShadowForecastStore
    from airflow_predictive.storage.shaping_store import SqlShapingEventStore

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RecordingSettings:
    """What the recording listener and its sampler sidecar need, read once from configuration.

    enabled: the master switch (False: nothing is recorded, tasks run as declared).
    record_all_tasks: record every task, not only ``predictive=True`` ones.
    sample_interval_s / flush_interval_s: the sampler's cadence.
    gpu_metrics: how GPU usage is read ('auto', 'nvml', 'nvidia-smi', 'off').
    budget_s: the most recording may add to a task's start or end (also how long the listener
        waits for the sampler to start) when anything misbehaves.
    """

    enabled: bool
    record_all_tasks: bool
    sample_interval_s: float
    flush_interval_s: float
    gpu_metrics: str
    budget_s: float


def _once(fn: Callable[[Runtime], T]) -> Callable[[Runtime], T]:
    """Build on first call, then return the same object (thread-safe; builders may nest)."""
    name = fn.__name__

    @functools.wraps(fn)
    def wrapper(self: Runtime) -> T:
        try:
            return self._built[name]  # type: ignore[no-any-return]
        except KeyError:
            pass
        with self._lock:
            if name not in self._built:
                self._built[name] = fn(self)
            return self._built[name]  # type: ignore[no-any-return]

    return wrapper


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    """The PredictiveExecutor's ``[predictive]`` options (see docs/configuration.md).

    pool_memory_bytes / pool_cpus: the local pool's capacity (None: the machine's, or the cgroup
    limit above the task groups). fail_fast: ``on_never_fits = fail``. lease_s: reservation lease.
    max_wait_s: bounded waiting in admission. shaping_interval_s: the local shaping loop's period.
    node_pools_interval_s / node_pools_wait_s: the node-pool rounds' period and how long a task
    waits for a node before its declared fallback (used when ``node_pools()`` gives a backend).
    trust_after_runs: recorded runs before memory is planned below the declared value.
    """

    default_enabled: bool
    pool_memory_bytes: float | None
    pool_cpus: float | None
    fail_fast: bool
    lease_s: float
    max_wait_s: float
    shaping_interval_s: float = 1.0
    node_pools_interval_s: float = 5.0
    node_pools_wait_s: float = 300.0
    trust_after_runs: int = 3
    plan_min_step_s: float = 30.0  # shortest constant piece of a plan ([predictive] plan_min_step)
    local_shadow_run: str = "false"  # shadow_run of a local task that sets none (local_shadow_run)
    kubernetes_shaping_interval_s: float = 2.0  # pod shaping period (kubernetes_shaping_interval)


class Runtime:
    """Lazily built, process-wide objects of the provider (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._built: dict[str, Any] = {}

    # -- plain settings ------------------------------------------------------------------------

    def enabled(self) -> bool:
        return config.enabled()

    def storage_url(self) -> str:
        """The provider's database URL (``[predictive] sql_alchemy_conn`` or derived from Airflow's)."""
        return config.storage_url()

    def recording_store(self, wait: float) -> str | ConnectionLookup:
        """The store a task's start hook records into, or the connection lookup still running
        after ``wait`` seconds (``config.recording_store``); RecordingUnavailable when none."""
        return config.recording_store(wait)

    def pending_store_url(self, lookup: ConnectionLookup) -> str:
        """The URL a lookup that outlasted the start hook gave (``config.pending_store_url``)."""
        return config.pending_store_url(lookup)

    def inherited_store(self) -> str | None:
        """The SQLite sibling store a component passes down to the local tasks it launches."""
        return config.inherited_store()

    def kubernetes_conn_id(self) -> str:
        """The cncf-kubernetes connection of the Kubernetes backends (``[predictive] kubernetes_conn_id``)."""
        return config.kubernetes_conn_id()

    @_once
    def recording_settings(self) -> RecordingSettings:
        return RecordingSettings(
            enabled=config.enabled(),
            record_all_tasks=config.record_all_tasks(),
            sample_interval_s=config.sample_interval(),
            flush_interval_s=config.sample_flush_interval(),
            gpu_metrics=config.gpu_metrics(),
            budget_s=config.record_budget(),
        )

    @_once
    def kubernetes_settings(self) -> KubernetesSettings:
        """``[predictive] namespace`` and the ``kubernetes_*`` options as one frozen value."""
        from airflow_predictive.backends.kubernetes.settings import KubernetesSettings
        from airflow_predictive.core.model.backend import MemoryMargin
        from airflow_predictive.core.model.resources import ResourceVector

        return KubernetesSettings(
            namespace=config.namespace(),
            image=config.kubernetes_image(),
            service_account=config.kubernetes_service_account(),
            settle_timeout_s=config.kubernetes_settle_timeout(),
            deferred_timeout_s=config.kubernetes_deferred_timeout(),
            in_progress_timeout_s=config.kubernetes_in_progress_timeout(),
            request_timeout_s=config.kubernetes_request_timeout(),
            max_retries=config.kubernetes_max_retries(),
            backoff_base_s=config.kubernetes_retry_backoff(),
            backoff_max_s=config.kubernetes_retry_backoff_max(),
            memory_margin=MemoryMargin(
                fraction=config.kubernetes_memory_margin(),
                minimum_bytes=config.kubernetes_memory_margin_min(),
            ),
            default_requests=ResourceVector(
                cpu_cores=config.kubernetes_default_cpu_request(),
                memory_bytes=config.kubernetes_default_memory_request(),
            ),
            use_kubelet_summary=config.kubernetes_kubelet_summary(),
            capacity_ttl_s=config.kubernetes_capacity_ttl(),
            release_grace_s=config.kubernetes_release_grace(),
            unobserved_timeout_s=config.kubernetes_unobserved_timeout(),
        )

    # -- storage ---------------------------------------------------------------------------------

    @_once
    def engine(self) -> Engine:
        from airflow_predictive.storage.engine import engine_for

        return engine_for(config.storage_url())

    @_once
    def run_store(self) -> SqlRunStore:
        from airflow_predictive.storage.run_store import SqlRunStore

        return SqlRunStore(self.engine())

    @_once
    def profile_store(self) -> ProfileStore:
        from airflow_predictive.storage.profile_store import ProfileStore

        return ProfileStore(self.engine())

    @_once
    def forecast_cache(self) -> ForecastCache:
        from airflow_predictive.storage.profile_store import ForecastCache

        return ForecastCache(self.engine())

    @_once
    def model_store(self) -> ModelStore:
        from airflow_predictive.storage.model_store import ModelStore

        return ModelStore(config.model_dir(), keep=config.model_versions_kept())

    def training_fanout(self) -> dict[str, Any]:
        """The maintenance DAG's fan-out options, as ``training.fanout.make_plan`` keywords
        (``[predictive] training_candidates``, ``training_shard_size``, ``training_max_shards``)."""
        return {
            "candidates": config.training_candidates() or None,
            "shard_size": config.training_shard_size(),
            "max_shards": config.training_max_shards(),
        }

    # -- the profiler, serving side ----------------------------------------------------------------

    @_once
    def forecasts(self) -> ForecastService:
        """Serves "what will this run need" (the profiler's numpy-only service over this runtime's
        database and model store); never trains, never imports TensorFlow."""
        from airflow_predictive.core.shadow.serving import ShadowOverlay
        from airflow_predictive.training.serving import build_forecast_service

        # a query of a shadowed DAG run (ForecastQuery.run_id) gets its shadow's re-forecast
        return ShadowOverlay(build_forecast_service(self), self.shadow_forecasts())

    # -- shadow runs (issue 11 item 6) ----------------------------------------------------------

    @_once
    def shadow_forecasts(self) -> SqlShadowForecastStore:
        """Where a shadow run leaves the re-forecast of its real try (``predictive_shadow_forecast``)."""
        from airflow_predictive.storage.shadow_store import SqlShadowForecastStore

        return SqlShadowForecastStore(self.engine())

    @_once
    def shadow_settings(self) -> ShadowSettings:
        """``[predictive] shadow_*`` as the shadow policy's settings."""
        from airflow_predictive.core.shadow.policy import ShadowSettings

        return ShadowSettings(
            min_runs=config.shadow_min_runs(),
            drift_threshold=config.shadow_drift_threshold(),
            budget=config.shadow_budget(),
            deadline_s=config.shadow_deadline(),
            cpu_cores=config.shadow_cpu(),
            memory_bytes=config.shadow_memory(),
        )

    # -- backends ----------------------------------------------------------------------------------

    @_once
    def local_backend(self) -> ResourceBackend:
        """cgroups from ``[predictive] backend`` / ``cgroup_root`` (observe-only when 'none' or unwritable)."""
        from airflow_predictive.backends.cgroups.backend import CgroupBackend
        from airflow_predictive.backends.cgroups.hierarchy import CgroupLayout

        layout = (
            CgroupLayout(None, reason="[predictive] backend = none") if config.backend() == "none" else None
        )
        backend = CgroupBackend(layout, cgroup_root=config.cgroup_root())
        try:  # what a killed predecessor could not release (backends/cgroups/owner.py)
            backend.remove_abandoned()
        except Exception as exc:  # never keeps the backend from serving
            log.warning("predictive: abandoned cgroups were not looked for (%s)", exc)
        return backend

    @_once
    def kubernetes_backend(self) -> ResourceBackend:
        """The synchronous pod backend on ``[predictive] kubernetes_conn_id`` with ``kubernetes_settings()``."""
        from airflow_predictive.backends.kubernetes.backend import KubernetesPodBackend

        return KubernetesPodBackend.from_connection(
            self.kubernetes_conn_id(), settings=self.kubernetes_settings()
        )

    def node_pools(self, namespace: str | None = None) -> NodePoolBackend | None:
        """The node-pool backend on ``[predictive] kubernetes_conn_id`` when ``[predictive]
        node_pools`` is on (else None); placeholders live in ``namespace`` (the task pods' own, so
        that a landed pod is found beside its placeholder). Not cached: one per executor."""
        if not config.node_pools():
            return None
        from airflow_predictive.backends.kubernetes.backend import connection_hook
        from airflow_predictive.backends.nodes.backend import NodePoolBackend, NodePoolSettings

        hook = connection_hook(self.kubernetes_conn_id())
        settings = NodePoolSettings(
            namespace=namespace or hook.get_namespace() or self.kubernetes_settings().namespace,
            margin_s=config.node_pools_margin(),
            request_timeout_s=config.kubernetes_request_timeout(),
        )
        return NodePoolBackend(hook.get_conn(), settings)

    # -- seams for the next issues (planner, ledger, shaper): add ``@_once`` builders here ----------

    # -- shaping (issue 11): the event store, and a controller wired to it and to the ledger ------

    @_once
    def shaping_events(self) -> SqlShapingEventStore:
        from airflow_predictive.storage.shaping_store import SqlShapingEventStore

        return SqlShapingEventStore(self.engine())

    def shaper(
        self,
        backend: ResourceBackend,
        handle: Handle,
        settings: ShapingSettings | None = None,
        **kwargs: Any,
    ) -> ShapingController:
        """A shaping controller for one provisioned task, its events stored and every applied
        change adjusting ``reservation_id`` (a kwarg) in the ledger. Storage failures are the
        controller's to survive (it logs them and keeps shaping)."""
        from airflow_predictive.core.ports import SystemClock
        from airflow_predictive.core.shaping.controller import ShapingController
        from airflow_predictive.core.shaping.policy import ShapingSettings

        kwargs.setdefault("clock", SystemClock())
        kwargs.setdefault("events", self.shaping_events())
        if kwargs.get("reservation_id"):
            kwargs.setdefault("ledger", self.ledger())
        if "reforecast" not in kwargs:
            kwargs.update(
                self.shaping_reforecast(
                    kwargs.get("expectation"), kwargs.get("options"), kwargs.get("run_key")
                )
            )
        return ShapingController(backend, handle, settings or ShapingSettings(), **kwargs)

    def shaping_reforecast(
        self, expectation: object, options: Any, run_key: str | None = None
    ) -> dict[str, Any]:
        """The controller's mid-run re-forecast (``core/shaping/reforecast.py``) when
        ``shaping_reforecast_interval`` > 0 and it shapes along an at-start forecast; an invalid option
        is logged and the task is shaped without it. With the try's ``run_key``
        (``dag/task[map]/run_id/try``, as the executors name shaping events) the task's newest
        finished runs are loaded once, bounded to ``SegmentPolicy.recent``, for the k-Segments
        re-forecast; a failure to load them is one log line and the prefix re-forecast."""
        from dataclasses import replace

        from airflow_predictive.core.shaping.controller import ControllerOptions
        from airflow_predictive.core.shaping.reforecast import PrefixReforecaster, ReforecastSettings

        try:
            every = config.shaping_reforecast_interval()
        except InvalidConfig as exc:
            log.warning("shaping without mid-run re-forecasts: %s", exc)
            return {}
        settings = ReforecastSettings(every)
        hook = PrefixReforecaster.following(expectation, settings)
        if hook is None:
            return {}
        history = self.shaping_history(run_key, settings) if run_key else ()
        if history:
            hook = PrefixReforecaster.following(expectation, settings, history) or hook
        return {
            "reforecast": hook,
            "options": replace(options or ControllerOptions(), reforecast_every_s=every),
        }

    def shaping_history(self, run_key: str | None, settings: ReforecastSettings) -> tuple[RunExample, ...]:
        """The task's earlier finished runs for ``shaping_reforecast`` (empty: none, segments off, a
        run key that names no task, or storage failing: logged once per call)."""
        import re

        from airflow_predictive.core.model.runs import TaskKey
        from airflow_predictive.training.serving import task_history

        if settings.segments is None or not run_key:
            return ()
        parts = run_key.split("/")
        if len(parts) < 4 or not parts[0] or not parts[1]:
            return ()
        found = re.fullmatch(r"(.+)\[(-?\d+)\]", parts[1])
        key = TaskKey(parts[0], found.group(1), int(found.group(2))) if found else TaskKey(parts[0], parts[1])
        try:
            return task_history(self.run_store(), key, settings.segments.recent)
        except Exception as exc:
            log.warning(
                "shaping %s with the prefix re-forecast only: its task history did not load: %s", run_key, exc
            )
            return ()

    # -- scheduler (issue 10): the shared ledger, the decision log, the local pool's settings ------

    @_once
    def ledger(self) -> SqlLedger:
        """The reservation ledger on the provider's database (shared by every executor / scheduler)."""
        from airflow_predictive.storage.ledger_store import SqlLedger

        return SqlLedger(self.engine())

    @_once
    def decision_log(self) -> DecisionLog:
        from airflow_predictive.storage.ledger_store import DecisionLog

        return DecisionLog(self.engine())

    @_once
    def scheduler_settings(self) -> SchedulerSettings:
        return SchedulerSettings(
            default_enabled=config.default_enabled(),
            pool_memory_bytes=config.pool_memory(),
            pool_cpus=config.pool_cpus(),
            fail_fast=config.on_never_fits() == "fail",
            lease_s=config.reservation_lease(),
            max_wait_s=config.admission_max_wait(),
            shaping_interval_s=config.local_shaping_interval(),
            node_pools_interval_s=config.node_pools_interval(),
            node_pools_wait_s=config.node_pools_wait(),
            trust_after_runs=config.trust_after_runs(),
            plan_min_step_s=config.plan_min_step(),
            local_shadow_run=config.local_shadow_run(),
            kubernetes_shaping_interval_s=config.kubernetes_shaping_interval(),
        )


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The process-wide runtime (created on first use)."""
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                _runtime = Runtime()
    return _runtime


def _forget_runtime() -> None:
    global _runtime
    with _runtime_lock:
        _runtime = None


config.on_reset(_forget_runtime)  # what the runtime built is stale once configuration is re-read


def reset_runtime() -> None:
    """Forget the process-wide runtime and the config cache (tests; after a configuration change).

    ``config.reset_cache()`` does the same: a runtime never outlives the configuration it read.
    """
    config.reset_cache()
