"""One rule for tests that need a real part (PostgreSQL, a writable cgroup hierarchy, TensorFlow,
statsmodels, kubectl, ...): on a developer machine a missing part skips the test with the reason;
in CI (``CI`` set to a true value) it FAILS the test, so a run that silently lost its real parts
can never pass. ``tests/conftest.py`` also fails a CI session that skipped anything not listed in
its allow-list.

Genuinely optional (documented here, not skipped silently): none at the moment. The blkio / io
cgroup controller is optional *for the product* (the cgroup backend only advertises disk limits
when the controller is writable, see docs/backends.md), but the tests that exercise disk
throttling require it like any other real part: a CI runner without it must provide one.
"""

from __future__ import annotations

import importlib
import os
import shutil
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:
    from airflow_predictive.backends.cgroups.hierarchy import CgroupLayout

_TRUE = {"1", "true", "yes", "on"}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in _TRUE


def missing(what: str) -> NoReturn:
    """Skip (locally) or fail (in CI) because the real part ``what`` is missing."""
    if in_ci():
        pytest.fail(f"CI needs this real part: {what}", pytrace=False)
    pytest.skip(f"real part missing: {what}", allow_module_level=True)


def require(condition: object, what: str) -> None:
    """``missing(what)`` unless ``condition`` holds."""
    if not condition:
        missing(what)


def require_module(name: str, hint: str = "") -> Any:
    """Import ``name`` or report it missing (the ``pytest.importorskip`` of this suite)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing(f"Python module {name} ({exc}){': ' + hint if hint else ''}")


def require_executable(name: str, hint: str = "") -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"executable {name} on PATH{': ' + hint if hint else ''}")
    return path


def require_cgroups(*controllers: str) -> CgroupLayout:
    """A writable cgroup hierarchy (as the backend detects it), with ``controllers`` if named.

    Each entry of ``controllers`` may name alternatives with '|' (``"blkio|io"``: v1 or v2 name).
    """
    from airflow_predictive.backends.cgroups.hierarchy import detect

    found = detect()
    require(found.enforcing, f"a writable cgroup hierarchy ({found.reason})")
    for wanted in controllers:
        names = set(wanted.split("|"))
        require(
            names & set(found.parents),
            f"the {wanted} cgroup controller (writable here: {', '.join(sorted(found.parents)) or 'none'})",
        )
    return found
