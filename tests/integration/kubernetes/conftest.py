"""The emulator on a real HTTP port with a manual clock: clients talk HTTP, tests move time."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from airflow_predictive.backends.kubernetes.backend import KubernetesPodBackend
from airflow_predictive.backends.kubernetes.settings import KubernetesSettings
from airflow_predictive.core.model.backend import ProvisionSpec
from airflow_predictive.emulator.kubernetes.emulator import Emulator, NodeSpec
from airflow_predictive.emulator.kubernetes.kubelet import KubeletConfig
from airflow_predictive.emulator.kubernetes.workload import WORKLOAD_ANNOTATION

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

_names = itertools.count()


class StepClock:
    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.t)


@pytest.fixture
def clock() -> StepClock:
    return StepClock()


@pytest.fixture
def emulator(clock: StepClock) -> Iterator[Emulator]:
    em = Emulator(
        clock=clock,
        kubelet=KubeletConfig(actuation_delay_s=1.8, metrics_window_s=10.0),
        nodes=(NodeSpec(cpu="8", memory="32Gi", gpus=2),),
        auto_tick=False,
        watch_poll_s=0.05,
    ).start()
    yield em
    em.stop()


@pytest.fixture
def kubeconfig(emulator: Emulator, tmp_path: Path) -> Path:
    return emulator.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def advance_time(emulator: Emulator, clock: StepClock) -> Callable[[float], None]:
    def advance(seconds: float) -> None:
        emulator.tick()
        remaining = seconds
        while remaining > 1e-9:
            step = min(0.1, remaining)
            clock.t += step
            remaining -= step
            emulator.tick()

    return advance


@pytest.fixture
def backend(
    kubeconfig: Path, clock: StepClock, advance_time: Callable[[float], None]
) -> Iterator[KubernetesPodBackend]:
    b = KubernetesPodBackend.from_kubeconfig(
        str(kubeconfig), settings=KubernetesSettings(backoff_base_s=0.05), clock=clock, sleep=advance_time
    )
    yield b
    b.close()


def curve(memory_mb: float, cpu: float, seconds: float | None, *, ramp_s: float = 1.0) -> str:
    """A workload annotation: memory ramps to ``memory_mb`` within ``ramp_s``, CPU constant."""
    body: dict[str, object] = {
        "points": [
            {"t": 0, "cpu": cpu, "memory": "4Mi"},
            {"t": ramp_s, "cpu": cpu, "memory": f"{int(memory_mb * 1024)}Ki"},
        ]
    }
    if seconds is not None:
        body["duration"] = seconds
    return json.dumps(body)


@pytest.fixture
def make_workload() -> Callable[[float, bool, float], ProvisionSpec]:
    def make(memory_mb: float, cpu_busy: bool, seconds: float) -> ProvisionSpec:
        return ProvisionSpec(
            name=f"task-{next(_names)}",
            image="python:3.11-slim",
            command=("python", "-c", "pass"),
            labels={"dag_id": "d", "task_id": "t"},
            annotations={WORKLOAD_ANNOTATION: curve(memory_mb, 1.0 if cpu_busy else 0.01, seconds)},
        )

    return make


def require_cgroups() -> None:
    """The process kubelet needs a writable cgroup hierarchy: fail in CI, skip elsewhere."""
    from tests._real_parts import require_cgroups as require

    require("cpu", "memory")


@pytest.fixture(scope="module")
def process_emulator() -> Iterator[Emulator]:
    """An emulator whose kubelet runs containers as real processes under cgroups (system clock)."""
    require_cgroups()
    em = Emulator(
        mode="process",
        kubelet=KubeletConfig(actuation_delay_s=0.5, backoff_base_s=0.5, metrics_window_s=2.0),
        nodes=(NodeSpec(cpu="4", memory="8Gi"),),
        watch_poll_s=0.05,
    ).start()
    yield em
    em.stop()
