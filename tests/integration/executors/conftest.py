"""The Kubernetes emulator fixtures (real HTTP, manual clock) for the executor tests."""

from __future__ import annotations

from tests.integration.kubernetes.conftest import clock, emulator, kubeconfig, process_emulator

__all__ = ["clock", "emulator", "kubeconfig", "process_emulator"]
