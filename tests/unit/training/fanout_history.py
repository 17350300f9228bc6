"""A synthetic history of many tasks of different kinds (compact trace form), for the fan-out's
tests and benchmark: champions must differ between tasks, so that both the per-task choice and
the choice pooled over tasks decide something.

Kinds, by task index modulo 4: memory linear in input size with a ramp; steady memory; memory
creeping up run after run; a noisy burst at start whose level doubles half-way through the history.
"""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pathlib import Path

HEADER = (
    "run_id,workflow,task,sample,start,duration_s,n_samples,declared_cpus,declared_mem_bytes,"
    "input_files,input_bytes,output_files,output_bytes\n"
)


def write_history(
    directory: Path,
    tasks: int = 8,
    runs_per_task: int = 12,
    seed: int = 0,
    *,
    start: datetime | None = None,
    prefix: str = "S",
) -> Path:
    """``start``: when the first run starts (default 2024-03-01); ``prefix`` names the runs (a
    later batch of runs of the same tasks needs another)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    start = start or datetime(2024, 3, 1, tzinfo=UTC)
    runs, samples = [], []
    n = 0
    for r in range(runs_per_task):
        for i in range(tasks):
            n += 1
            kind = i % 4
            size = float(rng.uniform(1, 4)) * 1e9
            seconds = int(40 + 10 * (i % 5))
            run_id = f"t{i:04d} ({prefix}{r}) ({n})"
            t0 = start + timedelta(minutes=n)
            runs.append(
                f"{run_id},wf{i // 50},t{i:04d},{prefix}{r},{t0.isoformat().replace('+00:00', 'Z')},{seconds - 2},"
                f"{seconds // 2},4,8589934592,1,{size:.0f},1,1\n"
            )
            base = 100.0 + 20 * (i % 7)
            level = float(rng.uniform(0.85, 1.15))  # run-to-run noise of the level
            for t in range(0, seconds, 2):
                frac = t / seconds
                if kind == 0:
                    mem = base + 200 * size / 1e9 * min(1.0, 2 * frac)
                elif kind == 1:
                    mem = base * 3
                elif kind == 2:
                    mem = base * (1 + 0.15 * r) * (0.8 + 0.2 * frac)
                else:
                    mem = (
                        base
                        * (2.0 if r >= runs_per_task // 2 else 1.0)
                        * level
                        * (1.0 if frac < 0.3 else 0.5)
                    )
                mem += rng.normal(0, 0.03 * base)
                cpu = 100.0 + 50 * kind + rng.normal(0, 5)
                samples.append(f"{run_id},{t},{cpu:.1f},{max(mem, 1.0):.2f}\n")
    (directory / "runs.csv").write_text(HEADER + "".join(runs))
    with gzip.open(directory / "samples.csv.gz", "wt") as fh:
        fh.write("run_id,t_s,cpu_pct,mem_mb\n")
        fh.writelines(samples)
    return directory
