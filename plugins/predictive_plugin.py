"""Thin re-export for a plain Airflow plugins folder (no logic here).

The installed provider registers its plugin through the `airflow.plugins` entry point; this file
is for deployments that copy a plugins folder instead of relying on entry points. Airflow loads
a plugin class once, so keep only one of the two mechanisms active.
"""

from __future__ import annotations

from airflow_predictive.plugins.predictive_plugin import PredictivePlugin

__all__ = ["PredictivePlugin"]
