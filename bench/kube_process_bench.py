"""Process kubelet benchmarks (results in docs/benchmarks/kube-process-kubelet.md).

1. Pod start: ``create`` -> container ``running`` and ``create`` -> ``Succeeded`` for a pod whose
   container is ``sh -c true``, through the official client (status polled every 20 ms).
2. In-place resize: ``patch .../resize`` -> the new memory limit read back from the container's
   cgroup file, and -> the pod status saying done, with the kubelet's 1.8 s actuation delay.
3. Kubelet overhead: CPU time of the emulator process per second of wall time while N pods sleep
   (every 50 ms tick polls each container's process and reads its cgroup).

The emulator runs in this process (``Emulator(mode="process")``); needs a writable cgroup
hierarchy (root here). Usage: ``.venv/bin/python bench/kube_process_bench.py [--pods 20]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubernetes import client, config  # noqa: E402

from airflow_predictive.emulator.kubernetes.emulator import Emulator, NodeSpec  # noqa: E402
from airflow_predictive.emulator.kubernetes.kubelet import KubeletConfig  # noqa: E402
from airflow_predictive.emulator.kubernetes.process_kubelet import ProcessContainer  # noqa: E402

MiB = 1024 * 1024


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def pod(name: str, command: list[str], memory: str = "64Mi") -> dict[str, Any]:
    res = {"cpu": "500m", "memory": memory}
    return {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "c",
                    "image": "busybox",
                    "command": command,
                    "resources": {"requests": res, "limits": res},
                }
            ],
        },
    }


def wait(pred: Any, timeout: float = 60.0, every: float = 0.02) -> float:
    t0 = time.perf_counter()
    while not pred():
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError("timed out")
        time.sleep(every)
    return time.perf_counter()


def bench_start(core: client.CoreV1Api, n: int) -> dict[str, float]:
    running, done = [], []
    for i in range(n):
        name = f"start-{i}"
        t0 = time.perf_counter()
        core.create_namespaced_pod("default", pod(name, ["sh", "-c", "sleep 0.5"]))

        def state(name: str = name) -> client.V1Pod:
            return core.read_namespaced_pod(name, "default")

        def is_running() -> bool:
            cs = state().status.container_statuses
            return bool(cs) and (cs[0].state.running is not None or cs[0].state.terminated is not None)

        running.append(wait(is_running) - t0)
        done.append(wait(lambda: state().status.phase == "Succeeded") - t0)
        core.delete_namespaced_pod(name, "default", grace_period_seconds=0)
    return {
        "n": n,
        "run_p50": pct(running, 0.5),
        "run_p95": pct(running, 0.95),
        "done_p50": pct(done, 0.5),
        "done_p95": pct(done, 0.95),
    }


def _container(em: Emulator, name: str) -> ProcessContainer:
    with em.lock:
        rt = next(r for r in em.kubelet.pods.values() if r.name == name)
        cr = rt.containers["c"]
    assert isinstance(cr, ProcessContainer)
    return cr


def _limit(cr: ProcessContainer) -> int | None:
    if cr.group is None:
        return None
    folder = cr.group.dirs.get("memory") or cr.group.dirs.get("unified")
    name = "memory.limit_in_bytes" if "memory" in cr.group.dirs else "memory.max"
    try:
        with open(os.path.join(str(folder), name)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def bench_resize(em: Emulator, core: client.CoreV1Api, n: int) -> dict[str, float]:
    to_cgroup, to_status = [], []
    for i in range(n):
        name = f"resize-{i}"
        core.create_namespaced_pod("default", pod(name, ["sleep", "300"]))
        wait(lambda name=name: core.read_namespaced_pod(name, "default").status.phase == "Running")
        cr = _container(em, name)
        res = {"cpu": "500m", "memory": "128Mi"}
        t0 = time.perf_counter()
        core.patch_namespaced_pod_resize(
            name,
            "default",
            {"spec": {"containers": [{"name": "c", "resources": {"requests": res, "limits": res}}]}},
        )
        to_cgroup.append(wait(lambda cr=cr: _limit(cr) == 128 * MiB) - t0)

        def done(name: str = name) -> bool:
            p = core.read_namespaced_pod(name, "default")
            conds = {c.type for c in p.status.conditions}
            return (
                "PodResizeInProgress" not in conds
                and p.status.container_statuses[0].resources.limits.get("memory") == "128Mi"
            )

        to_status.append(wait(done) - t0)
        core.delete_namespaced_pod(name, "default", grace_period_seconds=0)
    return {
        "n": n,
        "cgroup_p50": pct(to_cgroup, 0.5),
        "cgroup_p95": pct(to_cgroup, 0.95),
        "status_p50": pct(to_status, 0.5),
        "status_p95": pct(to_status, 0.95),
    }


def bench_overhead(core: client.CoreV1Api, pods: int, seconds: float) -> dict[str, float]:
    names = [f"idle-{i}" for i in range(pods)]
    for name in names:
        core.create_namespaced_pod("default", pod(name, ["sleep", "600"]))
    wait(lambda: all(core.read_namespaced_pod(n, "default").status.phase == "Running" for n in names), 120)
    c0, w0 = time.process_time(), time.perf_counter()
    time.sleep(seconds)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    for name in names:
        core.delete_namespaced_pod(name, "default", grace_period_seconds=0)
    return {"pods": pods, "cpu_per_s": cpu / wall, "wall_s": wall}


def report(
    out: Path, start: dict[str, float], resize: dict[str, float], over: list[dict[str, float]]
) -> None:
    load = os.getloadavg()[0]
    rows = "\n".join(f"| {o['pods']} | {o['cpu_per_s'] * 100:.1f} % |" for o in over)
    out.write_text(
        f"""# Process kubelet benchmarks (emulator)

Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores with
`.venv/bin/python bench/kube_process_bench.py`. The emulator runs in the benchmark's process with
the process kubelet (containers are real processes in per-container cgroups, v1 here); the official
client polls every 20 ms. Load average when written: {load:.1f} (other work shared the cores).

## Pod start

`create` of a pod running `sh -c "sleep 0.5"` to its container `running`, and to phase `Succeeded`
({int(start["n"])} pods one after the other; `start_delay_s` 0).

| to running p50 | p95 | to Succeeded p50 | p95 |
| ---: | ---: | ---: | ---: |
| {start["run_p50"]:.3f} s | {start["run_p95"]:.3f} s | {start["done_p50"]:.3f} s | {start["done_p95"]:.3f} s |

## In-place resize

`patch .../resize` (memory 64Mi -> 128Mi) to the limit read back from the container's cgroup
file, and to the status saying done (no resize condition, `resources` = spec), with the
kubelet's actuation delay of 1.8 s (kind 1.35 measures about 1.8 s); {int(resize["n"])} resizes.

| to cgroup p50 | p95 | to status p50 | p95 |
| ---: | ---: | ---: | ---: |
| {resize["cgroup_p50"]:.3f} s | {resize["cgroup_p95"]:.3f} s | {resize["status_p50"]:.3f} s | {resize["status_p95"]:.3f} s |

## Kubelet overhead

CPU time of the emulator process (one core = 100 %) while N pods sleep: the 50 ms tick polls each
container's process and reads its cgroup files.

| running pods | emulator CPU |
| ---: | ---: |
{rows}
"""
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--pods", type=int, default=20)
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "kube-process-kubelet.md"))
    args = p.parse_args()
    em = Emulator(
        mode="process",
        kubelet=KubeletConfig(actuation_delay_s=1.8),
        nodes=(NodeSpec(cpu="64", memory="256Gi"),),
        watch_poll_s=0.05,
    ).start()
    try:
        kc = em.write_kubeconfig(Path(tempfile.mkdtemp()) / "kubeconfig")
        core = client.CoreV1Api(config.new_client_from_config(str(kc)))
        start = bench_start(core, args.pods)
        print(f"start: {start}", flush=True)
        resize = bench_resize(em, core, max(3, args.pods // 4))
        print(f"resize: {resize}", flush=True)
        over = [bench_overhead(core, n, 5.0) for n in (1, args.pods)]
        print(f"overhead: {over}", flush=True)
    finally:
        em.stop()
    report(Path(args.out), start, resize, over)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
