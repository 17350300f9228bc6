"""The in-pod sampler finds the other containers' process trees in a shared PID namespace (never its
own container, never the sandbox), refuses to run in the host's namespace, and sums the trees."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from airflow_predictive.core.model.resources import MIB, Metric, ResourceVector
from airflow_predictive.sampling.pod_sampler import (
    PodProcessesSource,
    in_shared_pod_namespace,
    parse_args,
    pod_ref,
    read_parents,
    sum_readings,
    target_roots,
)


def test_roots_are_the_other_containers_first_processes_and_orphans_of_the_sandbox() -> None:
    # 1: pause; 7 -> 9 -> 10: the app container (7's parent is outside the namespace: ppid 0);
    # 20 -> 21: the sampler's container (21 is the sampler); 30: an orphan adopted by the sandbox
    parents = {1: 0, 7: 0, 9: 7, 10: 9, 20: 0, 21: 20, 22: 21, 30: 1}
    assert target_roots(parents, own=21) == (7, 30)


def test_a_sampler_alone_in_its_namespace_finds_nothing_to_sample() -> None:
    # no shareProcessNamespace: the sampler's own container is all it sees (its root is PID 1)
    assert target_roots({1: 0, 8: 1}, own=8) == ()


def test_a_process_whose_parent_is_not_visible_is_a_root() -> None:
    assert target_roots({1: 0, 40: 12345, 41: 40}, own=99) == (40,)


def test_only_a_pods_shared_namespace_is_sampled_never_the_hosts() -> None:
    # in a pod: the sandbox is PID 1, the sampler's container hangs from outside (ppid 0)
    assert in_shared_pod_namespace({1: 0, 20: 0, 21: 20}, own=21)
    # on the host (or alone in its container) PID 1 is an ancestor: it would sample the machine
    assert not in_shared_pod_namespace({1: 0, 300: 1, 301: 300}, own=301)
    assert not in_shared_pod_namespace(read_parents(), own=os.getpid())  # this test runs on the host


def test_readings_are_summed_and_network_read_from_one_tree() -> None:
    a = ResourceVector(cpu_cores=0.5, memory_bytes=100 * MIB, net_rx_bps=10.0)
    b = ResourceVector(cpu_cores=None, memory_bytes=50 * MIB, net_rx_bps=10.0)
    total = sum_readings([(7, a), (30, b)], net_root=7)
    assert total.get(Metric.MEMORY_BYTES) == 150 * MIB
    assert total.get(Metric.CPU_CORES) == 0.5  # a tree on its first reading has no rate yet
    assert total.get(Metric.NET_RX_BPS) == 10.0  # the pod's one network namespace, not counted twice


def test_anon_and_file_memory_are_summed_over_the_trees_and_absent_when_none_read_them() -> None:
    a = ResourceVector(memory_bytes=100 * MIB, memory_anon_bytes=80 * MIB, memory_file_bytes=20 * MIB)
    b = ResourceVector(memory_bytes=50 * MIB, memory_anon_bytes=50 * MIB)
    total = sum_readings([(7, a), (30, b)], net_root=7)
    assert total.get(Metric.MEMORY_ANON_BYTES) == 130 * MIB
    assert total.get(Metric.MEMORY_FILE_BYTES) == 20 * MIB
    assert sum_readings([(7, ResourceVector(memory_bytes=MIB))], 7).get(Metric.MEMORY_ANON_BYTES) is None


def test_real_process_trees_found_through_a_process_table_and_summed() -> None:
    """Real children stand for two containers; the table says they are roots of the namespace."""
    hog = "b = bytearray(48 * 1024 * 1024); import time; time.sleep(30)"
    procs = [subprocess.Popen([sys.executable, "-c", hog]) for _ in range(2)]
    try:
        me = os.getpid()
        table = {1: 0, me: 0, procs[0].pid: 0, procs[1].pid: 1}
        source = PodProcessesSource(own=me, parents=lambda: table)
        import time

        deadline = time.monotonic() + 20
        reading = ResourceVector()
        while time.monotonic() < deadline:
            assert source.refresh()
            reading = source.read() or ResourceVector()
            if (reading.get(Metric.MEMORY_BYTES) or 0) >= 96 * MIB:
                break
            time.sleep(0.2)
        assert source.roots == tuple(sorted(p.pid for p in procs))
        assert (reading.get(Metric.MEMORY_BYTES) or 0) >= 96 * MIB  # both trees, not the sampler
        assert (reading.get(Metric.MEMORY_ANON_BYTES) or 0) >= 96 * MIB  # their bytearrays are anonymous
        procs[0].kill()
        procs[0].wait()
        del table[procs[0].pid]
        source.refresh()
        assert source.roots == (procs[1].pid,)
        source.close()
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_arguments_and_the_pods_ref() -> None:
    args = parse_args(["--dag-id", "d", "--task-id", "t", "--run-id", "r", "--try-number", "2"])
    assert (args.dag_id, args.try_number, args.map_index, args.interval) == ("d", 2, -1, 1.0)
    with pytest.raises(SystemExit):
        parse_args(["--dag-id", "d", "--task-id", "t", "--run-id", "r", "--interval", "0"])
    env = {"AIRFLOW_PREDICTIVE_POD_NAME": "p-1", "AIRFLOW_PREDICTIVE_POD_NAMESPACE": "ns"}
    assert pod_ref(env) == "ns/p-1"
