"""``ResourceShapingSensor``: shapes running pods found by labels until they end.

Deferrable (default): it defers at once to ``ResourceShapingTrigger`` and holds no worker slot.
Poke mode (``deferrable=False``, for installations without a triggerer): each poke runs one
shaping round in the worker; keep ``mode="poke"`` (the default) so the controllers' memory
(cooldowns, dwell timers) lives between pokes; with ``mode="reschedule"`` it is rebuilt from the
cluster each time, which is correct but forgets cooldowns. The sensor succeeds when every pod it
found has ended, whatever their outcome: shaping never fails the pods' own tasks, and the
sensor's result (pushed to XCom) says how they ended.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from airflow.sdk import PokeReturnValue
from airflow.sdk.bases.sensor import BaseSensorOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_predictive.triggers.pod_shaper import PodShaper
    from airflow_predictive.triggers.shaping import ResourceShapingTrigger


class ResourceShapingSensor(BaseSensorOperator):
    """Shape the pods matching ``selector`` while they run.

    shaping: ``ShapingSettings`` as primitives (tolerance, grow_margin, cooldowns, minimum /
        maximum as {metric: value} ...); validated when the DAG is parsed.
    interval_s: shaping interval (the trigger's sleep; ``poke_interval`` in poke mode).
    """

    template_fields = ("selector", "namespace")

    def __init__(
        self,
        *,
        selector: str,
        namespace: str = "default",
        container: str = "task",
        conn_id: str | None = None,
        kubeconfig: str | None = None,
        interval_s: float = 2.0,
        shaping: dict[str, Any] | None = None,
        wait_for_pods_s: float = 300.0,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", interval_s)
        super().__init__(**kwargs)
        from airflow_predictive.core.shaping.codec import settings_from_dict

        settings_from_dict(shaping)  # a bad setting fails at parse time, not mid-run
        self.selector = selector
        self.namespace = namespace
        self.container = container
        self.conn_id = conn_id
        self.kubeconfig = kubeconfig
        self.interval_s = interval_s
        self.shaping = dict(shaping or {})
        self.wait_for_pods_s = wait_for_pods_s
        self.deferrable = deferrable
        self._shaper: PodShaper | None = None
        self._started_at: float | None = None

    def trigger(self, started_at: float) -> ResourceShapingTrigger:
        from airflow_predictive.triggers.shaping import ResourceShapingTrigger

        return ResourceShapingTrigger(
            selector=self.selector,
            namespace=self.namespace,
            container=self.container,
            conn_id=self.conn_id,
            kubeconfig=self.kubeconfig,
            interval_s=self.interval_s,
            settings=self.shaping,
            started_at=started_at,
            wait_for_pods_s=self.wait_for_pods_s,
            run_key=self._run_key(),
        )

    def execute(self, context: Context) -> Any:
        if self.deferrable:
            self.defer(trigger=self.trigger(time.time()), method_name="execute_complete")
        return super().execute(context)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        if self._shaper is None:
            self._started_at = self._started_at or time.time()
            self._shaper = self.trigger(self._started_at).build_shaper()
        report = self._shaper.round()
        self.log.info(
            "shaping %s: %d pod(s), %d running, %d resize(s), %d applied",
            self.selector,
            report.found,
            report.running,
            report.resizes,
            report.applied,
        )
        if report.done:
            self._shaper.close()
            self._shaper = None
            return PokeReturnValue(True, {"status": "done", **report.as_event()})
        if report.found == 0 and time.time() - (self._started_at or time.time()) > self.wait_for_pods_s:
            self.log.warning(
                "no pod matches %r after %.0fs: nothing to shape", self.selector, self.wait_for_pods_s
            )
            return PokeReturnValue(True, {**report.as_event(), "status": "not_found"})
        return False

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        status = event.get("status")
        if status == "done":
            self.log.info(
                "shaped %d pod(s): %d resize(s), %d applied; ended %s",
                event.get("found", 0),
                event.get("resizes", 0),
                event.get("applied", 0),
                event.get("finished"),
            )
        else:  # never fail the pods' tasks for shaping's sake: say it and succeed
            self.log.warning("shaping ended without shaping (%s): %s", status, event.get("message", ""))
        return event

    def _run_key(self) -> str:
        return f"sensor/{self.dag_id}/{self.task_id}"
