"""The shaping sensor through a real Airflow (API server, triggerer, `dags test --use-executor`):
in deferrable mode the real triggerer process shapes a ramping emulator pod, the triggerer is
restarted mid-run, the new one takes over, the pod completes, and the events are stored."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from airflow_predictive.backends.kubernetes.backend import KubernetesPodBackend
from airflow_predictive.core.model.backend import Allocation, ExitKind, ProvisionSpec
from airflow_predictive.core.model.resources import MIB, ResourceVector
from airflow_predictive.core.shaping.events import Action, Verdict
from airflow_predictive.emulator.kubernetes.emulator import Emulator, NodeSpec
from airflow_predictive.emulator.kubernetes.kubelet import KubeletConfig
from airflow_predictive.emulator.kubernetes.workload import WORKLOAD_ANNOTATION
from airflow_predictive.storage.engine import engine_for
from airflow_predictive.storage.shaping_store import SqlShapingEventStore
from tests.integration.airflow_runs.airflow_env import AIRFLOW, AirflowEnv, free_port

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.airflow
HERE = Path(__file__).resolve().parent
START = Allocation(
    ResourceVector(cpu_cores=0.2, memory_bytes=100 * MIB),
    ResourceVector(cpu_cores=1.0, memory_bytes=120 * MIB),
)


def _ti_state(db: Path) -> str | None:
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        row = conn.execute(
            "SELECT state FROM task_instance WHERE dag_id = 'shaping_sensor' AND task_id = 'shape'"
        ).fetchone()
    return None if row is None else str(row[0])


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_deferred_sensor_shapes_a_pod_from_the_triggerer_and_survives_its_restart(tmp_path: Path) -> None:
    em = Emulator(
        kubelet=KubeletConfig(actuation_delay_s=1.8, metrics_window_s=1.0),
        nodes=(NodeSpec(cpu="8", memory="8Gi"),),
    ).start()
    kubeconfig = em.write_kubeconfig(tmp_path / "kc")
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "shaping_sensor.py").symlink_to(HERE / "dags" / "shaping_sensor.py")
    extra = {
        "SHAPING_TEST_KUBECONFIG": str(kubeconfig),
        # 8793 / 8794 belong to other Airflows on this machine: our log servers take free ports
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
    }
    env = AirflowEnv.create(tmp_path / "home", extra, dags_folder=dags)
    backend = KubernetesPodBackend.from_kubeconfig(str(kubeconfig))
    try:
        env.migrate()
        env.start_api_server()
        env.start_triggerer()
        run = subprocess.Popen(
            [
                AIRFLOW,
                "dags",
                "test",
                "shaping_sensor",
                "-c",
                json.dumps({"selector": "predictive.airflow.apache.org/task=sensed"}),
                "--use-executor",
            ],
            env=env.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        logs = env.home / "logs"
        _wait(lambda: any(logs.rglob("*.log.trigger.*.log")), 240, "the sensor to defer to the triggerer")
        # then the pod: ramps 40 -> 240 MiB over 100 s (past its 120 MiB limit) and ends; 2 MiB/s, so
        # the ~22 s a trigger takes to move (Airflow's ~10 s, then ~11 s to its first round on this
        # loaded 2-core box, mostly importing the kubernetes client) cost ~45 MiB, covered by one
        # grow of the DAG's grow_margin 1.0
        points = [{"t": 0, "memory": "40Mi"}, {"t": 100, "memory": "240Mi"}]
        body = {"points": [{**p, "cpu": 0.1} for p in points], "duration": 100}
        handle = backend.provision(
            ProvisionSpec(
                name="sensed",
                command=("python", "-c", "pass"),
                annotations={WORKLOAD_ANNOTATION: json.dumps(body)},
            ),
            START,
        )

        def limit_mb() -> float:
            [h] = backend.find("predictive.airflow.apache.org/task=sensed")
            return (h.allocation.limits.memory_bytes or 0) / MIB

        first = env.triggerer
        assert first is not None
        # a second triggerer beside the first (HA): the trigger moves to it when the first stops
        second_log = open(env.home / "triggerer-2.log", "wb")  # noqa: SIM115 - kept open for its life
        second = subprocess.Popen(
            [AIRFLOW, "triggerer"],
            env=env.env,
            stdout=second_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait(lambda: limit_mb() > 120, 120, "the first triggerer's first grow")
        os.killpg(first.pid, signal.SIGTERM)  # the triggerer shaping the pod goes away mid-run
        first.wait(timeout=60)
        at_restart = limit_mb()
        env.triggerer = second  # stopped with the others at the end
        # the task instance's state in Airflow's database is the verdict: `dags test` itself does
        # not always exit after a trigger moved between triggerers (it keeps polling)
        _wait(
            lambda: _ti_state(env.home / "airflow.db") in ("success", "failed"), 400, "the sensor to finish"
        )
        assert _ti_state(env.home / "airflow.db") == "success"
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGTERM)
            run.wait(timeout=60)
        assert backend.state(handle).kind is ExitKind.SUCCEEDED  # never OOM-killed
        assert limit_mb() > at_restart  # the second triggerer kept growing it
        events = SqlShapingEventStore(engine_for(env.predictive_url)).events(subject="default/sensed")
        grows = [e for e in events if e.action is Action.GROW and e.verdict is Verdict.APPLIED]
        assert len(grows) >= 2, [(e.verdict, e.reason) for e in events]
    finally:
        env.stop()
        backend.close()
        em.stop()
