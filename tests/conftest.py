"""Shared fixtures: stores on SQLite (always) and on the real PostgreSQL that `make test` starts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import airflow  # noqa: F401  - configure Airflow's logging once, on the session's streams (see below)
import pytest

from airflow_predictive.storage.run_store import SqlRunStore
from tests._databases import migrated_engine
from tests._real_parts import in_ci

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from sqlalchemy.engine import Engine

# Importing airflow configures its logging handlers on whatever sys.stderr is at that moment. If the
# first import happened inside a test using capsys, the handlers would keep that test's capture
# stream, closed after the test, and every later log line would fail ("I/O operation on closed
# file", then a crash of the interpreter's stderr). Importing it here binds them to the session.


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A freshly migrated database per test, on SQLite and on PostgreSQL."""
    with migrated_engine(request.param, tmp_path) as engine:
        yield engine


@pytest.fixture
def run_store(db_engine: Engine) -> SqlRunStore:
    return SqlRunStore(db_engine)


# -- in CI, a skipped test is a failed run ----------------------------------------------------------
# Tests skip (locally) only through tests/_real_parts.py when a real part is missing; in CI those
# calls already fail. This catches every other skip (skipif markers, importorskip, a bare
# pytest.skip) so that a CI run cannot pass while leaving tests out. Allowed: node id prefix -> why.
SKIPS_ALLOWED_IN_CI: dict[str, str] = {}

_skipped: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append((report.nodeid, reason))


def _not_allowed(skipped: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(n, r) for n, r in skipped if not any(n.startswith(p) for p in SKIPS_ALLOWED_IN_CI)]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    bad = _not_allowed(_skipped)
    if in_ci() and bad:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    bad = _not_allowed(_skipped)
    if in_ci() and bad:
        terminalreporter.section("skipped tests fail a CI run", red=True)
        for nodeid, reason in bad:
            terminalreporter.line(f"{nodeid}: {reason}")


# -- order: the longest modules first --------------------------------------------------------------
# Under pytest-xdist (`make test` runs `-n 2 --dist loadfile`) each file goes whole to one worker in
# collection order; starting with the real-Airflow modules (a minute or two each) keeps both
# workers busy to the end instead of leaving one to finish a long module alone.


def _file_rank(items: list[pytest.Item]) -> dict[str, int]:
    rank: dict[str, int] = {}
    for item in items:
        path = str(item.path)
        r = 0 if item.get_closest_marker("airflow") else (1 if "/integration/" in path else 2)
        rank[path] = min(rank.get(path, 2), r)
    return rank


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = _file_rank(items)
    order = {path: i for i, path in enumerate(dict.fromkeys(str(item.path) for item in items))}
    items.sort(key=lambda item: (rank[str(item.path)], order[str(item.path)]))
