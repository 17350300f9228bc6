"""Kubernetes backend benchmarks on the emulator (run by `make bench`, results in docs/benchmarks/backends.md).

1. Resize round trip: ``KubernetesPodBackend.resize`` from the call to APPLIED (PATCH ``/resize``,
   then status followed until observedGeneration, conditions and actual resources say done), with
   the emulator's kubelet actuating after a realistic 1.8 s (measured on kind 1.35), wall clock.
2. One shaping interval of the async backend over 1,000 pods: read usage of all of them, resize
   them, follow the resizes to APPLIED; CPU time of the backend process (the emulator runs in its
   own process) against the 5 s interval.

The emulator is started as a separate process with ``python -m airflow_predictive.cli.commands.kube_emulator``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from airflow_predictive.backends.kubernetes.async_backend import AsyncKubernetesPodBackend  # noqa: E402
from airflow_predictive.backends.kubernetes.backend import KubernetesPodBackend  # noqa: E402
from airflow_predictive.backends.kubernetes.settings import KubernetesSettings  # noqa: E402
from airflow_predictive.core.model.backend import Allocation, ProvisionSpec, ResizeStatus  # noqa: E402
from airflow_predictive.core.model.resources import MIB, ResourceVector  # noqa: E402
from airflow_predictive.emulator.kubernetes.workload import WORKLOAD_ANNOTATION  # noqa: E402

CURVE = json.dumps({"points": [{"t": 0, "cpu": 0.05, "memory": "48Mi"}]})


def alloc(cpu_req: float, cpu_lim: float, mem_req: float, mem_lim: float) -> Allocation:
    return Allocation(
        ResourceVector(cpu_cores=cpu_req, memory_bytes=mem_req * MIB),
        ResourceVector(cpu_cores=cpu_lim, memory_bytes=mem_lim * MIB),
    )


class EmulatorProcess:
    def __init__(self, workdir: Path, *args: str) -> None:
        self.kubeconfig = workdir / f"kc-{os.getpid()}-{time.monotonic_ns()}"
        cmd = [
            sys.executable,
            "-m",
            "airflow_predictive.cli.commands.kube_emulator",
            "--port",
            "0",
            "--kubeconfig",
            str(self.kubeconfig),
            *args,
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "serving at" not in line:
            raise RuntimeError(f"emulator did not start: {line!r}")
        self.proc.stdout.readline()
        self.ps = psutil.Process(self.proc.pid)

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=20)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def bench_round_trip(workdir: Path, resizes: int, threads: int, delay: float) -> dict[str, float]:
    em = EmulatorProcess(
        workdir,
        "--actuation-delay",
        str(delay),
        "--start-delay",
        "0",
        "--node-cpu",
        "64",
        "--node-memory",
        "256Gi",
    )
    settings = KubernetesSettings(poll_interval_s=0.1, settle_timeout_s=30.0)
    samples: list[float] = []
    lock = threading.Lock()
    try:

        def worker(i: int) -> None:
            backend = KubernetesPodBackend.from_kubeconfig(str(em.kubeconfig), settings=settings)
            spec = ProvisionSpec(name=f"rt-{i}", annotations={WORKLOAD_ANNOTATION: CURVE})
            handle = backend.provision(spec, alloc(0.25, 0.5, 128, 256))
            while backend.state(handle).reason != "Running":
                time.sleep(0.05)
            for k in range(resizes // threads):
                target = alloc(0.25, 0.5 + 0.25 * ((k + 1) % 3), 128, 256 + 32 * (k + 1))
                t0 = time.perf_counter()
                result = backend.resize(handle, target)
                dt = time.perf_counter() - t0
                if result.status is not ResizeStatus.APPLIED:
                    raise RuntimeError(f"resize not applied: {result}")
                with lock:
                    samples.append(dt)
            backend.release(handle)
            backend.close()

        pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    finally:
        em.stop()
    return {
        "n": len(samples),
        "p50": pct(samples, 0.5),
        "p95": pct(samples, 0.95),
        "max": max(samples),
        "mean": statistics.fmean(samples),
    }


async def _interval(workdir: Path, pods: int, delay: float, resize_share: float) -> dict[str, float]:
    nodes = max(1, -(-pods // 100))
    em = EmulatorProcess(
        workdir,
        "--actuation-delay",
        str(delay),
        "--start-delay",
        "0",
        "--nodes",
        str(nodes),
        "--node-cpu",
        "64",
        "--node-memory",
        "256Gi",
    )
    settings = KubernetesSettings(poll_interval_s=0.5, settle_timeout_s=4.5)
    backend = await AsyncKubernetesPodBackend.from_kubeconfig(
        str(em.kubeconfig), settings=settings, concurrency=64
    )
    try:
        start = alloc(0.1, 0.2, 64, 128)
        handles = await asyncio.gather(
            *(
                backend.provision(
                    ProvisionSpec(name=f"shape-{i}", annotations={WORKLOAD_ANNOTATION: CURVE}), start
                )
                for i in range(pods)
            )
        )
        while len(await backend.usage_all()) < pods:  # every pod running and measured
            await asyncio.sleep(0.5)
        chosen = handles[: max(1, int(pods * resize_share))]
        target = alloc(0.15, 0.3, 80, 160)
        em_cpu0 = em.cpu_s()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        usage = await backend.usage_all()
        results = await backend.resize_many({h: target for h in chosen})
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        em_cpu = em.cpu_s() - em_cpu0
        applied = sum(r.status is ResizeStatus.APPLIED for r in results.values())
        return {
            "pods": pods,
            "resized": len(chosen),
            "applied": applied,
            "usage_read": len(usage),
            "wall_s": wall,
            "cpu_s": cpu,
            "cpu_share_of_5s": cpu / 5.0,
            "emulator_cpu_s": em_cpu,
        }
    finally:
        await backend.aclose()
        em.stop()


def write_report(path: Path, rt: dict[str, float], intervals: list[dict[str, float]], delay: float) -> None:
    lines = [
        "# Kubernetes backend benchmarks (emulator)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores with "
        "`.venv/bin/python bench/backends_bench.py` (run by `make bench`). The emulator runs in its own "
        "process; numbers are wall clock for latency and the backend process's CPU time for load. "
        f"Load average when the report was written: {os.getloadavg()[0]:.1f} (other work shared the "
        "cores, so CPU times vary by about +/- 30 % between runs).",
        "",
        "## Resize round trip",
        "",
        f"`KubernetesPodBackend.resize` (sync client) from the call to `APPLIED`, the emulated kubelet "
        f"actuating {delay:g} s after allocation (kind 1.35 measures about 1.8 s from PATCH to status), "
        f"status polled every 0.1 s; {rt['n']:.0f} resizes from 5 threads.",
        "",
        "| p50 | p95 | max | mean |",
        "| ---: | ---: | ---: | ---: |",
        f"| {rt['p50']:.2f} s | {rt['p95']:.2f} s | {rt['max']:.2f} s | {rt['mean']:.2f} s |",
        "",
        "## One 5 s shaping interval, async backend",
        "",
        "`AsyncKubernetesPodBackend`: `usage_all()` (one metrics.k8s.io list) then `resize_many()` "
        "(concurrent `pods/resize` patches, then one pod watch decides every resize).",
        "",
        "| pods | resized | applied | wall | backend CPU | CPU / 5 s interval | emulator CPU |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in intervals:
        lines.append(
            f"| {r['pods']:.0f} | {r['resized']:.0f} | {r['applied']:.0f} | {r['wall_s']:.2f} s | {r['cpu_s']:.2f} s "
            f"| {100 * r['cpu_share_of_5s']:.1f} % | {r['emulator_cpu_s']:.2f} s |"
        )
    lines += [
        "",
        "Goal: under 25 % of one core for 1,000 pods in one 5 s interval. The wall time of the "
        "all-pods row is the emulator's: one Python process serving 1,000 resize PATCHes and "
        "running the simulated kubelet for 1,000 pods (its CPU column); the backend waits on it.",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--pods", type=int, default=1000)
    p.add_argument("--resizes", type=int, default=20)
    p.add_argument("--delay", type=float, default=1.8)
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "backends.md"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        rt = bench_round_trip(workdir, args.resizes, 5, args.delay)
        print(f"resize round trip: p50 {rt['p50']:.2f}s p95 {rt['p95']:.2f}s (n={rt['n']:.0f})", flush=True)
        intervals = []
        for share in (1.0, 0.1):
            r = asyncio.run(_interval(workdir, args.pods, args.delay, share))
            intervals.append(r)
            print(f"interval: {json.dumps({k: round(v, 3) for k, v in r.items()})}", flush=True)
    write_report(Path(args.out), rt, intervals, args.delay)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
