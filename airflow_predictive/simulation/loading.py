"""Trace folder -> run examples, through the product's own importers (never a parser of its own).

Any layout the profiler imports works (k-Segments compact runs.csv + samples.csv.gz, the influx
layout, Nextflow traces); the runs go into a throw-away SQLite store, never the provider's
database. Runs without a memory series (Nextflow traces hold peaks only) cannot be replayed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_predictive.core.profiler.estimators.base import RunExample
    from airflow_predictive.traces.common import ImportSummary


def load_trace_folder(folder: Path) -> tuple[ImportSummary, list[RunExample]]:
    """Import ``folder`` into a temporary store and read back its successful runs, oldest first."""
    from sqlalchemy import create_engine

    from airflow_predictive.storage import migrate
    from airflow_predictive.storage.run_store import SqlRunStore
    from airflow_predictive.traces import import_traces
    from airflow_predictive.training.dataset import load_examples

    with tempfile.TemporaryDirectory(prefix="predictive-bench-") as tmp:
        engine = create_engine(f"sqlite:///{Path(tmp) / 'traces.db'}")
        try:
            migrate.upgrade(engine)
            store = SqlRunStore(engine)
            summary = import_traces(Path(folder), store)
            examples = load_examples(store)
        finally:
            engine.dispose()
    return summary, examples
