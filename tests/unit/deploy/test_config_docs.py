"""docs/configuration.md is the provider info Airflow reads, rendered, and up to date."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from airflow_predictive.provider_info import get_provider_info

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "configuration.md"


def _rows() -> dict[str, tuple[str, str]]:
    """option -> (type, default) from the committed table."""
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \| `([^`]*)` \|", DOC.read_text(), re.MULTILINE)
    return {name: (type_, default) for name, type_, default in rows}


def test_every_published_option_has_its_row_with_type_and_default() -> None:
    ((_, section),) = get_provider_info()["config"].items()
    published = section["options"]
    rows = _rows()
    assert set(rows) == set(published), "run: python scripts/gen_config_docs.py"
    for name, opt in published.items():
        assert rows[name] == (opt["type"], opt["default"] or "(empty)"), name


def test_the_generator_reproduces_the_committed_file() -> None:
    spec = importlib.util.spec_from_file_location("gen_config_docs", ROOT / "scripts" / "gen_config_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == DOC.read_text(), "run: python scripts/gen_config_docs.py"
