from __future__ import annotations

import subprocess
import sys
import threading
from typing import TYPE_CHECKING

import pytest

from airflow_predictive import runtime
from airflow_predictive.core.model.query import ForecastQuery, ForecastSource
from airflow_predictive.core.model.resources import MIB, ResourceVector
from airflow_predictive.core.model.runs import TaskKey
from airflow_predictive.storage import migrate

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN", f"sqlite:///{tmp_path / 'p.db'}")
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__MODEL_DIR", str(tmp_path / "models"))
    runtime.reset_runtime()
    yield
    runtime.reset_runtime()


def test_get_runtime_is_one_instance_per_process_until_reset() -> None:
    first = runtime.get_runtime()
    assert runtime.get_runtime() is first
    runtime.reset_runtime()
    assert runtime.get_runtime() is not first


def test_each_part_is_built_once_even_under_concurrent_first_use() -> None:
    rt = runtime.get_runtime()
    seen: list[object] = []
    barrier = threading.Barrier(8)

    def ask() -> None:
        barrier.wait()
        seen.append(rt.run_store())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(s) for s in seen}) == 1
    assert rt.profile_store().engine is rt.run_store().engine is rt.forecast_cache().engine


def test_stores_use_the_configured_database(tmp_path: Path) -> None:
    rt = runtime.get_runtime()
    assert rt.storage_url() == f"sqlite:///{tmp_path / 'p.db'}"
    assert str(rt.engine().url) == f"sqlite:///{tmp_path / 'p.db'}"


def test_resetting_the_config_cache_forgets_the_runtime_too() -> None:
    first = runtime.get_runtime()
    runtime.config.reset_cache()
    assert runtime.get_runtime() is not first


def test_reset_rereads_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    assert runtime.get_runtime().kubernetes_settings().namespace == "default"
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__NAMESPACE", "batch")
    assert runtime.get_runtime().kubernetes_settings().namespace == "default"  # cached until reset
    runtime.reset_runtime()
    assert runtime.get_runtime().kubernetes_settings().namespace == "batch"


def test_kubernetes_options_become_the_backend_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "NAMESPACE": "batch",
        "KUBERNETES_IMAGE": "python:3.12-slim",
        "KUBERNETES_SERVICE_ACCOUNT": "tasks",
        "KUBERNETES_SETTLE_TIMEOUT": "7.5",
        "KUBERNETES_DEFERRED_TIMEOUT": "30",
        "KUBERNETES_IN_PROGRESS_TIMEOUT": "45",
        "KUBERNETES_REQUEST_TIMEOUT": "3",
        "KUBERNETES_MAX_RETRIES": "0",
        "KUBERNETES_RETRY_BACKOFF": "0.5",
        "KUBERNETES_RETRY_BACKOFF_MAX": "8",
        "KUBERNETES_DEFAULT_CPU_REQUEST": "250m",
        "KUBERNETES_DEFAULT_MEMORY_REQUEST": "256Mi",
        "KUBERNETES_MEMORY_MARGIN": "0.2",
        "KUBERNETES_MEMORY_MARGIN_MIN": "32Mi",
        "KUBERNETES_KUBELET_SUMMARY": "true",
        "KUBERNETES_CAPACITY_TTL": "5",
        "KUBERNETES_RELEASE_GRACE": "10",
        "KUBERNETES_UNOBSERVED_TIMEOUT": "12",
    }.items():
        monkeypatch.setenv(f"AIRFLOW__PREDICTIVE__{key}", value)
    s = runtime.get_runtime().kubernetes_settings()
    assert (s.namespace, s.image, s.service_account) == ("batch", "python:3.12-slim", "tasks")
    assert (s.settle_timeout_s, s.deferred_timeout_s, s.in_progress_timeout_s) == (7.5, 30.0, 45.0)
    assert (s.request_timeout_s, s.max_retries, s.backoff_base_s, s.backoff_max_s) == (3.0, 0, 0.5, 8.0)
    assert s.default_requests == ResourceVector(cpu_cores=0.25, memory_bytes=256 * MIB)
    assert (s.memory_margin.fraction, s.memory_margin.minimum_bytes) == (0.2, 32 * MIB)
    assert (s.use_kubelet_summary, s.capacity_ttl_s, s.release_grace_s) == (True, 5.0, 10)
    assert s.unobserved_timeout_s == 12.0


def test_invalid_kubernetes_option_fails_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__KUBERNETES_DEFAULT_MEMORY_REQUEST", "lots")
    with pytest.raises(runtime.config.InvalidConfig, match="kubernetes_default_memory_request"):
        runtime.get_runtime().kubernetes_settings()


def test_model_store_follows_model_dir_and_versions_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__MODEL_VERSIONS_KEPT", "5")
    store = runtime.get_runtime().model_store()
    assert (store.root, store.keep) == (tmp_path / "models", 5)


def test_recording_settings_collect_the_recording_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__ENABLED", "false")
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SAMPLE_INTERVAL", "0.25")
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__GPU_METRICS", "off")
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__RECORD_BUDGET", "0.3")
    rec = runtime.get_runtime().recording_settings()
    assert (rec.enabled, rec.sample_interval_s, rec.gpu_metrics, rec.budget_s) == (False, 0.25, "off", 0.3)


def test_local_backend_none_is_observe_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__BACKEND", "none")
    caps = runtime.get_runtime().local_backend().capabilities()
    assert not caps.enforcing and "backend = none" in caps.note


def test_local_backend_detects_under_the_configured_cgroup_root(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_predictive.backends.cgroups import backend as backend_mod
    from airflow_predictive.backends.cgroups.hierarchy import CgroupLayout

    seen: list[str] = []

    def fake_detect(root: str = "") -> CgroupLayout:
        seen.append(root)
        return CgroupLayout(None, reason="test")

    monkeypatch.setattr(backend_mod, "detect", fake_detect)
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__CGROUP_ROOT", "/jobs/airflow")
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__BACKEND", "cgroups")
    runtime.get_runtime().local_backend()
    assert seen == ["/jobs/airflow"]


def test_forecasts_are_the_profilers_service_over_the_runtimes_storage() -> None:
    from airflow_predictive.core.shadow.serving import ShadowOverlay
    from airflow_predictive.training.serving import StoredForecastService

    rt = runtime.get_runtime()
    service = rt.forecasts()
    assert isinstance(service, ShadowOverlay)  # a shadowed DAG run is served its shadow's re-forecast
    assert isinstance(service.inner, StoredForecastService)
    assert rt.forecasts() is service


def test_forecasts_fall_back_to_declared_when_nothing_is_cached() -> None:
    rt = runtime.get_runtime()
    migrate.upgrade(rt.engine())
    declared = ResourceVector(cpu_cores=1.0, memory_bytes=512 * MIB)
    served = rt.forecasts().forecast_for(ForecastQuery(key=TaskKey("d", "new"), declared=declared))
    assert served.source is ForecastSource.DECLARED and served.forecast is not None
    assert served.forecast.peaks(0.9).memory_bytes == 512 * MIB
    nothing = rt.forecasts().forecast_for(ForecastQuery(key=TaskKey("d", "new")))
    assert nothing.source is ForecastSource.NONE


def test_forecasts_never_raise_when_storage_is_missing() -> None:
    # no migration: the tables do not exist
    served = runtime.get_runtime().forecasts().forecast_for(ForecastQuery(key=TaskKey("d", "t")))
    assert served.source is ForecastSource.NONE and "storage unavailable" in served.note


def test_importing_runtime_and_asking_for_forecasts_loads_no_heavy_module(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from airflow_predictive.runtime import get_runtime\n"
        "assert 'sqlalchemy' not in sys.modules, 'import of runtime pulled sqlalchemy'\n"
        "from airflow_predictive.core.model.query import ForecastQuery\n"
        "from airflow_predictive.core.model.runs import TaskKey\n"
        "get_runtime().forecasts().forecast_for(ForecastQuery(key=TaskKey('d', 't')))\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'statsmodels', 'kubernetes') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    env = {"AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'x.db'}", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def _shaper_along_a_forecast() -> object:
    import numpy as np

    from airflow_predictive.backends.fake import FakeBackend, ManualClock, ramp_script
    from airflow_predictive.core.model.backend import Allocation, ProvisionSpec
    from airflow_predictive.core.model.resources import Metric
    from airflow_predictive.core.model.series import DemandCurve, Forecast
    from airflow_predictive.core.shaping.expectation import ForecastExpectation

    clock = ManualClock()
    backend = FakeBackend(clock)
    backend.add_script("t", ramp_script(300, 0.5, 60))
    handle = backend.provision(ProvisionSpec("t"), Allocation(limits=ResourceVector(memory_bytes=400 * MIB)))
    mem = np.full(10, 300 * MIB)
    f = Forecast({Metric.MEMORY_BYTES: DemandCurve(Metric.MEMORY_BYTES, 10.0, {0.5: mem, 0.9: mem})}, {}, "t")
    return runtime.get_runtime().shaper(
        backend, handle, expectation=ForecastExpectation(f), clock=clock, events=None
    )


def test_the_shaper_re_forecasts_mid_run_when_the_interval_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_predictive.core.shaping.reforecast import PrefixReforecaster

    default = _shaper_along_a_forecast()
    assert isinstance(default.reforecast, PrefixReforecaster)  # type: ignore[attr-defined]
    assert default.options.reforecast_every_s == 60.0  # type: ignore[attr-defined]
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SHAPING_REFORECAST_INTERVAL", "30")
    runtime.reset_runtime()
    on = _shaper_along_a_forecast()
    assert on.options.reforecast_every_s == 30.0  # type: ignore[attr-defined]
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SHAPING_REFORECAST_INTERVAL", "0")
    runtime.reset_runtime()
    off = _shaper_along_a_forecast()
    assert off.reforecast is None  # type: ignore[attr-defined]
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SHAPING_REFORECAST_INTERVAL", "-1")
    runtime.reset_runtime()
    bad = _shaper_along_a_forecast()  # logged; shaped without re-forecasts
    assert bad.reforecast is None  # type: ignore[attr-defined]
