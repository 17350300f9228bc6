"""The backend conformance suite against the Kubernetes pod backend, over HTTP to the emulator."""

from __future__ import annotations

from tests.conformance.backend_suite import BackendConformance


class TestKubernetesPodConformance(BackendConformance):
    pass
