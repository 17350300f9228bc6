"""A task the cgroup backend started finds its own group (the listener samples the group and reads
its OOM kills from there); a process outside our groups finds none."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from airflow_predictive.backends.cgroups.backend import CgroupBackend
from airflow_predictive.backends.cgroups.hierarchy import own_task_group_ref
from airflow_predictive.core.model.backend import Allocation, ExitKind, ProvisionSpec
from airflow_predictive.core.model.resources import ResourceVector


def test_a_process_outside_task_groups_has_no_group() -> None:
    assert own_task_group_ref() is None


@pytest.mark.cgroups
def test_a_task_started_by_the_backend_finds_its_group(layout, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "ref.txt"
    code = (
        "from airflow_predictive.backends.cgroups.hierarchy import own_task_group_ref;"
        f"open({str(out)!r}, 'w').write(str(own_task_group_ref()))"
    )
    backend = CgroupBackend(layout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    handle = backend.provision(
        ProvisionSpec(name=f"detect-{time.monotonic_ns()}", command=(sys.executable, "-c", code)),
        Allocation.exactly(ResourceVector(cpu_cores=1.0, memory_bytes=512 * 1024**2)),
    )
    try:
        deadline = time.monotonic() + 30
        while backend.state(handle).kind is ExitKind.RUNNING and time.monotonic() < deadline:
            time.sleep(0.05)
        assert backend.state(handle).kind is ExitKind.SUCCEEDED
        assert out.read_text() == handle.ref
    finally:
        backend.release(handle)
