from __future__ import annotations

import ast
from pathlib import Path

import pytest

from airflow_predictive import config
from airflow_predictive.provider_info import get_provider_info


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

    monkeypatch.setattr(airflow.configuration.conf, "get", lambda *a, **k: "sqlite:////srv/airflow/airflow.db")
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


def _config_readers_called_outside_config() -> set[str]:
    """Names ``config.<name>`` (or ``predictive_config.<name>``) referenced by product modules."""
    called: set[str] = set()
    for path in _PACKAGE.rglob("*.py"):
        if path.name == "config.py" and path.parent == _PACKAGE:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except SyntaxError:  # a module being written; its own tests fail on it
            continue
        aliases = {"config"}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "airflow_predictive":
                aliases |= {a.asname or a.name for a in node.names if a.name == "config"}
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
            ):
                called.add(node.attr)
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
