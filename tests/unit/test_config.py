from __future__ import annotations

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
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "sqlite:////srv/airflow/airflow.db")
    monkeypatch.setattr(
        config, "_raw", lambda key: "" if key == "sql_alchemy_conn" else config.OPTIONS[key]["default"]
    )
    import airflow.configuration

    monkeypatch.setattr(airflow.configuration.conf, "get", lambda *a, **k: "airflow-db-not-allowed:///")
    assert config.storage_url() == "sqlite:////srv/airflow/predictive.db"


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
