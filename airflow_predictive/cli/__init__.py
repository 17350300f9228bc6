"""`airflow predictive ...` commands, declared through the provider's ``cli`` hook."""

from __future__ import annotations
