"""The emulator's object store: typed resources, resourceVersion, uid, generation and watch.

Like etcd behind the API server, it hands out one cluster-wide, increasing ``resourceVersion``
per write, keeps a bounded event history for watches (older versions answer 410 Gone) and
rejects writes whose ``metadata.resourceVersion`` is stale (409 Conflict). Every read returns a
deep copy, so nothing outside can change stored objects without a write.
"""

from __future__ import annotations

import copy
import re
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_predictive.emulator.kubernetes.errors import ApiError, already_exists, conflict, not_found

if TYPE_CHECKING:
    import builtins
    from collections.abc import Callable, Iterator

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Resource:
    """One API resource: ``pods`` in group ``""`` version ``v1``, namespaced."""

    plural: str
    kind: str
    group: str
    version: str
    namespaced: bool
    verbs: tuple[str, ...] = ("create", "delete", "get", "list", "patch", "update", "watch")
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()


@dataclass(frozen=True, slots=True)
class Event:
    rv: int
    type: str  # ADDED / MODIFIED / DELETED
    resource: str
    namespace: str
    obj: Obj


class Selector:
    """Equality- and set-based label selectors plus ``metadata.name`` / ``metadata.namespace`` /
    ``spec.nodeName`` / ``status.phase`` field selectors."""

    _SET = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")

    def __init__(self, labels: str | None = None, fields: str | None = None) -> None:
        self._label_terms = self._split(labels or "")
        self._field_terms = self._split(fields or "")

    @staticmethod
    def _split(text: str) -> list[str]:
        terms, depth, cur = [], 0, ""
        for ch in text:
            depth += ch == "("
            depth -= ch == ")"
            if ch == "," and depth == 0:
                terms.append(cur)
                cur = ""
            else:
                cur += ch
        if cur.strip():
            terms.append(cur)
        return [t.strip() for t in terms if t.strip()]

    def matches(self, obj: Obj) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        for term in self._label_terms:
            if not _label_term(term, labels, self._SET):
                return False
        for term in self._field_terms:
            key, op, value = _split_op(term)
            actual = _field_value(obj, key)
            if (op == "!=") == (actual == value):
                return False
        return True


def _split_op(term: str) -> tuple[str, str, str]:
    for op in ("!=", "==", "="):
        if op in term:
            key, value = term.split(op, 1)
            return key.strip(), "!=" if op == "!=" else "=", value.strip()
    return term.strip(), "exists", ""


def _label_term(term: str, labels: dict[str, str], set_re: re.Pattern[str]) -> bool:
    m = set_re.match(term)
    if m:
        values = {v.strip() for v in m.group(3).split(",")}
        present = labels.get(m.group(1)) in values
        return present if m.group(2) == "in" else not present
    if term.startswith("!"):
        return term[1:].strip() not in labels
    key, op, value = _split_op(term)
    if op == "exists":
        return key in labels
    if op == "!=":
        return labels.get(key) != value
    return labels.get(key) == value


def _field_value(obj: Obj, path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur)


class Store:
    """Thread-safe objects by (resource, namespace, name) with a watchable event history.

    Stored versions are private copies that are never changed in place (a write stores a new
    object), so events and kubelet snapshots can share them without copying."""

    def __init__(self, now: Callable[[], str], history: int = 20000) -> None:
        self._now = now
        self._lock = threading.Condition()
        self._objects: dict[tuple[str, str, str], Obj] = {}
        self._rv = 1000
        self._events: deque[Event] = deque(maxlen=history)
        self._closed = False

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._rv

    def _bump(self) -> int:
        self._rv += 1
        return self._rv

    def _emit(self, type_: str, resource: str, namespace: str, obj: Obj) -> None:
        """Record an event; ``obj`` is a stored version, never mutated in place, so it is shared."""
        self._events.append(Event(self._rv, type_, resource, namespace, obj))
        self._lock.notify_all()

    def create(self, resource: Resource, namespace: str, obj: Obj) -> Obj:
        meta = obj.setdefault("metadata", {})
        name = meta.get("name") or ""
        if not name and meta.get("generateName"):
            name = meta["generateName"] + uuid.uuid4().hex[:5]
            meta["name"] = name
        key = (resource.plural, namespace, name)
        with self._lock:
            if key in self._objects:
                raise already_exists(resource.kind, name)
            if resource.namespaced:
                meta["namespace"] = namespace
            else:
                meta.pop("namespace", None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = self._now()
            meta["generation"] = 1
            meta["resourceVersion"] = str(self._bump())
            obj["apiVersion"], obj["kind"] = resource.api_version, resource.kind
            stored = copy.deepcopy(obj)
            self._objects[key] = stored
            self._emit("ADDED", resource.plural, namespace, stored)
            return obj

    def get(self, resource: Resource, namespace: str, name: str) -> Obj:
        with self._lock:
            obj = self._objects.get((resource.plural, namespace, name))
            if obj is None:
                raise not_found(resource.kind, resource.group, name)
            return copy.deepcopy(obj)

    def list(
        self, resource: Resource, namespace: str | None, selector: Selector | None = None
    ) -> tuple[builtins.list[Obj], int]:
        with self._lock:
            items = [
                copy.deepcopy(o)
                for (plural, ns, _), o in sorted(self._objects.items())
                if plural == resource.plural
                and (namespace is None or ns == namespace)
                and (selector is None or selector.matches(o))
            ]
            return items, self._rv

    def snapshot(self, resource: Resource) -> builtins.list[Obj]:
        """The stored objects of ``resource`` themselves, without copies: callers must only read
        them (the simulated kubelet scans every pod on every tick)."""
        with self._lock:
            return [o for (plural, _, _), o in self._objects.items() if plural == resource.plural]

    def replace(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        mutate: Callable[[Obj], Obj | None],
        *,
        expected_rv: str | None = None,
        spec_changes_generation: bool = True,
    ) -> Obj:
        """Atomically read, change and write one object; no write (and no event) when unchanged.

        ``mutate`` gets a copy and returns the new object (or None to keep it). A non-empty
        ``expected_rv`` that differs from the stored one raises 409 Conflict.
        """
        key = (resource.plural, namespace, name)
        with self._lock:
            current = self._objects.get(key)
            if current is None:
                raise not_found(resource.kind, resource.group, name)
            if expected_rv and expected_rv != current["metadata"].get("resourceVersion"):
                raise conflict(resource.kind, name)
            new = mutate(copy.deepcopy(current))
            if new is None or new == current:
                return copy.deepcopy(current)
            meta = new.setdefault("metadata", {})
            for immutable in ("uid", "creationTimestamp", "namespace", "name"):
                if immutable in current["metadata"]:
                    meta[immutable] = current["metadata"][immutable]
            meta["generation"] = current["metadata"].get("generation", 1)
            if spec_changes_generation and new.get("spec") != current.get("spec"):
                meta["generation"] += 1
            meta["resourceVersion"] = str(self._bump())
            stored = copy.deepcopy(new)
            self._objects[key] = stored
            self._emit("MODIFIED", resource.plural, namespace, stored)
            return new

    def delete(self, resource: Resource, namespace: str, name: str) -> Obj:
        key = (resource.plural, namespace, name)
        with self._lock:
            obj = self._objects.pop(key, None)
            if obj is None:
                raise not_found(resource.kind, resource.group, name)
            gone = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self._bump())}}
            self._emit("DELETED", resource.plural, namespace, gone)
            return copy.deepcopy(gone)

    def _after(self, rv: int) -> builtins.list[Event]:
        """Events newer than ``rv``, oldest first (walks back from the newest: O(new events))."""
        out: builtins.list[Event] = []
        for event in reversed(self._events):
            if event.rv <= rv:
                break
            out.append(event)
        out.reverse()
        return out

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()

    def watch(
        self,
        resource: Resource,
        namespace: str | None,
        since_rv: int,
        selector: Selector,
        deadline: Callable[[], bool],
        poll_s: float = 0.5,
    ) -> Iterator[Event | None]:
        """Events after ``since_rv`` (None now and then so the caller can check its connection).

        Raises 410 Gone when ``since_rv`` is older than the kept history.
        """
        with self._lock:
            if self._events and since_rv < self._events[0].rv - 1 and since_rv < self._rv:
                raise ApiError(
                    410, "Expired", f"too old resource version: {since_rv} ({self._events[0].rv - 1})"
                )
        last = since_rv
        while not deadline():
            with self._lock:
                if self._closed:
                    return
                pending = self._after(last)
                if not pending:
                    self._lock.wait(poll_s)
                    pending = self._after(last)
            if not pending:
                yield None
                continue
            for event in pending:
                last = event.rv
                if event.resource != resource.plural or (
                    namespace is not None and event.namespace != namespace
                ):
                    continue
                if selector.matches(event.obj):
                    yield event
