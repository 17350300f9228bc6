"""Airflow executors that plan from forecasts, reserve in the shared ledger and hold tasks back.

``local_executor.PredictiveLocalExecutor`` (over LocalExecutor, a cgroup per task). Import the
class by its module path; importing this package costs nothing.
"""

from __future__ import annotations
