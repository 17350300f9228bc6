"""Fixtures shared by the real-cgroup tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests._real_parts import require_cgroups

if TYPE_CHECKING:
    from airflow_predictive.backends.cgroups.hierarchy import CgroupLayout


@pytest.fixture(scope="module")
def layout() -> CgroupLayout:
    """The detected writable hierarchy (cpu and memory); skips locally, fails in CI without one."""
    return require_cgroups("cpu", "memory")
