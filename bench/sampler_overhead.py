"""Sampler sidecar overhead: CPU it uses while sampling a busy process tree, and its start-up time.

Starts a tree of 4 processes (a root and three children: CPU bursts, memory, and a TCP pair
streaming over loopback), runs the real sidecar on it through ``start_sidecar`` (as the listener
does) writing to a real SQLite file, and reads the sidecar's own CPU time (psutil cpu_times of
its process) over the steady-state window. Start-up = time from spawn to the readiness signal,
which is how long the listener holds the task back.

    .venv/bin/python bench/sampler_overhead.py [--duration 60] [--interval 1.0] [--startups 5]

Writes docs/benchmarks/sampler.md. Budget: < 1% of one core per sampled task at 1 s.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
from sqlalchemy import create_engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from airflow_predictive.core.model.runs import RunIdentity, RunRecord, TaskKey  # noqa: E402
from airflow_predictive.sampling.launcher import start_sidecar, stop_sidecar  # noqa: E402
from airflow_predictive.storage import migrate  # noqa: E402
from airflow_predictive.storage.run_store import SqlRunStore  # noqa: E402

BUDGET_PCT = 1.0

# root: spawns the children, then CPU bursts itself. children: burner+memory, TCP server, TCP client.
TREE = r"""
import socket, subprocess, sys, time
DUTY = float(sys.argv[1])
def burn_forever(extra_mb=0):
    hold = bytearray(extra_mb * 1048576)
    for i in range(0, len(hold), 4096): hold[i] = 1
    while True:
        t = time.monotonic()
        while time.monotonic() - t < 0.1 * DUTY: pass
        time.sleep(0.1 * (1 - DUTY))
role = sys.argv[2] if len(sys.argv) > 2 else "root"
if role == "root":
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
    port = srv.getsockname()[1]
    kids = [subprocess.Popen([sys.executable, __file__, str(DUTY), "mem"]),
            subprocess.Popen([sys.executable, __file__, str(DUTY), "server", str(srv.fileno())],
                             pass_fds=(srv.fileno(),)),
            subprocess.Popen([sys.executable, __file__, str(DUTY), "client", str(port)])]
    srv.close()
    print("up", flush=True)
    burn_forever()
elif role == "mem":
    burn_forever(extra_mb=200)
elif role == "server":
    srv = socket.socket(fileno=int(sys.argv[3]))
    conn, _ = srv.accept()
    while conn.recv(1 << 20): pass
elif role == "client":
    c = socket.create_connection(("127.0.0.1", int(sys.argv[3])))
    chunk = b"x" * 65536
    while True:  # ~10 MB/s
        for _ in range(16): c.sendall(chunk)
        time.sleep(0.1)
"""


def start_tree(duty: float, folder: Path) -> subprocess.Popen[str]:
    script = folder / "tree.py"
    script.write_text(TREE)
    proc = subprocess.Popen([sys.executable, str(script), str(duty)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "up"
    return proc


def kill_tree(proc: subprocess.Popen[str]) -> None:
    try:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
    except psutil.NoSuchProcess:
        pass
    proc.kill()
    proc.wait()


def new_store(folder: Path) -> tuple[SqlRunStore, str]:
    url = f"sqlite:///{folder / 'bench.db'}"
    engine = create_engine(url)
    migrate.upgrade(engine)
    return SqlRunStore(engine), url


def new_run(store: SqlRunStore, name: str) -> int:
    return store.start_run(RunRecord(RunIdentity(TaskKey("bench", "sampler"), name), start=datetime.now(UTC)))


def measure_startups(store: SqlRunStore, url: str, n: int, folder: Path) -> list[float]:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    times = []
    try:
        for i in range(n):
            pk = new_run(store, f"startup-{i}")
            t0 = time.perf_counter()
            handle = start_sidecar(pk, sleeper.pid, url, interval=1.0, flush=5.0, cgroup=None, gpu="auto",
                                   timeout=30.0, log_path=folder / "startup.log")  # fmt: skip
            times.append(time.perf_counter() - t0)
            if handle is None:
                raise SystemExit("the sidecar did not start; see " + str(folder / "startup.log"))
            stop_sidecar(handle, timeout=30.0)
    finally:
        sleeper.kill()
        sleeper.wait()
    return times


def measure_imports(n: int = 5) -> tuple[float, float, str]:
    """Median wall time of a bare interpreter and of importing the sidecar; heavy modules loaded."""
    probe = (
        "import sys, airflow_predictive.sampling.sidecar as _; "
        "print(','.join(m for m in ('numpy', 'sqlalchemy', 'airflow') if m in sys.modules))"
    )
    bare, sidecar, heavy = [], [], ""
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
        sidecar.append(time.perf_counter() - t0)
        heavy = done.stdout.strip()
    return statistics.median(bare), statistics.median(sidecar), heavy or "none"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=60.0, help="steady-state seconds measured")
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--flush", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=3.0, help="seconds after ready before measuring")
    p.add_argument("--duty", type=float, default=0.3, help="busy fraction of each burning process")
    p.add_argument("--startups", type=int, default=5)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "sampler.md")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="sampler-bench-") as tmp:
        folder = Path(tmp)
        store, url = new_store(folder)
        startups = measure_startups(store, url, args.startups, folder)
        bare_s, import_s, heavy = measure_imports()

        tree = start_tree(args.duty, folder)
        try:
            pk = new_run(store, "overhead")
            handle = start_sidecar(pk, tree.pid, url, interval=args.interval, flush=args.flush, cgroup=None,
                                   gpu="auto", timeout=30.0, log_path=folder / "overhead.log")  # fmt: skip
            if handle is None:
                raise SystemExit("the sidecar did not start; see " + str(folder / "overhead.log"))
            sidecar = psutil.Process(handle.pid)
            time.sleep(args.warmup)  # imports done, first flush done: steady state from here
            tree_size = 1 + len(psutil.Process(tree.pid).children(recursive=True))
            c0, t0 = sidecar.cpu_times(), time.monotonic()
            time.sleep(args.duration)
            c1, t1 = sidecar.cpu_times(), time.monotonic()
            total_cpu = c1.user + c1.system
            stop_sidecar(handle, timeout=30.0)
        finally:
            kill_tree(tree)
        samples = store.samples(pk)
        log_text = (folder / "overhead.log").read_text()

    cpu = (c1.user + c1.system) - (c0.user + c0.system)
    wall = t1 - t0
    pct = 100.0 * cpu / wall
    ticks = max(1, round(wall / args.interval))
    net = [s.usage.net_tx_bps for s in samples if s.usage.net_tx_bps is not None]
    mem = max((s.usage.memory_bytes or 0.0) for s in samples)
    cpu_seen = [s.usage.cpu_cores for s in samples if s.usage.cpu_cores is not None]
    verdict = "within" if pct < BUDGET_PCT else "OVER"
    lines = [
        "# Sampler sidecar overhead",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} "
        f"({psutil.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}),"
        " a machine shared with other jobs.",
        "",
        "Reproduce: `.venv/bin/python bench/sampler_overhead.py "
        f"--duration {args.duration:g} --interval {args.interval:g} --flush {args.flush:g}` (part of `make bench`).",
        "",
        f"Sampled tree: {tree_size} processes (CPU bursts at duty {args.duty:g}, one holding 200 MiB, a TCP pair "
        "streaming over loopback), sampled by the real sidecar started with `start_sidecar`, writing to SQLite.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| sidecar CPU over {wall:.0f} s steady state | {cpu:.3f} s |",
        f"| **overhead, % of one core** | **{pct:.3f} %** ({verdict} the {BUDGET_PCT:g} % budget) |",
        f"| CPU per sample (read + its share of flushes) | {1000 * cpu / ticks:.2f} ms ({ticks} samples) |",
        f"| sidecar CPU incl. start-up (imports, first flush) | {total_cpu:.2f} s |",
        f"| start-up: spawn to ready (median of {len(startups)}) | {statistics.median(startups) * 1000:.0f} ms |",
        f"| start-up: slowest | {max(startups) * 1000:.0f} ms |",
        f"| of which: a bare interpreter / interpreter + sidecar imports | {bare_s * 1000:.0f} ms / "
        f"{import_s * 1000:.0f} ms |",
        f"| heavy modules imported before ready (numpy, sqlalchemy, airflow) | {heavy} |",
        "",
        "Sanity of what was sampled: "
        f"peak memory {mem / 2**20:.0f} MiB, CPU up to {max(cpu_seen, default=0):.2f} cores, "
        f"network tx median {statistics.median(net) / 1e6 if net else float('nan'):.1f} MB/s "
        f"({len(net)} of {len(samples)} samples carry network).",
        "",
        "Start-up is what the listener waits for (at most `record_budget`); readiness is signalled after",
        "the first reading and before SQLAlchemy and numpy are imported.",
        "",
        "<details><summary>sidecar log</summary>",
        "",
        "```",
        *log_text.strip().splitlines()[-5:],
        "```",
        "</details>",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines[:20]))
    if pct >= BUDGET_PCT:
        sys.exit(1)


if __name__ == "__main__":
    main()
