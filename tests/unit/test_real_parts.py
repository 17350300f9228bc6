from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests import _real_parts

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("ci", ["", "false", "0"])
def test_a_missing_part_skips_outside_ci(monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="real part missing: PostgreSQL"):
        _real_parts.require(None, "PostgreSQL")


@pytest.mark.parametrize("ci", ["true", "1", "TRUE"])
def test_a_missing_part_fails_in_ci(monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="CI needs this real part: kubectl"):
        _real_parts.require(False, "kubectl")


def test_a_present_part_passes_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    _real_parts.require("postgresql://x", "PostgreSQL")
    assert _real_parts.require_module("json").dumps([]) == "[]"


def test_a_missing_module_or_executable_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no_such_module_here"):
        _real_parts.require_module("no_such_module_here")
    with pytest.raises(pytest.fail.Exception, match="no-such-tool-here"):
        _real_parts.require_executable("no-such-tool-here")


def _run_probe(tmp_path: Path, ci: str) -> subprocess.CompletedProcess[str]:
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        textwrap.dedent(
            """
            import pytest

            def test_runs():
                assert True

            @pytest.mark.skipif(True, reason="a skip that is not a real part")
            def test_skipped():
                pass

            @pytest.mark.xfail(reason="known", strict=True)
            def test_expected_failure():
                assert False
            """
        )
    )
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider", str(probe)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_ci_session_with_a_skipped_test_fails_and_names_it(tmp_path: Path) -> None:
    out = _run_probe(tmp_path, "true")
    assert out.returncode == pytest.ExitCode.TESTS_FAILED, out.stdout[-2000:]
    assert "skipped tests fail a CI run" in out.stdout
    assert "test_probe.py::test_skipped" in out.stdout
    assert "test_expected_failure" not in out.stdout.split("skipped tests fail a CI run")[1]


def test_the_same_session_passes_outside_ci(tmp_path: Path) -> None:
    out = _run_probe(tmp_path, "")
    assert out.returncode == pytest.ExitCode.OK, out.stdout[-2000:]
    assert "skipped tests fail a CI run" not in out.stdout
