"""`airflow predictive history DAG TASK`: recorded runs of a task with a compact view of each curve."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from airflow_predictive.core.feedback import curve_summary
from airflow_predictive.core.model.resources import GIB
from airflow_predictive.core.model.runs import RunRecord, RunSource, TaskKey
from airflow_predictive.runtime import get_runtime
from airflow_predictive.storage.engine import StorageUnavailable

if TYPE_CHECKING:
    from airflow_predictive.storage.run_store import SqlRunStore


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value / GIB:.2f}"


def _num(value: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def _row(run: RunRecord) -> dict[str, Any]:
    return {
        "run_pk": run.run_pk,
        "run_id": run.identity.run_id,
        "try": run.identity.try_number,
        "source": run.identity.source.value,
        "start": run.start.isoformat() if run.start else None,
        "duration_s": run.duration_s,
        "outcome": run.outcome.value,
        "declared": {m.value: v for m, v in run.declared.present().items()},
        "peak": {m.value: v for m, v in run.peak.present().items()},
        "n_samples": run.n_samples,
        "note": run.note,
    }


def without_shadowed_ingests(runs: list[RunRecord]) -> list[RunRecord]:
    """Drop backfilled (ingest) records of tries the listener recorded itself: same try, less detail."""
    recorded = {
        (r.identity.run_id, r.identity.try_number) for r in runs if r.identity.source is RunSource.LISTENER
    }
    return [
        r
        for r in runs
        if r.identity.source is not RunSource.INGEST
        or (r.identity.run_id, r.identity.try_number) not in recorded
    ]


def render(store: SqlRunStore, key: TaskKey, limit: int, as_json: bool) -> str:
    runs = without_shadowed_ingests(store.runs(key, limit=2 * limit))[-limit:]
    if as_json:
        rows = []
        for run in runs:
            row = _row(run)
            if run.run_pk is not None and run.n_samples:
                series = store.series(run.run_pk)
                row["curve"] = {
                    "t_s": series.times.tolist(),
                    **{
                        m.value: [None if v != v else v for v in a.tolist()] for m, a in series.values.items()
                    },
                }
            rows.append(row)
        return json.dumps({"task": str(key), "runs": rows})
    if not runs:
        return f"no recorded runs for {key}"
    lines = [
        f"{len(runs)} run(s) of {key} (oldest first)",
        "peak: the run's recorded peak, with the kernel's memory high-water mark between samples;"
        " sampled max: the highest sample of the curve",
    ]
    header = f"{'try':>3} {'outcome':<10} {'start':<19} {'dur s':>7} {'decl cpu':>8} {'decl GiB':>8} {'peak cpu':>8} {'peak GiB':>8}  run_id"
    lines.append(header)
    for run in runs:
        start = run.start.strftime("%Y-%m-%d %H:%M:%S") if run.start else "-"
        lines.append(
            f"{run.identity.try_number:>3} {run.outcome.value:<10} {start:<19} "
            f"{_num(run.duration_s, '{:.1f}'):>7} {_num(run.declared.cpu_cores):>8} "
            f"{_gib(run.declared.memory_bytes):>8} {_num(run.peak.cpu_cores):>8} "
            f"{_gib(run.peak.memory_bytes):>8}  {run.identity.run_id}"
        )
        if run.run_pk is not None and run.n_samples:
            lines.append(
                f"    {curve_summary(store.series(run.run_pk), peak_word='sampled max')}  ({run.n_samples} samples)"
            )
        if run.peak.memory_anon_bytes is not None or run.peak.memory_file_bytes is not None:
            lines.append(  # what the memory was made of (docs/recording.md): anon cannot be reclaimed
                f"    memory peaks: anon {_gib(run.peak.memory_anon_bytes)} GiB, "
                f"file (page cache) {_gib(run.peak.memory_file_bytes)} GiB"
            )
        if run.note:
            lines.append(f"    note: {run.note}")
    return "\n".join(lines)


def run(args: Any) -> None:
    key = TaskKey(args.dag_id, args.task_id)
    store = get_runtime().run_store()
    try:
        print(render(store, key, args.limit, args.json))
    except StorageUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
