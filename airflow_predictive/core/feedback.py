"""Feedback: how a finished try is classified and summarised before it refines the profiles.

Airflow reports only "failed"; the product needs to know *why* (an OOM kill costs more than
slack). The rules here are pure and tested; adapters feed them what they observed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_predictive.core.model.runs import Outcome

if TYPE_CHECKING:
    from airflow_predictive.core.model.series import UsageSeries

_SIGKILL_CODES = {137, -9}
_EXIT_CODE = re.compile(r"(?:exit(?:ed)?(?: with)?(?: return)? code|returncode)\D{0,3}(-?\d+)", re.I)


@dataclass(frozen=True, slots=True)
class FailureFacts:
    """What is known about a failed try.

    error_type: the exception class name raised in the task ('' when none).
    message: its text.
    exit_code: the exit code of the task's main child process, if known.
    oom_events: OOM kills counted by the task's cgroup / container runtime during the try.
    """

    error_type: str = ""
    message: str = ""
    exit_code: int | None = None
    oom_events: int = 0


def exit_code_from_message(message: str) -> int | None:
    """Exit codes as operators print them: 'Bash command failed. The command returned a non-zero exit code 137.'"""
    match = _EXIT_CODE.search(message)
    return int(match.group(1)) if match else None


def classify_failure(facts: FailureFacts) -> tuple[Outcome, str]:
    """Outcome of a failed try and a short note saying why it was classified so."""
    name = facts.error_type
    exit_code = facts.exit_code if facts.exit_code is not None else exit_code_from_message(facts.message)
    if facts.oom_events > 0:
        return Outcome.OOM_KILLED, f"{facts.oom_events} OOM kill(s) counted by the cgroup/runtime"
    if "Timeout" in name or "timed out" in facts.message.lower():
        return Outcome.TIMED_OUT, f"{name or 'timeout'}: {facts.message[:200]}"
    if name == "MemoryError":
        return Outcome.OOM_KILLED, "MemoryError raised: the task ran out of memory"
    if exit_code in _SIGKILL_CODES:
        return Outcome.FAILED, f"killed by SIGKILL (exit {exit_code}); no OOM event was seen"
    note = f"{name}: {facts.message[:200]}" if name else facts.message[:200]
    return Outcome.FAILED, note


def curve_summary(series: UsageSeries, width: int = 24, peak_word: str = "peak") -> str:
    """A compact one-line view of memory, CPU, disk and network over a run, for CLIs and logs.

    ``peak_word`` names the maximum shown: callers that also print a run's recorded peak (which adds
    the kernel's high-water mark between samples) call this one the sampled maximum."""
    import numpy as np

    from airflow_predictive.core.model.resources import GIB, MIB, Metric

    def total(*metrics: Metric) -> np.ndarray | None:
        arrays = [a for m in metrics if (a := series.get(m)) is not None]
        if not arrays:
            return None
        stacked = np.vstack(arrays)
        out = np.nansum(stacked, axis=0)
        out[np.all(np.isnan(stacked), axis=0)] = np.nan
        return out

    parts = []
    for label, arr, scale, unit in (
        ("mem", series.get(Metric.MEMORY_BYTES), GIB, "GiB"),
        ("cpu", series.get(Metric.CPU_CORES), 1.0, "cores"),
        ("disk", total(Metric.DISK_READ_BPS, Metric.DISK_WRITE_BPS), MIB, "MiB/s"),
        ("net", total(Metric.NET_RX_BPS, Metric.NET_TX_BPS), MIB, "MiB/s"),
        ("gpu", series.get(Metric.GPU_UTIL), 1.0, "GPUs"),
    ):
        if arr is None or not np.any(np.isfinite(arr)):
            continue
        peak = float(np.nanmax(arr))
        if label in ("disk", "net", "gpu") and peak <= 0:
            continue
        parts.append(f"{label} {sparkline(arr, width)} {peak_word} {peak / scale:.2f} {unit}")
    return "  ".join(parts) if parts else "(no samples)"


_BLOCKS = " ▁▂▃▄▅▆▇█"


def sparkline(values: object, width: int = 24) -> str:
    """Max-pooled unicode sparkline of a 1-d array (NaN shown as a gap)."""
    import numpy as np

    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return ""
    chunks = np.array_split(arr, min(width, arr.size))
    pooled = np.array([np.nanmax(c) if np.any(np.isfinite(c)) else np.nan for c in chunks])
    top = np.nanmax(pooled) if np.any(np.isfinite(pooled)) else 0.0
    out = []
    for v in pooled:
        if not np.isfinite(v):
            out.append(" ")
        else:
            out.append(_BLOCKS[round(v / top * (len(_BLOCKS) - 1)) if top > 0 else 0])
    return "".join(out)
