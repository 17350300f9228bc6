"""The backend conformance suite against the Kubernetes pod backend, over HTTP to the emulator.

The allocation in force is read back from the pod's status (``containerStatuses[].resources``,
what the emulated kubelet actuated) through the emulator's API, never from the backend's reply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from kubernetes import client, config

from tests.conformance.backend_suite import BackendConformance, ConformanceProfile, ReadBack
from tests.conformance.read_back import pod_limits

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def read_back(kubeconfig: Path) -> Iterator[ReadBack]:
    api = config.new_client_from_config(str(kubeconfig))
    core = client.CoreV1Api(api)
    yield lambda handle: pod_limits(core, handle)
    api.close()


class TestKubernetesPodConformance(BackendConformance):
    @pytest.fixture
    def conformance_profile(self) -> ConformanceProfile:
        # requests == limits would make a Guaranteed pod, whose QoS class can never change in
        # place: the backend leaves the CPU limit out (docs/kubernetes-backend.md)
        return ConformanceProfile(cpu_limit_may_be_unset=True)
