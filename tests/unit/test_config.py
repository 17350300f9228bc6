from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from airflow_predictive import config
from airflow_predictive.provider_info import get_provider_info

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(autouse=True)
def _fresh() -> None:
    config.reset_cache()
    yield
    config.reset_cache()


def test_every_option_is_declared_with_description_type_and_default() -> None:
    options = get_provider_info()["config"]["predictive"]["options"]
    assert set(options) == set(config.OPTIONS)
    for name, opt in options.items():
        assert opt["description"] and opt["type"] in {"string", "boolean", "float", "integer"}, name
        assert opt["default"] is not None, name


@pytest.mark.parametrize(("value", "expected"), [("0.5", 0.5), ("2", 2.0)])
def test_sample_interval_reads_numbers(monkeypatch: pytest.MonkeyPatch, value: str, expected: float) -> None:
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SAMPLE_INTERVAL", value)
    assert config.sample_interval() == expected


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "fast", "inf"])
def test_invalid_interval_fails_loudly_naming_the_option(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SAMPLE_INTERVAL", bad)
    with pytest.raises(config.InvalidConfig, match="sample_interval"):
        config.sample_interval()


def test_invalid_choice_and_boolean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__BACKEND", "docker")
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__ENABLED", "maybe")
    with pytest.raises(config.InvalidConfig, match="backend"):
        config.backend()
    with pytest.raises(config.InvalidConfig, match="enabled"):
        config.enabled()


def test_storage_defaults_to_a_sibling_file_when_airflow_uses_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN", raising=False)
    monkeypatch.setattr(
        config, "_raw", lambda key: "" if key == "sql_alchemy_conn" else config.OPTIONS[key]["default"]
    )
    import airflow.configuration

    monkeypatch.setattr(
        airflow.configuration.conf, "get", lambda *a, **k: "sqlite:////srv/airflow/airflow.db"
    )
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "sqlite:////srv/airflow/airflow.db")
    assert config.storage_url() == "sqlite:////srv/airflow/predictive.db"
    assert config.inherited_store() == "sqlite:////srv/airflow/predictive.db"


def test_storage_shares_a_server_database(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql+psycopg2://a@db/airflow"
    monkeypatch.setattr(
        config, "_raw", lambda key: "" if key == "sql_alchemy_conn" else config.OPTIONS[key]["default"]
    )
    import airflow.configuration

    monkeypatch.setattr(airflow.configuration.conf, "get", lambda *a, **k: url)
    assert config.storage_url() == url


def test_explicit_storage_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN", "sqlite:////x/own.db")
    assert config.storage_url() == "sqlite:////x/own.db"


def test_configuration_reference_is_generated_from_the_declarations() -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "scripts/gen_config_docs.py", "--check"], cwd=root, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout


# -- every declared option is read by the product ------------------------------------------------

# options whose reader has another name (store_conn_id: read by storage_url in task processes)
_READER_OF = {"sql_alchemy_conn": "storage_url", "store_conn_id": "storage_url"}
_PACKAGE = Path(config.__file__).resolve().parent


def _modules() -> Iterator[tuple[Path, ast.Module]]:
    """The package's modules and its shipped DAGs (the maintenance DAG reads its options through
    the runtime: ``Runtime.training_fanout``)."""
    shipped = _PACKAGE.parent / "airflow_provider_predictive" / "example_dags"
    for path in [*_PACKAGE.rglob("*.py"), *sorted(shipped.glob("*.py"))]:
        try:
            yield path, ast.parse(path.read_text(encoding="utf-8"))
        except SyntaxError:  # a module being written; its own tests fail on it
            continue


def _config_reads(tree: ast.AST) -> set[str]:
    """Names ``config.<name>`` (or an alias of the config module) referenced under ``tree``."""
    aliases = {"config"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "airflow_predictive":
            aliases |= {a.asname or a.name for a in node.names if a.name == "config"}
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
    }


def _config_readers_called_outside_config() -> set[str]:
    """Readers the product calls: directly, or through a runtime builder that something calls.

    A read inside ``runtime.py`` counts only when its method is used by a module outside the
    runtime (or by another used runtime method): a builder nobody asks for uses no option.
    """
    called: set[str] = set()
    runtime_methods: dict[str, ast.FunctionDef] = {}
    used_attrs: set[str] = set()
    for path, tree in _modules():
        if path.parent == _PACKAGE and path.name == "config.py":
            continue
        if path.parent == _PACKAGE and path.name == "runtime.py":
            runtime_methods = {
                f.name: f
                for cls in tree.body
                if isinstance(cls, ast.ClassDef) and cls.name == "Runtime"
                for f in cls.body
                if isinstance(f, ast.FunctionDef)
            }
            continue
        called |= _config_reads(tree)
        used_attrs |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    used = {m for m in runtime_methods if m in used_attrs}
    while True:  # methods used by used methods
        more = {
            n.attr
            for m in used
            for n in ast.walk(runtime_methods[m])
            if isinstance(n, ast.Attribute) and n.attr in runtime_methods
        } - used
        if not more:
            break
        used |= more
    for m in used:
        called |= _config_reads(runtime_methods[m])
    return called


def test_every_option_has_a_reader() -> None:
    for key in config.OPTIONS:
        reader = getattr(config, _READER_OF.get(key, key), None)
        assert callable(reader), f"[predictive] {key} has no reader in config.py"
        reader()  # the declared default is valid for its own reader


def test_every_declared_option_is_read_by_the_product() -> None:
    called = _config_readers_called_outside_config()
    unused = sorted(k for k in config.OPTIONS if _READER_OF.get(k, k) not in called)
    assert not unused, f"declared but never read outside config.py (use or remove them): {unused}"
