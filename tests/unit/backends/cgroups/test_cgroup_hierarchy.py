"""Where task cgroups go, from mountinfo and /proc/self/cgroup text (pure), and the host probe."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from airflow_predictive.backends.cgroups.files import CgroupFileError
from airflow_predictive.backends.cgroups.hierarchy import (
    CgroupVersion,
    detect,
    parse_mountinfo,
    parse_proc_cgroup,
    plan_candidates,
)

if TYPE_CHECKING:
    from pathlib import Path

HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_CGROUP = """\
8:pids:/
7:blkio:/
4:memory:/process_api/abc
2:cpuacct:/
1:cpu:/
0::/
"""
V2_MOUNTINFO = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
COMOUNTED = """\
40 31 0:40 /docker/c1 /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct
41 31 0:41 /docker/c1 /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
"""


def test_parses_v1_controllers_and_v2_mounts() -> None:
    mounts = parse_mountinfo(HYBRID_MOUNTINFO)
    assert [m.fstype for m in mounts].count("cgroup2") == 1
    cpu = next(m for m in mounts if m.path == "/sys/fs/cgroup/cpu")
    assert cpu.controllers == frozenset({"cpu"})
    assert not any(m.path == "/sys/fs/cgroup" for m in mounts)  # the tmpfs is not a cgroup


def test_parses_proc_cgroup_with_comounted_and_v2_lines() -> None:
    own = parse_proc_cgroup("3:cpu,cpuacct:/a\n4:memory:/b\n0::/c\n")
    assert own == {"cpu": "/a", "cpuacct": "/a", "memory": "/b", "": "/c"}
    with pytest.raises(CgroupFileError):
        parse_proc_cgroup("garbage\n")


def test_hybrid_host_uses_v1_nested_under_our_own_cgroups() -> None:
    [cand] = plan_candidates(HYBRID_MOUNTINFO, HYBRID_CGROUP, "", frozenset({"hugetlb"}))
    assert cand.version is CgroupVersion.V1
    assert cand.parents["memory"] == "/sys/fs/cgroup/memory/process_api/abc/airflow-predictive"
    assert cand.parents["cpu"] == "/sys/fs/cgroup/cpu/airflow-predictive"
    assert set(cand.parents) == {"cpu", "cpuacct", "memory", "blkio"}


def test_v2_with_controllers_comes_first_below_the_mount() -> None:
    cands = plan_candidates(
        V2_MOUNTINFO, "0::/user.slice/session-1.scope\n", "", frozenset({"cpu", "memory", "io"})
    )
    assert cands[0].version is CgroupVersion.V2
    assert set(cands[0].parents.values()) == {"/sys/fs/cgroup/airflow-predictive"}
    assert set(cands[0].parents) == {"cpu", "memory", "io"}


def test_v2_without_cpu_and_memory_is_not_a_candidate() -> None:
    assert plan_candidates(V2_MOUNTINFO, "0::/\n", "", frozenset({"pids"})) == []


def test_container_mount_root_is_stripped_from_our_path() -> None:
    [cand] = plan_candidates(COMOUNTED, "5:cpu,cpuacct:/docker/c1\n6:memory:/docker/c1/sub\n", "", None)
    assert cand.parents["cpu"] == "/sys/fs/cgroup/cpu,cpuacct/airflow-predictive"
    assert cand.parents["cpuacct"] == cand.parents["cpu"]
    assert cand.parents["memory"] == "/sys/fs/cgroup/memory/sub/airflow-predictive"


def test_configured_root_inside_a_v1_hierarchy_applies_to_every_hierarchy() -> None:
    [cand] = plan_candidates(HYBRID_MOUNTINFO, HYBRID_CGROUP, "/sys/fs/cgroup/memory/jobs", None)
    assert cand.parents["memory"] == "/sys/fs/cgroup/memory/jobs"
    assert cand.parents["cpu"] == "/sys/fs/cgroup/cpu/jobs"


def test_configured_relative_cgroup_path_applies_below_each_mount() -> None:
    [cand] = plan_candidates(HYBRID_MOUNTINFO, HYBRID_CGROUP, "/jobs/airflow", None)
    assert cand.parents["blkio"] == "/sys/fs/cgroup/blkio/jobs/airflow"
    cands = plan_candidates(V2_MOUNTINFO, "0::/\n", "/sys/fs/cgroup/tasks", frozenset({"cpu", "memory"}))
    assert cands[0].parents["memory"] == "/sys/fs/cgroup/tasks"


def test_detect_reports_observe_only_with_the_reason(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"32 31 0:29 / {tmp_path}/ro-cpu rw - cgroup cgroup rw,cpu\n")
    (tmp_path / "ro-cpu").mkdir()
    (tmp_path / "ro-cpu" / "airflow-predictive").write_text("a file where a folder must go")
    cgroup = tmp_path / "cgroup"
    cgroup.write_text("1:cpu:/\n")
    layout = detect(mountinfo_path=str(mountinfo), proc_cgroup_path=str(cgroup))
    assert layout.version is None
    assert not layout.enforcing
    assert "no writable cgroup hierarchy" in layout.reason
    assert "ro-cpu" in layout.reason


def test_detect_without_any_cgroup_mount_says_so(tmp_path: Path) -> None:
    empty = tmp_path / "mountinfo"
    empty.write_text("")
    layout = detect(mountinfo_path=str(empty), proc_cgroup_path=str(empty))
    assert not layout.enforcing
    assert "no cgroup hierarchy is mounted" in layout.reason


def test_detect_on_a_writable_tree_returns_it_and_leaves_no_probe(tmp_path: Path) -> None:
    # A plain folder stands in for a v1 memory hierarchy: detection only needs mkdir to work.
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"35 31 0:32 / {tmp_path}/memory rw - cgroup cgroup rw,memory\n")
    (tmp_path / "memory").mkdir()
    cgroup = tmp_path / "cgroup"
    cgroup.write_text("4:memory:/sandbox\n")
    layout = detect(mountinfo_path=str(mountinfo), proc_cgroup_path=str(cgroup))
    assert layout.version is CgroupVersion.V1
    parent = tmp_path / "memory" / "sandbox" / "airflow-predictive"
    assert layout.parents == {"memory": str(parent)}
    assert list(parent.iterdir()) == []


def test_memory_limit_above_our_groups_is_found_on_v1(tmp_path: Path) -> None:
    from airflow_predictive.backends.cgroups.hierarchy import CgroupLayout, effective_memory_limit

    parent = tmp_path / "memory" / "sandbox" / "airflow-predictive"
    parent.mkdir(parents=True)
    (parent / "memory.stat").write_text("cache 0\nhierarchical_memory_limit 2147483648\n")
    layout = CgroupLayout(CgroupVersion.V1, {"memory": str(parent)})
    assert effective_memory_limit(layout) == 2 * 1024**3
    (parent / "memory.stat").write_text("hierarchical_memory_limit 9223372036854771712\n")
    assert effective_memory_limit(layout) is None
    assert effective_memory_limit(CgroupLayout(CgroupVersion.V1, {"cpu": str(parent)})) is None


def test_memory_limit_above_our_groups_is_the_smallest_on_the_v2_path(tmp_path: Path) -> None:
    from airflow_predictive.backends.cgroups.hierarchy import CgroupLayout, effective_memory_limit

    root = tmp_path / "cg"
    mid = root / "machine.slice"
    parent = mid / "airflow-predictive"
    parent.mkdir(parents=True)
    for folder, limit in ((root, None), (mid, "1073741824"), (parent, "max")):
        (folder / "cgroup.controllers").write_text("cpu memory\n")
        if limit is not None:
            (folder / "memory.max").write_text(limit + "\n")
    layout = CgroupLayout(CgroupVersion.V2, {"memory": str(parent), "cpu": str(parent)})
    assert effective_memory_limit(layout) == 1024**3
