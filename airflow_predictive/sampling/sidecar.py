"""The sampler sidecar: ``python -m airflow_predictive.sampling.sidecar --control --pid P --url-env V``.

A separate, detached process beside one task try. With ``--control`` (what the listener uses) it
owns the whole recording of the try: the listener only spawns it and writes JSON lines to its
stdin (``sampling.control``); the sidecar creates or resumes the run row, writes samples and
records the end or the leg's deferral (``sampling.recorder``), all outside the task path, with
bounded database timeouts (``--timeout``) and a catch-up window (``--catch-up``) when the
database is down. The older ``--run-pk N`` mode samples a row someone else created and ended.

It never counts itself: its own pid and children are excluded from the task's process tree, and
the launcher moved it out of the task's cgroup before the interpreter started. It samples the task every ``--interval``
seconds, writes the samples every ``--flush`` seconds, and stops on SIGTERM/SIGINT (one final
sample and flush: the listener does this before it records the outcome) or when the task is gone.
When the task vanished without its end being recorded (the task process itself was killed), it
waits ``--grace`` seconds for the listener and then records the end itself: OOM_KILLED when the
cgroup saw an OOM kill, otherwise UNKNOWN with a note.

Start-up is on the task's critical path (the listener waits for readiness), so readiness is
signalled after the first reading and before SQLAlchemy and numpy are imported. It never imports
Airflow and needs no Airflow configuration: everything comes from its command line.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import select
import signal
import sys
import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from airflow_predictive.sampling.clock import MonotonicClock
from airflow_predictive.sampling.gpu import GpuMode
from airflow_predictive.sampling.sampler import FlushStatus, Sampler
from airflow_predictive.sampling.sources import TargetGone, build_source, source_oom_killed

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from airflow_predictive.core.ports import Clock
    from airflow_predictive.storage.run_store import SqlRunStore

log = logging.getLogger("airflow_predictive.sampling.sidecar")

VANISHED_NOTE = "task process vanished before its end was recorded"
READY = b"ready\n"


class ExitCode:
    OK = 0
    BAD_ARGS = 2
    TARGET_GONE = 3
    STORAGE = 4


class StopReason(StrEnum):
    REQUESTED = "requested"  # SIGTERM / SIGINT
    TARGET_GONE = "target_gone"


@dataclass(frozen=True, slots=True)
class SidecarArgs:
    """The sidecar's command line (see ``parse_args``)."""

    run_pk: int | None
    pid: int
    url: str
    interval: float = 1.0
    flush: float = 5.0
    cgroup: str | None = None
    gpu: str = GpuMode.AUTO
    ready_fd: int | None = None
    ready_file: str | None = None
    grace: float = 10.0
    started_at: float | None = None  # the run's start (epoch seconds): t_s counts from there
    control: bool = False  # read the try's record and its end from stdin (sampling.control)
    timeout: float = 1.0  # seconds any one database operation may take
    catch_up: float = 300.0  # seconds to keep retrying the writes after the task ended
    store_later: bool = False  # --control only: the URL comes in a STORE line, not the environment


def _positive(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def parse_args(argv: Sequence[str]) -> SidecarArgs:
    p = argparse.ArgumentParser(prog="python -m airflow_predictive.sampling.sidecar")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--run-pk", type=int, help="sample a run row someone else created and ends")
    mode.add_argument(
        "--control", action="store_true", help="read the try's record and end from stdin (the listener)"
    )
    p.add_argument("--pid", type=int, required=True)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="SQLAlchemy URL of the provider's database")
    where.add_argument(
        "--url-env", help="name of an environment variable holding the URL (keeps passwords out of `ps`)"
    )
    p.add_argument("--interval", type=_positive, default=1.0, help="seconds between samples")
    p.add_argument("--flush", type=_positive, default=5.0, help="seconds between writes")
    p.add_argument("--cgroup", default=None, help="the task's cgroup, when it has one")
    p.add_argument("--gpu", choices=GpuMode.ALL, default=GpuMode.AUTO)
    ready = p.add_mutually_exclusive_group()
    ready.add_argument("--ready-fd", type=int, default=None, help="write 'ready' here once sampling")
    ready.add_argument("--ready-file", default=None, help="create this file once sampling")
    p.add_argument("--grace", type=_non_negative, default=10.0)
    p.add_argument("--started-at", type=float, default=None, help="the run's start, epoch seconds")
    p.add_argument("--timeout", type=_positive, default=1.0, help="seconds per database operation")
    p.add_argument("--catch-up", type=_non_negative, default=300.0, help="seconds to retry writes at the end")
    p.add_argument(
        "--store-later", action="store_true", help="with --control: the URL comes in a STORE line on stdin"
    )
    ns = p.parse_args(list(argv))
    values = vars(ns)
    if values["store_later"] and not values["control"]:
        p.error("--store-later needs --control")
    env_name = values.pop("url_env")
    if env_name is not None:
        values["url"] = os.environ.get(env_name, "")
        if not values["url"] and not values["store_later"]:
            p.error(f"--url-env: environment variable {env_name} is not set")
    return SidecarArgs(**values)


def safe_url(url: str) -> str:
    """The URL with its password masked, for log lines."""
    return re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", url)


class SidecarLoop:
    """Sampling and flushing on schedule; ``step()`` does what is due and says how long to wait."""

    def __init__(
        self,
        sampler: Sampler,
        clock: Clock,
        *,
        interval: float,
        flush_every: float,
        flusher: Any = None,
    ) -> None:
        self.sampler = sampler
        self._flusher = flusher if flusher is not None else sampler
        self._clock = clock
        self._interval = interval
        self._flush_every = flush_every
        now = clock.monotonic()
        self._next_tick = now + interval
        self._next_flush = now + flush_every

    def step(self) -> float | None:
        """Sample / flush if due. Returns seconds until the next due action, None once the target is gone."""
        now = self._clock.monotonic()
        if now >= self._next_tick:
            if not self.sampler.tick():
                return None
            # stay on the grid start + k * interval; skip the ticks a stalled machine missed
            missed = math.floor((now - self._next_tick) / self._interval) + 1
            self._next_tick += missed * self._interval
        if now >= self._next_flush:
            self._flusher.flush()
            self._next_flush = now + self._flush_every
        return max(0.0, min(self._next_tick, self._next_flush) - self._clock.monotonic())


def run_loop(
    loop: SidecarLoop, wait: Callable[[float], None], stop_requested: Callable[[], bool]
) -> StopReason:
    while not stop_requested():
        delay = loop.step()
        if delay is None:
            return StopReason.TARGET_GONE
        if delay > 0:
            wait(delay)
    return StopReason.REQUESTED


def final_flush(sampler: Sampler, wait: Callable[[float], None], *, attempts: int = 3) -> bool:
    """Write what is left, retrying briefly when the database is down. True when all is written."""
    for attempt in range(attempts):
        if sampler.flush() in (FlushStatus.EMPTY, FlushStatus.WRITTEN):
            return True
        if attempt + 1 < attempts:
            wait(1.0)
    log.warning(
        "predictive sampler: %d samples of run %s could not be written before exit",
        sampler.stats.buffered,
        sampler.run_pk,
    )
    return False


def record_if_vanished(
    store: SqlRunStore,
    sampler: Sampler,
    clock: Clock,
    *,
    grace: float,
    wait: Callable[[float], None],
    stop_requested: Callable[[], bool],
    oom_killed: Callable[[], bool],
) -> str | None:
    """After the target vanished: give the listener ``grace`` s, then record the end if it did not.

    Returns the outcome recorded here, or None when the listener recorded it (or we were stopped).
    """
    from airflow_predictive.core.model.runs import Outcome

    end = clock.now()
    deadline = clock.monotonic() + grace
    while True:
        try:
            record = store.get_run_by_pk(sampler.run_pk)
        except Exception as exc:
            log.warning("predictive sampler: cannot read run %s to check its end (%s)", sampler.run_pk, exc)
            record = None
        if record is not None and record.outcome.finished:
            return None
        if stop_requested():
            return None
        remaining = deadline - clock.monotonic()
        if remaining <= 0:
            break
        wait(min(0.5, remaining))
    if record is None:
        return None  # the run is unknown (deleted) or unreadable: nothing to finish
    oom = oom_killed()
    outcome = Outcome.OOM_KILLED if oom else Outcome.UNKNOWN
    note = "the kernel OOM-killed the task (cgroup)" if oom else VANISHED_NOTE
    try:
        store.finish_run(
            sampler.run_pk, outcome=outcome, end=end, peak=sampler.peak, note=note, only_if_running=True
        )
    except Exception as exc:
        log.warning("predictive sampler: cannot record the end of run %s (%s)", sampler.run_pk, exc)
        return None
    log.warning("predictive sampler: run %s recorded as %s: %s", sampler.run_pk, outcome.value, note)
    return outcome.value


class _Signals:
    """SIGTERM/SIGINT set a flag and wake the wait (self-pipe through signal.set_wakeup_fd)."""

    def __init__(self) -> None:
        self.stop = False
        self.extra: list[int] = []  # more fds that wake the wait (the listener's control pipe)
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        signal.set_wakeup_fd(self._w)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.stop = True

    def requested(self) -> bool:
        return self.stop

    def wait(self, seconds: float) -> None:
        if self.stop:
            return
        with contextlib.suppress(InterruptedError):
            ready, _, _ = select.select([self._r, *self.extra], [], [], max(0.0, seconds))
            if self._r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._r, 512)


def _signal_ready(args: SidecarArgs) -> None:
    try:
        if args.ready_fd is not None:
            os.write(args.ready_fd, READY)
            os.close(args.ready_fd)
        elif args.ready_file:
            tmp = f"{args.ready_file}.tmp"
            with open(tmp, "w") as fh:
                fh.write(f"{os.getpid()}\n")
            os.replace(tmp, args.ready_file)
    except OSError as exc:  # the launcher gave up waiting and closed its end: sample anyway
        log.warning("predictive sampler: cannot signal readiness (%s)", exc)


def _open_store(url: str, timeout: float | None = None) -> SqlRunStore:
    from airflow_predictive.storage.engine import engine_for, recording_engine
    from airflow_predictive.storage.run_store import SqlRunStore

    return SqlRunStore(engine_for(url) if timeout is None else recording_engine(url, timeout))


class StoreOpener:
    """Opens the run store on a thread: SQLAlchemy and numpy take a second or more to import on a
    busy node, and sampling keeps its grid meanwhile (samples wait in the sampler's buffer).

    ``address`` gives the URL (it may wait for one; None: there is none, ``why`` says why);
    ``on_open`` / ``on_error`` run on the opener's thread. As the loop's ``flusher`` it attaches the
    store to ``writer`` once open, then writes (the recording sidecar and the pod sampler)."""

    def __init__(
        self,
        address: Callable[[], str | None],
        timeout: float | None = None,
        *,
        why: Callable[[], str] = lambda: "no store address",
        on_open: Callable[[SqlRunStore], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
        writer: Any = None,
    ) -> None:
        self.store: SqlRunStore | None = None
        self.error: Exception | str | None = None
        self.writer = writer
        self._address, self._timeout, self._why = address, timeout, why
        self._on_open, self._on_error = on_open, on_error
        self._thread = threading.Thread(target=self._open, name="open-store", daemon=True)
        self._thread.start()

    def _open(self) -> None:
        url = self._address()
        if url is None:
            self.error = self._why()
            return
        try:
            store = _open_store(url, self._timeout)
        except Exception as exc:  # a bad URL or a missing driver
            self.error = exc
            if self._on_error is not None:
                self._on_error(exc)
            return
        if self._on_open is not None:
            self._on_open(store)
        self.store = store

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout=timeout)

    @property
    def problem(self) -> str:
        """Why there is no store (yet)."""
        return str(self.error or "timed out opening it")

    def flush(self) -> FlushStatus:
        """The loop's flush: attach the store once opened (the writer then creates the row), write."""
        if self.writer.store is None and self.store is not None:
            self.writer.store = self.store
        self.writer.flush()
        return FlushStatus.WRITTEN


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        return ExitCode.BAD_ARGS if exc.code else ExitCode.OK
    with contextlib.suppress(OSError):
        os.nice(5)  # yield to the task when the machine is saturated
    signals = _Signals()
    clock = MonotonicClock()
    if args.control:
        return _main_control(args, signals, clock)
    try:
        source = build_source(
            args.pid, cgroup=args.cgroup, gpu_mode=args.gpu, clock=clock, exclude=(os.getpid(),)
        )
    except TargetGone as exc:
        log.warning("predictive sampler: nothing to sample for run %s: %s", args.run_pk, exc)
        return ExitCode.TARGET_GONE
    offset = 0.0
    if args.started_at is not None:
        offset = max(0.0, clock.now().timestamp() - args.started_at)
    assert args.run_pk is not None
    sampler = Sampler(args.run_pk, source, clock, offset_s=offset)
    sampler.tick()  # first reading: memory now, and the baseline of every rate
    loop = SidecarLoop(sampler, clock, interval=args.interval, flush_every=args.flush)  # grid from here
    _signal_ready(args)

    # SQLAlchemy and numpy take a second or more to import on a busy machine: open the store in the
    # background so the loop keeps sampling on its grid (samples wait in the buffer meanwhile).
    def stop(_exc: Exception) -> None:  # a bad URL or a missing driver: sampling would be for nothing
        signals.stop = True

    opener = StoreOpener(
        lambda: args.url, on_open=lambda store: setattr(sampler, "store", store), on_error=stop
    )
    log.info(
        "predictive sampler: sampling run %s (pid %s) every %.2fs with %s",
        args.run_pk, args.pid, args.interval, type(source).__name__,
    )  # fmt: skip
    reason = run_loop(loop, signals.wait, signals.requested)
    opener.join(timeout=60)
    if opener.store is None:
        log.error(
            "predictive sampler: cannot use the database %s (%s); not sampling",
            safe_url(args.url),
            opener.problem,
        )
        return ExitCode.STORAGE
    store = opener.store
    if reason is StopReason.REQUESTED:
        sampler.tick()  # the final sample
    final_flush(sampler, signals.wait)
    stats = sampler.stats
    log.info(
        "predictive sampler: run %s stopped (%s): %d samples, %d written, %d dropped",
        args.run_pk, reason.value, stats.samples, stats.written, stats.dropped,
    )  # fmt: skip
    if reason is StopReason.TARGET_GONE:
        record_if_vanished(
            store,
            sampler,
            clock,
            grace=args.grace,
            wait=signals.wait,
            stop_requested=signals.requested,
            oom_killed=lambda: source_oom_killed(getattr(source, "primary", None)),
        )
    close = getattr(source, "close", None)
    if callable(close):
        close()
    return ExitCode.OK


class _GoneSource:
    """The source of a task that ended before the sidecar could read it."""

    def read(self) -> None:
        return None


#: how long a ``--store-later`` sidecar waits for its STORE line
STORE_WAIT_S = 90.0


class _StoreAddress:
    """The store URL: known at start, or given later by a STORE line (``--store-later``)."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.why = ""
        self._given = threading.Event()
        if url is not None:
            self._given.set()

    @property
    def given(self) -> bool:
        return self._given.is_set()

    def give(self, message: Any) -> None:
        if not self.given:
            self.url, self.why = message.url, message.why
            self._given.set()

    def wait(self, timeout: float) -> str | None:
        self._given.wait(timeout)
        return self.url


def _main_control(args: SidecarArgs, signals: _Signals, clock: MonotonicClock) -> int:
    """The listener's mode: the whole recording of one try leg (see the module docstring)."""
    from airflow_predictive.sampling.control import EndMessage, LegMessage, StoreMessage
    from airflow_predictive.sampling.recorder import ControlReader, RunWriter

    control = ControlReader(sys.stdin.fileno())
    start = control.wait_start(timeout=30.0)
    if start is None:
        log.warning("predictive sampler: the listener sent no START line; nothing recorded")
        return ExitCode.BAD_ARGS
    record = start.record
    if args.cgroup:
        from airflow_predictive.sampling.escape import inside

        if inside(args.cgroup):
            log.warning(
                "predictive sampler: could not leave the task's cgroup %s; the sampler's own memory "
                "counts against the task's limit there",
                args.cgroup,
            )
    source: Any
    try:
        source = build_source(
            args.pid, cgroup=args.cgroup, gpu_mode=args.gpu, clock=clock, exclude=(os.getpid(),)
        )
    except TargetGone:
        # a task shorter than our start-up: it is recorded all the same, from the task process's
        # own readings in the START / END lines
        log.info("predictive sampler: %s ended before the first reading", record.key)
        source = _GoneSource()
    began = clock.now().timestamp()
    offset = max(0.0, began - record.start.timestamp()) if record.start else 0.0
    sampler = Sampler(0, source, clock, offset_s=offset)
    sampler.tick()
    writer = RunWriter(record, sampler, clock, leg_started_at_s=began)
    writer.task_reading(start.at, start.rss_bytes)  # before our first reading: short tasks have one
    signals.extra.append(control.fd)
    ends: list[EndMessage | LegMessage] = []

    where = _StoreAddress(None if args.store_later else args.url)

    def stop_requested() -> bool:
        for message in control.read():
            if isinstance(message, StoreMessage):
                where.give(message)
            elif isinstance(message, EndMessage | LegMessage):
                ends.append(message)
        return bool(ends) or signals.requested()

    opener = StoreOpener(
        lambda: where.wait(STORE_WAIT_S),
        args.timeout,
        why=lambda: where.why or f"no STORE line within {STORE_WAIT_S:g}s",
        writer=writer,
    )
    loop = SidecarLoop(sampler, clock, interval=args.interval, flush_every=args.flush, flusher=opener)
    log.info(
        "predictive sampler: recording %s (pid %s) every %.2fs with %s",
        record.key, args.pid, args.interval, type(source).__name__,
    )  # fmt: skip
    reason = run_loop(loop, signals.wait, stop_requested)
    if reason is StopReason.TARGET_GONE:
        deadline = clock.monotonic() + 2.0  # the END / LEG line was written before the process exited
        while not ends and not control.closed and clock.monotonic() < deadline:
            stop_requested()
            signals.wait(0.05)
        stop_requested()
    elif not sampler.gone and not ends:
        sampler.tick()  # the final sample (stopped by a signal)
    # from here on only signals wake the waits: a closed control pipe is readable for ever, and as
    # a wake-up fd it turned every wait of the catch-up into a busy loop (seen: a sidecar at 64 % of
    # a core for its 300 s catch-up while the database failed)
    signals.extra.remove(control.fd)
    # after an END / LEG line the task process is exiting: a reading now would catch its teardown
    # (seen: 50 MiB of a 700 MiB task); the END line carries the task's own last reading instead
    for message in ends[:1]:
        if isinstance(message, EndMessage):
            writer.task_reading(message.at, message.rss_bytes)
    deadline = clock.monotonic() + 60.0
    while opener.is_alive() and clock.monotonic() < deadline:
        if not where.given:
            stop_requested()  # a STORE line may still come while the task process lives
            if control.closed and not where.given:
                where.give(
                    StoreMessage(None, "the task process ended before its store connection was fetched")
                )
        opener.join(timeout=0.05)
    if opener.store is None:
        log.error(
            "predictive sampler: cannot use the database %s (%s); %s not recorded",
            safe_url(where.url or ""), opener.problem, record.key,
        )  # fmt: skip
        return ExitCode.STORAGE
    writer.store = opener.store
    end = ends[0] if ends else None
    if end is None and args.grace > 0:
        signals.wait(min(args.grace, 2.0))  # a server-side hook may record a better-informed end
    writer.catch_up(
        end,
        budget_s=args.catch_up,
        wait=signals.wait,
        oom_killed=lambda: source_oom_killed(getattr(source, "primary", None)),
        stop_requested=signals.requested,
    )
    stats = sampler.stats
    log.info(
        "predictive sampler: %s (run %s leg %s) stopped (%s): %d samples, %d written, %d dropped",
        record.key, writer.run_pk, writer.leg, type(end).__name__ if end else reason.value,
        stats.samples, stats.written, stats.dropped,
    )  # fmt: skip
    close = getattr(source, "close", None)
    if callable(close):
        close()
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
