"""`airflow predictive train [--dag-id D] [--task-id T]`: select, fit and precompute forecasts.

Runs in the CLI process (never in the scheduler): imports the estimators lazily, so TensorFlow
loads only here and only when the LSTM is a candidate.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger(__name__)


def run(args: Any) -> None:
    from airflow_predictive.runtime import get_runtime
    from airflow_predictive.training.candidates import DEFAULT_CANDIDATES
    from airflow_predictive.training.maintenance import retrain

    runtime = get_runtime()
    engine = runtime.engine()
    dag_id = getattr(args, "dag_id", None)
    task_id = getattr(args, "task_id", None)
    keys = [
        k
        for k in runtime.run_store().task_keys()
        if (dag_id is None or k.dag_id == dag_id) and (task_id is None or k.task_id == task_id)
    ]
    if not keys:
        print("No recorded runs match; nothing to train.", file=sys.stderr)
        raise SystemExit(1)
    raw = getattr(args, "candidates", None)
    names = tuple(str(raw).split(",")) if raw else None
    model_dir = str(runtime.model_store().root)
    from airflow_predictive.training.progress import Progress

    progress = Progress("train")  # a bar with an ETA on stderr
    result = retrain(
        engine, model_dir=model_dir, keys=keys, candidates=names or DEFAULT_CANDIDATES, progress=progress
    )
    progress.close()
    if result is None:
        print("No finished successful runs to learn from.", file=sys.stderr)
        raise SystemExit(1)
    saved = ", ".join(sorted(result.model_versions.values())) or "none saved"
    print(f"Trained on {result.examples} runs in {result.seconds:.1f} s (models: {saved})")
    for t in sorted(result.tasks, key=lambda t: str(t.key)):
        champ = t.champion or f"none ({t.selection.reason})"
        print(f"  {t.key}: champion {champ}; cached {t.answered_by or '-'}")
        if t.explanation:
            print(f"      {t.explanation}")
