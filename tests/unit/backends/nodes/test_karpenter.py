from __future__ import annotations

import json

import pytest

from airflow_predictive.backends.nodes.karpenter import (
    INSTANCE_TYPES_ANNOTATION,
    format_duration,
    from_object,
    node_labels,
    parse_duration,
    to_object,
)
from airflow_predictive.core.model.nodes import InstanceType, InvalidNodePool, NodePool
from airflow_predictive.core.model.resources import GIB, ResourceVector

LARGE = InstanceType("m5.2xlarge", ResourceVector(cpu_cores=8, memory_bytes=30 * GIB), 0.38)
SMALL = InstanceType("m5.large", ResourceVector(cpu_cores=2, memory_bytes=7 * GIB), 0.1)


def test_a_pool_survives_the_round_trip_through_its_nodepool_object() -> None:
    pool = NodePool(
        "batch",
        (LARGE, SMALL),
        limits=ResourceVector(cpu_cores=64, memory_bytes=256 * GIB),
        provisioning_delay_s=90,
        consolidate_after_s=None,
        labels=(("team", "data"),),
    )
    obj = to_object(pool)
    assert obj["apiVersion"] == "karpenter.sh/v1" and obj["spec"]["limits"] == {
        "cpu": "64000m",
        "memory": "262144Mi",
    }
    assert obj["spec"]["disruption"]["consolidateAfter"] == "Never"
    assert from_object(obj) == pool


def test_instance_types_outside_the_requirements_are_left_out() -> None:
    obj = to_object(NodePool("p", (LARGE, SMALL)))
    obj["spec"]["template"]["spec"]["requirements"][0]["values"] = ["m5.large"]
    assert [t.name for t in from_object(obj).instance_types] == ["m5.large"]


def test_a_nodepool_without_a_catalog_or_with_a_broken_one_is_refused() -> None:
    obj = to_object(NodePool("p", (LARGE,)))
    obj["metadata"]["annotations"][INSTANCE_TYPES_ANNOTATION] = json.dumps([{"name": "x", "cpu": "lots"}])
    with pytest.raises(InvalidNodePool):
        from_object(obj)
    del obj["metadata"]["annotations"][INSTANCE_TYPES_ANNOTATION]
    with pytest.raises(InvalidNodePool):  # no instance type known: nothing to plan with
        from_object(obj)


def test_go_durations() -> None:
    assert parse_duration("90s") == 90 and parse_duration("1m30s") == 90 and parse_duration("500ms") == 0.5
    assert parse_duration("Never") is None
    assert format_duration(2.5) == "2500ms" and format_duration(None) == "Never"
    with pytest.raises(InvalidNodePool):
        parse_duration("soon")


def test_node_labels_name_the_pool_and_the_instance_type() -> None:
    labels = node_labels(NodePool("batch", (LARGE,), labels=(("team", "data"),)), LARGE)
    assert labels == {
        "team": "data",
        "karpenter.sh/nodepool": "batch",
        "node.kubernetes.io/instance-type": "m5.2xlarge",
    }
