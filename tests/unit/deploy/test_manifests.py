"""Kubernetes manifests, kind cluster and Helm values: valid, and consistent with the code.

kubernetes-validate bundles the API schemas of each Kubernetes version (offline): the RBAC
manifests must pass strict validation for the oldest version with in-place resize (1.33) and
the newest it knows. kind's and Helm's files have no schema there; they are checked against what
the code needs (resize-capable node images, the predictive executor, declared options).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_predictive.config import OPTIONS
from tests._real_parts import require_module

ROOT = Path(__file__).resolve().parents[3]
KUBE = ROOT / "docker" / "kubernetes"
HELM = ROOT / "docker" / "helm"
MANIFESTS = sorted(p for p in KUBE.glob("*.yaml") if p.name != "kind.yaml")  # kind's own format


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _validate() -> Any:
    return require_module("kubernetes_validate", "the kubernetes-validate dev dependency")


@pytest.mark.parametrize("version", ["1.33.0", "1.35.0"])
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_validate_strictly(path: Path, version: str) -> None:
    kv = _validate()
    docs = _docs(path)
    assert docs
    for doc in docs:
        assert kv.validate(doc, version, strict=True) == version.rsplit(".", 1)[0]


def test_strict_validation_would_catch_a_misspelt_field() -> None:
    kv = _validate()
    doc = _docs(KUBE / "rbac.yaml")[1]
    broken = {**doc, "rules": [{**doc["rules"][0], "verb": ["get"]}]}
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, "1.33.0", strict=True)


def _minor(image: str) -> tuple[int, int]:
    m = re.search(r":v(\d+)\.(\d+)\.\d+", image)
    assert m, image
    return int(m.group(1)), int(m.group(2))


def test_kind_cluster_can_resize_pods_in_place() -> None:
    (cluster,) = _docs(KUBE / "kind.yaml")
    assert (cluster["kind"], cluster["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    assert cluster["featureGates"]["InPlacePodVerticalScaling"] is True
    nodes = cluster["nodes"]
    assert any(n["role"] == "control-plane" for n in nodes) and any(n["role"] == "worker" for n in nodes)
    assert all(_minor(n["image"]) >= (1, 33) for n in nodes)
    assert len({n["image"] for n in nodes}) == 1  # kubelets and API server of one version


def _values() -> dict[str, Any]:
    return yaml.safe_load((HELM / "values.yaml").read_text())


def test_helm_values_run_the_predictive_executor_on_the_chart_kubernetes_machinery() -> None:
    values = _values()
    assert values["executor"] == "KubernetesExecutor"  # pod template, pod-launcher RBAC
    path = values["config"]["core"]["executor"]
    module, _, cls = path.rpartition(".")
    assert (
        f"class {cls}(KubernetesExecutor)" in (ROOT / Path(*module.split("."))).with_suffix(".py").read_text()
    )
    assert values["triggerer"]["enabled"] is True  # shaping triggers of deferrable pods
    assert values["images"]["airflow"]["tag"] == values["airflowVersion"]


def test_helm_values_set_only_declared_predictive_options() -> None:
    predictive = _values()["config"]["predictive"]
    assert predictive
    for option, value in predictive.items():
        assert option in OPTIONS, option
        if OPTIONS[option]["type"] == "boolean":
            assert str(value) in ("True", "False"), option
    assert predictive["namespace"] == _values()["config"]["kubernetes_executor"]["namespace"]


def test_helm_values_share_the_model_store_with_every_component() -> None:
    """Training writes artefacts the scheduler and triggerer load: one folder, the PVC's."""
    values = _values()
    (volume,) = values["volumes"]
    (pvc,) = [d for d in _docs(KUBE / "model-store-pvc.yaml") if d["kind"] == "PersistentVolumeClaim"]
    assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    (mount,) = values["volumeMounts"]
    assert mount["name"] == volume["name"]
    assert values["config"]["predictive"]["model_dir"].startswith(mount["mountPath"] + "/")


def test_helm_values_give_every_component_the_store_connection() -> None:
    values = _values()
    conn_id = values["config"]["predictive"]["store_conn_id"]
    assert {s["envName"] for s in values["secret"]} == {f"AIRFLOW_CONN_{conn_id.upper()}"}


def test_rbac_binds_the_chart_service_accounts_of_the_release() -> None:
    """The chart names its service accounts <release>-<component>; the Role must reach the
    scheduler (executor steps), triggerer (shaping triggers) and workers (operator shaping)."""
    bindings = {d["metadata"]["name"]: d for d in _docs(KUBE / "rbac.yaml") if d["kind"] == "RoleBinding"}
    names = {s["name"] for s in bindings["airflow-predictive"]["subjects"]}
    assert {"airflow-scheduler", "airflow-triggerer", "airflow-worker"} <= names
    (executor,) = [d for d in _docs(KUBE / "rbac-executor.yaml") if d["kind"] == "RoleBinding"]
    assert [s["name"] for s in executor["subjects"]] == ["airflow-scheduler"]


def test_metrics_server_values_keep_a_resolution_shaping_can_use() -> None:
    args = yaml.safe_load((HELM / "metrics-server-values.yaml").read_text())["args"]
    (resolution,) = [a for a in args if a.startswith("--metric-resolution=")]
    seconds = int(resolution.split("=")[1].rstrip("s"))
    assert 10 <= seconds <= 15
