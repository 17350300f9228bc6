"""The ``[predictive]`` configuration section: every option declared once, read through one function.

``OPTIONS`` is what ``get_provider_info()["config"]`` publishes (description, type, default,
example), so ``airflow config list`` documents it. Each option has one small cached reader below;
nothing reads configuration into module globals at import time. Invalid values raise
``InvalidConfig`` with the option's name, so a typo fails loudly instead of silently.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any, TypeVar

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
        "SQLAlchemy URL of the database holding the provider's tables (runs, samples, profiles). "
        "Empty: Airflow's metadata database when it is PostgreSQL or MySQL; when Airflow runs on "
        "SQLite, a sibling file predictive.db next to airflow.db (SQLite has one writer at a time "
        "and the scheduler's transactions would stall every task's recording). Task processes cannot "
        "use Airflow's ORM, so the provider always writes through its own engine on this URL.",
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
    "sampler_start_timeout": _opt(
        "Seconds the listener waits for the sampler process to confirm it started; it never "
        "blocks the task longer than this.",
        "float",
        "2.0",
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
    "kubernetes_conn_id": _opt(
        "Airflow connection (cncf-kubernetes provider) used by the Kubernetes backend.",
        "string",
        "kubernetes_default",
    ),
    "namespace": _opt("Kubernetes namespace of predictive pods.", "string", "default"),
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
def sampler_start_timeout() -> float:
    return _positive_float("sampler_start_timeout")


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
def model_dir() -> str:
    raw = _raw("model_dir").strip()
    if raw:
        return os.path.expanduser(raw)
    home = os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow"))
    return os.path.join(home, "predictive", "models")


_BLOCKED_MARKER = "airflow-db-not-allowed"


@_reader
def storage_url() -> str:
    """The provider's database URL.

    ``[predictive] sql_alchemy_conn`` when set. Otherwise Airflow's metadata database, with one
    exception: when that is SQLite, a sibling file ``predictive.db`` next to it. SQLite allows one
    writer at a time and Airflow's scheduler holds long write transactions; sharing the file made
    every task's first write wait for the scheduler (seen: 30 s). PostgreSQL and MySQL are shared.
    Inside a task process Airflow 3 replaces ``[database] sql_alchemy_conn`` with a blocking
    marker, so the environment variable and the config file are consulted before giving up.
    """
    own = _raw("sql_alchemy_conn").strip()
    if own:
        return own
    candidates: list[str | None] = []
    try:
        from airflow.configuration import conf

        candidates.append(conf.get("database", "sql_alchemy_conn", fallback=None))
    except Exception:
        pass
    candidates.append(os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"))
    candidates.append(_from_config_file("database", "sql_alchemy_conn"))
    for url in candidates:
        if url and _BLOCKED_MARKER not in url:
            return _sibling_for_sqlite(url)
    raise InvalidConfig(
        f"[{SECTION}] sql_alchemy_conn is empty and Airflow's metadata database URL is not readable "
        "here; set [predictive] sql_alchemy_conn (or AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN)."
    )


def _sibling_for_sqlite(url: str) -> str:
    if not url.startswith("sqlite:///"):
        return url
    path = url[len("sqlite:///") :].split("?", 1)[0]
    if not path or path == ":memory:":
        return url
    return "sqlite:///" + os.path.join(os.path.dirname(path), "predictive.db")


def _from_config_file(section: str, key: str) -> str | None:
    import configparser

    home = os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow"))
    path = os.environ.get("AIRFLOW_CONFIG", os.path.join(home, "airflow.cfg"))
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path)
        value = parser.get(section, key, fallback=None)
    except configparser.Error:
        return None
    if value:
        return value.replace("{AIRFLOW_HOME}", home)
    return None


def reset_cache() -> None:
    """Forget cached values (tests, and after `airflow config` changes in a long-lived process)."""
    for fn in _READERS:
        fn.cache_clear()
