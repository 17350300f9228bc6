"""Fixtures shared by the real-cgroup tests."""

from __future__ import annotations

import pytest

from airflow_predictive.backends.cgroups.hierarchy import CgroupLayout, detect


@pytest.fixture(scope="module")
def layout() -> CgroupLayout:
    found = detect()
    if not found.enforcing:
        print(f"cgroup tests skipped: {found.reason}")
        pytest.skip(f"no writable cgroup hierarchy here: {found.reason}")
    return found
