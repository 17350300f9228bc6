"""v1 and v2 task groups and the usage source, against fake cgroup trees in tmp_path."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from airflow_predictive.backends.cgroups import group as group_mod
from airflow_predictive.backends.cgroups.group import V1Group, V2Group, group_from_ref, make_group
from airflow_predictive.backends.cgroups.hierarchy import CgroupVersion
from airflow_predictive.backends.cgroups.usage import CgroupUsageSource
from airflow_predictive.backends.fake import ManualClock
from airflow_predictive.core.model.resources import MIB

if TYPE_CHECKING:
    from pathlib import Path


def _v2_tree(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "cgroup.controllers": "cpu memory io\n",
        "cgroup.procs": "",
        "cpu.max": "max 100000\n",
        "cpu.weight": "100\n",
        "cpu.stat": "usage_usec 1000000\nuser_usec 800000\nsystem_usec 200000\n",
        "memory.current": f"{64 * 1024 * 1024}\n",
        "memory.stat": f"anon 1\ninactive_file {16 * 1024 * 1024}\n",
        "memory.peak": f"{80 * 1024 * 1024}\n",
        "memory.max": "max\n",
        "memory.swap.max": "max\n",
        "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
        "io.stat": "254:0 rbytes=1000 wbytes=4000 rios=1 wios=1\n",
    }
    for name, text in files.items():
        (folder / name).write_text(text)


def _v1_tree(root: Path) -> dict[str, str]:
    dirs = {c: root / c / "task" for c in ("cpu", "cpuacct", "memory")}
    for d in dirs.values():
        d.mkdir(parents=True)
        (d / "cgroup.procs").write_text("")
    (dirs["cpu"] / "cpu.cfs_period_us").write_text("100000\n")
    (dirs["cpu"] / "cpu.cfs_quota_us").write_text("-1\n")
    (dirs["cpu"] / "cpu.shares").write_text("1024\n")
    (dirs["cpuacct"] / "cpuacct.usage").write_text("2000000000\n")
    mem = dirs["memory"]
    (mem / "memory.usage_in_bytes").write_text(f"{50 * 1024 * 1024}\n")
    (mem / "memory.max_usage_in_bytes").write_text(f"{70 * 1024 * 1024}\n")
    (mem / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (mem / "memory.memsw.limit_in_bytes").write_text("9223372036854771712\n")
    (mem / "memory.stat").write_text(f"cache 10\ntotal_inactive_file {10 * 1024 * 1024}\n")
    (mem / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    return {c: str(d) for c, d in dirs.items()}


def test_v2_group_writes_cpu_max_weight_memory_max_and_no_swap(tmp_path: Path) -> None:
    folder = tmp_path / "task"
    _v2_tree(folder)
    g = V2Group({"unified": str(folder)})
    g.set_cpu(0.25, 0.5)
    g.set_memory(96 * MIB)
    assert (folder / "cpu.max").read_text() == "25000 100000"
    assert (folder / "cpu.weight").read_text() == str(20)
    assert (folder / "memory.max").read_text() == str(96 * 1024 * 1024)
    assert (folder / "memory.swap.max").read_text() == "0"
    g.set_cpu(None, None)
    g.set_memory(None)
    assert (folder / "cpu.max").read_text() == "max 100000"
    assert (folder / "memory.max").read_text() == "max"


def test_v2_group_reads_counters(tmp_path: Path) -> None:
    folder = tmp_path / "task"
    _v2_tree(folder)
    reading = V2Group({"unified": str(folder)}).read()
    assert reading is not None
    assert reading.cpu_seconds == pytest.approx(1.0)
    assert reading.memory_usage == 64 * 1024 * 1024
    assert reading.memory_working_set == 48 * 1024 * 1024
    assert reading.memory_peak == 80 * 1024 * 1024
    assert reading.memory_limit is None
    assert reading.io is not None and (reading.io.read, reading.io.write) == (1000, 4000)
    assert reading.oom_kills == 0
    assert reading.cpu_quota is not None and reading.cpu_quota.cores is None


def test_absent_files_read_as_none_and_a_gone_group_as_none(tmp_path: Path) -> None:
    folder = tmp_path / "task"
    folder.mkdir()
    (folder / "memory.current").write_text("4096\n")
    (folder / "memory.events").write_text("garbage line here\n")
    reading = V2Group({"unified": str(folder)}).read()
    assert reading is not None
    assert reading.memory_usage == 4096
    assert reading.cpu_seconds is None
    assert reading.memory_peak is None  # memory.peak is absent before kernel 5.19
    assert reading.io is None
    assert reading.oom_kills is None  # corrupt file: absent, not 0
    assert V2Group({"unified": str(tmp_path / "gone")}).read() is None


def test_v1_group_reads_counters_across_hierarchies(tmp_path: Path) -> None:
    g = V1Group(_v1_tree(tmp_path))
    reading = g.read()
    assert reading is not None
    assert reading.cpu_seconds == pytest.approx(2.0)
    assert reading.memory_working_set == 40 * 1024 * 1024
    assert reading.memory_peak == 70 * 1024 * 1024
    assert reading.memory_limit is None
    assert reading.oom_kills == 2
    assert reading.io is None  # no blkio hierarchy given


def test_v1_memory_limit_orders_memsw_around_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dirs = _v1_tree(tmp_path)
    g = V1Group(dirs)
    writes: list[tuple[str, str]] = []
    real_write = group_mod._write

    def record(path: str, value: str) -> None:
        writes.append((path.rsplit("/", 1)[1], value))
        real_write(path, value)

    monkeypatch.setattr(group_mod, "_write", record)
    g.set_memory(100 * MIB)  # lowering from unlimited: the memory limit first, memsw after
    assert writes == [("memory.limit_in_bytes", "104857600"), ("memory.memsw.limit_in_bytes", "104857600")]
    writes.clear()
    g.set_memory(200 * MIB)  # raising: memsw first, so it never sits below the memory limit
    assert [w[0] for w in writes] == ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]
    writes.clear()
    g.set_cpu(0.5, 2.0)
    assert writes == [("cpu.cfs_quota_us", "50000"), ("cpu.shares", "2048")]


def test_write_failures_name_the_file(tmp_path: Path) -> None:
    g = V2Group({"unified": str(tmp_path / "missing")})
    with pytest.raises(group_mod.CgroupWriteError, match=r"memory\.max"):
        g.set_memory(64 * MIB)


def test_refs_round_trip(tmp_path: Path) -> None:
    v1 = make_group(CgroupVersion.V1, {"memory": "/m/p", "cpu": "/c/p"}, "t-1")
    assert group_from_ref(v1.ref).dirs == {"memory": "/m/p/t-1", "cpu": "/c/p/t-1"}
    v2 = make_group(CgroupVersion.V2, {"cpu": "/u/p", "memory": "/u/p"}, "t-2")
    assert v2.ref == "v2:/u/p/t-2"
    assert isinstance(group_from_ref(v2.ref), V2Group)
    folder = tmp_path / "bare"
    _v2_tree(folder)
    assert isinstance(group_from_ref(str(folder)), V2Group)
    assert isinstance(group_from_ref(str(tmp_path)), V1Group)
    with pytest.raises(ValueError, match="malformed"):
        group_from_ref("v1:memory")
    with pytest.raises(ValueError):
        group_from_ref("relative/path")
    with pytest.raises(ValueError, match="invalid cgroup name"):
        make_group(CgroupVersion.V2, {"cpu": "/u"}, "../escape")


def test_usage_source_turns_counters_into_rates(tmp_path: Path) -> None:
    folder = tmp_path / "task"
    _v2_tree(folder)
    clock = ManualClock()
    source = CgroupUsageSource(str(folder), clock)  # baseline taken here
    clock.advance(2.0)
    (folder / "cpu.stat").write_text("usage_usec 2500000\n")  # +1.5 s of CPU in 2 s
    (folder / "io.stat").write_text("254:0 rbytes=3000 wbytes=4000\n")
    usage = source.read()
    assert usage is not None
    assert usage.cpu_cores == pytest.approx(0.75)
    assert usage.disk_read_bps == pytest.approx(1000.0)
    assert usage.disk_write_bps == pytest.approx(0.0)
    assert usage.memory_bytes == pytest.approx(48 * MIB)
    assert usage.net_rx_bps is None and usage.gpu_util is None  # not measurable from a cgroup
    assert source.peak_memory_bytes == 80 * 1024 * 1024


def test_usage_source_measures_close_readings_against_the_older_baseline(tmp_path: Path) -> None:
    folder = tmp_path / "task"
    _v2_tree(folder)  # 1.0 s of CPU used at t=0
    clock = ManualClock()
    source = CgroupUsageSource(str(folder), clock)
    clock.advance(1.0)
    (folder / "cpu.stat").write_text("usage_usec 2000000\n")
    first = source.read()
    clock.advance(0.01)
    (folder / "cpu.stat").write_text("usage_usec 2005000\n")
    second = source.read()  # 10 ms later: against t=0, not over a 10 ms window
    assert first is not None and first.cpu_cores == pytest.approx(1.0)
    assert second is not None and second.cpu_cores == pytest.approx(1.005 / 1.01)
    same_instant = source.read()
    assert same_instant is not None and same_instant.cpu_cores is not None


def test_usage_source_returns_none_once_the_group_is_gone(tmp_path: Path) -> None:
    folder = tmp_path / "task"
    _v2_tree(folder)
    source = CgroupUsageSource(str(folder), ManualClock())
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    assert source.read() is None


def test_v1_disk_bytes_are_absent_until_accounting_rules_exist(tmp_path: Path) -> None:
    dirs = _v1_tree(tmp_path)
    blkio = tmp_path / "blkio" / "task"
    blkio.mkdir(parents=True)
    (blkio / "blkio.throttle.io_service_bytes_recursive").write_text("254:0 Read 0\n254:0 Write 0\nTotal 0\n")
    (blkio / "blkio.throttle.read_bps_device").write_text("")
    g = V1Group({**dirs, "blkio": str(blkio)})
    reading = g.read()
    assert reading is not None and reading.io is None  # 0 here would be a lie: nothing counts yet
    assert g.enable_io_accounting(["254:0", "8:0"]) == 2
    assert (blkio / "blkio.throttle.write_bps_device").read_text() == f"8:0 {2**40}"
    (blkio / "blkio.throttle.io_service_bytes_recursive").write_text("254:0 Read 10\n254:0 Write 20\n")
    reading = g.read()
    assert reading is not None and reading.io is not None
    assert (reading.io.read, reading.io.write) == (10, 20)


def test_block_devices_skips_empty_devices(tmp_path: Path) -> None:
    for name, dev, size in (("vda", "254:0", "528424168"), ("loop0", "7:0", "0"), ("sda", "8:0", "100")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "dev").write_text(dev + "\n")
        (tmp_path / name / "size").write_text(size + "\n")
    assert group_mod.block_devices(str(tmp_path)) == ["8:0", "254:0"]
    assert group_mod.block_devices(str(tmp_path / "absent")) == []
