"""The provider's example DAGs (`predictive_shapes`, `predictive_etl`, `predictive_story`) for a plain DAGs folder.

They live in the installed package (airflow_provider_predictive/example_dags/), where Airflow
loads them by itself as the bundle ``airflow-provider-predictive-example-dags`` when
``[core] load_examples`` is on. This file defines them only when that is off, so that no dag_id
is declared by two bundles. Import-light: the workloads are imported inside the tasks.
"""

from __future__ import annotations

from airflow.sdk.configuration import conf  # the Task SDK's reader: works on workers without airflow-core

if not conf.getboolean("core", "load_examples", fallback=True):
    from airflow_provider_predictive.example_dags.predictive_examples import (  # noqa: F401
        etl_dag,
        shapes_dag,
        story_dag,
    )
