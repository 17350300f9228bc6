"""Which trace layout a path holds, and one entry point that imports any of them."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_predictive.traces.common import ImportSummary, TraceFormatError

if TYPE_CHECKING:
    from airflow_predictive.storage.run_store import SqlRunStore


class TraceFormat(StrEnum):
    KSEG_COMPACT = "kseg-compact"
    KSEG_INFLUX = "kseg-influx"
    NEXTFLOW = "nextflow"


def detect_format(path: Path) -> TraceFormat:
    """The layout at ``path`` (a folder, or one Nextflow trace file); TraceFormatError if none."""
    from airflow_predictive.traces.influx import is_influx_layout
    from airflow_predictive.traces.kseg import is_compact
    from airflow_predictive.traces.nextflow import trace_files

    path = Path(path)
    if not path.exists():
        raise TraceFormatError(f"{path}: no such file or folder")
    if path.is_file():
        if trace_files(path.parent) and path in trace_files(path.parent):
            return TraceFormat.NEXTFLOW
        raise TraceFormatError(f"{path}: not a Nextflow trace file")
    if is_compact(path):
        return TraceFormat.KSEG_COMPACT
    if trace_files(path):
        return TraceFormat.NEXTFLOW
    if is_influx_layout(path):
        return TraceFormat.KSEG_INFLUX
    raise TraceFormatError(
        f"{path}: no trace found (runs.csv + samples.csv.gz, Nextflow trace files, or "
        "k-segments <execution>_memory.csv files)"
    )


def import_traces(path: Path, store: SqlRunStore) -> ImportSummary:
    """Import whatever trace layout ``path`` holds into ``store``."""
    from airflow_predictive.traces.influx import import_influx
    from airflow_predictive.traces.kseg import import_compact
    from airflow_predictive.traces.nextflow import import_nextflow, trace_files

    path = Path(path)
    fmt = detect_format(path)
    if fmt is TraceFormat.KSEG_COMPACT:
        return import_compact(path, store)
    if fmt is TraceFormat.KSEG_INFLUX:
        return import_influx(path, store)
    files = [path] if path.is_file() else trace_files(path)
    return import_nextflow(files, store)
