"""A real Airflow for tests: its own AIRFLOW_HOME, migrated SQLite, an API server on a free port.

Tasks run through the LocalExecutor (`airflow dags test --use-executor`), i.e. in supervised task
processes that reach the API server's execution API, exactly as in a deployment.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parents[3]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


_TEMPLATE: list[Path] = []
if TYPE_CHECKING:
    from collections.abc import Iterable

END_GRACE_S = 60.0  # how long `dags test` may take to exit once its DAG run has ended
# what the kill note says: a `dags test` whose LocalExecutor hung in end() after its run ended
HARNESS_KILLED = "killed (LocalExecutor.end() join, apache/airflow#45683)"


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc``'s process group (its LocalExecutor workers and their task processes)."""
    try:
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        return
    proc.wait(timeout=30)


def _migrated_template(env: dict[str, str]) -> Path:
    """A home migrated once per test process (pytest-xdist workers each make their own)."""
    if not _TEMPLATE:
        home = Path(tempfile.mkdtemp(prefix="airflow-predictive-template-"))
        out = subprocess.run(
            [AIRFLOW, "db", "migrate"], env={**env, "AIRFLOW_HOME": str(home)},
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        _TEMPLATE.append(home)
    return _TEMPLATE[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class AirflowEnv:
    home: Path
    env: dict[str, str]
    api: subprocess.Popen[bytes] | None = None
    triggerer: subprocess.Popen[bytes] | None = None
    schedulers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _dags_tests: int = 0
    _engines: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        home: Path,
        extra: dict[str, str] | None = None,
        *,
        database_url: str | None = None,
        dags_folder: Path | None = None,
    ) -> AirflowEnv:
        """``database_url``: Airflow's metadata database, set only through the environment (as in
        containers and Helm charts); default: the embedded SQLite in ``home``."""
        port = free_port()
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder or REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API_AUTH__JWT_SECRET": "test-secret-" + os.urandom(8).hex(),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            # log servers on free ports: tests run beside each other (pytest-xdist) and beside
            # other Airflows on this machine (8793 / 8794 may be taken)
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            **(extra or {}),
        }
        env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", None)
        if database_url:
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = database_url
        return cls(home=home, env=env)

    @property
    def port(self) -> int:
        return int(self.env["AIRFLOW__API__PORT"])

    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def migrate(self) -> None:
        """``airflow db migrate``; on the embedded SQLite, a copy of the databases one migration
        in this test process made (identical files, ~7-30 s saved per module)."""
        if "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" in self.env:
            out = self.airflow("db", "migrate")
            assert out.returncode == 0, out.stderr[-3000:]
            return
        template = _migrated_template(self.env)
        self.home.mkdir(parents=True, exist_ok=True)  # `airflow db migrate` would have made it
        for name in ("airflow.db", "predictive.db"):
            if (template / name).exists():
                shutil.copyfile(template / name, self.home / name)

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

    def start_triggerer(self, timeout: float = 300) -> None:
        """A real `airflow triggerer` beside the API server (deferred tasks resume through it);
        returns once its trigger loop runs (its log server on a free port: 8794 may be taken)."""
        path = self.home / "triggerer.log"
        log = open(path, "wb")  # noqa: SIM115 - kept open for its life
        env = {**self.env, "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port())}
        self.triggerer = subprocess.Popen(
            [AIRFLOW, "triggerer"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while b"Starting the triggerer" not in path.read_bytes():
            if self.triggerer.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"triggerer did not start: {path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.5)

    def start_scheduler(self, timeout: float = 120) -> subprocess.Popen[bytes]:
        """A real `airflow scheduler` (its own process group, its log in ``scheduler-N.log``);
        returns once its scheduling loop runs."""
        path = self.home / f"scheduler-{len(self.schedulers) + 1}.log"
        log = open(path, "wb")  # noqa: SIM115 - kept open for its life
        proc = subprocess.Popen(
            [AIRFLOW, "scheduler"], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.schedulers.append(proc)
        deadline = time.monotonic() + timeout
        while b"Starting the scheduler" not in path.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"scheduler did not start: {path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        return proc

    def stop(self) -> None:
        for proc in self.schedulers:
            if proc.poll() is None:
                _kill_group(proc)
        for proc in (self.triggerer, self.api):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, 15)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, 9)

    def dags_test(
        self, dag_id: str, conf: dict[str, object], skip: str | None = None, *, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """``airflow dags test --use-executor``, its DAG run's verdict as the return code.

        Once the DAG run has ended in the metadata database, the process gets ``END_GRACE_S`` to
        exit; past that it is killed with its LocalExecutor workers and the run's state answers
        (0 success, 1 failed), with a line saying so in its stdout. Seen here and in CI:
        `dags test` sometimes never returns from ``LocalExecutor.end()`` after a run that
        succeeded (it joins a worker forever: apache/airflow#45683, open), which cost a CI run
        its 10-minute timeout. A run that has not ended by ``timeout`` fails the test with the
        tails of its output and of the triggerer's and API server's logs."""
        args = [AIRFLOW, "dags", "test", dag_id, "-c", json.dumps(conf), "--use-executor"]
        if skip:
            args += ["--mark-success-pattern", skip]
        before = self._newest_dag_run(dag_id)
        self._dags_tests += 1
        out_path = self.home / f"dags-test-{self._dags_tests}.out"
        err_path = self.home / f"dags-test-{self._dags_tests}.err"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(args, env=self.env, stdout=out, stderr=err, start_new_session=True)
        deadline = time.monotonic() + timeout
        ended_at: float | None = None
        verdict: str | None = None
        while proc.poll() is None:
            now = time.monotonic()
            if ended_at is None:
                newest = self._newest_dag_run(dag_id)
                if (
                    newest is not None
                    and newest[0] != (before or (None, ""))[0]
                    and newest[1] in ("success", "failed")
                ):
                    ended_at, verdict = now, newest[1]
            elif now - ended_at > END_GRACE_S:
                _kill_group(proc)
                note = (
                    f"\n[airflow_env] `dags test {dag_id}` had not exited {END_GRACE_S:.0f} s after its DAG run "
                    f"ended ({verdict}); {HARNESS_KILLED}\n"
                )
                return subprocess.CompletedProcess(
                    args, 0 if verdict == "success" else 1, _read(out_path) + note, _read(err_path)
                )
            if now > deadline:
                _kill_group(proc)
                raise AssertionError(
                    f"`dags test {dag_id}` still running after {timeout:.0f} s\n"
                    + self._tails(_read(out_path) + _read(err_path))
                )
            time.sleep(1.0)
        return subprocess.CompletedProcess(args, proc.returncode, _read(out_path), _read(err_path))

    def _newest_dag_run(self, dag_id: str) -> tuple[int, str] | None:
        """(id, state) of the newest run of ``dag_id`` in the metadata database, None if none or
        unreadable (a database busy for a moment: the next poll reads it)."""
        import sqlalchemy as sa

        url = self.env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or f"sqlite:///{self.home / 'airflow.db'}"
        engine = self._engines.get(url) or self._engines.setdefault(
            url, sa.create_engine(url, poolclass=sa.pool.NullPool)
        )
        try:
            with engine.connect() as conn:
                row = conn.execute(
                    sa.text("SELECT id, state FROM dag_run WHERE dag_id = :d ORDER BY id DESC LIMIT 1"),
                    {"d": dag_id},
                ).first()
        except sa.exc.SQLAlchemyError:
            return None
        return None if row is None else (int(row[0]), str(row[1]))

    def _tails(self, output: str, limit: int = 6000) -> str:
        parts = [f"--- dags test output (tail) ---\n{output[-limit:]}"]
        for name in ("triggerer.log", "api-server.log"):
            path = self.home / name
            if path.exists():
                parts.append(f"--- {name} (tail) ---\n{path.read_text(errors='replace')[-limit // 2 :]}")
        return "\n".join(parts)

    @property
    def predictive_url(self) -> str:
        return f"sqlite:///{self.home / 'predictive.db'}"


def wait_recorded(store: Any, *, timeout: float = 60.0) -> list[Any]:
    """The listener runs of ``store`` once no try is still RUNNING in an open leg: the sidecars
    record the ends just after their task processes exit (outside the task path)."""
    from airflow_predictive.core.model.runs import Outcome, RunSource

    deadline = time.monotonic() + timeout
    while True:
        runs = [r for r in store.runs() if r.identity.source is RunSource.LISTENER]
        open_legs = [
            r for r in runs
            if r.outcome is Outcome.RUNNING and not any(leg.end for leg in store.legs(r.run_pk)[-1:])
        ]  # fmt: skip
        if not open_legs or time.monotonic() > deadline:
            return runs
        time.sleep(0.5)


def assert_nothing_left_reserved(ledger: Any, outputs: Iterable[str]) -> None:
    """Every try released its reservation in ``ledger`` (a ``SqlLedger``) when it ended. Except
    when this harness had to kill a ``dags test`` (``outputs`` carry its note): that executor died
    before it processed its last results, so what it held must lapse on its own, as a dead
    executor's holds do in production: it stops renewing the lease (``expires_at``)."""
    left = ledger.reservations()
    if not any(HARNESS_KILLED in out for out in outputs):
        assert left == [], left
        return
    assert all(r.expires_at - r.start <= 600 for r in left), left  # seconds-long tasks: short leases
    lapsed = ledger.expire(max((r.expires_at for r in left), default=0.0) + 1)
    assert {r.id for r in lapsed} == {r.id for r in left}
    assert ledger.reservations() == []


def assert_no_cgroup_left(dags: Iterable[str], outputs: Iterable[str], since: float) -> None:
    """No task cgroup of ``dags`` made since ``since`` (a time.time()) is left. Only these: other
    modules run tasks in cgroups at the same time under xdist, and other checkouts on this machine
    (their cpu / blkio parents may be shared) may run the same DAGs; groups another pid namespace
    made are not this run's either. When this harness killed a ``dags test`` (see above), its
    executor died before it released the groups of its last tasks: the next backend to start
    removes them (``CgroupBackend.remove_abandoned``), as a restarted scheduler does in production."""
    import glob

    from airflow_predictive.backends.cgroups import owner

    ns = owner.pid_namespace()

    def ours(path: str) -> bool:
        made_by = owner.maker(os.path.basename(path))
        try:
            made_at = os.stat(path).st_mtime  # a cgroup folder's time is its creation's
        except OSError:
            return False
        return made_at >= since - 1 and (made_by is None or made_by[2] == ns)

    def left() -> list[str]:
        return sorted(
            {
                os.path.realpath(path)  # v1 co-mounts appear under several (symlinked) names
                for dag in dags
                for path in glob.glob(f"/sys/fs/cgroup/**/airflow-predictive/{dag}*/", recursive=True)
                if ours(path.rstrip("/"))
            }
        )

    texts = list(outputs)
    found = left()
    if found and any(HARNESS_KILLED in out for out in texts):
        from airflow_predictive.backends.cgroups.backend import CgroupBackend

        removed = CgroupBackend().remove_abandoned()
        assert set(found) <= {os.path.realpath(r) for r in removed}, (found, removed)
        found = left()
    said = [line for out in texts for line in out.splitlines() if "cgroup" in line and "predictive" in line]
    assert found == [], "\n".join([*found, *said[-20:]])
