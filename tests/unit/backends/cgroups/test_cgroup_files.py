"""Parsing and formatting of cgroup interface files, against text (never the host)."""

from __future__ import annotations

import pytest

from airflow_predictive.backends.cgroups import files
from airflow_predictive.backends.cgroups.files import CgroupFileError, CpuQuota, IoBytes


def test_quota_for_cores_rounds_to_microseconds_with_a_floor() -> None:
    assert files.quota_for_cores(1.0) == CpuQuota(100_000, 100_000)
    assert files.quota_for_cores(0.2) == CpuQuota(20_000, 100_000)
    assert files.quota_for_cores(0.001) == CpuQuota(1_000, 100_000)  # kernel minimum 1 ms
    assert files.quota_for_cores(2.5, period_us=50_000) == CpuQuota(125_000, 50_000)
    assert files.quota_for_cores(None).quota_us is None


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_quota_for_cores_refuses_meaningless_values(bad: float) -> None:
    with pytest.raises(ValueError, match="cores"):
        files.quota_for_cores(bad)


def test_cpu_max_round_trips() -> None:
    assert files.parse_cpu_max("max 100000\n") == CpuQuota(None, 100_000)
    assert files.parse_cpu_max("20000 100000") == CpuQuota(20_000, 100_000)
    assert files.parse_cpu_max("20000 100000").cores == pytest.approx(0.2)
    assert files.format_cpu_max(CpuQuota(None, 100_000)) == "max 100000"
    assert files.format_cpu_max(files.quota_for_cores(1.5)) == "150000 100000"
    with pytest.raises(CgroupFileError):
        files.parse_cpu_max("a b c")


def test_v1_quota_minus_one_is_unlimited() -> None:
    assert files.parse_v1_quota("-1\n", "100000\n") == CpuQuota(None, 100_000)
    assert files.parse_v1_quota("50000", "100000").cores == pytest.approx(0.5)


def test_memory_limits_read_unlimited_as_none() -> None:
    assert files.parse_v1_memory_limit("9223372036854771712\n") is None
    assert files.parse_v1_memory_limit("104857600") == 104857600
    assert files.parse_v2_max("max\n") is None
    assert files.parse_v2_max("67108864") == 67108864


def test_flat_keyed_reads_oom_control_and_events() -> None:
    v1 = files.parse_flat_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    assert v1["oom_kill"] == 3
    v2 = files.parse_flat_keyed("low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n")
    assert v2["oom_kill"] == 2
    with pytest.raises(CgroupFileError):
        files.parse_flat_keyed("oom_kill lots\n")
    with pytest.raises(CgroupFileError):
        files.parse_flat_keyed("a b c\n")


def test_blkio_sums_devices_and_skips_totals() -> None:
    text = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Total 12288\n252:0 Read 100\nTotal 12388\n"
    assert files.parse_v1_blkio_bytes(text) == IoBytes(4196, 8192)
    assert files.parse_v1_blkio_bytes("Total 0\n") == IoBytes(0, 0)
    with pytest.raises(CgroupFileError):
        files.parse_v1_blkio_bytes("8:0 Read many\n")


def test_io_stat_sums_rbytes_and_wbytes() -> None:
    text = (
        "254:0 rbytes=1000 wbytes=2000 rios=3 wios=4 dbytes=0 dios=0\n8:16 rbytes=5 wbytes=6 rios=1 wios=1\n"
    )
    assert files.parse_v2_io_stat(text) == IoBytes(1005, 2006)
    assert files.parse_v2_io_stat("") == IoBytes(0, 0)
    with pytest.raises(CgroupFileError):
        files.parse_v2_io_stat("254:0 rbytes=x\n")


def test_working_set_subtracts_inactive_file_never_below_zero() -> None:
    assert files.working_set(100, {"total_inactive_file": 30}, v2=False) == 70
    assert files.working_set(100, {"inactive_file": 30}, v2=True) == 70
    assert files.working_set(10, {"inactive_file": 30}, v2=True) == 0
    assert files.working_set(10, {}, v2=True) == 10


def test_cpu_weights_follow_the_request() -> None:
    assert files.v1_shares_for_cores(1.0) == 1024
    assert files.v1_shares_for_cores(0.0001) == 2
    assert files.v2_weight_for_cores(1.0) == 39  # the kubelet's mapping of 1024 shares
    assert 1 <= files.v2_weight_for_cores(0.001) <= files.v2_weight_for_cores(4.0) <= 10_000


def test_pids_and_integers() -> None:
    assert files.parse_pids("12\n13\n\n") == [12, 13]
    with pytest.raises(CgroupFileError, match="integer"):
        files.parse_int("max")


V1_STAT = """cache 999
rss 888
shmem 1
pgfault 7
pgmajfault 0
total_cache 314572800
total_rss 104857600
total_rss_huge 0
total_shmem 10485760
total_pgfault 1200
total_pgmajfault 3
total_inactive_file 1000
"""

V2_STAT = """anon 52428800
file 209715200
kernel 1234
shmem 4194304
file_mapped 1000
pgfault 400
pgmajfault 2
inactive_file 1
"""

MIB = 1 << 20


def test_v1_composition_reads_the_hierarchical_totals_and_moves_shmem_from_cache_to_anon() -> None:
    c = files.memory_composition(files.parse_flat_keyed(V1_STAT), v2=False)
    assert c.anon == 100 * MIB + 10 * MIB  # total_rss + total_shmem: neither can be dropped
    assert c.file == 300 * MIB - 10 * MIB  # total_cache minus shmem: reclaimable page cache
    assert (c.faults, c.major_faults) == (1200, 3)


def test_v1_composition_without_hierarchical_keys_falls_back_to_the_group_own_keys() -> None:
    c = files.memory_composition({"cache": 400, "rss": 100, "pgfault": 5}, v2=False)
    assert (c.anon, c.file, c.faults, c.major_faults) == (100, 400, 5, None)


def test_v2_composition_reads_anon_file_and_shmem() -> None:
    c = files.memory_composition(files.parse_flat_keyed(V2_STAT), v2=True)
    assert (c.anon, c.file) == (50 * MIB + 4 * MIB, 200 * MIB - 4 * MIB)
    assert (c.faults, c.major_faults) == (400, 2)


def test_composition_keys_this_kernel_lacks_stay_absent_never_zero() -> None:
    assert files.memory_composition({"kernel": 5}, v2=True) == files.MemoryComposition()
    assert files.memory_composition({}, v2=False) == files.MemoryComposition()
