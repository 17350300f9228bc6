"""The backend conformance suite for the Kubernetes pod backend on the *process* kubelet.

The same suite as ``test_kube_conformance.py``, but every task is a real process in a
per-container cgroup, and ``read_back`` reads the limits in force from the kernel's files of the
cgroup that process is in (found through ``/proc/<pid>/cgroup``), not from the pod's status: a
resize the backend calls APPLIED must have reached the kernel; an OOM kill is the kernel's.
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING

import pytest

from airflow_predictive.backends.kubernetes.backend import KubernetesPodBackend
from airflow_predictive.backends.kubernetes.settings import KubernetesSettings
from airflow_predictive.core.model.backend import ProvisionSpec
from airflow_predictive.emulator.kubernetes.process_kubelet import ProcessContainer, ProcessKubelet
from tests.conformance.backend_suite import BackendConformance, ConformanceProfile
from tests.conformance.read_back import cgroup_limits

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from airflow_predictive.core.model.backend import Handle
    from airflow_predictive.core.model.resources import ResourceVector
    from airflow_predictive.emulator.kubernetes.emulator import Emulator

pytestmark = pytest.mark.cgroups

# The suite's workload: ``memory_mb`` in steps of at most 8 MiB (pages touched), one busy core
# when asked, exit 0 after ``seconds``; a step past the limit is an OOM kill (never caught).
WORKLOAD = """
import sys, time
mem_mb, busy, seconds = float(sys.argv[1]), sys.argv[2] == "1", float(sys.argv[3])
end = time.monotonic() + seconds
held, total = [], 0.0
while total < mem_mb:
    size = int(min(8.0, mem_mb - total) * 1048576)
    block = bytearray(size)
    for i in range(0, size, 4096):
        block[i] = 1
    held.append(block)
    total += size / 1048576
while time.monotonic() < end:
    if not busy:
        time.sleep(0.05)
"""

_names = itertools.count()


@pytest.fixture(scope="module")
def kubeconfig(process_emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return process_emulator.write_kubeconfig(tmp_path_factory.mktemp("kc") / "kubeconfig")


@pytest.fixture
def backend(kubeconfig: Path) -> Iterator[KubernetesPodBackend]:
    b = KubernetesPodBackend.from_kubeconfig(
        str(kubeconfig), settings=KubernetesSettings(poll_interval_s=0.05, settle_timeout_s=20.0)
    )
    yield b
    b.close()


@pytest.fixture
def make_workload() -> Callable[[float, bool, float], ProvisionSpec]:
    def make(memory_mb: float, cpu_busy: bool, seconds: float) -> ProvisionSpec:
        return ProvisionSpec(
            name=f"pconf-{next(_names)}",
            image="python:3.11-slim",
            command=("python", "-c", WORKLOAD, str(memory_mb), "1" if cpu_busy else "0", str(seconds)),
            labels={"dag_id": "d", "task_id": "t"},
        )

    return make


@pytest.fixture
def advance_time() -> Callable[[float], None]:
    return time.sleep


@pytest.fixture
def read_back(process_emulator: Emulator) -> Callable[[Handle], ResourceVector | None]:
    """The limits of the cgroup the pod's container process is in, from the kernel's files."""
    kubelet = process_emulator.kubelet
    assert isinstance(kubelet, ProcessKubelet)

    def limits(handle: Handle) -> ResourceVector | None:
        namespace, _, name = handle.ref.partition("/")
        with process_emulator.lock:
            rt = next((r for r in kubelet.pods.values() if (r.namespace, r.name) == (namespace, name)), None)
            cr = None if rt is None else next(iter(rt.containers.values()), None)
            pid = cr.handle.pid if isinstance(cr, ProcessContainer) and cr.handle is not None else None
        return None if pid is None else cgroup_limits(pid)

    return limits


class TestKubernetesPodOnProcessKubelet(BackendConformance):
    @pytest.fixture
    def conformance_profile(self) -> ConformanceProfile:
        # requests == limits would make a Guaranteed pod that can never be resized in place: the
        # backend leaves the CPU limit out (docs/kubernetes-backend.md), so no CFS quota is set
        return ConformanceProfile(cpu_limit_may_be_unset=True, settle_seconds=30.0, poll_seconds=0.1)
