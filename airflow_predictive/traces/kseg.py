"""Importer of the compact k-Segments form: ``runs.csv`` + ``samples.csv.gz`` (or ``samples.csv``).

runs.csv: one row per task execution (run_id, workflow, task, sample, start, duration_s,
declared_cpus, declared_mem_bytes, input_files, input_bytes, output_files, output_bytes).
samples.csv(.gz): run_id, t_s, cpu_pct (percent of one core), mem_mb (MiB).

Identity: dag_id = workflow, task_id = task, run_id = the execution name, try 1. Features are
what is known before the run starts: sample id, input file count and size. Output sizes are
results of the run and are kept out of the features. The samples file is streamed (about a
million rows for kseg-eager), never loaded whole.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import time
from datetime import timedelta
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
    MAX_DURATION_S,
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

    from airflow_predictive.storage.run_store import SqlRunStore

log = logging.getLogger(__name__)

RUNS_FILE = "runs.csv"
SAMPLES_FILES = ("samples.csv.gz", "samples.csv")
_REQUIRED_RUN_COLUMNS = {"run_id", "task", "start"}
_REQUIRED_SAMPLE_COLUMNS = {"run_id", "t_s"}


def is_compact(directory: Path) -> bool:
    return (directory / RUNS_FILE).is_file() and any((directory / f).is_file() for f in SAMPLES_FILES)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace", newline="")
    return open(path, encoding="utf-8", errors="replace", newline="")


def _dict_rows(path: Path, required: set[str]) -> Iterator[dict[str, str]]:
    with _open_text(path) as fh:
        reader = csv.DictReader(fh)
        missing = required - set(reader.fieldnames or ())
        if missing:
            raise TraceFormatError(f"{path}: missing columns {', '.join(sorted(missing))}")
        yield from reader


def _sample_rows(path: Path) -> Iterator[tuple[str, str | None, str | None, str | None]]:
    """(run_id, t_s, cpu_pct, mem_mb) per samples row, read positionally (a dict per row of a
    file of millions of rows was a large share of an import); absent columns or cells are None."""
    with _open_text(path) as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        missing = _REQUIRED_SAMPLE_COLUMNS - set(header)
        if missing:
            raise TraceFormatError(f"{path}: missing columns {', '.join(sorted(missing))}")
        idx = [header.index(c) if c in header else None for c in ("run_id", "t_s", "cpu_pct", "mem_mb")]
        if idx == [0, 1, 2, 3] and len(header) == 4:  # the usual layout: no per-cell lookups
            for row in reader:
                if len(row) == 4:
                    yield row[0], row[1], row[2], row[3]
                else:
                    yield _cells(row, idx)
        else:
            for row in reader:
                yield _cells(row, idx)


def _cells(row: list[str], idx: list[int | None]) -> tuple[str, str | None, str | None, str | None]:
    def cell(i: int | None) -> str | None:
        return row[i] if i is not None and i < len(row) else None

    return cell(idx[0]) or "", cell(idx[1]), cell(idx[2]), cell(idx[3])


def _record(row: dict[str, str]) -> RunRecord | str:
    """A RunRecord from one runs.csv row, or the reason it cannot be imported."""
    run_id = (row.get("run_id") or "").strip()
    task = (row.get("task") or "").strip()
    workflow = (row.get("workflow") or "").strip() or "kseg"
    if not run_id or not task:
        return "runs without a run_id or task"
    start = parse_time(row.get("start") or "")
    if start is None:
        return "runs with an unreadable start"
    duration = non_negative(row.get("duration_s"), MAX_DURATION_S)
    declared_cpus = non_negative(row.get("declared_cpus"), MAX_CORES)
    declared_mem = non_negative(row.get("declared_mem_bytes"), MAX_BYTES)
    features: dict[str, FeatureValue] = {"sample": (row.get("sample") or "").strip() or None}
    for name in ("input_files", "input_bytes"):
        value = non_negative(row.get(name), MAX_BYTES)
        features[name] = value
    return RunRecord(
        identity=RunIdentity(TaskKey(workflow, task), run_id[:250], 1, RunSource.TRACE),
        start=start,
        end=start + timedelta(seconds=duration) if duration is not None else None,
        outcome=Outcome.SUCCESS,
        declared=ResourceVector(cpu_cores=declared_cpus or None, memory_bytes=declared_mem or None),
        operator=f"nextflow:{task}",
        features=features,
    )


def import_compact(directory: Path, store: SqlRunStore) -> ImportSummary:
    """Import ``directory`` (runs.csv + samples.csv[.gz]); re-importing replaces, never duplicates."""
    began = time.monotonic()
    directory = Path(directory)
    if not is_compact(directory):
        raise TraceFormatError(f"{directory}: no runs.csv with samples.csv.gz / samples.csv")
    writer = TraceWriter(store)
    records: dict[str, RunRecord] = {}
    for row in _dict_rows(directory / RUNS_FILE, _REQUIRED_RUN_COLUMNS):
        rec = _record(row)
        if isinstance(rec, str):
            writer.skipped[rec] += 1
            continue
        name = rec.identity.run_id
        if name in records:
            writer.skipped["duplicate runs"] += 1
            continue
        records[name] = rec
    pks = dict(zip(records, writer.add_runs(list(records.values())), strict=True))
    samples = next(directory / f for f in SAMPLES_FILES if (directory / f).is_file())
    unknown: set[str] = set()
    for run_id, t_s, cpu_pct, mem_mb in _sample_rows(samples):
        pk = pks.get(run_id)
        if pk is None:
            pk = pks.get(run_id.strip()[:250])
        if pk is None:
            writer.skipped["samples of unknown runs"] += 1
            unknown.add(run_id)
            continue
        cpu = number(cpu_pct)
        mem = number(mem_mb)
        writer.add_sample(
            pk,
            t_s,
            None if cpu is None else cpu / 100.0,
            None if mem is None else mem * MIB,
        )
    if unknown:
        log.warning("predictive: %d run ids in %s are not in runs.csv", len(unknown), samples.name)
    runs = writer.close()
    return ImportSummary(
        format="kseg-compact",
        runs=runs,
        samples=writer.samples,
        tasks=writer.tasks,
        skipped=dict(writer.skipped),
        cleaned=dict(writer.cleaned),
        seconds=time.monotonic() - began,
    )
