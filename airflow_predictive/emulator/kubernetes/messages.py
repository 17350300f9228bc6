"""Transport-neutral request and response values between the HTTP server and the API layer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator


@dataclass
class Response:
    status: int
    body: Any = None
    content_type: str = "application/json"
    drop_watch_after: int | None = None  # an injected fault: cut the stream after N events
    accept: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    stream: Iterator[bytes] | None = None

    def encode(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any = None
    content_type: str = "application/json"
    drop_watch_after: int | None = None  # an injected fault: cut the stream after N events
    accept: str = "application/json"
