"""The progress bar of long commands: counts, percent and an ETA on stderr."""

from __future__ import annotations

import io

from airflow_predictive.training.candidates import factories
from airflow_predictive.training.dataset import load_examples
from airflow_predictive.training.evaluation import evaluate
from airflow_predictive.training.progress import Progress


def test_lines_show_counts_percent_and_an_eta():
    out = io.StringIO()
    p = Progress("evaluate", stream=out, interval_s=0.0)
    p.add(4)
    assert "ETA ?" in p.line()
    p.step("fit a")
    p.step("fit b")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "2/4" in lines[-1] and " 50%" in lines[-1] and "fit b" in lines[-1]
    assert "ETA 0m0" in lines[-1]  # two quick items done, two to go


def test_evaluation_announces_exactly_the_work_it_does(filled_store):
    out = io.StringIO()
    p = Progress("evaluate", stream=out, interval_s=0.0)
    evaluate(
        load_examples(filled_store), factories(("median_peak", "vpa")), factories(("declared",)), progress=p
    )
    assert p.total > 0 and p.done == p.total
    assert out.getvalue().splitlines()[-1].startswith("evaluate [" + "#" * 24 + "]")


def test_evaluate_of_a_trace_folder_shows_the_bar_from_the_import_on(tmp_path) -> None:
    """The import and load come first in `evaluate --traces` (about 30 s for 5,000 runs): the bar
    says so before the evaluation's own items."""
    import io

    from airflow_predictive.cli.commands.evaluate import evaluate_traces
    from tests.unit.training.synthetic_traces import write_trace

    out = io.StringIO()
    evaluate_traces(
        write_trace(tmp_path / "trace", runs_per_task=6),
        candidates=("last_run",),
        progress=Progress("evaluate", stream=out, interval_s=0.0),
    )
    lines = out.getvalue().splitlines()
    assert "importing trace" in lines[0] and any(line.endswith("loaded") for line in lines[:3])
    assert lines[-1].startswith("evaluate [") and "100%" in lines[-1]
