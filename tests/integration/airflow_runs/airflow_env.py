"""A real Airflow for tests: its own AIRFLOW_HOME, migrated SQLite, an API server on a free port.

Tasks run through the LocalExecutor (`airflow dags test --use-executor`), i.e. in supervised task
processes that reach the API server's execution API, exactly as in a deployment.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class AirflowEnv:
    home: Path
    env: dict[str, str]
    api: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls, home: Path, extra: dict[str, str] | None = None) -> AirflowEnv:
        port = free_port()
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API_AUTH__JWT_SECRET": "test-secret-" + os.urandom(8).hex(),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            **(extra or {}),
        }
        env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", None)
        return cls(home=home, env=env)

    @property
    def port(self) -> int:
        return int(self.env["AIRFLOW__API__PORT"])

    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def migrate(self) -> None:
        out = self.airflow("db", "migrate")
        assert out.returncode == 0, out.stderr[-3000:]

    def start_api_server(self, timeout: float = 120) -> None:
        log = open(self.home / "api-server.log", "wb")  # noqa: SIM115 - kept open for the server's life
        self.api = subprocess.Popen(
            [AIRFLOW, "api-server", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.api.poll() is not None:
                raise RuntimeError(f"api-server exited: {(self.home / 'api-server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v2/version", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("api-server did not come up")

    def stop(self) -> None:
        if self.api is not None and self.api.poll() is None:
            os.killpg(self.api.pid, 15)
            try:
                self.api.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.api.pid, 9)

    def dags_test(
        self, dag_id: str, conf: dict[str, object], skip: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        args = ["dags", "test", dag_id, "-c", json.dumps(conf), "--use-executor"]
        if skip:
            args += ["--mark-success-pattern", skip]
        return self.airflow(*args, timeout=600)

    @property
    def predictive_url(self) -> str:
        return f"sqlite:///{self.home / 'predictive.db'}"
