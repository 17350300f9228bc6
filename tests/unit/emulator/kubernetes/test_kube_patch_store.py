"""Strategic merge / JSON patches, the object store's versions and conflicts, quotas, faults."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from airflow_predictive.emulator.kubernetes.errors import ApiError
from airflow_predictive.emulator.kubernetes.faults import FaultRule, Faults
from airflow_predictive.emulator.kubernetes.patch import JSON_PATCH, MERGE, STRATEGIC, apply_patch
from airflow_predictive.emulator.kubernetes.resources import PODS
from airflow_predictive.emulator.kubernetes.store import Selector, Store

if TYPE_CHECKING:
    from tests.unit.emulator.kubernetes.conftest import Cluster

POD = {
    "metadata": {"labels": {"a": "1", "b": "2"}},
    "spec": {
        "containers": [
            {
                "name": "c1",
                "image": "x",
                "env": [{"name": "A", "value": "1"}],
                "resources": {"limits": {"cpu": "1"}},
            },
            {"name": "c2", "image": "y"},
        ]
    },
}


def test_strategic_merge_merges_containers_by_name_and_null_deletes() -> None:
    patch = {
        "metadata": {"labels": {"b": None, "c": "3"}},
        "spec": {
            "containers": [
                {"name": "c2", "resources": {"limits": {"cpu": "2"}}},
                {"name": "c1", "env": [{"name": "B", "value": "2"}]},
            ]
        },
    }
    out = apply_patch(STRATEGIC, POD, patch)
    assert out["metadata"]["labels"] == {"a": "1", "c": "3"}
    c1, c2 = out["spec"]["containers"]
    assert c1["name"] == "c1" and c1["image"] == "x" and c1["resources"] == {"limits": {"cpu": "1"}}
    assert c1["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert c2["resources"] == {"limits": {"cpu": "2"}} and c2["image"] == "y"
    assert POD["spec"]["containers"][1] == {"name": "c2", "image": "y"}  # input untouched


def test_strategic_merge_directives() -> None:
    deleted = apply_patch(STRATEGIC, POD, {"spec": {"containers": [{"name": "c2", "$patch": "delete"}]}})
    assert [c["name"] for c in deleted["spec"]["containers"]] == ["c1"]
    replaced = apply_patch(STRATEGIC, POD, {"metadata": {"labels": {"$patch": "replace", "z": "9"}}})
    assert replaced["metadata"]["labels"] == {"z": "9"}
    with pytest.raises(ApiError) as err:
        apply_patch(STRATEGIC, POD, {"spec": {"containers": [{"image": "no-name"}]}})
    assert err.value.code == 400 and "does not contain declared merge key: name" in err.value.message


def test_json_merge_patch_replaces_lists_and_json_patch_edits_paths() -> None:
    merged = apply_patch(MERGE, POD, {"spec": {"containers": [{"name": "only"}]}})
    assert merged["spec"]["containers"] == [{"name": "only"}]
    ops = [
        {"op": "replace", "path": "/spec/containers/0/image", "value": "z"},
        {"op": "add", "path": "/metadata/labels/d", "value": "4"},
        {"op": "remove", "path": "/spec/containers/1"},
        {"op": "test", "path": "/metadata/labels/a", "value": "1"},
    ]
    out = apply_patch(JSON_PATCH, POD, ops)
    assert out["spec"]["containers"][0]["image"] == "z" and len(out["spec"]["containers"]) == 1
    assert out["metadata"]["labels"]["d"] == "4"
    with pytest.raises(ApiError) as err:
        apply_patch(JSON_PATCH, POD, [{"op": "test", "path": "/metadata/labels/a", "value": "2"}])
    assert err.value.code == 422
    with pytest.raises(ApiError) as err:
        apply_patch("application/apply-patch+yaml", POD, {})
    assert err.value.code == 415


def test_store_versions_and_conflicts() -> None:
    store = Store(lambda: "2026-01-01T00:00:00Z")
    created = store.create(PODS, "default", {"metadata": {"name": "p"}, "spec": {"x": 1}})
    assert created["metadata"]["generation"] == 1 and created["metadata"]["uid"]
    same = store.replace(PODS, "default", "p", lambda o: o)
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]  # no write, no event

    def change_spec(o: dict) -> dict:
        o["spec"]["x"] = 2
        return o

    changed = store.replace(PODS, "default", "p", change_spec)
    assert changed["metadata"]["generation"] == 2
    assert int(changed["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    with pytest.raises(ApiError) as err:
        store.replace(PODS, "default", "p", change_spec, expected_rv=created["metadata"]["resourceVersion"])
    assert err.value.code == 409 and err.value.reason == "Conflict"
    with pytest.raises(ApiError) as err:
        store.create(PODS, "default", {"metadata": {"name": "p"}})
    assert err.value.code == 409 and err.value.reason == "AlreadyExists"
    assert store.delete(PODS, "default", "p")["metadata"]["name"] == "p"
    with pytest.raises(ApiError) as err:
        store.get(PODS, "default", "p")
    assert err.value.code == 404 and err.value.message == 'pods "p" not found'


def test_selectors() -> None:
    obj = {"metadata": {"name": "p", "labels": {"app": "web", "tier": "a"}}, "status": {"phase": "Running"}}
    assert Selector("app=web,tier in (a,b)").matches(obj)
    assert not Selector("app!=web").matches(obj)
    assert Selector("!missing,tier").matches(obj)
    assert Selector(fields="metadata.name=p,status.phase!=Failed").matches(obj)
    assert not Selector(fields="metadata.name=q").matches(obj)


def test_quota_refuses_pods_beyond_its_hard_limits(cluster: Cluster) -> None:
    quota = {"metadata": {"name": "q"}, "spec": {"hard": {"pods": "1", "requests.memory": "1Gi"}}}
    assert cluster.call("POST", "/api/v1/namespaces/default/resourcequotas", quota).status == 201
    assert cluster.create_pod("a").status == 201
    r = cluster.create_pod("b")
    assert r.status == 403 and r.body["message"] == (
        'pods "b" is forbidden: exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1'
    )
    used = cluster.call("GET", "/api/v1/namespaces/default/resourcequotas/q").body["status"]["used"]
    assert used == {"pods": "1", "requests.memory": "128Mi"}


def test_faults_fire_their_budget_and_only_on_matching_requests() -> None:
    faults = Faults()
    faults.add(FaultRule(path="/resize$", method="PATCH", status=429, times=2))
    assert faults.take("GET", "/api/v1/namespaces/d/pods/p/resize") is None
    first = faults.take("PATCH", "/api/v1/namespaces/d/pods/p/resize")
    assert first is not None and first.error() is not None and first.error().headers == {"Retry-After": "1"}
    assert faults.take("PATCH", "/api/v1/namespaces/d/pods/p/resize") is not None
    assert faults.take("PATCH", "/api/v1/namespaces/d/pods/p/resize") is None
    with pytest.raises(ValueError, match="unknown fault fields"):
        Faults.from_json({"paht": "x"})
