"""Both backends connect through the cncf-kubernetes provider's connection (kubeconfig path in
the connection's extras), like a deployment would with ``[predictive] kubernetes_conn_id``."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from airflow_predictive.backends.kubernetes.async_backend import AsyncKubernetesPodBackend
from airflow_predictive.backends.kubernetes.backend import KubernetesPodBackend
from airflow_predictive.cli.definition import get_predictive_cli_commands
from airflow_predictive.core.model.backend import Allocation, ProvisionSpec
from airflow_predictive.core.model.resources import MIB, ResourceVector

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from airflow_predictive.emulator.kubernetes.emulator import Emulator


def _connection(monkeypatch: pytest.MonkeyPatch, kubeconfig: Path, tmp_path: Path) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    extra = {"kube_config_path": str(kubeconfig), "namespace": "default"}
    monkeypatch.setenv("AIRFLOW_CONN_KUBE_EMU", json.dumps({"conn_type": "kubernetes", "extra": extra}))


def test_sync_backend_connects_through_the_provider_connection(
    monkeypatch: pytest.MonkeyPatch, kubeconfig: Path, tmp_path: Path, emulator: Emulator
) -> None:
    _connection(monkeypatch, kubeconfig, tmp_path)
    backend = KubernetesPodBackend.from_connection("kube_emu")
    handle = backend.provision(
        ProvisionSpec(name="via-conn"),
        Allocation.exactly(ResourceVector(cpu_cores=0.5, memory_bytes=64 * MIB)),
    )
    assert backend.settings.namespace == "default"
    assert backend.capacity().allocated.memory_bytes == 64 * MIB
    backend.release(handle)
    backend.close()


def test_async_backend_connects_through_the_provider_connection(
    monkeypatch: pytest.MonkeyPatch, kubeconfig: Path, tmp_path: Path, emulator: Emulator
) -> None:
    _connection(monkeypatch, kubeconfig, tmp_path)

    async def scenario() -> None:
        backend = await AsyncKubernetesPodBackend.from_connection("kube_emu")
        try:
            assert backend.settings.namespace == "default"
            capacity = await backend.capacity()
            assert capacity.allocatable.cpu_cores == 8.0  # the emulator fixture's node
        finally:
            await backend.aclose()

    asyncio.run(scenario())


def test_kube_emulator_is_an_airflow_predictive_command() -> None:
    group = get_predictive_cli_commands()[0]
    command = next(c for c in group.subcommands if c.name == "kube-emulator")
    flags = {flag for arg in command.args for flag in arg.flags}
    assert {"--port", "--kubeconfig", "--actuation-delay", "--nodes"} <= flags
