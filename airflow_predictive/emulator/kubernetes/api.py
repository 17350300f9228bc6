"""The emulator's API surface, independent of the HTTP transport: route, verb, object semantics.

``Api.handle`` takes a method, a path, query parameters and a body and returns a ``Response``
(a JSON document, text, or a stream of watch events). It implements create / get / list / watch
/ replace / patch / delete for the stored resources, the pod ``status`` and ``resize``
subresources with upstream's validation, PVC expansion, metrics.k8s.io, the kubelet summary and
discovery. Unknown paths answer 404 with a Status body; it never answers a request it does not
understand with success.
"""

from __future__ import annotations

import copy
import json
import time
from typing import TYPE_CHECKING, Any

from airflow_predictive.emulator.kubernetes import quantity, quota, resources, validation
from airflow_predictive.emulator.kubernetes.errors import (
    ApiError,
    FieldError,
    bad_request,
    conflict,
    forbidden,
    invalid,
    invalid_object,
    not_found,
    required,
)
from airflow_predictive.emulator.kubernetes.logs_route import pod_log
from airflow_predictive.emulator.kubernetes.messages import Request, Response
from airflow_predictive.emulator.kubernetes.metrics_routes import metrics_response, node_proxy
from airflow_predictive.emulator.kubernetes.patch import MERGE, apply_patch
from airflow_predictive.emulator.kubernetes.resources import (
    NAMESPACES,
    NODES,
    PODS,
    PVCS,
    QUOTAS,
    STORAGE_CLASSES,
    Resource,
)
from airflow_predictive.emulator.kubernetes.store import Selector
from airflow_predictive.emulator.kubernetes.table import table, wants_table
from airflow_predictive.emulator.kubernetes.workload import (
    WORKLOAD_ANNOTATION,
    WorkloadError,
    parse_annotation,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_predictive.emulator.kubernetes.kubelet import Kubelet
    from airflow_predictive.emulator.kubernetes.store import Obj, Store

DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"


class Api:
    """Routes requests to the store, the kubelet and the validators."""

    def __init__(self, store: Store, kubelet: Kubelet, lock: Any, watch_poll_s: float = 0.5) -> None:
        self.store = store
        self.kubelet = kubelet
        self.lock = lock  # held while the kubelet ticks: reads of its state take it too
        self.watch_poll_s = watch_poll_s

    # ---- routing ------------------------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        try:
            return self._route(req)
        except ApiError as err:
            return Response(err.code, err.status(), headers=dict(err.headers))

    def _route(self, req: Request) -> Response:
        parts = [p for p in req.path.split("/") if p]
        if req.path in ("/healthz", "/livez", "/readyz"):
            return Response(200, "ok", "text/plain")
        if req.path == "/version":
            return Response(
                200, {**resources.EMULATED_VERSION, "platform": "linux/amd64", "goVersion": "go1.24"}
            )
        if parts == ["api"]:
            return Response(200, resources.api_versions())
        if parts == ["apis"]:
            return Response(200, resources.api_group_list())
        if parts[:1] == ["api"] and len(parts) >= 2:
            return self._group(req, "", parts[1], parts[2:])
        if parts[:1] == ["apis"] and len(parts) == 2:
            group = resources.api_group(parts[1])
            if group is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return Response(200, group)
        if parts[:1] == ["apis"] and len(parts) >= 3:
            return self._group(req, parts[1], parts[2], parts[3:])
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _group(self, req: Request, group: str, version: str, rest: list[str]) -> Response:
        if not rest:
            doc = resources.resource_list(group, version)
            if doc is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return Response(200, doc)
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        resource = resources.lookup(group, version, rest[0])
        if resource is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if resource is NODES and len(rest) >= 4 and rest[2] == "proxy":
            return node_proxy(self, req, rest[1], "/".join(rest[3:]))
        if group == "metrics.k8s.io":
            return metrics_response(self, req, resource, namespace, rest[1] if len(rest) > 1 else None)
        if resource.namespaced and namespace is None and len(rest) > 1:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not resource.namespaced:
            namespace = ""
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in resource.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if name is None:
            return self._collection(req, resource, namespace)
        assert namespace is not None
        return self._item(req, resource, namespace, name, sub)

    # ---- collections --------------------------------------------------------------------------
    def _collection(self, req: Request, resource: Resource, namespace: str | None) -> Response:
        selector = Selector(req.query.get("labelSelector"), req.query.get("fieldSelector"))
        if req.method == "GET" and (req.query.get("watch") or "").lower() in ("true", "1"):
            return self._watch(req, resource, namespace, selector)
        if req.method == "GET":
            items, rv = self.store.list(resource, namespace or None, selector)
            if resource is QUOTAS:
                items = [quota.with_status(self.store, q) for q in items]
            if wants_table(req.accept):
                return Response(200, self._table(req, resource, items, str(rv)))
            return Response(
                200,
                {
                    "kind": f"{resource.kind}List",
                    "apiVersion": resource.api_version,
                    "metadata": {"resourceVersion": str(rv)},
                    "items": items,
                },
            )
        if req.method == "POST":
            if namespace is None:
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            return self._create(req, resource, namespace)
        if req.method == "DELETE" and resource is PODS and namespace:
            items, _ = self.store.list(resource, namespace, selector)
            for item in items:
                self._delete(resource, namespace, item["metadata"]["name"], grace=0)
            return Response(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
        raise ApiError(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )

    def _watch(self, req: Request, resource: Resource, namespace: str | None, selector: Selector) -> Response:
        timeout = float(req.query.get("timeoutSeconds") or 1800)
        deadline_at = time.monotonic() + timeout
        rv_text = req.query.get("resourceVersion") or ""
        initial: list[Obj] = []
        if rv_text in ("", "0"):
            initial, since = self.store.list(resource, namespace or None, selector)
        else:
            try:
                since = int(rv_text)
            except ValueError:
                raise bad_request(f"invalid resourceVersion {rv_text!r}") from None
        events = self.store.watch(
            resource,
            namespace or None,
            since,
            selector,
            lambda: time.monotonic() >= deadline_at,
            self.watch_poll_s,
        )
        drop_after = req.drop_watch_after

        as_table = wants_table(req.accept)

        def line(type_: str, obj: Obj) -> bytes:
            if as_table:
                obj = self._table(req, resource, [obj], obj["metadata"].get("resourceVersion", ""))
            return _line(type_, obj)

        def lines() -> Iterator[bytes]:
            for obj in initial:
                yield line("ADDED", obj)
            try:
                for event in events:
                    yield b"" if event is None else line(event.type, event.obj)
            except ApiError as err:
                yield (json.dumps({"type": "ERROR", "object": err.status()}) + "\n").encode()

        def stream() -> Iterator[bytes]:
            sent = 0
            for chunk in lines():
                if chunk and drop_after is not None and sent >= drop_after:
                    raise ConnectionAbortedError("watch dropped by an injected fault")
                sent += bool(chunk)
                yield chunk

        return Response(200, None, headers={"Transfer-Encoding": "chunked"}, stream=stream())

    def _table(self, req: Request, resource: Resource, items: list[Obj], rv: str) -> dict[str, Any]:
        full = req.query.get("includeObject") == "Object"
        return table(resource, items, rv, self.kubelet.clock.now(), full)

    # ---- single objects -----------------------------------------------------------------------
    def _item(self, req: Request, resource: Resource, namespace: str, name: str, sub: str | None) -> Response:
        if sub == "log":
            if req.method != "GET":
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            return pod_log(self, namespace, name, req.query)
        if req.method == "GET":
            obj = self.store.get(resource, namespace, name)
            if resource is QUOTAS:
                obj = quota.with_status(self.store, obj)
            if wants_table(req.accept) and sub is None:
                return Response(
                    200, self._table(req, resource, [obj], obj["metadata"].get("resourceVersion", ""))
                )
            return Response(200, obj)
        if req.method == "DELETE":
            grace = None
            if isinstance(req.body, dict) and req.body.get("gracePeriodSeconds") is not None:
                grace = int(req.body["gracePeriodSeconds"])
            if req.query.get("gracePeriodSeconds"):
                grace = int(req.query["gracePeriodSeconds"])
            return Response(200, self._delete(resource, namespace, name, grace))
        if req.method not in ("PUT", "PATCH"):
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        current = self.store.get(resource, namespace, name)
        if req.method == "PUT":
            if not isinstance(req.body, dict):
                raise bad_request("the body of a PUT must be an object")
            candidate = copy.deepcopy(req.body)
            expected = (candidate.get("metadata") or {}).get("resourceVersion")
        else:
            candidate = apply_patch(req.content_type, current, req.body)
            if sub == "resize" and req.content_type.split(";")[0].strip() == MERGE:
                # A JSON merge patch replaces the container lists; the resize subresource then keeps
                # only resources / resizePolicy of the named containers (dropNonResizeUpdates), so
                # the rest of each container comes from the stored pod, as on a real API server.
                candidate = _merge_resize_view(candidate, current)
            expected = (candidate.get("metadata") or {}).get("resourceVersion")
            if expected == current["metadata"].get("resourceVersion"):
                expected = None  # a patch that does not name a version applies to the latest
        if expected and expected != current["metadata"].get("resourceVersion"):
            raise conflict(resource.kind, name)  # preconditions are checked before validation
        dry_run = req.query.get("dryRun") == "All"
        if sub == "status":
            return self._write_status(resource, namespace, name, candidate, expected, dry_run)
        if sub == "resize":
            return self._resize(namespace, name, current, candidate, expected, dry_run)
        if resource is PODS:
            return self._update_pod(namespace, name, current, candidate, expected, dry_run)
        if resource is PVCS:
            return self._update_pvc(namespace, name, current, candidate, expected, dry_run)
        return self._replace(resource, namespace, name, candidate, expected, dry_run, keep_status=True)

    def _replace(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        candidate: Obj,
        expected: str | None,
        dry_run: bool,
        *,
        keep_status: bool,
        spec_only: bool = False,
    ) -> Response:
        def mutate(cur: Obj) -> Obj:
            new = copy.deepcopy(candidate)
            if keep_status and "status" in cur:
                new["status"] = cur["status"]
            if spec_only:
                cur["spec"] = new.get("spec", cur.get("spec"))
                return cur
            new.setdefault("metadata", {})
            for key in ("deletionTimestamp", "deletionGracePeriodSeconds"):
                if key in cur["metadata"]:
                    new["metadata"][key] = cur["metadata"][key]
            return new

        if dry_run:
            current = self.store.get(resource, namespace, name)
            return Response(200, mutate(current))
        return Response(200, self.store.replace(resource, namespace, name, mutate, expected_rv=expected))

    def _write_status(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        candidate: Obj,
        expected: str | None,
        dry_run: bool,
    ) -> Response:
        def mutate(cur: Obj) -> Obj:
            cur["status"] = copy.deepcopy(candidate.get("status") or {})
            return cur

        if dry_run:
            return Response(200, mutate(self.store.get(resource, namespace, name)))
        return Response(
            200,
            self.store.replace(
                resource, namespace, name, mutate, expected_rv=expected, spec_changes_generation=False
            ),
        )

    # ---- pods ---------------------------------------------------------------------------------
    def _create(self, req: Request, resource: Resource, namespace: str) -> Response:
        if not isinstance(req.body, dict):
            raise bad_request("the body of a create must be an object")
        obj = copy.deepcopy(req.body)
        obj.setdefault("metadata", {})
        obj.pop("status", None)
        if resource is not NAMESPACES and resource.namespaced:
            body_ns = obj["metadata"].get("namespace")
            if body_ns and body_ns != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            self._require_namespace(namespace)
        if resource is PODS:
            self._prepare_pod(obj, namespace)
        elif resource is PVCS:
            self._prepare_pvc(obj)
        if req.query.get("dryRun") == "All":
            return Response(201, obj)
        return Response(201, self.store.create(resource, namespace if resource.namespaced else "", obj))

    def _require_namespace(self, namespace: str) -> None:
        try:
            self.store.get(NAMESPACES, "", namespace)
        except ApiError:
            raise not_found("Namespace", "", namespace) from None

    def _prepare_pod(self, pod: Obj, namespace: str) -> None:
        meta = pod["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            import uuid

            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        validation.apply_defaults(pod)
        errors = validation.canonicalise_resources(pod) + validation.validate_pod_spec(pod)
        errors += self._workload_errors(pod)
        if errors:
            raise invalid_object("Pod", meta.get("name", ""), errors)
        quota.admit(self.store, namespace, meta["name"], pod)
        from airflow_predictive.emulator.kubernetes import priority

        priority.admit(self.store, pod)
        pod["status"] = {"phase": "Pending", "qosClass": validation.compute_qos(pod)}

    @staticmethod
    def _workload_errors(pod: Obj) -> list[FieldError]:
        text = ((pod.get("metadata") or {}).get("annotations") or {}).get(WORKLOAD_ANNOTATION)
        if text is None:
            return []
        try:
            parse_annotation(text, [c.get("name", "") for c in pod["spec"].get("containers", [])])
        except WorkloadError as exc:
            return [invalid(f"metadata.annotations[{WORKLOAD_ANNOTATION}]", "<workload>", str(exc))]
        return []

    def _update_pod(
        self, namespace: str, name: str, current: Obj, candidate: Obj, expected: str | None, dry_run: bool
    ) -> Response:
        validation.apply_defaults(candidate)
        errors = validation.canonicalise_resources(candidate)
        errors += validation.validate_pod_update(candidate, current)
        if errors:
            raise invalid_object("Pod", name, errors)
        if current["spec"].get("nodeName"):
            candidate["spec"]["nodeName"] = current["spec"]["nodeName"]
        return self._replace(PODS, namespace, name, candidate, expected, dry_run, keep_status=True)

    def _resize(
        self, namespace: str, name: str, current: Obj, candidate: Obj, expected: str | None, dry_run: bool
    ) -> Response:
        validation.apply_defaults(candidate)
        errors = validation.canonicalise_resources(candidate)
        if not errors:
            errors = validation.validate_resize(candidate, current)
        if errors:
            raise invalid_object("Pod", name, errors)
        resized = validation.resize_view(candidate, current)
        quota.admit(self.store, namespace, name, resized, current)

        def mutate(cur: Obj) -> Obj:
            if cur["metadata"]["uid"] != current["metadata"]["uid"]:
                raise not_found("Pod", "", name)
            view = validation.resize_view(candidate, cur)
            problems = validation.validate_resize(view, cur)
            if problems:
                raise invalid_object("Pod", name, problems)
            return view

        if dry_run:
            return Response(200, mutate(self.store.get(PODS, namespace, name)))
        return Response(200, self.store.replace(PODS, namespace, name, mutate, expected_rv=expected))

    def _delete(self, resource: Resource, namespace: str, name: str, grace: int | None) -> Obj:
        if resource is PODS:
            pod = self.store.get(PODS, namespace, name)
            if grace == 0 or not pod["spec"].get("nodeName"):
                return self.store.delete(PODS, namespace, name)
            seconds = (
                grace if grace is not None else int(pod["spec"].get("terminationGracePeriodSeconds", 30))
            )

            def mutate(cur: Obj) -> Obj:
                cur["metadata"].setdefault("deletionTimestamp", self.kubelet.ts())
                cur["metadata"].setdefault("deletionGracePeriodSeconds", seconds)
                return cur

            return self.store.replace(PODS, namespace, name, mutate, spec_changes_generation=False)
        return self.store.delete(resource, namespace, name)

    # ---- persistent volume claims -------------------------------------------------------------
    def _storage_class(self, name: str | None) -> Obj | None:
        classes = self.store.list(STORAGE_CLASSES, None)[0]
        if name:
            return next((c for c in classes if c["metadata"]["name"] == name), None)
        return next(
            (
                c
                for c in classes
                if (c["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"
            ),
            None,
        )

    def _prepare_pvc(self, pvc: Obj) -> None:
        spec = pvc.setdefault("spec", {})
        name = pvc["metadata"].get("name", "")
        request = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
        if request is None:
            raise invalid_object("PersistentVolumeClaim", name, [required("spec.resources[storage]")])
        sc = self._storage_class(spec.get("storageClassName"))
        if sc is not None:
            spec["storageClassName"] = sc["metadata"]["name"]
            spec.setdefault("volumeName", f"pvc-{abs(hash(name)) % 10**8:08d}")
            pvc["status"] = {
                "phase": "Bound",
                "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
                "capacity": {"storage": quantity.canonical("storage", request)},
            }
        else:
            pvc["status"] = {"phase": "Pending"}

    def _update_pvc(
        self, namespace: str, name: str, current: Obj, candidate: Obj, expected: str | None, dry_run: bool
    ) -> Response:
        old_spec, new_spec = current.get("spec") or {}, candidate.get("spec") or {}
        old_req = ((old_spec.get("resources") or {}).get("requests") or {}).get("storage")
        new_req = ((new_spec.get("resources") or {}).get("requests") or {}).get("storage")
        strip = lambda s: {k: v for k, v in s.items() if k not in ("resources", "volumeAttributesClassName")}  # noqa: E731
        if strip(new_spec) != strip(old_spec):
            raise invalid_object(
                "PersistentVolumeClaim",
                name,
                [
                    forbidden(
                        "spec",
                        "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
                    )
                ],
            )
        if new_req != old_req and new_req is not None and old_req is not None:
            if quantity.parse(new_req) < quantity.parse(old_req):
                raise invalid_object(
                    "PersistentVolumeClaim",
                    name,
                    [
                        forbidden(
                            "spec.resources.requests.storage", "field can not be less than status.capacity"
                        )
                    ],
                )
            sc = self._storage_class(old_spec.get("storageClassName"))
            if sc is None or not sc.get("allowVolumeExpansion"):
                raise ApiError(
                    403,
                    "Forbidden",
                    f'persistentvolumeclaims "{name}" is forbidden: only dynamically provisioned pvc can be '
                    "resized and the storageclass that provisions the pvc must support resize",
                    {"name": name, "kind": "persistentvolumeclaims"},
                )
            new_spec.setdefault("resources", {}).setdefault("requests", {})["storage"] = quantity.canonical(
                "storage", new_req
            )
        return self._replace(PVCS, namespace, name, candidate, expected, dry_run, keep_status=True)


def _merge_resize_view(patched: Obj, current: Obj) -> Obj:
    """``current`` with resources / resizePolicy of the containers the merge patch names.

    A list naming a container the pod does not have is left as patched, so validation reports
    the added / renamed container like upstream does.
    """
    out = copy.deepcopy(patched)
    for field in ("containers", "initContainers"):
        new_list = (patched.get("spec") or {}).get(field)
        old_list = (current.get("spec") or {}).get(field) or []
        if new_list is None or not isinstance(new_list, list):
            continue
        old_by_name = {c.get("name"): c for c in old_list}
        if any(not isinstance(c, dict) or c.get("name") not in old_by_name for c in new_list):
            continue
        new_by_name = {c.get("name"): c for c in new_list}
        merged = []
        for old in old_list:
            item = copy.deepcopy(old)
            source = new_by_name.get(old.get("name"))
            if source is not None:
                for key in ("resources", "resizePolicy"):
                    if key in source:
                        item[key] = copy.deepcopy(source[key])
            merged.append(item)
        out.setdefault("spec", {})[field] = merged
    return out


def _line(type_: str, obj: Obj) -> bytes:
    return (json.dumps({"type": type_, "object": obj}, separators=(",", ":")) + "\n").encode()
