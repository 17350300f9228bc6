"""An in-process emulator on a manual clock: tests call the API directly and move time."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from airflow_predictive.emulator.kubernetes.api import Request, Response
from airflow_predictive.emulator.kubernetes.emulator import Emulator, NodeSpec
from airflow_predictive.emulator.kubernetes.kubelet import KubeletConfig
from airflow_predictive.emulator.kubernetes.patch import STRATEGIC
from airflow_predictive.emulator.kubernetes.workload import WORKLOAD_ANNOTATION


class StepClock:
    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.t)


def container(
    name: str = "c",
    *,
    requests: dict[str, str] | None = None,
    limits: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return {"name": name, "image": "busybox", "resources": resources, **extra}


BURSTABLE = container(requests={"cpu": "250m", "memory": "128Mi"}, limits={"cpu": "500m", "memory": "256Mi"})


@dataclass
class Cluster:
    em: Emulator
    clock: StepClock

    def call(
        self, method: str, path: str, body: Any = None, ctype: str = "application/json", **query: str
    ) -> Response:
        return self.em.api.handle(Request(method, path, dict(query), body, ctype))

    def create_pod(
        self, name: str, *containers: dict[str, Any], workload: Any = None, **spec: Any
    ) -> Response:
        meta: dict[str, Any] = {"name": name, "labels": {"app": "t"}}
        if workload is not None:
            meta["annotations"] = {WORKLOAD_ANNOTATION: json.dumps(workload)}
        body = {"metadata": meta, "spec": {"containers": list(containers or [BURSTABLE]), **spec}}
        return self.call("POST", "/api/v1/namespaces/default/pods", body)

    def pod(self, name: str) -> dict[str, Any]:
        r = self.call("GET", f"/api/v1/namespaces/default/pods/{name}")
        assert r.status == 200, r.body
        return dict(r.body)

    def resize(self, name: str, containers: list[dict[str, Any]], ctype: str = STRATEGIC) -> Response:
        return self.call(
            "PATCH",
            f"/api/v1/namespaces/default/pods/{name}/resize",
            {"spec": {"containers": containers}},
            ctype,
        )

    def advance(self, seconds: float, step: float = 0.5) -> None:
        self.em.tick()
        remaining = seconds
        while remaining > 1e-9:
            dt = min(step, remaining)
            self.clock.t += dt
            remaining -= dt
            self.em.tick()

    def conditions(self, name: str) -> dict[str, dict[str, Any]]:
        return {c["type"]: c for c in self.pod(name)["status"].get("conditions", [])}


def make_cluster(*, cpu: str = "4", memory: str = "16Gi", delay: float = 2.0, gpus: int = 0) -> Cluster:
    clock = StepClock()
    em = Emulator(
        clock=clock,
        kubelet=KubeletConfig(actuation_delay_s=delay, start_delay_s=0.0, metrics_window_s=10.0),
        nodes=(NodeSpec(cpu=cpu, memory=memory, gpus=gpus),),
        auto_tick=False,
    )
    return Cluster(em, clock)


@pytest.fixture
def cluster() -> Cluster:
    return make_cluster()
