"""The provider's maintenance DAG (``predictive_maintenance``: close runs a crash left open, then
retrain tasks with new runs) for a plain DAGs folder: copy this file there.

The DAG lives in the installed package (airflow_provider_predictive/example_dags/), where Airflow
loads it by itself with the example bundle when ``[core] load_examples`` is on. This file defines
it only when that is off, so that no dag_id is declared by two bundles. Import-light: the
training code is imported inside the tasks.
"""

from __future__ import annotations

from airflow.sdk.configuration import conf  # the Task SDK's reader: works on workers without airflow-core

if not conf.getboolean("core", "load_examples", fallback=True):
    from airflow_provider_predictive.example_dags.predictive_maintenance import (  # noqa: F401
        maintenance_dag,
    )
