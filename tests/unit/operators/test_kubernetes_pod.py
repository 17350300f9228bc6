"""PredictiveKubernetesPodOperator extends the parent only through its seams and falls back to
the declared container_resources whenever prediction is unavailable."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client import models as k8s

from airflow_predictive.operators.kubernetes_pod import (
    SHAPING_LABEL,
    PredictiveKubernetesPodOperator,
    _Shaping,
)

DECLARED = k8s.V1ResourceRequirements(
    requests={"cpu": "200m", "memory": "64Mi"}, limits={"cpu": "1", "memory": "128Mi"}
)


def _op(**kwargs: Any) -> PredictiveKubernetesPodOperator:
    return PredictiveKubernetesPodOperator(
        task_id="t",
        image="python:3.11-slim",
        cmds=["python", "-c", "pass"],
        container_resources=DECLARED,
        **kwargs,
    )


class Broken:
    def forecasts(self) -> Any:
        raise ConnectionError("predictive database down")


def test_prediction_unavailable_runs_with_the_declared_resources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("airflow_predictive.runtime.get_runtime", lambda: Broken())
    op = _op()
    pod = op.build_pod_request_obj(dry_run=True)
    base = pod.spec.containers[0]
    assert base.resources.limits == {"cpu": "1", "memory": "128Mi"}
    assert base.resources.requests == {"cpu": "200m", "memory": "64Mi"}
    assert "predictive sizing unavailable" in op.plan_note and "database down" in op.plan_note
    assert pod.metadata.labels[SHAPING_LABEL]  # still shaped: the shaper finds it by this label
    assert {p.resource_name: p.restart_policy for p in base.resize_policy} == {
        "cpu": "NotRequired",
        "memory": "NotRequired",
    }


def test_predictive_false_is_exactly_the_parent() -> None:
    op = _op(predictive=False)
    pod = op.build_pod_request_obj(dry_run=True)
    assert SHAPING_LABEL not in pod.metadata.labels
    assert _Shaping not in op.callbacks


def test_shaping_is_attached_through_callbacks_next_to_the_users() -> None:
    class Mine(_Shaping.__mro__[1]):  # a user's own KubernetesPodOperatorCallback
        pass

    op = _op(callbacks=Mine)
    assert op.callbacks == [Mine, _Shaping]


def test_bad_arguments_fail_when_the_dag_is_parsed() -> None:
    with pytest.raises(ValueError, match="shadow_run"):
        _op(shadow_run="sometimes")
    with pytest.raises(ValueError, match="unknown shaping settings"):
        _op(shaping={"tolerence": 0.1})


def test_deferrable_mode_wraps_the_parents_trigger_and_it_serialises_with_shaping() -> None:
    import importlib

    from airflow.providers.cncf.kubernetes.triggers.pod import KubernetesPodTrigger
    from airflow.sdk.exceptions import TaskDeferred

    from airflow_predictive.triggers.kubernetes_pod import PredictiveKubernetesPodTrigger

    op = _op(deferrable=True, shaping_interval_s=0.5)
    parent = KubernetesPodTrigger(
        pod_name="p-1", pod_namespace="default", trigger_start_time=None, base_container_name="base"
    )
    with pytest.raises(TaskDeferred) as deferred:
        op.defer(trigger=parent, method_name="trigger_reentry")
    trigger = deferred.value.trigger
    assert isinstance(trigger, PredictiveKubernetesPodTrigger) and trigger.pod_name == "p-1"
    path, kwargs = trigger.serialize()
    module, _, name = path.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert rebuilt.serialize() == (path, kwargs)
    assert kwargs["shaping_interval_s"] == 0.5 and kwargs["shaping"]["tolerance"] == 0.15


def test_the_shadow_pod_carries_an_active_deadline_of_its_budget_plus_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker dying mid-shadow must not leave the shadow pod running: the kubelet ends it."""
    from types import SimpleNamespace

    from airflow_predictive.backends.kubernetes.settings import KubernetesSettings
    from airflow_predictive.backends.kubernetes.translate import pod_manifest
    from airflow_predictive.core.model.backend import Allocation
    from airflow_predictive.operators import kubernetes_pod as module

    budget = SimpleNamespace(seconds=12.0, note="12 s")
    plan = SimpleNamespace(decision=SimpleNamespace(run=True, note="cold start"), budget=budget)
    monkeypatch.setattr(
        "airflow_predictive.operators.shadow_run.ShadowCalibration.plan", lambda self, mode: plan
    )
    monkeypatch.setattr(
        "airflow_predictive.operators.shadow_run.shadow_settings",
        lambda: SimpleNamespace(sample_interval_s=1.0),
    )
    provisioned: list[Any] = []

    class Backend:
        def provision(self, spec: Any, allocation: Any) -> Any:
            provisioned.append(spec)
            raise ConnectionError("cluster gone")  # the shadow fails: the real pod goes on

    def run_shadow(backend: Any, start: Any, budget: Any, **kw: Any) -> Any:
        return start(Allocation())

    monkeypatch.setattr("airflow_predictive.core.shadow.runner.run_shadow", run_shadow)
    op = _op(shadow_run=True)
    monkeypatch.setattr(op, "_shadow_backend", lambda namespace: Backend())
    pod = op.build_pod_request_obj(dry_run=True)
    summary = op._shadow({"run_id": "r1"}, pod, pod.spec.containers[0])
    assert summary["shadowed"] is False and "cluster gone" in summary["note"]
    (spec,) = provisioned
    assert spec.deadline_s == 12.0 + module.SHADOW_DEADLINE_GRACE_S
    manifest = pod_manifest(spec, Allocation(), KubernetesSettings())
    assert manifest["spec"]["activeDeadlineSeconds"] == 42


def test_pod_sampler_adds_the_in_pod_sampler_under_the_trys_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from airflow_predictive.backends.kubernetes.pod_sampler import SAMPLER_CONTAINER

    monkeypatch.setattr("airflow_predictive.runtime.get_runtime", lambda: Broken())
    ti = SimpleNamespace(dag_id="adhoc", task_id="t", try_number=3, map_index=-1)
    op = _op(pod_sampler=True, pod_sampler_store_secret="predictive-db:url")
    context = {"run_id": "r1", "ti": ti, "dag": SimpleNamespace()}
    pod = op.build_pod_request_obj(context, dry_run=True)  # type: ignore[arg-type]
    assert pod.spec.share_process_namespace is True
    sidecar = pod.spec.init_containers[0]
    assert sidecar.name == SAMPLER_CONTAINER and sidecar.image == "python:3.11-slim"
    assert sidecar.command[sidecar.command.index("--try-number") + 1] == "3"
    assert not _op().build_pod_request_obj(dry_run=True).spec.init_containers  # off by default
    with pytest.raises(ValueError, match="secret-name:key"):
        _op(pod_sampler=True, pod_sampler_store_secret="no-key")


def _ramp_forecast() -> Any:
    import numpy as np

    from airflow_predictive.core.model.resources import MIB, Metric
    from airflow_predictive.core.model.series import DemandCurve, Forecast

    ramp = np.linspace(50 * MIB, 600 * MIB, 19)
    mem = DemandCurve(Metric.MEMORY_BYTES, 5.0, {0.5: ramp, 0.9: ramp * 1.05, 0.99: ramp * 1.1})
    cpu = DemandCurve(Metric.CPU_CORES, 5.0, {0.5: np.full(19, 0.3), 0.9: np.full(19, 0.4)})
    return Forecast({Metric.MEMORY_BYTES: mem, Metric.CPU_CORES: cpu}, {0.5: 90.0, 0.9: 95.0}, "scaled_curve")


class Learned:
    """A runtime whose store serves a learned memory ramp (what training would have left)."""

    def __init__(self) -> None:
        from airflow_predictive.core.model.query import ForecastSource, ServedForecast

        self.served = ServedForecast(_ramp_forecast(), ForecastSource.TASK, note="champion")

    def forecasts(self) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(forecast_for=lambda query: self.served)

    def shaping_events(self) -> Any:
        raise ConnectionError("no event store in this test")

    def shaping_reforecast(self, expectation: object, options: Any) -> dict[str, Any]:
        from airflow_predictive.runtime import Runtime

        return Runtime.shaping_reforecast(self, expectation, options)  # type: ignore[arg-type]


def test_the_pod_is_shaped_along_the_forecast_and_plan_it_was_sized_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_predictive.core.model.resources import Metric
    from airflow_predictive.core.shaping.expectation import ForecastExpectation

    runtime = Learned()
    monkeypatch.setattr("airflow_predictive.runtime.get_runtime", lambda: runtime)
    op = _op(risk={"memory": 0.99})
    pod = op.build_pod_request_obj(dry_run=True)
    assert "planned from task" in op.plan_note
    shaper = op._shaper(pod)
    assert isinstance(shaper.expectation, ForecastExpectation)
    assert shaper.expectation.forecast is runtime.served.forecast
    assert shaper.expectation.quantiles[Metric.MEMORY_BYTES] == 0.99  # the quantile it was sized at
    assert shaper.plan is not None and shaper.plan.allocation_at(0.0) is not None
    assert shaper.reforecast is not None  # [predictive] shaping_reforecast_interval is on by default
    assert shaper.options is not None and shaper.options.reforecast_every_s == 60.0


def test_without_a_learned_forecast_the_pod_is_shaped_on_usage_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("airflow_predictive.runtime.get_runtime", lambda: Broken())
    op = _op()
    pod = op.build_pod_request_obj(dry_run=True)
    shaper = op._shaper(pod)
    assert shaper.expectation is None and shaper.plan is None and shaper.reforecast is None


def test_the_deferred_trigger_carries_the_forecast_and_rebuilds_it_after_a_restart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib
    import json

    import numpy as np
    from airflow.providers.cncf.kubernetes.triggers.pod import KubernetesPodTrigger
    from airflow.sdk.exceptions import TaskDeferred

    from airflow_predictive.core.model.resources import Metric
    from airflow_predictive.triggers.pod_shaper import expectation_from_primitives, plan_from_primitives

    runtime = Learned()
    monkeypatch.setattr("airflow_predictive.runtime.get_runtime", lambda: runtime)
    op = _op(deferrable=True, risk={"memory": 0.99})
    op.build_pod_request_obj(dry_run=True)
    parent = KubernetesPodTrigger(
        pod_name="p-1", pod_namespace="default", trigger_start_time=None, base_container_name="base"
    )
    with pytest.raises(TaskDeferred) as deferred:
        op.defer(trigger=parent, method_name="trigger_reentry")
    path, kwargs = deferred.value.trigger.serialize()
    kwargs = json.loads(json.dumps(kwargs))  # what the triggerer reads back from the database
    module, _, name = path.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    expectation = expectation_from_primitives(rebuilt.shaping_forecast)
    assert expectation is not None
    sent = runtime.served.forecast.curve(Metric.MEMORY_BYTES)
    got = expectation.forecast.curve(Metric.MEMORY_BYTES)
    assert got.step_s == sent.step_s
    assert np.allclose(got.at(0.99), sent.at(0.99))
    assert expectation.quantiles == {Metric.MEMORY_BYTES: 0.99}  # the sizing quantile, as planned
    assert expectation.forecast.duration_s == {0.5: 90.0, 0.9: 95.0}
    planned = op._along[2] if op._along is not None else None
    assert planned is not None and planned.steps  # a ramp: the plan has timed steps
    assert plan_from_primitives(rebuilt.shaping_plan) == planned  # the same initial, steps, quantiles


def test_an_unreadable_plan_in_the_trigger_kwargs_shapes_along_the_forecast_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from airflow_predictive.triggers.pod_shaper import plan_from_primitives

    with caplog.at_level("WARNING"):
        assert plan_from_primitives({"initial": {}, "steps": [{"at_s": "soon"}]}) is None
    assert "timed steps" in caplog.text and "unreadable" in caplog.text
    assert plan_from_primitives(None) is None


def test_an_unreadable_forecast_in_the_trigger_kwargs_shapes_on_usage_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from airflow_predictive.triggers.pod_shaper import expectation_from_primitives

    broken = {"curves": "{not json", "duration": "{}", "estimator": "x", "peak_only": False}
    with caplog.at_level("WARNING", logger="airflow_predictive.triggers.pod_shaper"):
        assert expectation_from_primitives(broken) is None
    assert "unreadable" in caplog.text
    assert expectation_from_primitives(None) is None
