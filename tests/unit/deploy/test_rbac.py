"""The RBAC manifests grant exactly what the package's Kubernetes client calls need.

The scan reads every module of ``airflow_predictive`` (not the emulator, which *serves* the API)
for calls of methods of the official client's API classes (``CoreV1Api.read_namespaced_pod``,
``CustomObjectsApi.list_namespaced_custom_object("metrics.k8s.io", ..., "pods")``, ...), turns
each into the RBAC permission it needs (group, resource[/subresource], verb) and compares the
set with the rules of ``docker/kubernetes/rbac*.yaml``: a new call without a rule fails, and so
does a rule without a call. Inside ``match`` statements on ``Verb.X`` the permission a case's
call needs must also be the one ``calls.VERBS[Verb.X]`` declares (the declared list is what
tests/unit/backends/kubernetes/test_kube_rbac.py holds the Role to).
"""

from __future__ import annotations

import ast
import importlib.util
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from airflow_predictive.backends.kubernetes.calls import VERBS, Verb
from tests._real_parts import require

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "airflow_predictive"
MANIFESTS = sorted((ROOT / "docker" / "kubernetes").glob("rbac*.yaml"))
SKIPPED = ("emulator",)  # the emulator answers the API; it never calls a cluster

Permission = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)

# API class name (without "Api") -> API group
GROUPS = {
    "CoreV1": "",
    "AppsV1": "apps",
    "BatchV1": "batch",
    "PolicyV1": "policy",
    "AutoscalingV1": "autoscaling",
    "AutoscalingV2": "autoscaling",
    "RbacAuthorizationV1": "rbac.authorization.k8s.io",
    "NetworkingV1": "networking.k8s.io",
    "StorageV1": "storage.k8s.io",
    "CoordinationV1": "coordination.k8s.io",
    "EventsV1": "events.k8s.io",
    "SchedulingV1": "scheduling.k8s.io",
}
VERB_OF = {
    "read": "get",
    "get": "get",  # CustomObjectsApi.get_*
    "list": "list",
    "create": "create",
    "delete": "delete",
    "patch": "patch",
    "replace": "update",
    "connect_get": "get",
    "connect_post": "create",
}
SUBRESOURCES = (
    "resize",
    "status",
    "log",
    "binding",
    "eviction",
    "ephemeralcontainers",
    "scale",
    "exec",
    "attach",
    "portforward",
    "proxy",
)
NOT_RESOURCE_CALLS = ("get_api_resources", "get_api_group", "get_api_versions", "get_code")


@cache
def client_methods() -> dict[str, str]:
    """Method name -> API class name (without "Api") for every resource method of the client.

    Read from the client's source (kubernetes/client/api/<name>_api.py): importing
    kubernetes.client costs seconds, reading its method names a few milliseconds."""
    spec = importlib.util.find_spec("kubernetes")
    require(spec is not None and spec.origin, "Python module kubernetes (the kubernetes extra)")
    assert spec is not None and spec.origin is not None
    out: dict[str, str] = {}
    for path in sorted((Path(spec.origin).parent / "client" / "api").glob("*_api.py")):
        api = "".join(part.capitalize() for part in path.stem.removesuffix("_api").split("_"))
        for method in re.findall(r"^    def ([a-z]\w*)\(self", path.read_text(), re.MULTILINE):
            if method.endswith("_with_http_info") or method in NOT_RESOURCE_CALLS:
                continue
            if re.match(r"^(read|list|create|delete|patch|replace|connect_get|connect_post|get)_", method):
                out.setdefault(method, api)
    return out


def _plural(snake: str) -> str:
    word = snake.replace("_", "")
    if word.endswith("ss"):  # priorityclass
        return word + "es"
    if word.endswith("s"):  # endpoints
        return word
    return word[:-1] + "ies" if word.endswith("y") else word + "s"


def cluster_wide(method: str) -> bool:
    """A call that needs a ClusterRole: cluster-scoped resources and every-namespace lists."""
    return "namespaced" not in method


def _literal(node: ast.expr, constants: dict[str, object]) -> object:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return constants.get(f"{node.value.id}.{node.attr}")
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def module_constants(tree: ast.Module) -> dict[str, object]:
    """String constants the module can name: its own ``NAME = "..."`` and, for every
    ``from airflow_predictive.x import mod``, ``mod.NAME`` read from that module's source."""

    def own(t: ast.Module) -> dict[str, object]:
        out: dict[str, object] = {}
        for stmt in t.body:
            if not isinstance(stmt, ast.Assign):
                continue
            for target in stmt.targets:
                pairs = (
                    zip(target.elts, stmt.value.elts, strict=False)
                    if isinstance(target, ast.Tuple) and isinstance(stmt.value, ast.Tuple)
                    else [(target, stmt.value)]
                )
                out.update(
                    {
                        t.id: v.value
                        for t, v in pairs
                        if isinstance(t, ast.Name) and isinstance(v, ast.Constant)
                    }
                )
        return out

    constants = own(tree)
    for stmt in ast.walk(tree):
        if isinstance(stmt, ast.ImportFrom) and (stmt.module or "").startswith("airflow_predictive"):
            for alias in stmt.names:
                path = ROOT / Path(*f"{stmt.module}.{alias.name}".split(".")).with_suffix(".py")
                if path.exists():
                    for name, value in own(ast.parse(path.read_text())).items():
                        constants[f"{alias.asname or alias.name}.{name}"] = value
    return constants


def permission_of(call: ast.Call, method: str, constants: dict[str, object] | None = None) -> Permission:
    """The RBAC permission one client call needs."""
    api = client_methods()[method]
    op, _, rest = method.partition("_")
    if op == "connect":
        op2, _, rest = rest.partition("_")
        op = f"connect_{op2}"
    verb = VERB_OF[op]
    if any(k.arg == "watch" and isinstance(k.value, ast.Constant) and k.value.value for k in call.keywords):
        verb = "watch"
    if api == "CustomObjects":
        # (group, version, [namespace,] plural, ...): literals or module constants, else the test says why
        args = [_literal(a, constants or {}) for a in call.args]
        plural = args[3] if "namespaced" in rest else args[2]
        if not isinstance(args[0], str) or not isinstance(plural, str):
            raise AssertionError(f"{method}: group and plural must be literals to be checked")
        return (args[0], plural, verb)
    if api not in GROUPS:
        raise AssertionError(f"{method} of {api}Api: add its API group to GROUPS in this test")
    rest = rest.removeprefix("namespaced_").removesuffix("_with_path").removesuffix("_for_all_namespaces")
    for sub in SUBRESOURCES:
        if rest.endswith(f"_{sub}"):
            return (GROUPS[api], f"{_plural(rest[: -len(sub) - 1])}/{sub}", verb)
    return (GROUPS[api], _plural(rest), verb)


def scan(
    source: str, cluster: set[Permission] | None = None
) -> tuple[set[Permission], list[tuple[str, Permission]]]:
    """(every permission the source's client calls need, [(Verb case, permission)] in match cases).
    Permissions of cluster-wide calls are also added to ``cluster``."""
    tree = ast.parse(source)
    constants = module_constants(tree)
    used: set[Permission] = set()
    cased: list[tuple[str, Permission]] = []

    def calls_in(nodes: list[ast.stmt]) -> list[Permission]:
        found = []
        for stmt in nodes:
            for node in ast.walk(stmt):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in client_methods()
                ):
                    found.append(permission_of(node, node.func.attr, constants))
                    if cluster is not None and cluster_wide(node.func.attr):
                        cluster.add(found[-1])
        return found

    for node in ast.walk(tree):
        if isinstance(node, ast.Match):
            for case in node.cases:
                pattern = case.pattern
                if (
                    isinstance(pattern, ast.MatchValue)
                    and isinstance(pattern.value, ast.Attribute)
                    and isinstance(pattern.value.value, ast.Name)
                    and pattern.value.value.id == "Verb"
                ):
                    cased += [(pattern.value.attr, p) for p in calls_in(case.body)]
    used.update(calls_in(tree.body))
    return used, cased


@cache
def package_calls() -> tuple[
    frozenset[Permission], tuple[tuple[str, str, Permission], ...], frozenset[Permission]
]:
    """(permissions of every call, (file, Verb case, permission) of backend cases, cluster-wide ones)."""
    used: set[Permission] = set()
    cluster: set[Permission] = set()
    cased: list[tuple[str, str, Permission]] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in SKIPPED:
            continue
        source = path.read_text()
        if not set(re.findall(r"\.(\w+)\(", source)) & client_methods().keys():
            continue  # no client method named in it: nothing to parse
        found, in_cases = scan(source, cluster)
        used |= found
        cased += [(str(rel), verb, perm) for verb, perm in in_cases]
    return frozenset(used), tuple(cased), frozenset(cluster)


def granted(kinds: tuple[str, ...] = ("Role", "ClusterRole")) -> set[Permission]:
    out: set[Permission] = set()
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc["kind"] not in kinds:
                continue
            for rule in doc["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        out.update((group, resource, verb) for verb in rule["verbs"])
    return out


def test_the_manifests_grant_exactly_what_the_code_calls() -> None:
    used = package_calls()[0]
    assert used, "the scan found no Kubernetes client call at all: the scanner is broken"
    assert granted() - used == set(), "rules without a call in the code"
    assert used - granted() == set(), "calls without a rule in docker/kubernetes/rbac*.yaml"


def test_cluster_wide_calls_are_granted_by_a_cluster_role() -> None:
    cluster = package_calls()[2]
    assert ("", "nodes", "list") in cluster  # list_node is cluster-scoped
    assert cluster - granted(("ClusterRole",)) == set()


def test_each_backend_case_calls_what_calls_py_declares() -> None:
    cased = package_calls()[1]
    assert {verb for _, verb, _ in cased} == {v.name for v in Verb}
    for where, verb, perm in cased:
        declared = VERBS[Verb[verb]]
        assert perm == (declared.group, declared.resource, declared.verb), f"{where}: Verb.{verb}"


def test_the_executor_quota_read_has_its_rule() -> None:
    """The one call outside the backends (through Airflow's kube client) is not forgotten."""
    source = (PACKAGE / "executors" / "kubernetes_executor.py").read_text()
    used, _ = scan(source)
    assert ("", "resourcequotas", "list") in used
    assert ("", "resourcequotas", "list") in granted(("Role",))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("core.patch_namespaced_pod_status('p', ns, body)", ("", "pods/status", "patch")),
        ("core.read_namespaced_pod_log('p', ns)", ("", "pods/log", "get")),
        ("await core.list_namespaced_pod(ns, watch=True)", ("", "pods", "watch")),
        ("core.list_namespaced_event(ns)", ("", "events", "list")),
        ("apps.replace_namespaced_deployment('d', ns, body)", ("apps", "deployments", "update")),
        ("core.connect_get_node_proxy_with_path('n', 'stats/summary')", ("", "nodes/proxy", "get")),
        (
            "custom.get_namespaced_custom_object('metrics.k8s.io', 'v1beta1', ns, 'pods', name)",
            ("metrics.k8s.io", "pods", "get"),
        ),
        ("core.list_persistent_volume()", ("", "persistentvolumes", "list")),
        ("core.list_pod_for_all_namespaces()", ("", "pods", "list")),
        ("scheduling.create_priority_class(body)", ("scheduling.k8s.io", "priorityclasses", "create")),
    ],
)
def test_a_new_call_is_seen_with_the_permission_it_needs(source: str, expected: Permission) -> None:
    used, _ = scan(f"async def f():\n    {source}\n" if "await" in source else source)
    assert used == {expected}


def test_every_binding_refers_to_a_role_in_the_manifests() -> None:
    docs = [d for p in MANIFESTS for d in yaml.safe_load_all(p.read_text()) if d]
    roles = {(d["kind"], d["metadata"]["name"]) for d in docs if d["kind"] in ("Role", "ClusterRole")}
    bindings = [d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert bindings
    for binding in bindings:
        assert (binding["roleRef"]["kind"], binding["roleRef"]["name"]) in roles
        assert all(s["kind"] == "ServiceAccount" and s["namespace"] == "airflow" for s in binding["subjects"])
