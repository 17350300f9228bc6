"""Run `airflow predictive <command>` as a user would, in a throw-away AIRFLOW_HOME under tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

AIRFLOW = Path(sys.executable).with_name("airflow")


def run_predictive(
    tmp_path: Path, command: str, *args: str, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow_home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        **(env_extra or {}),
    }
    return subprocess.run(
        [str(AIRFLOW), "predictive", command, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
