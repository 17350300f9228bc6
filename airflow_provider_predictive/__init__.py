"""The import name Airflow derives from this distribution's name (``airflow-provider-predictive``).

With ``[core] load_examples`` on (Airflow's default), Airflow 3.3 looks for every provider's example
DAGs by importing ``package_name.replace("-", "_")`` and reading ``<its folder>/example_dags``
(``airflow/dag_processing/bundles/manager.py``). Without this package that import failed and the
DAG processor logged "Could not load provider module airflow_provider_predictive" with a traceback
on every bundle refresh. The provider's code lives in ``airflow_predictive``; this package only
holds the shipped example DAGs, so importing it costs nothing.
"""

from __future__ import annotations

from airflow_predictive import __version__

__all__ = ["__version__"]
