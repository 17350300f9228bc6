"""The listener -> sidecar control lines: round trips, bad lines, and an END that arrives with START."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from airflow_predictive.core.model.resources import ResourceVector
from airflow_predictive.core.model.runs import LegEnd, Outcome, RunIdentity, RunRecord, TaskKey
from airflow_predictive.sampling.control import (
    MAX_START_BYTES,
    ControlError,
    EndMessage,
    LegMessage,
    StartMessage,
    decode,
    encode,
)
from airflow_predictive.sampling.recorder import ControlReader

AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _record(executor_config: str | None = None) -> RunRecord:
    return RunRecord(
        RunIdentity(TaskKey("d", "t", 3), "run", 2),
        start=AT,
        declared=ResourceVector(memory_bytes=2.0 * 2**30),
        operator="PythonOperator",
        features={"param.input_mb": 512, "predictive": True},
        executor_config=executor_config,
        sample_interval_s=1.0,
    )


def test_start_end_and_leg_lines_round_trip() -> None:
    start = decode(encode(StartMessage(_record('{"a": 1}'))))
    assert isinstance(start, StartMessage)
    assert start.record.identity == _record().identity and start.record.start == AT
    assert start.record.declared.memory_bytes == 2.0 * 2**30
    assert dict(start.record.features) == {"param.input_mb": 512, "predictive": True}
    assert decode(encode(EndMessage(Outcome.OOM_KILLED, AT, 137, "oom"))) == EndMessage(
        Outcome.OOM_KILLED, AT, 137, "oom"
    )
    assert decode(encode(LegMessage(LegEnd.DEFERRED, AT))) == LegMessage(LegEnd.DEFERRED, AT)


def test_a_huge_executor_config_is_dropped_so_the_pipe_never_blocks() -> None:
    line = encode(StartMessage(_record("x" * (2 * MAX_START_BYTES))))
    assert len(line) < MAX_START_BYTES
    assert isinstance(decode(line), StartMessage)


@pytest.mark.parametrize("bad", [b"not json", b'{"type": "teleport"}', b'{"type": "end", "outcome": "meh"}'])
def test_bad_lines_raise_a_control_error(bad: bytes) -> None:
    with pytest.raises(ControlError):
        decode(bad)


def test_an_end_written_right_after_start_is_not_lost() -> None:
    r, w = os.pipe()
    os.write(w, encode(StartMessage(_record())) + encode(EndMessage(Outcome.SUCCESS, AT, 0, None)))
    os.close(w)
    reader = ControlReader(r)
    assert isinstance(reader.wait_start(timeout=5), StartMessage)
    assert reader.read() == [EndMessage(Outcome.SUCCESS, AT, 0, None)]
    assert reader.read() == [] and reader.closed
    os.close(r)
