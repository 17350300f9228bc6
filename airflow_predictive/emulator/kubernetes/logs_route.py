"""``GET /api/v1/namespaces/{ns}/pods/{name}/log``: the kubelet's container logs through the API.

Why it exists: the KubernetesPodOperator and ``kubectl logs`` read container output here. The
query parameters are the API's (``container``, ``follow``, ``previous``, ``timestamps``,
``sinceSeconds``, ``sinceTime``, ``tailLines``, ``limitBytes``), and so are the 400 answers for a
missing / unknown container, one still waiting to start, or no previous instance. The simulated
kubelet captures no output: its containers have empty logs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from airflow_predictive.emulator.kubernetes.errors import bad_request
from airflow_predictive.emulator.kubernetes.logs import LogQuery, follow, parse_stamp, read_lines
from airflow_predictive.emulator.kubernetes.messages import Response
from airflow_predictive.emulator.kubernetes.resources import PODS

if TYPE_CHECKING:
    from airflow_predictive.emulator.kubernetes.api import Api

TEXT = "text/plain"


def _flag(query: dict[str, str], name: str) -> bool:
    return (query.get(name) or "").lower() in ("true", "1")


def _int(query: dict[str, str], name: str) -> int | None:
    text = query.get(name)
    if text in (None, ""):
        return None
    try:
        value = int(text)
    except ValueError:
        raise bad_request(f"{name}: invalid value {text!r}: must be an integer") from None
    if value < 0:
        raise bad_request(f"{name}: Invalid value: {value}: must be greater than or equal to 0")
    return value


def pod_log(api: Api, namespace: str, name: str, query: dict[str, str]) -> Response:
    pod = api.store.get(PODS, namespace, name)
    spec = pod.get("spec") or {}
    names = [c["name"] for c in spec.get("containers", [])]
    inits = [c["name"] for c in spec.get("initContainers") or []]
    container = query.get("container") or ""
    if not container:
        if len(names) != 1:
            extra = f" or one of the init containers: [{' '.join(inits)}]" if inits else ""
            raise bad_request(
                f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]{extra}"
            )
        container = names[0]
    if container not in names and container not in inits:
        raise bad_request(f"container {container} is not valid for pod {name}")
    since: datetime | None = None
    seconds = _int(query, "sinceSeconds")
    if seconds is not None:
        since = datetime.now(UTC) - timedelta(seconds=seconds)
    if query.get("sinceTime"):
        since = parse_stamp(query["sinceTime"])
        if since is None:
            raise bad_request(f"sinceTime: invalid value {query['sinceTime']!r}")
    q = LogQuery(
        timestamps=_flag(query, "timestamps"),
        since=since,
        tail_lines=_int(query, "tailLines"),
        limit_bytes=_int(query, "limitBytes"),
    )
    previous = _flag(query, "previous")
    uid = pod["metadata"]["uid"]
    with api.lock:
        rt = api.kubelet.pods.get(uid)
        cr = None if rt is None else rt.containers.get(container) or rt.init_containers.get(container)
        path = None if rt is None else api.kubelet.log_file(rt, container, previous)
        waiting = None
        if cr is None or (not cr.running and cr.terminated is None and cr.last_terminated is None):
            waiting = (
                (cr.waiting[0] if cr is not None and cr.waiting else "ContainerCreating")
                if not path
                else None
            )
    if previous and path is None:
        raise bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
    if waiting is not None and path is None:
        raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: {waiting}')
    if path is None:
        return Response(200, "", TEXT)
    if not _flag(query, "follow") or previous:
        return Response(200, read_lines(path, q), TEXT)

    def done() -> bool:
        with api.lock:
            current = api.kubelet.pods.get(uid)
            if current is None:
                return True
            c = current.containers.get(container) or current.init_containers.get(container)
            return c is None or not c.running or api.kubelet.log_file(current, container, False) != path

    return Response(200, None, TEXT, headers={"Transfer-Encoding": "chunked"}, stream=follow(path, q, done))
