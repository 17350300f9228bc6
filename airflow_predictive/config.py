"""The ``[predictive]`` configuration section: every option declared once, read through one function.

``OPTIONS`` is what ``get_provider_info()["config"]`` publishes (description, type, default,
example), so ``airflow config list`` documents it. Each option has one small cached reader below;
nothing reads configuration into module globals at import time. Invalid values raise
``InvalidConfig`` with the option's name, so a typo fails loudly instead of silently.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

SECTION = "predictive"


class InvalidConfig(ValueError):
    """A ``[predictive]`` option holds a value that cannot be used."""


def _opt(description: str, type_: str, default: str | None, example: str | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "version_added": "0.1.0",
        "type": type_,
        "example": example,
        "default": default,
    }


OPTIONS: dict[str, dict[str, Any]] = {
    "enabled": _opt(
        "Master switch. When False the listener records nothing and predictive tasks run with "
        "their declared resources.",
        "boolean",
        "True",
    ),
    "sql_alchemy_conn": _opt(
        "SQLAlchemy URL of the database holding the provider's tables (runs, samples, profiles), "
        "used by every process. Recommended in production: a dedicated least-privilege role "
        "(`airflow predictive db-grants --role NAME` prints its SQL). Empty: outside task processes "
        "Airflow's metadata database when it is PostgreSQL or MySQL, or a sibling file predictive.db "
        "next to airflow.db when Airflow runs on SQLite; inside task processes (which never read the "
        "metadata database's URL) the connection named by store_conn_id, else the SQLite sibling "
        "the launching component passed down, else recording is disabled on that worker with one "
        "warning. See docs/recording.md.",
        "string",
        "",
        "postgresql+psycopg2://airflow:airflow@localhost/airflow",
    ),
    "record_all_tasks": _opt(
        "Record runs and samples of every task, not only tasks marked predictive=True. The "
        "profiler learns from whatever was recorded.",
        "boolean",
        "True",
    ),
    "sample_interval": _opt("Seconds between two resource samples of a running task.", "float", "1.0", "0.5"),
    "sample_flush_interval": _opt(
        "Seconds between two writes of buffered samples to the database (bounds what a crash of "
        "the sampler can lose).",
        "float",
        "5.0",
    ),
    "record_budget": _opt(
        "Seconds recording may add to a task's start or end at most, whatever the database does "
        "(down, hung, locked): the bound of every database operation of the recorder and of the "
        "lookup of store_conn_id. After one failure in a task process recording stops trying there "
        "(one warning); the sampler retries outside the task path.",
        "float",
        "1.0",
        "0.5",
    ),
    "store_conn_id": _opt(
        "Airflow connection (postgres, mysql or sqlite) that task processes use to reach the "
        "provider's tables when [predictive] sql_alchemy_conn is empty. Fetched through the Task "
        "SDK (secrets backends apply), so workers need no metadata-database credentials; point it "
        "at the same database as the server side with a least-privilege role.",
        "string",
        "predictive_store",
    ),
    "gpu_metrics": _opt(
        "How GPU usage is read: 'auto' (NVML, then nvidia-smi, else absent), 'nvml', 'nvidia-smi' or 'off'.",
        "string",
        "auto",
    ),
    "backend": _opt(
        "Resource backend for predictive tasks run locally: 'cgroups' (enforce limits in a cgroup "
        "per task; observe-only where cgroups are not writable) or 'none' (observe only).",
        "string",
        "cgroups",
    ),
    "cgroup_root": _opt(
        "Parent cgroup under which task cgroups are made. Empty: detect (cgroup v2 with "
        "controllers, else the v1 cpu/memory hierarchies) and use 'airflow-predictive' below it.",
        "string",
        "",
        "/sys/fs/cgroup/airflow-predictive",
    ),
    "model_dir": _opt(
        "Folder for versioned model artefacts. Empty: $AIRFLOW_HOME/predictive/models.",
        "string",
        "",
    ),
    "model_versions_kept": _opt(
        "How many versions of each model (per task and global) the model store keeps; older ones "
        "are deleted after a new version is saved.",
        "integer",
        "3",
    ),
    "training_shard_size": _opt(
        "Due tasks per shard when the maintenance DAG fans retraining out as mapped Airflow tasks "
        "(one shard below it: a small deployment keeps one task's overhead). The global models "
        "(LSTM, scaled curve) still train once over every task.",
        "integer",
        "100",
    ),
    "training_max_shards": _opt(
        "At most this many mapped shard tasks per maintenance run (bigger shards beyond it).",
        "integer",
        "32",
    ),
    "training_candidates": _opt(
        "Comma-separated estimators the maintenance DAG trains and selects from. Empty: the "
        "defaults (scaled_curve, last_run, median_peak, linear_input, vpa, autopilot, lstm).",
        "string",
        "",
        "scaled_curve,last_run,median_peak,vpa",
    ),
    "kubernetes_conn_id": _opt(
        "Airflow connection (cncf-kubernetes provider) used by the Kubernetes backend.",
        "string",
        "kubernetes_default",
    ),
    "namespace": _opt("Kubernetes namespace of predictive pods.", "string", "default"),
    # -- Kubernetes backend tuning (read together into KubernetesSettings by runtime) --
    "kubernetes_image": _opt(
        "Container image of a predictive pod when its task names none.", "string", "python:3.11-slim"
    ),
    "kubernetes_service_account": _opt(
        "serviceAccountName of predictive pods. Empty: the namespace's default service account.",
        "string",
        "",
        "airflow-tasks",
    ),
    "kubernetes_settle_timeout": _opt(
        "Seconds an in-place resize may take to be actuated by the kubelet before the backend "
        "answers PENDING and leaves it to settle (kind 1.35 needs about 1.8 s).",
        "float",
        "5.0",
    ),
    "kubernetes_deferred_timeout": _opt(
        "Seconds a resize reported 'PodResizePending: Deferred' (no room on the node yet) may wait "
        "before the backend reverts the pod spec to what is in force and reports INFEASIBLE.",
        "float",
        "120.0",
    ),
    "kubernetes_in_progress_timeout": _opt(
        "Seconds a resize may stay 'PodResizeInProgress' (it can stick for good, kubernetes#125559) "
        "before the spec is reverted and the resize reported as an ERROR.",
        "float",
        "60.0",
    ),
    "kubernetes_request_timeout": _opt("Seconds per Kubernetes API request.", "float", "10.0"),
    "kubernetes_max_retries": _opt(
        "Retries of a Kubernetes API call answered 429 / 5xx / 409 or failing to connect "
        "(Retry-After is honoured). 0: no retry.",
        "integer",
        "4",
    ),
    "kubernetes_retry_backoff": _opt(
        "Seconds before the first retry of a Kubernetes API call; doubled on every further retry.",
        "float",
        "0.2",
    ),
    "kubernetes_retry_backoff_max": _opt(
        "Upper bound in seconds of the wait between two retries of a Kubernetes API call.", "float", "5.0"
    ),
    "kubernetes_default_cpu_request": _opt(
        "CPU request (Kubernetes quantity) of a predictive pod whose allocation names none; a pod "
        "without requests is BestEffort and can never be resized.",
        "string",
        "100m",
        "250m",
    ),
    "kubernetes_default_memory_request": _opt(
        "Memory request (Kubernetes quantity) of a predictive pod whose allocation names none.",
        "string",
        "128Mi",
        "256Mi",
    ),
    "kubernetes_memory_margin": _opt(
        "A pod's memory limit is never lowered live below its usage plus this fraction of it "
        "(and at least kubernetes_memory_margin_min).",
        "float",
        "0.1",
    ),
    "kubernetes_memory_margin_min": _opt(
        "Smallest headroom (Kubernetes quantity) kept above a pod's memory usage when its limit is lowered.",
        "string",
        "16Mi",
    ),
    "kubernetes_kubelet_summary": _opt(
        "Read a pod's network and filesystem usage from the kubelet summary API (needs RBAC on "
        "nodes/proxy); otherwise only CPU and memory come from metrics.k8s.io.",
        "boolean",
        "False",
    ),
    "kubernetes_capacity_ttl": _opt(
        "Seconds the nodes' allocatable resources are cached by the Kubernetes backend.", "float", "30.0"
    ),
    "kubernetes_unobserved_timeout": _opt(
        "Seconds a resize may stay unobserved by the kubelet (the pod's observedGeneration below the "
        "patch's, or its actual resources never matching the spec without any resize condition) "
        "before the backend reverts the spec and reports an ERROR.",
        "float",
        "30.0",
    ),
    "kubernetes_release_grace": _opt(
        "gracePeriodSeconds used when a finished task's pod is deleted.", "integer", "0"
    ),
    "default_enabled": _opt(
        "Plan and reserve every task run by the PredictiveExecutor, not only tasks that opt in with "
        'executor_config={"predictive": True} (or a dict of settings). A task opts out with '
        '{"predictive": False}.',
        "boolean",
        "False",
    ),
    "pool_memory": _opt(
        "Memory of the local pool the PredictiveExecutor reserves against (Kubernetes quantity). "
        "Empty: this machine's memory, or the cgroup limit above the provider's task groups when lower.",
        "string",
        "",
        "12Gi",
    ),
    "pool_cpus": _opt(
        "CPU cores of the local pool the PredictiveExecutor reserves against. Empty: this machine's cores.",
        "string",
        "",
        "4",
    ),
    "on_never_fits": _opt(
        "What the PredictiveExecutor does with a task whose plan can never fit its pool: 'declared' runs "
        "it on its declared resources (one log line), 'fail' fails it at once with the reason.",
        "string",
        "declared",
    ),
    "reservation_lease": _opt(
        "Seconds a reservation outlives its executor's last heartbeat: reservations of an executor that "
        "crashed lapse after this long, so capacity is never leaked.",
        "float",
        "120.0",
    ),
    "admission_max_wait": _opt(
        "Seconds after which a task held back by admission is no longer overtaken by tasks that waited "
        "less (no starvation). Keep it below [scheduler] task_queued_timeout.",
        "float",
        "300.0",
    ),
    "trust_after_runs": _opt(
        "Recorded runs of a task before the PredictiveExecutors plan its memory below what its author "
        "declared (fewer: the plan may exceed the declaration, never go below it; an OOM kill on a "
        "thin history would cost the user's task). 0: trust the forecast from the first run.",
        "integer",
        "3",
    ),
    "plan_min_step": _opt(
        "Shortest constant piece of an allocation plan, in seconds: the PredictiveExecutors never "
        "plan a timed step sooner than this after the task's start or after the previous step (each "
        "step is a resize, and a reservation change in the ledger).",
        "float",
        "30.0",
    ),
    "local_shaping_interval": _opt(
        "Seconds between two shaping rounds of the PredictiveLocalExecutor (one thread shapes every "
        'local task that opted in with executor_config={"predictive": {"shaping": True}}); usage is '
        "read from each task's cgroup every round.",
        "float",
        "1.0",
    ),
    "kubernetes_shaping_interval": _opt(
        "Seconds between two shaping rounds of the PredictiveKubernetesExecutor (one thread shapes "
        'every worker pod whose task opted in with executor_config={"predictive": {"shaping": True}}); '
        "each round reads each such pod and its metrics.k8s.io usage (two API requests per pod), so "
        "it is slower than the local executor's cgroup reads (an in-place resize takes ~2 s anyway).",
        "float",
        "2.0",
    ),
    "shaping_reforecast_interval": _opt(
        "Seconds between two mid-run re-forecasts of a shaped task that has a forecast: the task's "
        "at-start forecast conditioned on the usage it has shown so far (the profiler's prefix "
        "path, numpy only), which the shaping policy then follows; the guard never drops below the "
        "at-start forecast's. 0: never. The default was chosen on the cluster benchmark's training "
        "split (docs/shaping.md#mid-run-re-forecast).",
        "float",
        "60",
        "120",
    ),
    "node_pools": _opt(
        "Wire node pools (Karpenter NodePools, cluster-autoscaler node groups) into the "
        "PredictiveKubernetesExecutor: task pods are steered (nodeSelector) to the cheapest pool one "
        "node of which holds their predicted peak, the Ready nodes bound the namespace pool (a bin "
        "packing of the waiting peaks), booting nodes are published to the ledger as coming capacity, "
        "and placeholder pods make a node ahead for a downstream task of running ones (ready at their "
        "planned end) or a held-back task that waits for node capacity. See docs/nodes.md#wiring.",
        "boolean",
        "False",
    ),
    "node_pools_margin": _opt(
        "Seconds earlier than a NodePool's provisioning delay that warm capacity (placeholder pods) is "
        "created for a planned start.",
        "float",
        "10.0",
    ),
    "node_pools_interval": _opt(
        "Seconds between two node-pool rounds (read pools and nodes, create due placeholders, delete "
        "landed or lapsed ones, publish coming capacity); they run in a thread, off the scheduler loop.",
        "float",
        "5.0",
    ),
    "node_pools_wait": _opt(
        "With node_pools, seconds a task whose plan is above the pools' present and coming capacity "
        "waits for the autoscaler (its placeholder makes a node) before it runs on its declared "
        "resources. Keep it below [scheduler] task_queued_timeout.",
        "float",
        "300.0",
    ),
    "shadow_budget": _opt(
        "A shadow run's length as a share of the task's predicted runtime (0.05 = 5%), never longer "
        "than shadow_deadline. See docs/shaping.md#shadow-runs.",
        "float",
        "0.05",
    ),
    "shadow_deadline": _opt("Hard deadline of a shadow run, in seconds.", "float", "120.0"),
    "shadow_min_runs": _opt(
        "With shadow_run='auto', a task with fewer successful runs than this is shadowed (cold start).",
        "integer",
        "3",
    ),
    "shadow_drift_threshold": _opt(
        "With shadow_run='auto', a task whose newest runs' peaks are off the forecast by more than this "
        "(median relative error) is shadowed (drift).",
        "float",
        "0.3",
    ),
    "shadow_cpu": _opt("CPU cores a shadow run gets (its cgroup's or pod's limit).", "float", "0.5"),
    "shadow_memory": _opt(
        "Memory a shadow run gets (Kubernetes quantity); a shadow that needs more is OOM-killed, "
        "which tells the re-forecast the task needs at least that.",
        "string",
        "512Mi",
    ),
    "local_shadow_run": _opt(
        "shadow_run of a task under the PredictiveLocalExecutor that does not set one: false, auto or "
        "true. Even then only a task with shadow_cmds or a BashOperator bash_command is shadowed (its "
        "code is never run twice). See docs/shaping.md#shadow-runs.",
        "string",
        "false",
    ),
}


_READERS: list[Any] = []


def _reader(fn: Callable[[], T]) -> Callable[[], T]:
    """One cached reader per option; registered so that ``reset_cache`` forgets them all."""
    cached = functools.cache(fn)
    _READERS.append(cached)
    return cached


def _raw(key: str) -> str:
    if key not in OPTIONS:
        raise KeyError(f"[{SECTION}] {key} is not a declared option")
    env = os.environ.get(f"AIRFLOW__{SECTION.upper()}__{key.upper()}")
    if env is not None:
        return env
    try:
        from airflow.configuration import conf

        value = conf.get(SECTION, key, fallback=None)
    except Exception:  # outside a configured Airflow (unit tests, bare scripts)
        value = None
    default = OPTIONS[key]["default"]
    return str(value if value is not None else default if default is not None else "")


def _bool(key: str) -> bool:
    raw = _raw(key).strip().lower()
    if raw in {"true", "1", "yes", "on"}:
        return True
    if raw in {"false", "0", "no", "off", ""}:
        return False
    raise InvalidConfig(f"[{SECTION}] {key} must be a boolean, got {raw!r}")


def _positive_float(key: str) -> float:
    raw = _raw(key)
    try:
        value = float(raw)
    except ValueError:
        raise InvalidConfig(f"[{SECTION}] {key} must be a number, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise InvalidConfig(f"[{SECTION}] {key} must be a positive number, got {raw!r}")
    return value


def _choice(key: str, choices: tuple[str, ...]) -> str:
    raw = _raw(key).strip().lower()
    if raw not in choices:
        raise InvalidConfig(f"[{SECTION}] {key} must be one of {', '.join(choices)}; got {raw!r}")
    return raw


def _integer(key: str, minimum: int) -> int:
    raw = _raw(key).strip()
    try:
        value = int(raw)
    except ValueError:
        raise InvalidConfig(f"[{SECTION}] {key} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise InvalidConfig(f"[{SECTION}] {key} must be at least {minimum}, got {raw!r}")
    return value


def _fraction(key: str) -> float:
    raw = _raw(key).strip()
    try:
        value = float(raw)
    except ValueError:
        raise InvalidConfig(f"[{SECTION}] {key} must be a number, got {raw!r}") from None
    if not 0 <= value < 10:
        raise InvalidConfig(f"[{SECTION}] {key} must be a fraction >= 0 (0.1 = 10%), got {raw!r}")
    return value


def _quantity(key: str) -> float:
    from airflow_predictive.core.model.quantity import InvalidQuantity, parse_quantity

    raw = _raw(key).strip()
    try:
        return parse_quantity(raw)
    except InvalidQuantity:
        raise InvalidConfig(
            f"[{SECTION}] {key} must be a Kubernetes quantity such as 250m, 2 or 512Mi; got {raw!r}"
        ) from None


@_reader
def enabled() -> bool:
    return _bool("enabled")


@_reader
def record_all_tasks() -> bool:
    return _bool("record_all_tasks")


@_reader
def sample_interval() -> float:
    return _positive_float("sample_interval")


@_reader
def sample_flush_interval() -> float:
    return _positive_float("sample_flush_interval")


@_reader
def gpu_metrics() -> str:
    return _choice("gpu_metrics", ("auto", "nvml", "nvidia-smi", "off"))


@_reader
def backend() -> str:
    return _choice("backend", ("cgroups", "none"))


@_reader
def cgroup_root() -> str:
    return _raw("cgroup_root").strip()


@_reader
def kubernetes_conn_id() -> str:
    return _raw("kubernetes_conn_id").strip() or "kubernetes_default"


@_reader
def namespace() -> str:
    return _raw("namespace").strip() or "default"


@_reader
def kubernetes_image() -> str:
    return _raw("kubernetes_image").strip() or "python:3.11-slim"


@_reader
def kubernetes_service_account() -> str | None:
    return _raw("kubernetes_service_account").strip() or None


@_reader
def kubernetes_settle_timeout() -> float:
    return _positive_float("kubernetes_settle_timeout")


@_reader
def kubernetes_deferred_timeout() -> float:
    return _positive_float("kubernetes_deferred_timeout")


@_reader
def kubernetes_in_progress_timeout() -> float:
    return _positive_float("kubernetes_in_progress_timeout")


@_reader
def kubernetes_request_timeout() -> float:
    return _positive_float("kubernetes_request_timeout")


@_reader
def kubernetes_max_retries() -> int:
    return _integer("kubernetes_max_retries", 0)


@_reader
def kubernetes_retry_backoff() -> float:
    return _positive_float("kubernetes_retry_backoff")


@_reader
def kubernetes_retry_backoff_max() -> float:
    return _positive_float("kubernetes_retry_backoff_max")


@_reader
def kubernetes_default_cpu_request() -> float:
    return _quantity("kubernetes_default_cpu_request")


@_reader
def kubernetes_default_memory_request() -> float:
    return _quantity("kubernetes_default_memory_request")


@_reader
def kubernetes_memory_margin() -> float:
    return _fraction("kubernetes_memory_margin")


@_reader
def kubernetes_memory_margin_min() -> float:
    return _quantity("kubernetes_memory_margin_min")


@_reader
def kubernetes_kubelet_summary() -> bool:
    return _bool("kubernetes_kubelet_summary")


@_reader
def kubernetes_capacity_ttl() -> float:
    return _positive_float("kubernetes_capacity_ttl")


@_reader
def kubernetes_unobserved_timeout() -> float:
    return _positive_float("kubernetes_unobserved_timeout")


@_reader
def kubernetes_release_grace() -> int:
    return _integer("kubernetes_release_grace", 0)


@_reader
def default_enabled() -> bool:
    return _bool("default_enabled")


def _optional_quantity(key: str) -> float | None:
    return None if not _raw(key).strip() else _quantity(key)


@_reader
def pool_memory() -> float | None:
    return _optional_quantity("pool_memory")


@_reader
def pool_cpus() -> float | None:
    return _optional_quantity("pool_cpus")


@_reader
def on_never_fits() -> str:
    return _choice("on_never_fits", ("declared", "fail"))


@_reader
def reservation_lease() -> float:
    return _positive_float("reservation_lease")


@_reader
def admission_max_wait() -> float:
    return _positive_float("admission_max_wait")


@_reader
def trust_after_runs() -> int:
    return _integer("trust_after_runs", 0)


@_reader
def plan_min_step() -> float:
    return _positive_float("plan_min_step")


@_reader
def local_shaping_interval() -> float:
    return _positive_float("local_shaping_interval")


@_reader
def kubernetes_shaping_interval() -> float:
    return _positive_float("kubernetes_shaping_interval")


@_reader
def shaping_reforecast_interval() -> float:
    raw = _raw("shaping_reforecast_interval")
    try:
        value = float(raw)
    except ValueError:
        raise InvalidConfig(
            f"[{SECTION}] shaping_reforecast_interval must be a number, got {raw!r}"
        ) from None
    if not 0 <= value < float("inf"):
        raise InvalidConfig(f"[{SECTION}] shaping_reforecast_interval must be >= 0, got {raw!r}")
    return value


@_reader
def node_pools() -> bool:
    return _bool("node_pools")


@_reader
def node_pools_margin() -> float:
    return _positive_float("node_pools_margin")


@_reader
def node_pools_interval() -> float:
    return _positive_float("node_pools_interval")


@_reader
def node_pools_wait() -> float:
    return _positive_float("node_pools_wait")


@_reader
def shadow_budget() -> float:
    value = _positive_float("shadow_budget")
    if value > 1:
        raise InvalidConfig(
            f"[{SECTION}] shadow_budget must be a share of the runtime in (0, 1], got {value}"
        )
    return value


@_reader
def shadow_deadline() -> float:
    return _positive_float("shadow_deadline")


@_reader
def shadow_min_runs() -> int:
    return _integer("shadow_min_runs", 0)


@_reader
def shadow_drift_threshold() -> float:
    return _positive_float("shadow_drift_threshold")


@_reader
def shadow_cpu() -> float:
    return _positive_float("shadow_cpu")


@_reader
def shadow_memory() -> float:
    return _quantity("shadow_memory")


@_reader
def local_shadow_run() -> str:
    return _choice("local_shadow_run", ("false", "auto", "true"))


@_reader
def model_versions_kept() -> int:
    raw = _raw("model_versions_kept").strip()
    try:
        value = int(raw)
    except ValueError:
        raise InvalidConfig(f"[{SECTION}] model_versions_kept must be an integer, got {raw!r}") from None
    if value < 1:
        raise InvalidConfig(f"[{SECTION}] model_versions_kept must be at least 1, got {raw!r}")
    return value


@_reader
def training_shard_size() -> int:
    return _integer("training_shard_size", 1)


@_reader
def training_max_shards() -> int:
    return _integer("training_max_shards", 1)


@_reader
def training_candidates() -> tuple[str, ...]:
    """Empty tuple: the training defaults (``training/candidates.py``)."""
    return tuple(n.strip() for n in _raw("training_candidates").split(",") if n.strip())


@_reader
def model_dir() -> str:
    raw = _raw("model_dir").strip()
    if raw:
        return os.path.expanduser(raw)
    home = os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow"))
    return os.path.join(home, "predictive", "models")


_BLOCKED_MARKER = "airflow-db-not-allowed"

#: set by components that launch local tasks (scheduler, `dags test`, CLI) when the provider's
#: store is the SQLite sibling of Airflow's SQLite database: the only URL a task may inherit
INHERITED_STORE_ENV = "AIRFLOW_PREDICTIVE_INHERITED_STORE"


class RecordingUnavailable(InvalidConfig):
    """No store a task process may use: recording is disabled on this worker (one warning)."""


@_reader
def record_budget() -> float:
    return _positive_float("record_budget")


@_reader
def store_conn_id() -> str:
    return _raw("store_conn_id").strip()


def in_task_process() -> bool:
    """True inside an Airflow 3 task (or trigger) process, where the metadata database is hidden."""
    if _BLOCKED_MARKER in os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", ""):
        return True
    try:
        from airflow.configuration import conf

        return _BLOCKED_MARKER in (conf.get("database", "sql_alchemy_conn", fallback="") or "")
    except Exception:
        return False


@_reader
def storage_url() -> str:
    """The provider's database URL (the security model is in docs/recording.md).

    a. ``[predictive] sql_alchemy_conn`` when set, everywhere.
    b. inside a task process: the Airflow connection ``[predictive] store_conn_id``, fetched
       through the Task SDK within ``record_budget`` seconds;
    d. inside a task process: the SQLite sibling its launcher exported (``INHERITED_STORE_ENV``);
    e. inside a task process, otherwise: ``RecordingUnavailable`` (tasks never read the metadata
       database's URL, from the environment or airflow.cfg, and never write anywhere else).
    c. outside task processes: Airflow's metadata database, or when that is SQLite the sibling
       file ``predictive.db`` next to it (SQLite has one writer at a time and the scheduler's long
       write transactions made every task's first write wait, seen: 30 s).
    """
    own = _raw("sql_alchemy_conn").strip()
    if own:
        return own
    if in_task_process():
        conn_id = store_conn_id()
        url, why = (
            ConnectionLookup(conn_id).result(record_budget()) if conn_id else (None, "store_conn_id is empty")
        )
        if url:
            return url
        return _inherited_sqlite() or _raise(_unavailable(conn_id, why))
    url = metadata_url()
    if url:
        return _sibling_for_sqlite(url)
    raise InvalidConfig(
        f"[{SECTION}] sql_alchemy_conn is empty and Airflow's metadata database URL is not readable "
        "here; set [predictive] sql_alchemy_conn (or AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN)."
    )


def _unavailable(conn_id: str, why: str) -> RecordingUnavailable:
    return RecordingUnavailable(
        "recording disabled on this worker: Airflow 3 hides the metadata database from tasks; "
        f"set [{SECTION}] sql_alchemy_conn to a least-privilege role (airflow predictive "
        f"db-grants) or create the connection {conn_id or 'predictive_store'} ({why})"
    )


def _inherited_sqlite() -> str | None:
    inherited = os.environ.get(INHERITED_STORE_ENV, "").strip()
    return inherited if inherited.startswith("sqlite:///") else None


#: how long a task's recording waits, in the background, for a connection lookup that outlasted
#: the start hook's share of ``record_budget`` (the sidecar samples meanwhile)
PENDING_STORE_WAIT_S = 60.0


def recording_store(wait: float) -> str | ConnectionLookup:
    """``storage_url()`` for a task's start hook, which may not wait long: when the connection
    lookup (b) outlasts ``wait`` seconds, the lookup itself, still running; its answer goes to
    the sidecar when it comes (``pending_store_url``). Seen on a loaded 2-core machine: > 1 s."""
    own = _raw("sql_alchemy_conn").strip()
    if own or not in_task_process():
        return storage_url()
    conn_id = store_conn_id()
    if not conn_id:
        return _inherited_sqlite() or _raise(_unavailable(conn_id, "store_conn_id is empty"))
    lookup = ConnectionLookup(conn_id)
    url, why = lookup.result(wait)
    if url:
        return url
    if lookup.pending:
        return lookup
    return _inherited_sqlite() or _raise(_unavailable(conn_id, why))


def pending_store_url(lookup: ConnectionLookup) -> str:
    """The URL a pending lookup gave (or the inherited SQLite sibling); RecordingUnavailable."""
    url, why = lookup.result(PENDING_STORE_WAIT_S)
    return url or _inherited_sqlite() or _raise(_unavailable(lookup.conn_id, why))


def _raise(exc: Exception) -> NoReturn:
    raise exc


def metadata_url() -> str | None:
    """Airflow's metadata database URL outside task processes (None where it is hidden)."""
    try:
        from airflow.configuration import conf

        url = conf.get("database", "sql_alchemy_conn", fallback=None)
    except Exception:
        url = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    return url if url and _BLOCKED_MARKER not in url else None


def inherited_store() -> str | None:
    """The URL a component exports for the tasks it launches: only the SQLite sibling (no
    credentials involved), never the metadata database itself; None otherwise."""
    if _raw("sql_alchemy_conn").strip() or in_task_process():
        return None
    url = metadata_url()
    if not url or not url.startswith("sqlite:///"):
        return None
    sibling = _sibling_for_sqlite(url)
    return sibling if sibling != url else None


def connection_to_url(conn: Any) -> str | None:
    """A SQLAlchemy URL from an Airflow connection (postgres, mysql, sqlite); None for other types.
    ``extra`` may give it whole as ``{"sqlalchemy_url": ...}``."""
    from urllib.parse import quote

    extra = getattr(conn, "extra_dejson", None) or {}
    if isinstance(extra, dict) and isinstance(extra.get("sqlalchemy_url"), str):
        return str(extra["sqlalchemy_url"])
    kind = (getattr(conn, "conn_type", None) or "").lower()
    if kind == "sqlite":
        path = getattr(conn, "host", None) or getattr(conn, "schema", None) or ""
        return f"sqlite:///{path}" if path else None
    drivers = {
        "postgres": "postgresql+psycopg2",
        "postgresql": "postgresql+psycopg2",
        "mysql": "mysql+pymysql",
    }
    if kind not in drivers:
        return None
    login = quote(getattr(conn, "login", None) or "", safe="")
    password = getattr(conn, "password", None)
    auth = f"{login}:{quote(password, safe='')}@" if password else (f"{login}@" if login else "")
    port = getattr(conn, "port", None)
    host = (getattr(conn, "host", None) or "localhost") + (f":{port}" if port else "")
    return f"{drivers[kind]}://{auth}{host}/{getattr(conn, 'schema', None) or ''}"


class ConnectionLookup:
    """``conn_id`` fetched through the Task SDK (the supervisor asks the API server with the task's
    own token; secrets backends apply) on a daemon thread, so a caller can stop waiting for it and
    take the answer later. The Task SDK's comms channel is thread-safe (a lock per request)."""

    def __init__(self, conn_id: str) -> None:
        import threading

        self.conn_id = conn_id
        self._found: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._lookup, name="predictive-store-conn", daemon=True)
        self._thread.start()

    def _lookup(self) -> None:
        try:
            from airflow.sdk import BaseHook

            conn = BaseHook.get_connection(self.conn_id)
            self._found["type"] = getattr(conn, "conn_type", None)
            self._found["url"] = connection_to_url(conn)
        except Exception as exc:  # absent (AirflowNotFoundException) or unreachable
            self._found["error"] = exc

    @property
    def pending(self) -> bool:
        return self._thread.is_alive()

    def result(self, timeout: float) -> tuple[str | None, str]:
        """Wait at most ``timeout`` s: (URL, "") or (None, why not)."""
        self._thread.join(max(0.0, timeout))
        found = self._found
        if found.get("url"):
            return str(found["url"]), ""
        if "error" in found:
            exc = found["error"]
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            return None, f"connection {self.conn_id}: {type(exc).__name__}: {first}"
        if self._thread.is_alive():
            return None, f"connection {self.conn_id} not fetched within {timeout:g}s"
        return None, f"connection {self.conn_id} of type {found.get('type')!r} is not a database connection"


def _sibling_for_sqlite(url: str) -> str:
    if not url.startswith("sqlite:///"):
        return url
    path = url[len("sqlite:///") :].split("?", 1)[0]
    if not path or path == ":memory:":
        return url
    return "sqlite:///" + os.path.join(os.path.dirname(path), "predictive.db")


_ON_RESET: list[Callable[[], None]] = []


def on_reset(callback: Callable[[], None]) -> None:
    """Call ``callback`` on every ``reset_cache`` (the runtime forgets what it built from config)."""
    _ON_RESET.append(callback)


def reset_cache() -> None:
    """Forget cached values (tests, and after `airflow config` changes in a long-lived process)."""
    for fn in _READERS:
        fn.cache_clear()
    for callback in _ON_RESET:
        callback()
