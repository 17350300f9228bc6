"""Fault injection: make chosen requests fail the way a loaded or broken API server does.

A rule matches by method and a path regular expression and fires ``times`` times (or forever when
``times`` is None): answer ``status`` (429 with Retry-After, 500, 503, 504, 409 Conflict), wait
``delay_s`` first (a client timeout), or cut a watch stream after ``drop_watch_after`` events.
Rules are set from tests through ``Faults.add`` or over HTTP at ``/emulator/faults``.
"""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_predictive.emulator.kubernetes.errors import ApiError


@dataclass
class FaultRule:
    path: str = ".*"
    method: str | None = None
    status: int | None = None
    times: int | None = 1
    delay_s: float = 0.0
    retry_after_s: int = 1
    drop_watch_after: int | None = None
    fired: int = 0
    _pattern: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    def matches(self, method: str, path: str) -> bool:
        if self._pattern is None:
            self._pattern = re.compile(self.path)
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self._pattern.search(path) is not None

    def error(self) -> ApiError | None:
        if self.status is None:
            return None
        code = self.status
        if code == 429:
            return ApiError(
                429,
                "TooManyRequests",
                "Too many requests, please try again later.",
                {"retryAfterSeconds": self.retry_after_s},
                {"Retry-After": str(self.retry_after_s)},
            )
        if code == 409:
            return ApiError(
                409,
                "Conflict",
                "Operation cannot be fulfilled: the object has been modified; please apply your changes "
                "to the latest version and try again",
            )
        reasons = {500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout", 403: "Forbidden"}
        return ApiError(
            code, reasons.get(code, "InternalError"), f"Internal error occurred: injected fault ({code})"
        )

    def as_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body.pop("_pattern", None)
        return body


class Faults:
    """The active rules; thread-safe; the first matching rule with budget left fires."""

    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()

    def add(self, rule: FaultRule) -> FaultRule:
        re.compile(rule.path)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def take(self, method: str, path: str, *, watch: bool = False) -> FaultRule | None:
        with self._lock:
            for rule in self._rules:
                if rule.times is not None and rule.fired >= rule.times:
                    continue
                if (rule.drop_watch_after is not None) != watch:
                    continue
                if rule.matches(method, path):
                    rule.fired += 1
                    return rule
        return None

    @staticmethod
    def from_json(body: dict[str, Any]) -> FaultRule:
        allowed = {"path", "method", "status", "times", "delay_s", "retry_after_s", "drop_watch_after"}
        unknown = set(body) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        return FaultRule(**body)
