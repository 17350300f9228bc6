"""``runtime.kubernetes_backend()``: the sync pod backend on ``[predictive] kubernetes_conn_id``
with the ``kubernetes_*`` options as its settings, against the emulator through a real
cncf-kubernetes connection."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from airflow_predictive import runtime
from airflow_predictive.core.model.backend import Allocation, ProvisionSpec
from airflow_predictive.core.model.resources import MIB, ResourceVector

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from airflow_predictive.emulator.kubernetes.emulator import Emulator


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch, kubeconfig: Path, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__KUBERNETES_CONN_ID", "emu_runtime")
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__KUBERNETES_REQUEST_TIMEOUT", "3")
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__KUBERNETES_DEFAULT_MEMORY_REQUEST", "96Mi")
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__NAMESPACE", "default")
    runtime.reset_runtime()
    yield
    runtime.reset_runtime()


def _connection(monkeypatch: pytest.MonkeyPatch, kubeconfig: Path, **extra: str) -> None:
    body = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig), **extra}}
    monkeypatch.setenv("AIRFLOW_CONN_EMU_RUNTIME", json.dumps(body))


def test_runtime_builds_the_backend_from_the_configured_connection_and_options(
    configured: None, monkeypatch: pytest.MonkeyPatch, kubeconfig: Path, emulator: Emulator
) -> None:
    _connection(monkeypatch, kubeconfig)
    backend = runtime.get_runtime().kubernetes_backend()
    assert runtime.get_runtime().kubernetes_backend() is backend
    s = backend.settings  # type: ignore[attr-defined]
    assert (s.namespace, s.request_timeout_s, s.default_requests.memory_bytes) == ("default", 3.0, 96 * MIB)
    handle = backend.provision(
        ProvisionSpec(name="via-runtime"),
        Allocation.exactly(ResourceVector(cpu_cores=0.5, memory_bytes=64 * MIB)),
    )
    try:
        assert backend.capacity().allocated.memory_bytes == 64 * MIB
    finally:
        backend.release(handle)


def test_the_connections_namespace_wins_over_the_option(
    configured: None, monkeypatch: pytest.MonkeyPatch, kubeconfig: Path, emulator: Emulator
) -> None:
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__NAMESPACE", "batch")
    _connection(monkeypatch, kubeconfig, namespace="default")
    runtime.reset_runtime()
    assert runtime.get_runtime().kubernetes_backend().settings.namespace == "default"  # type: ignore[attr-defined]
