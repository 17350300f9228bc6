"""Training orchestration, outside the core and outside Airflow's hot paths.

Builds examples from the RunStore, backtests and selects a champion per task, fits and saves the
models, and precomputes forecasts into the ForecastCache. It runs from the CLI (`airflow
predictive train`), the maintenance DAG's task, or the benchmark: never inside the scheduler,
executor, triggerer or DAG processor (import contracts keep TensorFlow away from those).
"""

from __future__ import annotations
