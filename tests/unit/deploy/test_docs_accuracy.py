"""The user and operations docs name only options and commands that exist.

Docs rot silently when an option is renamed or a command dropped; these checks make the rename
fail here instead. Options: every ``[predictive] name``; commands: every ``airflow predictive
<command>`` (and the user guide lists them all); benchmark reports: all linked, no broken link.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from airflow_predictive.config import OPTIONS

ROOT = Path(__file__).resolve().parents[3]
DOCS = [ROOT / "docs" / "user-guide.md", ROOT / "docs" / "operations.md", ROOT / "README.md"]
DEFINITION = ROOT / "airflow_predictive" / "cli" / "definition.py"


def _commands() -> set[str]:
    return set(re.findall(r'name="([a-z-]+)"', DEFINITION.read_text())) - {"predictive"}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_named_options_are_declared(doc: Path) -> None:
    named = set(re.findall(r"\[predictive\] ([a-z_]+)", doc.read_text()))
    assert named - set(OPTIONS) == set()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_named_commands_exist(doc: Path) -> None:
    named = set(re.findall(r"airflow predictive ([a-z][a-z-]*)", doc.read_text()))
    assert named, "each of these docs shows commands"
    assert named - _commands() == set()


def test_the_user_guide_lists_every_command() -> None:
    text = (ROOT / "docs" / "user-guide.md").read_text()
    listed = set(re.findall(r"^    airflow predictive ([a-z-]+)", text, re.MULTILINE))
    assert listed == _commands()


def test_every_benchmark_report_is_linked_and_no_link_is_broken() -> None:
    """Each report is reachable from the docs (operations.md's index or its area's page); every
    report operations.md links exists."""
    reports = {p.name for p in (ROOT / "docs" / "benchmarks").glob("*.md")}
    pages = [*(ROOT / "docs").glob("*.md"), ROOT / "README.md"]
    linked_anywhere = {m for page in pages for m in re.findall(r"benchmarks/([\w.-]+\.md)", page.read_text())}
    assert reports - linked_anywhere == set(), (
        "link the benchmark report from docs (operations.md#benchmarks)"
    )
    in_operations = set(
        re.findall(r"\(benchmarks/([\w.-]+\.md)\)", (ROOT / "docs" / "operations.md").read_text())
    )
    assert in_operations - reports == set()
