"""A small compact-form trace (runs.csv + samples.csv.gz) with known structure, for tests only.

Tasks: ``align`` (memory grows with input size, ramps to its peak mid-run), ``sort`` (steady
memory, CPU burst at start) and ``once`` (a single run: cold start).
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


def write_trace(directory: Path, runs_per_task: int = 12, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    start = datetime(2024, 3, 1, tzinfo=UTC)
    runs, samples = [], []
    n = 0
    for i in range(runs_per_task):
        for task in ("align", "sort"):
            n += 1
            size = float(rng.uniform(1, 4)) * 1e9
            seconds = 120 if task == "align" else 60
            run_id = f"{task} (S{i}) ({n})"
            t0 = start + timedelta(minutes=5 * n)
            runs.append(
                f"{run_id},wf,{task},S{i},{t0.isoformat().replace('+00:00', 'Z')},{seconds - 2},"
                f"{seconds // 2},4,8589934592,2,{size:.0f},1,1\n"
            )
            for t in range(0, seconds, 2):
                if task == "align":
                    mem = 200 + 300 * size / 1e9 * min(1.0, t / 60) + rng.normal(0, 5)
                    cpu = 350.0
                else:
                    mem = 500 + rng.normal(0, 5)
                    cpu = 390.0 if t < 20 else 100.0
                samples.append(f"{run_id},{t},{cpu:.1f},{mem:.2f}\n")
    runs.append("once (X) (999),wf,once,X,2024-03-02T00:00:00Z,10,6,1,1073741824,1,5,1,1\n")
    samples.extend(f"once (X) (999),{t},50,100\n" for t in range(0, 12, 2))
    (directory / "runs.csv").write_text(HEADER + "".join(runs))
    with gzip.open(directory / "samples.csv.gz", "wt") as fh:
        fh.write("run_id,t_s,cpu_pct,mem_mb\n")
        fh.writelines(samples)
    return directory
