"""Behavioural profiler: learns each task's demand curves from recorded runs (pure core)."""

from __future__ import annotations
