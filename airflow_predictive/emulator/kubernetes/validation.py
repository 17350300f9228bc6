"""Pod validation the way the API server does it: creation, plain updates and ``/resize``.

Ported case by case from upstream's ``ValidatePodResize`` / ``validateContainerResize`` /
``ValidateContainerResourceRequirements`` / ``validateResizePolicy`` and ``ComputePodQOS``
(kubernetes/kubernetes pkg/apis/core/validation, 1.35 semantics: memory limits may decrease).
Messages and field paths match upstream's, because clients and users grep for them. This module
never mutates its inputs except ``apply_defaults`` (which fills defaults like the server does).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from airflow_predictive.emulator.kubernetes import quantity
from airflow_predictive.emulator.kubernetes.errors import (
    FieldError,
    FieldErrorType,
    forbidden,
    invalid,
    required,
)

COMPUTE = ("cpu", "memory")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
_OVERCOMMIT = ("cpu", "memory", "ephemeral-storage")


def _containers(pod: dict[str, Any], field: str = "containers") -> list[dict[str, Any]]:
    value = pod.get("spec", {}).get(field) or []
    return [c for c in value if isinstance(c, dict)]


def _resources(container: dict[str, Any], part: str) -> dict[str, Any]:
    value = (container.get("resources") or {}).get(part) or {}
    return value if isinstance(value, dict) else {}


def is_sidecar(init_container: dict[str, Any]) -> bool:
    return init_container.get("restartPolicy") == "Always"


def compute_qos(pod: dict[str, Any]) -> str:
    """ComputePodQOS: Guaranteed / Burstable / BestEffort from cpu and memory of all containers."""
    requests: dict[str, Decimal] = {}
    limits: dict[str, Decimal] = {}
    guaranteed = True
    for c in _containers(pod) + _containers(pod, "initContainers"):
        for name, value in _resources(c, "requests").items():
            if name in COMPUTE and quantity.parse(value) > 0:
                requests[name] = requests.get(name, Decimal(0)) + quantity.parse(value)
        found = set()
        for name, value in _resources(c, "limits").items():
            if name in COMPUTE and quantity.parse(value) > 0:
                found.add(name)
                limits[name] = limits.get(name, Decimal(0)) + quantity.parse(value)
        if not {"cpu", "memory"} <= found:
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed:
        for name, req in requests.items():
            if limits.get(name) != req:
                guaranteed = False
                break
    if guaranteed and len(requests) == len(limits):
        return "Guaranteed"
    return "Burstable"


def apply_defaults(pod: dict[str, Any]) -> None:
    """Server-side defaults: requests default to limits, restartPolicy Always, resize policies."""
    spec = pod.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    for field in ("containers", "initContainers"):
        for c in _containers(pod, field):
            res = c.get("resources")
            if isinstance(res, dict) and isinstance(res.get("limits"), dict):
                reqs = res.setdefault("requests", {})
                for name, value in res["limits"].items():
                    reqs.setdefault(name, value)
            c.setdefault("imagePullPolicy", "IfNotPresent")
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")


def canonicalise_resources(pod: dict[str, Any]) -> list[FieldError]:
    """Parse every quantity (the server stores canonical text); errors for unparsable ones."""
    errors: list[FieldError] = []
    for field in ("containers", "initContainers"):
        for i, c in enumerate(_containers(pod, field)):
            for part in ("requests", "limits"):
                values = _resources(c, part)
                for name in list(values):
                    path = f"spec.{field}[{i}].resources.{part}[{name}]"
                    try:
                        values[name] = quantity.canonical(name, values[name])
                    except quantity.QuantityError as exc:
                        errors.append(invalid(path, str(values[name]), str(exc)))
    return errors


def _validate_requirements(c: dict[str, Any], path: str) -> list[FieldError]:
    """ValidateContainerResourceRequirements: non-negative values, requests <= limits."""
    errors: list[FieldError] = []
    limits = _resources(c, "limits")
    for part in ("requests", "limits"):
        for name, value in _resources(c, part).items():
            try:
                if quantity.parse(value) < 0:
                    errors.append(
                        invalid(f"{path}.{part}[{name}]", str(value), "must be greater than or equal to 0")
                    )
            except quantity.QuantityError:
                continue  # reported by canonicalise_resources
    for name, value in _resources(c, "requests").items():
        if name not in limits:
            if name not in _OVERCOMMIT and "/" in name:
                errors.append(
                    required(f"{path}.limits", "Limit must be set for non overcommitable resources")
                )
            continue
        try:
            req, lim = quantity.parse(value), quantity.parse(limits[name])
        except quantity.QuantityError:
            continue
        if name not in _OVERCOMMIT and "/" in name and req != lim:
            errors.append(
                invalid(f"{path}.requests", str(value), f"must be equal to {name} limit of {limits[name]}")
            )
        elif req > lim:
            errors.append(
                invalid(
                    f"{path}.requests",
                    str(value),
                    f"must be less than or equal to {name} limit of {limits[name]}",
                )
            )
    return errors


def _validate_resize_policy(c: dict[str, Any], path: str, pod_restart: str) -> list[FieldError]:
    errors: list[FieldError] = []
    seen: set[str] = set()
    for i, p in enumerate(c.get("resizePolicy") or []):
        name, policy = p.get("resourceName", ""), p.get("restartPolicy", "")
        if name in seen:
            errors.append(FieldError(FieldErrorType.DUPLICATE, f"{path}.resizePolicy[{i}]", "", name))
        seen.add(name)
        if name == "":
            errors.append(required(f"{path}.resizePolicy"))
        elif name not in COMPUTE:
            errors.append(
                FieldError(
                    FieldErrorType.NOT_SUPPORTED,
                    f"{path}.resizePolicy",
                    'supported values: "cpu", "memory"',
                    name,
                )
            )
        if policy == "":
            errors.append(required(f"{path}.resizePolicy"))
        elif policy not in ("NotRequired", "RestartContainer"):
            errors.append(
                FieldError(
                    FieldErrorType.NOT_SUPPORTED,
                    f"{path}.resizePolicy",
                    'supported values: "NotRequired", "RestartContainer"',
                    policy,
                )
            )
        if pod_restart == "Never" and policy != "NotRequired":
            errors.append(
                invalid(
                    f"{path}.resizePolicy", policy, "must be 'NotRequired' when `restartPolicy` is 'Never'"
                )
            )
    return errors


def validate_pod_spec(pod: dict[str, Any]) -> list[FieldError]:
    """The parts of ValidatePodCreate the emulator enforces (names, images, resources, policies)."""
    errors: list[FieldError] = []
    meta = pod.get("metadata") or {}
    name = meta.get("name", "")
    if not name:
        errors.append(required("metadata.name", "name or generateName is required"))
    elif len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        errors.append(
            invalid(
                "metadata.name",
                name,
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
                "or '.', and must start and end with an alphanumeric character",
            )
        )
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return [*errors, required("spec")]
    restart = spec.get("restartPolicy", "Always")
    if restart not in ("Always", "OnFailure", "Never"):
        errors.append(
            FieldError(
                FieldErrorType.NOT_SUPPORTED,
                "spec.restartPolicy",
                'supported values: "Always", "OnFailure", "Never"',
                restart,
            )
        )
    containers = _containers(pod)
    if not containers:
        errors.append(required("spec.containers"))
    seen: set[str] = set()
    for field in ("initContainers", "containers"):
        for i, c in enumerate(_containers(pod, field)):
            path = f"spec.{field}[{i}]"
            cname = c.get("name", "")
            if not cname:
                errors.append(required(f"{path}.name"))
            elif not _DNS_LABEL.match(cname) or len(cname) > 63:
                errors.append(
                    invalid(
                        f"{path}.name",
                        cname,
                        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
                        "'-', and must start and end with an alphanumeric character",
                    )
                )
            elif cname in seen:
                errors.append(FieldError(FieldErrorType.DUPLICATE, f"{path}.name", "", cname))
            seen.add(cname)
            if not c.get("image"):
                errors.append(required(f"{path}.image"))
            errors.extend(_validate_requirements(c, f"{path}.resources"))
            errors.extend(_validate_resize_policy(c, path, restart))
    return errors


def validate_pod_update(new: dict[str, Any], old: dict[str, Any]) -> list[FieldError]:
    """ValidatePodUpdate: only images, activeDeadlineSeconds and tolerations may change in spec."""
    mutable_new = _spec_without_mutable(new)
    mutable_old = _spec_without_mutable(old)
    if mutable_new != mutable_old:
        return [
            forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`,"
                "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
                "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
                "(allow it to be set to 1 if it was previously negative)",
            )
        ]
    return []


def _spec_without_mutable(pod: dict[str, Any]) -> dict[str, Any]:
    spec = dict(pod.get("spec") or {})
    for key in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"):
        spec.pop(key, None)
    for field in ("containers", "initContainers"):
        spec[field] = [{k: v for k, v in c.items() if k != "image"} for c in _containers(pod, field)]
    return spec


def validate_resize(new: dict[str, Any], old: dict[str, Any]) -> list[FieldError]:
    """ValidatePodResize (1.35): what a PATCH/PUT on ``pods/{name}/resize`` may change."""
    if MIRROR_ANNOTATION in ((old.get("metadata") or {}).get("annotations") or {}):
        return [forbidden("", "static pods cannot be resized")]
    if ((old.get("spec") or {}).get("os") or {}).get("name") == "windows":
        return [forbidden("", "windows pods cannot be resized")]
    errors = validate_pod_spec(new)
    old_qos = (old.get("status") or {}).get("qosClass") or compute_qos(old)
    if compute_qos(new) != old_qos:
        errors.append(invalid("spec", old_qos, "Pod QOS Class may not change as a result of resizing"))
    for field, label in (("containers", "containers"), ("initContainers", "initContainers")):
        new_list, old_list = _containers(new, field), _containers(old, field)
        if len(new_list) != len(old_list):
            errors.append(forbidden(f"spec.{field}", f"{label} may not be added or removed on resize"))
            return errors
        renamed = [
            forbidden(f"spec.{field}[{i}].name", f"{label} may not be renamed or reordered on resize")
            for i, c in enumerate(new_list)
            if c.get("name") != old_list[i].get("name")
        ]
        if renamed:
            return errors + renamed
    for i, (nc, oc) in enumerate(zip(_containers(new), _containers(old), strict=True)):
        errors.extend(_container_resize(nc, oc, f"spec.containers[{i}].resources"))
    for i, (nc, oc) in enumerate(
        zip(_containers(new, "initContainers"), _containers(old, "initContainers"), strict=True)
    ):
        if is_sidecar(oc):
            errors.extend(_container_resize(nc, oc, f"spec.initContainers[{i}].resources"))
        elif nc.get("resources") != oc.get("resources"):
            errors.append(
                forbidden(
                    f"spec.initContainers[{i}].resources",
                    "resources for non-sidecar init containers are immutable",
                )
            )
    if _non_compute_changed(new, old):
        errors.append(forbidden("spec", "only cpu and memory resources are mutable"))
    return errors


def _container_resize(new: dict[str, Any], old: dict[str, Any], path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    for part, what in (("requests", "resource requests"), ("limits", "resource limits")):
        if any(name not in _resources(new, part) for name in _resources(old, part)):
            errors.append(forbidden(f"{path}.{part}", f"{what} cannot be removed"))
    return errors


def _non_compute_changed(new: dict[str, Any], old: dict[str, Any]) -> bool:
    def strip(pod: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for c in _containers(pod) + [c for c in _containers(pod, "initContainers") if is_sidecar(c)]:
            out.append(
                {
                    part: {k: v for k, v in _resources(c, part).items() if k not in COMPUTE}
                    for part in ("requests", "limits")
                }
            )
        return out

    return strip(new) != strip(old)


def resize_view(patched: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """dropNonResizeUpdates: ``old`` with only resources / resizePolicy taken from ``patched``."""
    import copy

    result = copy.deepcopy(old)
    for field in ("containers", "initContainers"):
        by_name = {c.get("name"): c for c in _containers(patched, field)}
        for c in _containers(result, field):
            source = by_name.get(c.get("name"))
            if source is None:
                continue
            for key in ("resources", "resizePolicy"):
                if key in source:
                    c[key] = copy.deepcopy(source[key])
                else:
                    c.pop(key, None)
    return result


def resources_of(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """Per container (regular ones), the ``resources`` block as stored."""
    return [dict(c.get("resources") or {}) for c in _containers(pod)]
