"""``ResourceShapingTrigger``: shapes the pods a label selector finds, from the triggerer.

Why a trigger: a deferred sensor or operator holds no worker slot while its pods run; one
triggerer process shapes hundreds of pods. Every interval it runs one ``PodShaper.round()`` in a
thread (the round does blocking HTTP; the event loop stays free) and ends with one event when
every pod it found has ended. ``serialize()`` returns its class path and primitives only: after a
triggerer restart Airflow rebuilds it with ``cls(**kwargs)`` and it finds its pods, their
resizes in flight and its start time again from the cluster and ``started_at``. It never fails
the task it serves: a cluster that cannot be reached, or pods that never appear, end in an
event that says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

log = logging.getLogger(__name__)
CLASSPATH = "airflow_predictive.triggers.shaping.ResourceShapingTrigger"


class ResourceShapingTrigger(BaseTrigger):
    """Shape every pod matching ``selector`` every ``interval_s`` until all of them have ended.

    settings: ``ShapingSettings`` as primitives (``core/shaping/codec.settings_to_dict``).
    started_at: epoch seconds the shaped run started (kept across triggerer restarts).
    wait_for_pods_s: how long to wait for a first pod before giving up (event status "not_found").
    store_events: store shaping events in the provider's database.
    sidecar_usage: read the pods' usage from the in-pod sampler's samples in the provider's
        database when they are fresh (metrics.k8s.io otherwise; ``backends/kubernetes/pod_samples``).
    """

    def __init__(
        self,
        *,
        selector: str,
        namespace: str = "default",
        container: str = "task",
        conn_id: str | None = None,
        kubeconfig: str | None = None,
        interval_s: float = 2.0,
        settings: dict[str, Any] | None = None,
        started_at: float | None = None,
        wait_for_pods_s: float = 300.0,
        run_key: str = "",
        reservation_id: str | None = None,
        store_events: bool = True,
        sidecar_usage: bool = True,
    ) -> None:
        super().__init__()
        self.selector = selector
        self.namespace = namespace
        self.container = container
        self.conn_id = conn_id
        self.kubeconfig = kubeconfig
        self.interval_s = float(interval_s)
        self.settings = dict(settings or {})
        self.started_at = float(started_at) if started_at is not None else time.time()
        self.wait_for_pods_s = float(wait_for_pods_s)
        self.run_key = run_key
        self.reservation_id = reservation_id
        self.store_events = store_events
        self.sidecar_usage = sidecar_usage

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            CLASSPATH,
            {
                "selector": self.selector,
                "namespace": self.namespace,
                "container": self.container,
                "conn_id": self.conn_id,
                "kubeconfig": self.kubeconfig,
                "interval_s": self.interval_s,
                "settings": self.settings,
                "started_at": self.started_at,
                "wait_for_pods_s": self.wait_for_pods_s,
                "run_key": self.run_key,
                "reservation_id": self.reservation_id,
                "store_events": self.store_events,
                "sidecar_usage": self.sidecar_usage,
            },
        )

    def build_shaper(self) -> Any:
        from airflow_predictive.core.shaping.codec import settings_from_dict
        from airflow_predictive.triggers.pod_shaper import PodShaper, PodTarget, store_sidecar_usage

        events = ledger = None
        if self.store_events or self.reservation_id:
            try:
                from airflow_predictive.runtime import get_runtime

                runtime = get_runtime()
                events = runtime.shaping_events() if self.store_events else None
                ledger = runtime.ledger() if self.reservation_id else None
            except Exception as exc:  # storage not configured: shape anyway, without records
                log.warning("shaping events / ledger unavailable, shaping without them: %s", exc)
        target = PodTarget(self.selector, self.namespace, self.container, self.conn_id, self.kubeconfig)
        return PodShaper(
            target,
            settings_from_dict(self.settings),
            started_at=self.started_at,
            events=events,
            ledger=ledger,
            reservation_id=self.reservation_id,
            run_key=self.run_key,
            sidecar=store_sidecar_usage() if self.sidecar_usage else None,
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            shaper = await asyncio.to_thread(self.build_shaper)
        except Exception as exc:
            yield TriggerEvent({"status": "error", "message": f"shaping could not start: {exc}"})
            return
        first_seen = time.monotonic()
        try:
            while True:
                started = time.monotonic()
                report = await asyncio.to_thread(shaper.round)
                if report.done:
                    yield TriggerEvent({"status": "done", **report.as_event()})
                    return
                if report.found == 0 and time.monotonic() - first_seen > self.wait_for_pods_s:
                    yield TriggerEvent(
                        {
                            "status": "not_found",
                            **report.as_event(),
                            "message": f"no pod matches {self.selector!r}",
                        }
                    )
                    return
                await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))
        finally:
            await asyncio.to_thread(shaper.close)
