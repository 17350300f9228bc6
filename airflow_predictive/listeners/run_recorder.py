"""Placeholder, filled in by the foundation work (listener hooks)."""

from __future__ import annotations
