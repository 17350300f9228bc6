"""Importer of Nextflow trace reports (``trace*.txt`` / ``*.csv`` / ``*.tsv``, optionally gzipped).

One row per task execution, no time series: these runs carry peaks and totals only. Mapping:
peak memory = ``peak_rss``; CPU = ``%cpu`` / 100 (the run's *average* cores, the only CPU figure a
trace has; the run's note says so); disk read / write = ``read_bytes`` / ``write_bytes`` averaged
over ``realtime`` (bytes/s). Declared = ``cpus`` / ``memory``. Outcome from ``status``: COMPLETED
-> success, FAILED / ABORTED -> failed (kept: failures are history too). ``-`` means unset.

Identity: dag_id = the workflow (file name without ``trace_`` and extensions), task_id = the
process, run_id = ``name [hash]``, try = ``attempt``. Features are only what is known before the
run: the sample tag, the attempt and the declared time / disk. ``rchar`` and friends are results.
"""

from __future__ import annotations

import csv
import gzip
import io
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
    MAX_CORES,
    MAX_DURATION_S,
    ImportSummary,
    TraceFormatError,
    TraceWriter,
    epoch_ms,
    non_negative,
    number,
    size_bytes,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from airflow_predictive.storage.run_store import SqlRunStore

PEAK_ONLY_NOTE = "nextflow trace: peaks and totals only; cpu is the run's average share"
_REQUIRED = {"process", "status"}
_STATUS = {"COMPLETED": Outcome.SUCCESS, "FAILED": Outcome.FAILED, "ABORTED": Outcome.FAILED}


def trace_files(directory: Path) -> list[Path]:
    """Files in ``directory`` that look like Nextflow trace reports (header names process/status)."""
    out = []
    for path in sorted(Path(directory).iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        name = path.name.lower()
        if not any(name.endswith(s) for s in (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz")):
            continue
        try:
            header = _open(path).readline()
        except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile):
            continue
        cols = {c.strip() for c in header.replace("\t", ",").split(",")}
        if cols >= _REQUIRED:
            out.append(path)
    return out


def _open(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace", newline="")
    return open(path, encoding="utf-8", errors="replace", newline="")


def workflow_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".csv", ".tsv", ".txt"):
        name = name.removesuffix(suffix)
    return name.removeprefix("trace_").removeprefix("trace-") or "nextflow"


_UNITS_MS = (("ms", 1.0), ("d", 86_400_000.0), ("h", 3_600_000.0), ("m", 60_000.0), ("s", 1000.0))


def _duration_ms(raw: str | None) -> float | None:
    """realtime is ms in raw traces; human traces write '1m 3s' / '12.5s' / '300ms'."""
    v = number(raw)
    if v is not None:
        return v
    if not raw or raw.strip() == "-":
        return None
    total, ok = 0.0, False
    for part in raw.split():
        for unit, ms in (
            ("ms", 1.0),
            ("d", 86_400_000.0),
            ("h", 3_600_000.0),
            ("m", 60_000.0),
            ("s", 1000.0),
        ):
            if part.endswith(unit) and number(part[: -len(unit)]) is not None:
                total += float(number(part[: -len(unit)]) or 0.0) * ms
                ok = True
                break
        else:
            return None
    return total if ok else None


def _record(row: dict[str, str], workflow: str) -> RunRecord | str:
    process = (row.get("process") or "").strip()
    if not process or process == "-":
        return "rows without a process"
    status = (row.get("status") or "").strip().upper()
    outcome = _STATUS.get(status, Outcome.UNKNOWN)
    start = epoch_ms(row.get("start")) or epoch_ms(row.get("submit"))
    if start is None:
        return "rows without a start time"
    realtime_ms = _duration_ms(row.get("realtime"))
    realtime_s = realtime_ms / 1000.0 if realtime_ms is not None and realtime_ms >= 0 else None
    if realtime_s is not None and realtime_s > MAX_DURATION_S:
        realtime_s = None
    end = start + timedelta(seconds=realtime_s) if realtime_s is not None else epoch_ms(row.get("complete"))
    if end is not None and end < start:
        end = None
    cpu_pct = number(row.get("%cpu"))
    cpu = cpu_pct / 100.0 if cpu_pct is not None and 0 <= cpu_pct <= MAX_CORES * 100 else None
    peak_rss = size_bytes(row.get("peak_rss"))
    read_b, write_b = size_bytes(row.get("read_bytes")), size_bytes(row.get("write_bytes"))
    rate = (lambda b: b / realtime_s if b is not None else None) if realtime_s else (lambda b: None)
    if outcome is Outcome.SUCCESS and peak_rss is None and cpu is None and realtime_s is None:
        return "completed rows without any measurement"
    attempt = number(row.get("attempt"))
    name = (row.get("name") or process).strip()
    digest = (row.get("hash") or row.get("task_id") or "").strip()
    run_id = f"{name} [{digest}]" if digest and digest != "-" else name
    time_ms = _duration_ms(row.get("time"))
    features: dict[str, FeatureValue] = {
        "sample": (row.get("tag") or "").strip() or None,
        "attempt": int(attempt) if attempt is not None and attempt >= 1 else 1,
        "declared_time_s": time_ms / 1000.0 if time_ms is not None and time_ms > 0 else None,
        "declared_disk_bytes": size_bytes(row.get("disk")),
    }
    exit_code = number(row.get("exit"))
    return RunRecord(
        identity=RunIdentity(
            TaskKey(workflow[:250], process[:250]),
            run_id[:250],
            int(features["attempt"] or 1),
            RunSource.TRACE,
        ),
        start=start,
        end=end,
        outcome=outcome,
        declared=ResourceVector(
            cpu_cores=non_negative(row.get("cpus"), MAX_CORES) or None,
            memory_bytes=size_bytes(row.get("memory")) or None,
        ),
        peak=ResourceVector(
            cpu_cores=cpu,
            memory_bytes=peak_rss,
            disk_read_bps=rate(read_b),
            disk_write_bps=rate(write_b),
        ),
        operator=f"nextflow:{process.rsplit(':', 1)[-1]}",
        hostname=(row.get("hostname") or "").strip() or None,
        exit_code=int(exit_code) if exit_code is not None and abs(exit_code) < 2**31 else None,
        features=features,
        note=PEAK_ONLY_NOTE,
    )


def import_nextflow(paths: Iterable[Path], store: SqlRunStore) -> ImportSummary:
    """Import Nextflow trace files (comma- or tab-separated); re-import updates in place."""
    began = time.monotonic()
    files = list(paths)
    if not files:
        raise TraceFormatError("no Nextflow trace files (a header with 'process' and 'status')")
    writer = TraceWriter(store)
    records: list[RunRecord] = []
    seen: set[tuple[str, str, str, int]] = set()
    for path in files:
        workflow = workflow_name(path)
        with _open(path) as fh:
            first = fh.readline()
            delimiter = "\t" if first.count("\t") > first.count(",") else ","
            reader = csv.DictReader(io.StringIO(first), delimiter=delimiter)  # header only, to validate
            if not set(reader.fieldnames or ()) >= _REQUIRED:
                raise TraceFormatError(f"{path}: not a Nextflow trace (needs process and status columns)")
            rows = csv.DictReader(fh, fieldnames=reader.fieldnames, delimiter=delimiter)
            for row in rows:
                if None in row:  # more cells than header names: a broken line
                    writer.skipped["malformed rows"] += 1
                    continue
                rec = _record(row, workflow)
                if isinstance(rec, str):
                    writer.skipped[rec] += 1
                    continue
                ident = rec.identity
                marker = (ident.key.dag_id, ident.key.task_id, ident.run_id, ident.try_number)
                if marker in seen:
                    writer.skipped["duplicate rows"] += 1
                    continue
                seen.add(marker)
                records.append(rec)
    runs = len(writer.add_runs(records))
    return ImportSummary(
        format="nextflow",
        runs=runs,
        samples=0,
        tasks=writer.tasks,
        skipped=dict(writer.skipped),
        cleaned=dict(writer.cleaned),
        seconds=time.monotonic() - began,
    )
