"""Kubernetes ``Status`` error bodies and field errors, shaped like the API server's.

Clients (the Python client's ApiException, kubectl) show ``message`` and branch on ``reason`` and
``code``; field errors render like apimachinery's ``field.Error`` ("spec: Invalid value:
\"Burstable\": Pod QOS Class may not change as a result of resizing"). Nothing here may invent a
shape the real server never sends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class FieldErrorType(StrEnum):
    INVALID = "FieldValueInvalid"
    FORBIDDEN = "FieldValueForbidden"
    REQUIRED = "FieldValueRequired"
    NOT_SUPPORTED = "FieldValueNotSupported"
    DUPLICATE = "FieldValueDuplicate"


_LABEL = {
    FieldErrorType.INVALID: "Invalid value",
    FieldErrorType.FORBIDDEN: "Forbidden",
    FieldErrorType.REQUIRED: "Required value",
    FieldErrorType.NOT_SUPPORTED: "Unsupported value",
    FieldErrorType.DUPLICATE: "Duplicate value",
}


@dataclass(frozen=True, slots=True)
class FieldError:
    """One validation failure at a field path (``spec.containers[0].resources.requests``)."""

    type: FieldErrorType
    path: str
    detail: str
    value: Any = None

    @property
    def body(self) -> str:
        """The part after the path: 'Invalid value: "x": detail' / 'Forbidden: detail'."""
        if self.type is FieldErrorType.INVALID:
            return f"{_LABEL[self.type]}: {_go_value(self.value)}: {self.detail}"
        return f"{_LABEL[self.type]}: {self.detail}"

    def __str__(self) -> str:
        return f"{self.path}: {self.body}" if self.path else self.body


def _go_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def invalid(path: str, value: Any, detail: str) -> FieldError:
    return FieldError(FieldErrorType.INVALID, path, detail, value)


def forbidden(path: str, detail: str) -> FieldError:
    return FieldError(FieldErrorType.FORBIDDEN, path, detail)


def required(path: str, detail: str = "") -> FieldError:
    return FieldError(FieldErrorType.REQUIRED, path, detail)


@dataclass
class ApiError(Exception):
    """An API failure answered as a ``Status`` body with ``code``."""

    code: int
    reason: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code} {self.reason}: {self.message}"

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def not_found(kind: str, group: str, name: str) -> ApiError:
    resource = _plural(kind)
    qualified = f"{resource}.{group}" if group else resource
    return ApiError(404, "NotFound", f'{qualified} "{name}" not found', {"name": name, "kind": resource})


def already_exists(kind: str, name: str) -> ApiError:
    resource = _plural(kind)
    return ApiError(
        409, "AlreadyExists", f'{resource} "{name}" already exists', {"name": name, "kind": resource}
    )


def conflict(kind: str, name: str) -> ApiError:
    resource = _plural(kind)
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        {"name": name, "kind": resource},
    )


def invalid_object(kind: str, name: str, errors: list[FieldError]) -> ApiError:
    """422 ``Invalid``: 'Pod "x" is invalid: <err>' or '... is invalid: [<err>, <err>]'."""
    rendered = [str(e) for e in errors]
    joined = rendered[0] if len(rendered) == 1 else "[" + ", ".join(rendered) + "]"
    causes = [{"reason": e.type.value, "message": e.body, "field": e.path} for e in errors]
    return ApiError(
        422,
        "Invalid",
        f'{kind} "{name}" is invalid: {joined}',
        {"name": name, "kind": kind, "causes": causes},
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def forbidden_quota(kind: str, name: str, detail: str) -> ApiError:
    resource = _plural(kind)
    return ApiError(
        403, "Forbidden", f'{resource} "{name}" is forbidden: {detail}', {"name": name, "kind": resource}
    )


def _plural(kind: str) -> str:
    lower = kind.lower()
    if lower.endswith("class"):
        return lower + "es"
    if lower.endswith("s"):
        return lower
    return lower + "s"
