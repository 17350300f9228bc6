from __future__ import annotations

import re

from airflow_predictive.backends.nodes.placeholders import (
    EXPIRES_ANNOTATION,
    PlaceholderSettings,
    parse_iso,
    placeholder_pod,
    plan_label,
    pod_name,
    priority_class,
    steer,
)
from airflow_predictive.core.model.nodes import WarmCapacity
from airflow_predictive.core.model.resources import GIB, ResourceVector

WARM = WarmCapacity(
    "highmem",
    ResourceVector(cpu_cores=2, memory_bytes=40 * GIB),
    ready_by=1_767_225_600.0,
    expires_at=1_767_226_200.0,
    for_plan="etl/transform/manual__2026-01-01T00:00:00+00:00/1",
)
DNS = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def test_a_placeholder_is_a_pause_pod_at_negative_priority_pinned_to_its_pool() -> None:
    pod = placeholder_pod(WARM, PlaceholderSettings())
    spec = pod["spec"]
    assert (
        spec["priorityClassName"] == "predictive-placeholder" and spec["terminationGracePeriodSeconds"] == 0
    )
    assert spec["nodeSelector"] == {"karpenter.sh/nodepool": "highmem"}
    (c,) = spec["containers"]
    assert c["image"].startswith("registry.k8s.io/pause")
    assert c["resources"]["requests"] == {"cpu": "2000m", "memory": "40960Mi"} == c["resources"]["limits"]
    assert parse_iso(pod["metadata"]["annotations"][EXPIRES_ANNOTATION]) == WARM.expires_at


def test_the_placeholder_class_is_below_real_pods_and_above_the_expendable_cutoff() -> None:
    pc = priority_class(PlaceholderSettings())
    assert -10 <= pc["value"] < 0 and pc["preemptionPolicy"] == "Never" and pc["globalDefault"] is False


def test_names_and_labels_are_valid_and_stable_for_any_plan_key() -> None:
    name, label = pod_name(WARM.for_plan), plan_label(WARM.for_plan)
    assert DNS.match(name) and len(name) <= 63 and name == pod_name(WARM.for_plan)
    assert LABEL.match(label) and len(label) <= 63
    assert plan_label("simple-plan") == "simple-plan"
    assert plan_label("x" * 80) != plan_label("x" * 81)


def test_steering_adds_the_pool_selector_and_keeps_the_pods_own() -> None:
    spec = {"nodeSelector": {"disk": "ssd"}, "containers": []}
    out = steer(spec, "highmem")
    assert out["nodeSelector"] == {"disk": "ssd", "karpenter.sh/nodepool": "highmem"}
    assert spec["nodeSelector"] == {"disk": "ssd"}  # not changed in place
