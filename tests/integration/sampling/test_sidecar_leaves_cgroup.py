"""A task in one of the provider's cgroups starts its recorder: the sidecar leaves the task's cgroup
before it allocates anything, so its memory never counts against the task's limit (real cgroups).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING

import pytest

from airflow_predictive.backends.cgroups.backend import CgroupBackend
from airflow_predictive.core.model.backend import Allocation, ProvisionSpec
from airflow_predictive.core.model.resources import MIB, ResourceVector
from tests._real_parts import require_cgroups

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.cgroups

TASK = r"""
import json, os, sys, time
from datetime import UTC, datetime
from airflow_predictive.backends.cgroups.hierarchy import own_task_group_ref
from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord, TaskKey
from airflow_predictive.sampling.escape import inside
from airflow_predictive.sampling.launcher import launch_recorder
out_file, url = sys.argv[1], sys.argv[2]
ref = own_task_group_ref()
record = RunRecord(RunIdentity(TaskKey("cg", "t"), "r"), start=datetime.now(UTC))
handle = launch_recorder(record, os.getpid(), url, interval=0.25, flush=0.5, gpu="off", cgroup=ref)
time.sleep(4.0)  # the sidecar imports SQLAlchemy and numpy meanwhile (~60 MiB)
with open("/proc/self/status") as fh:
    hwm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))
with open(f"/proc/{handle.pid}/status") as fh:
    sidecar_rss = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))
facts = {"ref": ref, "sidecar_inside": inside(ref, handle.pid), "task_inside": inside(ref),
         "hwm": hwm, "sidecar_rss": sidecar_rss}
handle.end(Outcome.SUCCESS, datetime.now(UTC), 0, None)
with open(out_file, "w") as fh:
    json.dump(facts, fh)
time.sleep(1)
"""


def test_the_sidecar_leaves_the_tasks_cgroup_and_is_not_charged_to_it(tmp_path: Path) -> None:
    backend = CgroupBackend(require_cgroups("cpu", "memory"))
    out = tmp_path / "facts.json"
    url = f"sqlite:///{tmp_path}/p.db"
    from airflow_predictive.storage import migrate
    from airflow_predictive.storage.engine import engine_for

    migrate.upgrade(engine_for(url))
    spec = ProvisionSpec(name=f"escape-{os.getpid()}", command=(sys.executable, "-c", TASK, str(out), url))
    handle = backend.provision(
        spec, Allocation.exactly(ResourceVector(cpu_cores=1.0, memory_bytes=1024 * MIB))
    )
    try:
        deadline = time.monotonic() + 90
        while not out.exists():
            assert time.monotonic() < deadline, "the task did not report"
            time.sleep(0.1)
        time.sleep(0.2)
        facts = json.loads(out.read_text())
        charged = backend.peak_memory(handle)
    finally:
        backend.release(handle)
    assert facts["ref"] and facts["task_inside"] and not facts["sidecar_inside"], facts
    assert charged is not None
    print(f"task VmHWM {facts['hwm'] / MIB:.0f} MiB, cgroup peak {charged / MIB:.0f} MiB, "
          f"sidecar RSS outside it {facts['sidecar_rss'] / MIB:.0f} MiB")  # fmt: skip
    # the cgroup's peak is the task's (plus page cache / the shell's few pages), not + the sidecar
    assert charged < facts["hwm"] + 0.5 * facts["sidecar_rss"], facts
