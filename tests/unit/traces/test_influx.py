from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from airflow_predictive.core.model.resources import Metric
from airflow_predictive.core.model.runs import TaskKey
from airflow_predictive.traces import TraceFormat, detect_format, import_traces
from airflow_predictive.traces.influx import annotated_rows

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_predictive.storage.run_store import SqlRunStore

SERIES_HEAD = (
    "#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,double,string,string,string\n"
    "#group,false,false,true,true,false,false,true,true,true\n"
    "#default,_result,,,,,,,,\n"
    ",result,table,_start,_stop,_time,_value,_field,_measurement,name\n"
)
META_HEAD = (
    "#datatype,string,long,string,string,dateTime:RFC3339,long,string\n"
    "#group,false,false,true,true,false,false,true\n"
    "#default,_result,,,,,,\n"
    ",result,table,_field,_measurement,_time,_value,name\n"
)


def series_file(path: Path, field: str, name: str, values: list[tuple[str, str]]) -> None:
    lines = [
        f",,0,2023-05-01T00:00:00Z,2023-06-01T00:00:00Z,{t},{v},{field},{name},{name}\n" for t, v in values
    ]
    path.write_text(SERIES_HEAD + "".join(lines))


def execution(task_dir: Path, name: str, cpu: list[tuple[str, str]], mem: list[tuple[str, str]]) -> None:
    task_dir.mkdir(parents=True, exist_ok=True)
    series_file(task_dir / f"{name}_cpu.csv", "docker_cpu_usage_pct", name, cpu)
    series_file(task_dir / f"{name}_memory.csv", "docker_used_memory_mb", name, mem)
    meta = [
        ("files_input_num", "3"),
        ("files_input_total_size", "12345"),
        ("files_output_total_size", "999"),
        ("max_cpus", "4"),
        ("max_mem", "8589934592"),
    ]
    rows = "".join(f",,{i},{f},{name},2023-06-01T00:00:00Z,{v},{name}\n" for i, (f, v) in enumerate(meta))
    (task_dir / f"{name}_metadata.csv").write_text(META_HEAD + rows)
    (task_dir / f"{name}_file_event.csv").write_text("ignored\n")


T = ["2023-06-02T00:18:27.090129951Z", "2023-06-02T00:18:29.089840799Z", "2023-06-02T00:18:31.1Z"]


def test_annotated_csv_tables_restart_after_blank_lines(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text(SERIES_HEAD + ",,0,a,b,c,1,f,m,n\n\n" + SERIES_HEAD + ",,1,a,b,c,2,f,m,n\n")
    assert [r["_value"] for r in annotated_rows(p)] == ["1", "2"]


def test_imports_original_layout(tmp_path: Path, run_store: SqlRunStore) -> None:
    root = tmp_path / "k-segments-traces"
    task_dir = root / "eager" / "bwa"
    execution(
        task_dir,
        "bwa (DA1) (7)",
        [(T[0], "100"), (T[1], "250"), (T[2], "nan")],
        [(T[0], "10"), (T[1], "20"), (T[2], "-4")],
    )
    execution(task_dir, "bwa (DA2) (8)", [(T[0], "50")], [(T[0], "5")])
    assert detect_format(root) is TraceFormat.KSEG_INFLUX
    summary = import_traces(root, run_store)
    assert (summary.runs, summary.tasks) == (2, 1)
    assert summary.skipped == {"samples without a valid value": 1}
    first = run_store.runs(TaskKey("eager", "bwa"))[0]
    assert first.features == {"input_bytes": 12345.0, "input_files": 3.0, "sample": "DA1"}
    assert first.declared.cpu_cores == 4 and first.declared.memory_bytes == 8 * 1024**3
    series = run_store.series(first.run_pk or 0)
    assert series.times[1] == pytest.approx(1.99971, abs=1e-4)
    assert list(series.values[Metric.CPU_CORES]) == pytest.approx([1.0, 2.5])
    assert first.peak.memory_bytes == pytest.approx(20 * 1024**2)
    # importing again gives the same database
    import_traces(root, run_store)
    assert len(run_store.runs()) == 2
