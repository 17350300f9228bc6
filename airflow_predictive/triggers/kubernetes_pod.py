"""``PredictiveKubernetesPodTrigger``: the KubernetesPodOperator's own trigger, which also shapes
the pod it waits for (deferrable ``PredictiveKubernetesPodOperator``).

It subclasses the provider's ``KubernetesPodTrigger`` and changes two things only: ``serialize``
adds the shaping kwargs under its own class path (a triggerer restart rebuilds it with them), and
``run`` runs the parent's ``run`` unchanged while a shaping loop (one ``PodShaper.round()`` per
``shaping_interval_s``, in a thread) runs beside it and stops with it. Shaping failures are
logged and never reach the parent's events: the pod's outcome is the parent's to report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from airflow.providers.cncf.kubernetes.triggers.pod import KubernetesPodTrigger

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from airflow.triggers.base import TriggerEvent

log = logging.getLogger(__name__)
CLASSPATH = "airflow_predictive.triggers.kubernetes_pod.PredictiveKubernetesPodTrigger"
SHAPING_LABEL = "predictive.airflow.apache.org/shaped"


class PredictiveKubernetesPodTrigger(KubernetesPodTrigger):
    """``KubernetesPodTrigger`` plus in-flight shaping of its pod (found by the shaping label)."""

    def __init__(
        self,
        *,
        shaping: dict[str, Any] | None = None,
        shaping_interval_s: float = 2.0,
        shaping_kubeconfig: str | None = None,
        shaping_run_key: str = "",
        shaping_forecast: dict[str, Any] | None = None,
        shaping_plan: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.shaping = dict(shaping or {})
        self.shaping_interval_s = float(shaping_interval_s)
        self.shaping_kubeconfig = shaping_kubeconfig
        self.shaping_run_key = shaping_run_key
        # the try's at-start forecast (``pod_shaper.forecast_primitives``): shaped along it
        self.shaping_forecast = dict(shaping_forecast) if shaping_forecast else None
        # its plan (``core/scheduling/codec.plan_to_dict``): the timed steps the shaper follows
        self.shaping_plan = dict(shaping_plan) if shaping_plan else None

    @classmethod
    def wrapping(cls, trigger: KubernetesPodTrigger, **shaping: Any) -> PredictiveKubernetesPodTrigger:
        """The same trigger (the parent's own kwargs), with shaping."""
        _, kwargs = trigger.serialize()
        return cls(**kwargs, **shaping)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        return (
            CLASSPATH,
            {
                **kwargs,
                "shaping": self.shaping,
                "shaping_interval_s": self.shaping_interval_s,
                "shaping_kubeconfig": self.shaping_kubeconfig,
                "shaping_run_key": self.shaping_run_key,
                "shaping_forecast": self.shaping_forecast,
                "shaping_plan": self.shaping_plan,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        shaping = asyncio.ensure_future(self._shape())
        try:
            async for event in super().run():
                yield event
        finally:
            shaping.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await shaping

    async def _shape(self) -> None:
        from airflow_predictive.backends.kubernetes.translate import label_value
        from airflow_predictive.core.shaping.codec import settings_from_dict
        from airflow_predictive.triggers.pod_shaper import (
            PodShaper,
            PodTarget,
            expectation_from_primitives,
            plan_from_primitives,
            shaping_along,
            store_sidecar_usage,
        )

        target = PodTarget(
            selector=f"{SHAPING_LABEL}={label_value(self.pod_name)}",
            namespace=self.pod_namespace,
            container=self.base_container_name,
            conn_id=self.kubernetes_conn_id,
            kubeconfig=self.shaping_kubeconfig,
        )
        shaper = None
        try:
            events = None
            try:
                from airflow_predictive.runtime import get_runtime

                events = await asyncio.to_thread(lambda: get_runtime().shaping_events())
            except Exception as exc:
                log.info("shaping events will not be stored: %s", exc)
            sidecar = await asyncio.to_thread(store_sidecar_usage)
            along = await asyncio.to_thread(
                lambda: shaping_along(expectation_from_primitives(self.shaping_forecast))
            )
            plan = plan_from_primitives(self.shaping_plan) if along else None  # steps need a forecast
            shaper = PodShaper(
                target,
                settings_from_dict(self.shaping),
                events=events,
                run_key=self.shaping_run_key,
                sidecar=sidecar,
                plan=plan,
                **along,
            )
            while True:
                report = await asyncio.to_thread(shaper.round)
                if report.done:
                    return
                await asyncio.sleep(self.shaping_interval_s)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("shaping of pod %s stopped; the pod keeps its resources", self.pod_name)
        finally:
            if shaper is not None:
                await asyncio.to_thread(shaper.close)
