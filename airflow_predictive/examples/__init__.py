"""Example workloads with known resource shapes (used by the example DAGs, tests and the demo)."""

from __future__ import annotations
