"""The suite itself: it must fail a backend that reports an allocation it did not put in force."""

from __future__ import annotations

import itertools

import pytest

from airflow_predictive.backends.fake import FakeBackend, ManualClock, ramp_script
from airflow_predictive.core.model.backend import (
    Allocation,
    Handle,
    ProvisionSpec,
    ResizeResult,
    ResizeStatus,
)
from tests.conformance.backend_suite import BackendConformance, ConformanceProfile
from tests.conformance.read_back import fake_limits

_names = itertools.count()


class ClaimsWithoutApplying(FakeBackend):
    """Answers APPLIED with the asked allocation but leaves the one in force unchanged."""

    def resize(self, handle: Handle, allocation: Allocation) -> ResizeResult:
        real = super().resize(handle, handle.allocation)
        if real.status is not ResizeStatus.APPLIED:
            return real
        return ResizeResult(status=ResizeStatus.APPLIED, reason="", allocation=allocation)


def _run_resize_up(backend: FakeBackend, clock: ManualClock) -> None:
    def make(memory_mb: float, cpu_busy: bool, seconds: float) -> ProvisionSpec:
        name = f"suite-{next(_names)}"
        backend.add_script(name, ramp_script(memory_mb, 1.0 if cpu_busy else 0.01, seconds))
        return ProvisionSpec(name=name)

    BackendConformance().test_resize_up_is_applied_and_returned(
        backend,
        make,
        clock.advance,
        lambda handle: fake_limits(backend, handle),
        [],
        ConformanceProfile(),
    )


def test_an_honest_backend_passes_the_read_back_check() -> None:
    clock = ManualClock()
    _run_resize_up(FakeBackend(clock=clock), clock)


def test_a_backend_that_only_claims_a_resize_fails_the_suite() -> None:
    clock = ManualClock()
    with pytest.raises(AssertionError, match="after an applied resize up: memory limit in force 256 MiB"):
        _run_resize_up(ClaimsWithoutApplying(clock=clock), clock)
