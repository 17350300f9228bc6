"""Airflow listeners: record every try's start, samples and outcome. Never raise, never block."""

from __future__ import annotations
