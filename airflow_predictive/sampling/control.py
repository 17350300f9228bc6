"""The listener -> sidecar control channel: JSON lines on the sidecar's stdin.

The listener (inside the task process) never touches the database: it spawns the sidecar, writes
one START line (the try's record), a STORE line when the store URL came after the sidecar started
(a slow connection lookup), and at the task's end one END line (the outcome) or one LEG
line (the task process exits because the try deferred / was rescheduled). Writes of a few hundred
bytes to a pipe never block, so each hook costs the task microseconds whatever the database does.
The sidecar, outside the task path, creates the run row, writes samples and records the end, and
retries while the database is down. EOF without END or LEG: the task process vanished.

Stdlib only (the sidecar reads this before anything heavy is imported).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_predictive.core.model.resources import Metric, ResourceVector
from airflow_predictive.core.model.runs import (
    LegEnd,
    Outcome,
    RunIdentity,
    RunRecord,
    RunSource,
    TaskKey,
)

if TYPE_CHECKING:
    from airflow_predictive.core.model.runs import FeatureValue

#: a START line larger than this drops executor_config (a pipe holds 64 KiB without blocking)
MAX_START_BYTES = 48 * 1024


class ControlError(ValueError):
    """A control line that cannot be read."""


@dataclass(frozen=True, slots=True)
class StartMessage:
    """The try's record, and the task process's RSS when the hook ran (a first sample that a
    task shorter than the sidecar's start-up would otherwise lack)."""

    record: RunRecord
    at: datetime | None = None
    rss_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class EndMessage:
    """The try ended in this leg with ``outcome`` (the listener's success / failed / skipped hook)."""

    outcome: Outcome
    at: datetime
    exit_code: int | None = None
    note: str | None = None
    rss_bytes: int | None = None  # the task process's RSS at its end hook (a last sample)
    hwm_bytes: int | None = None  # its own peak RSS (VmHWM): the peak is never below it


@dataclass(frozen=True, slots=True)
class LegMessage:
    """This leg ends and the try resumes later (deferred / up_for_reschedule)."""

    reason: LegEnd
    at: datetime


@dataclass(frozen=True, slots=True)
class StoreMessage:
    """The store URL, when the listener's connection lookup outlasted the start hook (the sidecar
    was started with ``--store-later``); ``url`` None: there is none (``why``), record nothing.
    The URL travels on the pipe, never on the command line."""

    url: str | None
    why: str = ""


Message = StartMessage | EndMessage | LegMessage | StoreMessage


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _dt(value: Any) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(float(value), UTC)


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and value >= 0 else None


def own_memory() -> tuple[int | None, int | None]:
    """(RSS, VmHWM) of this process in bytes from /proc/self/status (None where unreadable)."""
    rss = hwm = None
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return rss, hwm


def _vector(values: Any) -> ResourceVector:
    if not isinstance(values, dict):
        return ResourceVector()
    return ResourceVector.lenient({m: values.get(m.value) for m in Metric})


def encode_record(record: RunRecord) -> dict[str, Any]:
    ident = record.identity
    return {
        "dag_id": ident.key.dag_id,
        "task_id": ident.key.task_id,
        "map_index": ident.key.map_index,
        "run_id": ident.run_id,
        "try_number": ident.try_number,
        "source": ident.source.value,
        "start": _ts(record.start),
        "declared": {m.value: v for m, v in record.declared.items() if v is not None},
        "operator": record.operator,
        "pool": record.pool,
        "queue": record.queue,
        "hostname": record.hostname,
        "features": dict(record.features),
        "executor_config": record.executor_config,
        "sample_interval_s": record.sample_interval_s,
    }


def decode_record(data: dict[str, Any]) -> RunRecord:
    features: dict[str, FeatureValue] = {
        str(k): v
        for k, v in (data.get("features") or {}).items()
        if v is None or isinstance(v, str | int | float | bool)
    }
    return RunRecord(
        identity=RunIdentity(
            key=TaskKey(str(data["dag_id"]), str(data["task_id"]), int(data.get("map_index", -1))),
            run_id=str(data["run_id"]),
            try_number=int(data.get("try_number", 1)),
            source=RunSource(data.get("source", RunSource.LISTENER.value)),
        ),
        start=_dt(data.get("start")),
        declared=_vector(data.get("declared")),
        operator=data.get("operator"),
        pool=data.get("pool"),
        queue=data.get("queue"),
        hostname=data.get("hostname"),
        features=features,
        executor_config=data.get("executor_config"),
        sample_interval_s=data.get("sample_interval_s"),
    )


def encode(message: Message) -> bytes:
    if isinstance(message, StartMessage):
        body: dict[str, Any] = {
            "type": "start",
            "record": encode_record(message.record),
            "at": _ts(message.at),
            "rss": message.rss_bytes,
        }
        line = json.dumps(body, default=str, separators=(",", ":"))
        if len(line) > MAX_START_BYTES:
            body["record"]["executor_config"] = None
            line = json.dumps(body, default=str, separators=(",", ":"))
    elif isinstance(message, EndMessage):
        line = json.dumps(
            {
                "type": "end",
                "outcome": message.outcome.value,
                "at": message.at.timestamp(),
                "exit_code": message.exit_code,
                "note": message.note,
                "rss": message.rss_bytes,
                "hwm": message.hwm_bytes,
            }
        )
    elif isinstance(message, StoreMessage):
        line = json.dumps({"type": "store", "url": message.url, "why": message.why})
    else:
        line = json.dumps({"type": "leg", "reason": message.reason.value, "at": message.at.timestamp()})
    return line.encode() + b"\n"


def decode(line: bytes | str) -> Message:
    try:
        data = json.loads(line)
        kind = data["type"]
        if kind == "start":
            return StartMessage(decode_record(data["record"]), _dt(data.get("at")), _int(data.get("rss")))
        at = _dt(data.get("at")) or datetime.now(UTC)
        if kind == "end":
            code = data.get("exit_code")
            return EndMessage(
                Outcome(data["outcome"]), at, None if code is None else int(code), data.get("note"),
                _int(data.get("rss")), _int(data.get("hwm")),
            )  # fmt: skip
        if kind == "leg":
            return LegMessage(LegEnd(data["reason"]), at)
        if kind == "store":
            url = data.get("url")
            return StoreMessage(str(url) if url else None, str(data.get("why") or ""))
    except (ValueError, KeyError, TypeError) as exc:
        raise ControlError(f"unreadable control line {line[:200]!r}: {exc}") from exc
    raise ControlError(f"unknown control message type {kind!r}")
