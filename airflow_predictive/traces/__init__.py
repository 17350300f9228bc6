"""Importers of public task-resource traces into the RunStore (``RunSource.TRACE``).

Three layouts: the compact k-Segments form (runs.csv + samples.csv.gz), the original
k-segments-traces repository layout (InfluxDB annotated CSV per run) and Nextflow trace reports
(one row per task execution, peaks and totals only). Only what is known before a run starts
(input sizes, declared resources, sample tag, attempt) becomes a feature; outputs, peaks and
I/O totals are outcomes. Importers never crash on bad rows: they skip them and count why.
"""

from __future__ import annotations

from airflow_predictive.traces.common import ImportSummary, TraceFormatError
from airflow_predictive.traces.detect import TraceFormat, detect_format, import_traces

__all__ = ["ImportSummary", "TraceFormat", "TraceFormatError", "detect_format", "import_traces"]
