from __future__ import annotations

import gzip
from typing import TYPE_CHECKING

import pytest

from airflow_predictive.core.model.resources import Metric
from airflow_predictive.core.model.runs import RunSource, TaskKey
from airflow_predictive.traces import TraceFormatError, import_traces
from airflow_predictive.traces.kseg import import_compact

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_predictive.storage.run_store import SqlRunStore

RUNS_HEADER = (
    "run_id,workflow,task,sample,start,duration_s,n_samples,declared_cpus,declared_mem_bytes,"
    "input_files,input_bytes,output_files,output_bytes\n"
)


def write_compact(directory: Path, runs: list[str], samples: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "runs.csv").write_text(RUNS_HEADER + "".join(r + "\n" for r in runs))
    with gzip.open(directory / "samples.csv.gz", "wt") as fh:
        fh.write("run_id,t_s,cpu_pct,mem_mb\n")
        fh.writelines(s + "\n" for s in samples)
    return directory


def _good(tmp_path: Path) -> Path:
    runs = [
        "bwa (A) (1),eager,bwa,A,2023-06-01T00:00:00Z,4,3,8,17179869184,2,1000,1,5000",
        "bwa (B) (2),eager,bwa,B,2023-06-01T01:00:00.123456789Z,2,2,8,17179869184,2,2000,1,6000",
    ]
    samples = [
        "bwa (A) (1),0,100,512",
        "bwa (A) (1),2,250,1024",
        "bwa (A) (1),4,50,768",
        "bwa (B) (2),0,800,100",
        "bwa (B) (2),2,400,200",
    ]
    return write_compact(tmp_path / "kseg", runs, samples)


def test_imports_runs_with_units_converted_and_prior_features_only(
    tmp_path: Path, run_store: SqlRunStore
) -> None:
    summary = import_compact(_good(tmp_path), run_store)
    assert (summary.runs, summary.samples, summary.tasks) == (2, 5, 1)
    runs = run_store.runs(TaskKey("eager", "bwa"))
    assert [r.identity.run_id for r in runs] == ["bwa (A) (1)", "bwa (B) (2)"]
    first = runs[0]
    assert first.identity.source is RunSource.TRACE
    assert first.declared.cpu_cores == 8 and first.declared.memory_bytes == 16 * 1024**3
    assert first.peak.cpu_cores == pytest.approx(2.5)
    assert first.peak.memory_bytes == pytest.approx(1024 * 1024**2)
    assert first.duration_s == pytest.approx(4)
    assert first.features == {"input_bytes": 1000.0, "input_files": 2.0, "sample": "A"}
    assert "output_bytes" not in first.features
    series = run_store.series(first.run_pk or 0)
    assert list(series.times) == [0, 2, 4]
    assert list(series.values[Metric.CPU_CORES]) == pytest.approx([1.0, 2.5, 0.5])


def test_reimport_replaces_instead_of_duplicating(tmp_path: Path, run_store: SqlRunStore) -> None:
    path = _good(tmp_path)
    import_compact(path, run_store)
    again = import_compact(path, run_store)
    assert again.runs == 2
    runs = run_store.runs()
    assert len(runs) == 2
    assert sum(len(run_store.series(r.run_pk or 0)) for r in runs) == 5
    assert [r.n_samples for r in runs] == [3, 2]


def test_garbage_rows_are_skipped_and_counted(tmp_path: Path, run_store: SqlRunStore) -> None:
    runs = [
        "ok (1),eager,t,S,2023-06-01T00:00:00Z,4,3,2,1000000,1,10,1,1",
        ",eager,t,S,2023-06-01T00:00:00Z,4,3,2,1000000,1,10,1,1",  # no run id
        "late (2),eager,t,S,not-a-date,4,3,2,1000000,1,10,1,1",
        "neg (3),eager,t,S,2023-06-01T02:00:00Z,-5,3,-2,nan,-1,x,1,1",
    ]
    samples = [
        "ok (1),0,100,1",
        "ok (1),1,nan,nan",  # nothing usable
        "ok (1),2,-50,2",  # negative cpu: absent, memory kept
        "ok (1),-3,10,10",  # negative time
        "ok (1),abc,10,10",
        "ok (1),3,1e12,3",  # absurd cpu (10 billion cores)
        "ghost (9),0,1,1",
        "neg (3),0,10,1",
        "neg (3),6,10,1",
    ]
    summary = import_compact(write_compact(tmp_path / "bad", runs, samples), run_store)
    assert summary.runs == 2
    assert summary.skipped == {
        "runs without a run_id or task": 1,
        "runs with an unreadable start": 1,
        "samples without a valid value": 1,
        "samples with a bad time": 2,
        "samples of unknown runs": 1,
    }
    assert summary.cleaned["bad cpu values"] == 2
    neg = run_store.runs(TaskKey("eager", "t"))[1]
    assert neg.declared.cpu_cores is None and neg.declared.memory_bytes is None
    assert neg.duration_s == pytest.approx(6)  # end taken from the samples
    assert neg.features["input_files"] is None


def test_single_sample_run_is_kept(tmp_path: Path, run_store: SqlRunStore) -> None:
    path = write_compact(
        tmp_path / "one", ["one (1),w,t,S,2023-06-01T00:00:00Z,0,1,1,100,1,1,1,1"], ["one (1),0,50,10"]
    )
    summary = import_compact(path, run_store)
    assert summary.runs == 1 and summary.samples == 1
    assert run_store.runs()[0].peak.memory_bytes == pytest.approx(10 * 1024**2)


def test_missing_columns_is_a_clear_error(tmp_path: Path, run_store: SqlRunStore) -> None:
    d = tmp_path / "broken"
    d.mkdir()
    (d / "runs.csv").write_text("name,start\nx,2023-01-01T00:00:00Z\n")
    (d / "samples.csv").write_text("run_id,t_s\n")
    with pytest.raises(TraceFormatError, match="missing columns"):
        import_traces(d, run_store)


def test_unknown_folder_is_a_clear_error(tmp_path: Path, run_store: SqlRunStore) -> None:
    with pytest.raises(TraceFormatError, match="no trace found"):
        import_traces(tmp_path, run_store)


def test_samples_columns_in_another_order_or_missing_read_the_same(
    tmp_path: Path, run_store: SqlRunStore
) -> None:
    """The samples file is read positionally: another column order, an extra column or a missing
    metric column must map each cell to its own column, not to the usual position."""
    d = write_compact(tmp_path / "order", ["a (1),w,t,S,2023-06-01T00:00:00Z,4,2,1,100,1,1,1,1"], [])
    with gzip.open(d / "samples.csv.gz", "wt") as fh:
        fh.write("mem_mb,note,t_s,run_id\n512,x,0,a (1)\n1024,y,2,a (1)\n")
    summary = import_compact(d, run_store)
    assert summary.samples == 2
    run = run_store.runs()[0]
    assert run.peak.memory_bytes == pytest.approx(1024 * 1024**2) and run.peak.cpu_cores is None
    assert list(run_store.series(run.run_pk or 0).times) == [0, 2]
