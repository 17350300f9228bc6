"""Importer of the original k-segments-traces layout (InfluxDB annotated CSV, one folder per task).

Layout: ``<root>/[<workflow>/]<task>/<execution>_{cpu,memory,metadata}.csv`` (``_file_event``
files are ignored). Each file is an InfluxDB annotated CSV: ``#datatype`` / ``#group`` /
``#default`` lines, then a header with ``_time``, ``_value``, ``_field``, ``_measurement`` and
tags, then rows; a blank line may start another table with its own annotations. Fields used:
``docker_cpu_usage_pct`` (percent of one core), ``docker_used_memory_mb`` (MiB), and from the
metadata ``files_input_num`` / ``files_input_total_size`` (features), ``max_cpus`` / ``max_mem``
(declared). Output sizes are results, not features. Times become seconds since the first sample.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_predictive.core.model.resources import ResourceVector
from airflow_predictive.core.model.runs import (
    FeatureValue,
    Outcome,
    RunIdentity,
    RunRecord,
    RunSource,
    TaskKey,
)
from airflow_predictive.traces.common import (
    MAX_BYTES,
    MAX_CORES,
    MIB,
    ImportSummary,
    TraceFormatError,
    TraceWriter,
    non_negative,
    number,
    parse_time,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import datetime

    from airflow_predictive.storage.run_store import SqlRunStore

CPU_FIELD = "docker_cpu_usage_pct"
MEMORY_FIELD = "docker_used_memory_mb"
_KINDS = ("cpu", "memory", "metadata")


def annotated_rows(path: Path) -> Iterator[dict[str, str]]:
    """Rows of an InfluxDB annotated CSV as dicts keyed by the current table's header."""
    header: list[str] | None = None
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        for cells in csv.reader(fh):
            if not cells or all(not c.strip() for c in cells):
                header = None  # a blank line ends a table
                continue
            if cells[0].startswith("#"):
                header = None
                continue
            if header is None:
                header = [c.strip() for c in cells]
                continue
            if len(cells) != len(header):
                continue
            yield dict(zip(header, cells, strict=True))


def execution_files(root: Path) -> dict[Path, dict[str, Path]]:
    """``<task dir>/<execution>`` -> {"cpu": path, "memory": path, "metadata": path}."""
    found: dict[Path, dict[str, Path]] = {}
    for path in sorted(Path(root).rglob("*_*.csv")):
        stem = path.name[: -len(".csv")]
        base, _, kind = stem.rpartition("_")
        if kind in _KINDS and base:
            found.setdefault(path.parent / base, {})[kind] = path
    return found


def is_influx_layout(root: Path) -> bool:
    return any("memory" in files or "cpu" in files for files in execution_files(root).values())


def _series(path: Path | None, field: str) -> dict[datetime, float | None]:
    out: dict[datetime, float | None] = {}
    if path is None:
        return out
    for row in annotated_rows(path):
        if row.get("_field", field) != field:
            continue
        t = parse_time(row.get("_time", ""))
        if t is None:
            continue
        out[t] = number(row.get("_value"))
    return out


def _metadata(path: Path | None) -> dict[str, float | None]:
    if path is None:
        return {}
    return {row.get("_field", ""): number(row.get("_value")) for row in annotated_rows(path)}


def import_influx(root: Path, store: SqlRunStore) -> ImportSummary:
    """Import every execution below ``root``; re-importing replaces each run's samples."""
    began = time.monotonic()
    root = Path(root)
    executions = execution_files(root)
    if not executions:
        raise TraceFormatError(f"{root}: no <execution>_cpu.csv / _memory.csv files")
    writer = TraceWriter(store)
    items = list(executions.items())
    for i in range(0, len(items), 200):  # bounded memory: 200 executions parsed at a time
        _import_chunk(items[i : i + 200], writer, root)
    runs = writer.close()
    return ImportSummary(
        format="kseg-influx",
        runs=runs,
        samples=writer.samples,
        tasks=writer.tasks,
        skipped=dict(writer.skipped),
        cleaned=dict(writer.cleaned),
        seconds=time.monotonic() - began,
    )


def _import_chunk(items: list[tuple[Path, dict[str, Path]]], writer: TraceWriter, root: Path) -> None:
    parsed: list[tuple[RunRecord, list[datetime], dict[datetime, float | None], dict[datetime, float | None]]]
    parsed = []
    for base, files in items:
        cpu = _series(files.get("cpu"), CPU_FIELD)
        mem = _series(files.get("memory"), MEMORY_FIELD)
        times = sorted(set(cpu) | set(mem))
        if not times:
            writer.skipped["executions without samples"] += 1
            continue
        task = base.parent.name
        rel = base.parent.parent
        workflow = rel.name if rel != root.parent and rel.name and rel != rel.parent else "kseg"
        if base.parent == root:
            task, workflow = base.name.split(" ", 1)[0], root.name or "kseg"
        meta = _metadata(files.get("metadata"))
        features: dict[str, FeatureValue] = {
            "sample": _sample_of(base.name),
            "input_files": non_negative(meta.get("files_input_num"), MAX_BYTES),
            "input_bytes": non_negative(meta.get("files_input_total_size"), MAX_BYTES),
        }
        t0 = times[0]
        record = RunRecord(
            identity=RunIdentity(TaskKey(workflow[:250], task[:250]), base.name[:250], 1, RunSource.TRACE),
            start=t0,
            end=times[-1],
            outcome=Outcome.SUCCESS,
            declared=ResourceVector(
                cpu_cores=non_negative(meta.get("max_cpus"), MAX_CORES) or None,
                memory_bytes=non_negative(meta.get("max_mem"), MAX_BYTES) or None,
            ),
            operator=f"nextflow:{task}",
            features=features,
        )
        parsed.append((record, times, cpu, mem))
    pks = writer.add_runs([p[0] for p in parsed])
    for pk, (_record, times, cpu, mem) in zip(pks, parsed, strict=True):
        t0 = times[0]
        for t in times:
            c, m = cpu.get(t), mem.get(t)
            writer.add_sample(
                pk,
                (t - t0).total_seconds(),
                None if c is None else c / 100.0,
                None if m is None else m * MIB,
            )


def _sample_of(name: str) -> str | None:
    """'bwa (DA10) (740)' -> 'DA10' (the input sample in Nextflow's execution name)."""
    if "(" not in name:
        return None
    inner = name.split("(", 1)[1].split(")", 1)[0].strip()
    return inner or None
