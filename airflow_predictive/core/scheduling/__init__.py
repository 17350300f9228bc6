"""Proactive scheduling: the reservation ledger's logic, the planner and admission (pure core)."""

from __future__ import annotations
