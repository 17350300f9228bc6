"""Airflow plugin adapters."""

from __future__ import annotations
