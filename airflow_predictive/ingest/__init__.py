"""Backfill of run history from Airflow's own tables (task_instance, task_instance_history)."""

from __future__ import annotations
