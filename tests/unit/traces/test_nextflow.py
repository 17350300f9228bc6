from __future__ import annotations

import gzip
from typing import TYPE_CHECKING

import pytest

from airflow_predictive.core.model.runs import Outcome, TaskKey
from airflow_predictive.traces import TraceFormat, detect_format, import_traces
from airflow_predictive.traces.nextflow import PEAK_ONLY_NOTE

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_predictive.storage.run_store import SqlRunStore

HEADER = (
    "task_id,hash,native_id,process,tag,name,status,exit,module,container,cpus,time,disk,memory,"
    "attempt,submit,start,complete,duration,realtime,queue,%cpu,%mem,rss,vmem,peak_rss,peak_vmem,"
    "rchar,wchar,syscr,syscw,read_bytes,write_bytes\n"
)


def row(
    i: int,
    *,
    status: str = "COMPLETED",
    peak: str = "1073741824",
    realtime: str = "10000",
    cpu: str = "150.0",
    start: str | None = None,
    memory: str = "4294967296",
) -> str:
    start = start if start is not None else str(1_700_000_000_000 + i * 60_000)
    return (
        f"{i},ab/{i:04d},nf-{i},FASTQC,S{i},FASTQC (S{i}),{status},0,-,img,2,3600000,-,{memory},1,"
        f"{start},{start},0,0,{realtime},-,{cpu},0.1,1,1,{peak},1,999,999,1,1,20000,10000\n"
    )


def write_trace(path: Path, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as fh:
        fh.write(HEADER + "".join(rows))
    return path


def test_peaks_totals_and_failures_are_imported(tmp_path: Path, run_store: SqlRunStore) -> None:
    d = tmp_path / "nf"
    write_trace(d / "trace_demo.csv.gz", [row(1), row(2, status="FAILED")])
    assert detect_format(d) is TraceFormat.NEXTFLOW
    summary = import_traces(d, run_store)
    assert (summary.runs, summary.tasks, summary.samples) == (2, 1, 0)
    ok, failed = run_store.runs(TaskKey("demo", "FASTQC"))
    assert ok.outcome is Outcome.SUCCESS and failed.outcome is Outcome.FAILED
    assert ok.peak.memory_bytes == 1024**3
    assert ok.peak.cpu_cores == pytest.approx(1.5)
    assert ok.peak.disk_read_bps == pytest.approx(2000.0)  # 20000 bytes over 10 s
    assert ok.peak.disk_write_bps == pytest.approx(1000.0)
    assert ok.declared.memory_bytes == 4 * 1024**3 and ok.declared.cpu_cores == 2
    assert ok.duration_s == pytest.approx(10)
    assert ok.note == PEAK_ONLY_NOTE and ok.n_samples == 0
    assert set(ok.features) == {"sample", "attempt", "declared_time_s", "declared_disk_bytes"}
    assert "rchar" not in ok.features


def test_dashes_and_garbage_are_handled(tmp_path: Path, run_store: SqlRunStore) -> None:
    d = tmp_path / "nf"
    rows = [
        row(1, peak="-", cpu="-", realtime="-"),  # completed with nothing measured
        row(2, peak="-1", cpu="nan"),  # negative peak, NaN cpu: absent, row kept
        row(3, start="-"),  # no start at all (submit is '-' too)
        "garbage,line\n",
        row(4, memory="2 GB", realtime="1m 30s"),
        row(4),  # the same execution twice
    ]
    write_trace(d / "trace_x.csv.gz", rows)
    summary = import_traces(d, run_store)
    assert summary.runs == 2
    assert summary.skipped["completed rows without any measurement"] == 1
    assert summary.skipped["rows without a start time"] == 1
    assert summary.skipped["duplicate rows"] == 1
    assert summary.skipped_total == 4  # the garbage line has no process
    second = run_store.runs(TaskKey("x", "FASTQC"))[0]
    assert second.peak.memory_bytes is None and second.peak.cpu_cores is None
    fourth = run_store.runs(TaskKey("x", "FASTQC"))[1]
    assert fourth.declared.memory_bytes == 2 * 1024**3
    assert fourth.duration_s == pytest.approx(90)


def test_reimport_is_idempotent(tmp_path: Path, run_store: SqlRunStore) -> None:
    d = tmp_path / "nf"
    write_trace(d / "trace_demo.csv.gz", [row(1), row(2)])
    import_traces(d, run_store)
    import_traces(d, run_store)
    assert len(run_store.runs()) == 2


def test_tab_separated_plain_text_trace(tmp_path: Path, run_store: SqlRunStore) -> None:
    d = tmp_path / "tsv"
    d.mkdir()
    (d / "trace.txt").write_text(HEADER.replace(",", "\t") + row(1).replace(",", "\t"))
    summary = import_traces(d, run_store)
    assert summary.runs == 1
    assert run_store.runs()[0].key == TaskKey("trace", "FASTQC")
