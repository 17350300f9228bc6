"""airflow-predictive: predictive task resources for Apache Airflow.

Importing this package must stay cheap: it is imported by Airflow's provider discovery on every
component (scheduler, DAG processor, triggerer, workers). Nothing heavy is imported here.
"""

from __future__ import annotations

__version__ = "0.1.0"
