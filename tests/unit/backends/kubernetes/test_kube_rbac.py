"""docker/kubernetes/rbac.yaml grants exactly what the backends' calls need: no more, no less."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from airflow_predictive.backends.kubernetes.calls import VERBS, Verb

ROOT = Path(__file__).resolve().parents[4]
BACKEND = ROOT / "airflow_predictive" / "backends" / "kubernetes"


def _granted(kind: str) -> set[tuple[str, str, str]]:
    docs = [d for d in yaml.safe_load_all((ROOT / "docker" / "kubernetes" / "rbac.yaml").read_text()) if d]
    out = set()
    for doc in docs:
        if doc["kind"] != kind:
            continue
        for rule in doc["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        out.add((group, resource, verb))
    return out


def test_role_grants_exactly_the_required_permissions() -> None:
    required = {(p.group, p.resource, p.verb) for p in VERBS.values() if not p.optional}
    assert _granted("Role") == required


def test_cluster_role_grants_exactly_the_optional_permissions() -> None:
    optional = {(p.group, p.resource, p.verb) for p in VERBS.values() if p.optional}
    assert _granted("ClusterRole") == optional


def test_every_call_the_code_makes_is_declared() -> None:
    """Scan the backends: each ``Verb.X`` used in a Call has a permission, each permission is used."""
    used: set[str] = set()
    for path in BACKEND.glob("*.py"):
        if path.name == "calls.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "Verb"
            ):
                used.add(node.attr)
    assert used <= {v.name for v in Verb}
    assert {v.name for v in VERBS} == used


def test_resize_needs_its_own_subresource_permission() -> None:
    assert ("", "pods/resize", "patch") in _granted("Role")
    assert ("", "pods", "patch") not in _granted("Role")
