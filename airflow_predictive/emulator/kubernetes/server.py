"""HTTP/1.1 transport of the emulator: a threading server with keep-alive and chunked watches.

Each connection gets a thread (the official clients keep pools of persistent connections; a
watch holds one for its lifetime). The handler only translates HTTP to ``Api.handle`` and back,
applies injected faults first, and never logs request bodies.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from airflow_predictive.emulator.kubernetes.api import Api, Request, Response
from airflow_predictive.emulator.kubernetes.errors import ApiError, bad_request

if TYPE_CHECKING:
    from airflow_predictive.emulator.kubernetes.faults import Faults

log = logging.getLogger(__name__)


class EmulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], api: Api, faults: Faults) -> None:
        self.api = api
        self.faults = faults
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-request (a closed watch, a timed-out call) is routine for
        an API server: one debug line, not the default traceback on stderr."""
        if isinstance(sys.exc_info()[1], ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
            log.debug("client %s went away: %s", client_address, sys.exc_info()[1])
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EmulatorHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        ctype = (self.headers.get("Content-Type") or "").lower()
        if "yaml" in ctype:
            raise ApiError(415, "UnsupportedMediaType", "the emulator accepts JSON bodies only")
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise bad_request(f"error decoding body: {exc}") from None

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        path = url.path.rstrip("/") or "/"
        try:
            body = self._read_body()
            if path.startswith("/emulator/"):
                self._send(self._control(method, path, body))
                return
            watch = method == "GET" and (query.get("watch") or "").lower() in ("true", "1")
            rule = self.server.faults.take(method, path, watch=watch)
            if rule is not None:
                if rule.delay_s:
                    time.sleep(rule.delay_s)
                err = rule.error()
                if err is not None:
                    raise err
            drop = rule.drop_watch_after if rule is not None else None
            ctype = self.headers.get("Content-Type") or "application/json"
            accept = self.headers.get("Accept") or "application/json"
            request = Request(method, path, query, body, ctype, drop, accept)
            response = self.server.api.handle(request)
        except ApiError as err:
            response = Response(err.code, err.status(), headers=dict(err.headers))
        self._send(response)

    def _control(self, method: str, path: str, body: Any) -> Response:
        faults = self.server.faults
        if path == "/emulator/faults":
            if method == "GET":
                return Response(200, {"faults": [r.as_dict() for r in faults.rules()]})
            if method == "POST":
                if not isinstance(body, dict):
                    raise bad_request("a fault rule is a JSON object")
                try:
                    rule = faults.add(faults.from_json(body))
                except (TypeError, ValueError) as exc:
                    raise bad_request(str(exc)) from None
                return Response(201, rule.as_dict())
            if method == "DELETE":
                faults.clear()
                return Response(200, {"faults": []})
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _send(self, response: Response) -> None:
        if response.stream is not None:
            self._send_stream(response)
            return
        payload = response.encode()
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-cache, private")
        for k, v in response.headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def _send_stream(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        assert response.stream is not None
        try:
            for chunk in response.stream:
                if not chunk:
                    continue
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (ConnectionAbortedError, BrokenPipeError, ConnectionResetError):
            self.close_connection = True
