"""Provider metadata for Airflow's provider discovery (`apache_airflow_provider` entry point).

Imported by every Airflow component: it must stay import-light (no SQLAlchemy models, no numpy).
"""

from __future__ import annotations

from typing import Any

from airflow_predictive import __version__
from airflow_predictive.config import OPTIONS, SECTION


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-predictive",
        "name": "Predictive resources",
        "description": "Learns each task's resource curve from its history and acts on it before "
        "and while the task runs.",
        "versions": [__version__],
        "config": {
            SECTION: {
                "description": "Predictive task resources (airflow-provider-predictive).",
                "options": OPTIONS,
            }
        },
        "plugins": [
            {
                "name": "predictive",
                "plugin-class": "airflow_predictive.plugins.predictive_plugin.PredictivePlugin",
            }
        ],
        "cli": ["airflow_predictive.cli.definition.get_predictive_cli_commands"],
        "db-managers": ["airflow_predictive.db_manager.PredictiveDBManager"],
        "task-decorators": [
            {
                "name": "predictive_kubernetes",
                "class-name": "airflow_predictive.decorators.predictive_kubernetes.predictive_kubernetes_task",
            }
        ],
        "triggers": [
            {
                "integration-name": "Predictive resources",
                "python-modules": [
                    "airflow_predictive.triggers.shaping",
                    "airflow_predictive.triggers.kubernetes_pod",
                ],
            }
        ],
        "executors": [
            "airflow_predictive.executors.local_executor.PredictiveLocalExecutor",
            "airflow_predictive.executors.kubernetes_executor.PredictiveKubernetesExecutor",
        ],
    }
