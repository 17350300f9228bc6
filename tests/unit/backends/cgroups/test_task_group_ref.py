from __future__ import annotations

from airflow_predictive.backends.cgroups.group import group_from_ref
from airflow_predictive.backends.cgroups.hierarchy import task_group_ref

MOUNTINFO_V1 = """\
30 25 0:26 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
31 25 0:27 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
32 25 0:28 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
33 25 0:29 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
34 25 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_a_process_in_a_task_group_gets_its_v1_ref() -> None:
    proc = "4:memory:/process_api/abc/airflow-predictive/task-1\n1:cpu:/airflow-predictive/task-1\n2:cpuacct:/airflow-predictive/task-1\n7:blkio:/airflow-predictive/task-1\n0::/\n"
    ref = task_group_ref(proc, MOUNTINFO_V1)
    assert ref is not None
    group = group_from_ref(ref)
    assert group.ref == ref
    assert "memory=/sys/fs/cgroup/memory/process_api/abc/airflow-predictive/task-1" in ref
    assert "cpu=/sys/fs/cgroup/cpu/airflow-predictive/task-1" in ref


def test_a_process_outside_our_groups_has_none() -> None:
    assert task_group_ref("4:memory:/process_api/abc\n0::/\n", MOUNTINFO_V1) is None
    # the parent folder itself is not a task group
    assert task_group_ref("4:memory:/airflow-predictive\n0::/\n", MOUNTINFO_V1) is None


def test_v2_unified_path() -> None:
    mountinfo = "34 25 0:30 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n"
    assert (
        task_group_ref("0::/airflow-predictive/t1\n", mountinfo) == "v2:/sys/fs/cgroup/airflow-predictive/t1"
    )
