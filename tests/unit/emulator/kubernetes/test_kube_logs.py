"""Container log files: CRI lines with timestamps, and the API's filters over them."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from airflow_predictive.emulator.kubernetes.logs import LogCapture, LogQuery, follow, parse_stamp, read_lines

if TYPE_CHECKING:
    from pathlib import Path

LINES = (
    "2026-01-01T00:00:01.000000001Z stdout F one\n"
    "2026-01-01T00:00:02.500000000Z stderr F two\n"
    "2026-01-01T00:00:03.000000000Z stdout F three\n"
)


def _file(tmp_path: Path) -> str:
    path = tmp_path / "0.log"
    path.write_text(LINES)
    return str(path)


def test_plain_read_drops_the_cri_prefix_and_timestamps_keep_the_rfc3339_stamp(tmp_path: Path) -> None:
    path = _file(tmp_path)
    assert read_lines(path, LogQuery()) == "one\ntwo\nthree\n"
    stamped = read_lines(path, LogQuery(timestamps=True)).splitlines()
    assert stamped[1] == "2026-01-01T00:00:02.500000000Z two"


def test_tail_since_and_limit_bytes(tmp_path: Path) -> None:
    path = _file(tmp_path)
    assert read_lines(path, LogQuery(tail_lines=2)) == "two\nthree\n"
    assert read_lines(path, LogQuery(tail_lines=0)) == ""
    since = datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC)
    assert read_lines(path, LogQuery(since=since)) == "two\nthree\n"
    assert read_lines(path, LogQuery(limit_bytes=6)) == "one\ntw"


def test_nanosecond_stamps_parse_to_microseconds() -> None:
    assert parse_stamp("2026-01-01T00:00:02.500000000Z") == datetime(2026, 1, 1, 0, 0, 2, 500000, tzinfo=UTC)
    assert parse_stamp("not a time") is None


def test_capture_writes_each_line_with_its_stream_and_keeps_a_partial_last_line(tmp_path: Path) -> None:
    capture = LogCapture(str(tmp_path / "c.log"))
    out = capture.pipe("stdout")
    os.write(out, b"first\nsecond\nno newline")
    os.close(out)
    capture.join()
    rows = (tmp_path / "c.log").read_text().splitlines()
    assert [r.split(" ", 3)[1:] for r in rows] == [
        ["stdout", "F", "first"],
        ["stdout", "F", "second"],
        ["stdout", "P", "no newline"],
    ]
    assert read_lines(str(tmp_path / "c.log"), LogQuery()) == "first\nsecond\nno newline\n"


def test_follow_returns_what_is_there_then_stops_once_the_container_is_done(tmp_path: Path) -> None:
    path = _file(tmp_path)
    chunks = b"".join(follow(path, LogQuery(), lambda: True, poll_s=0.01))
    assert chunks == b"one\ntwo\nthree\n"
