"""PredictivePlugin: registers the provider's listener with Airflow (found via `airflow.plugins`).

Later issues add the UI view and API here. Import-light: the listener module imports nothing heavy.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_predictive.listeners import run_recorder


class PredictivePlugin(AirflowPlugin):
    name = "predictive"
    listeners = [run_recorder]
