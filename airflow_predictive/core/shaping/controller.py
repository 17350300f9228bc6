"""The shaping loop for one task, as a ``tick()`` of named steps with an injected clock.

Each tick: observe (usage and state of the task), settle (follow a resize still in flight),
re-forecast (optional hook, from the observed prefix), decide (the pure policy), act (one resize
with every changed metric), account (ledger adjust after an applied change), record (one shaping
event per decision with its reason). Tests drive time by moving the clock; nothing here sleeps.

It must never hurt the task: a failing backend call, usage source, ledger, event sink or
re-forecast hook is logged (once per kind) and the tick goes on; the task keeps what it has.
A backend that can submit a resize without waiting (``ResizeSubmitter``, the Kubernetes backend)
is driven through submit / poll, so a tick never blocks on one pod.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from airflow_predictive.core.model.backend import ExitKind, ResizeResult, ResizeStatus
from airflow_predictive.core.model.resources import ResourceVector
from airflow_predictive.core.shaping.events import Action, MetricDecision, ShapingEvent, Verdict
from airflow_predictive.core.shaping.policy import (
    MetricHistory,
    MetricObservation,
    PolicyInput,
    PolicyOutput,
    ShapingSettings,
    decide,
    reads_rise_rate,
    seen_ratio,
    shaped_value,
    target_allocation,
)
from airflow_predictive.core.shaping.quiet import Quiet, quiet
from airflow_predictive.core.shaping.reforecast import UsagePrefix

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from airflow_predictive.core.model.backend import Allocation, Handle
    from airflow_predictive.core.model.resources import Metric
    from airflow_predictive.core.model.series import UsageSeries
    from airflow_predictive.core.ports import Clock, ResourceBackend
    from airflow_predictive.core.shaping.policy import Expectation, PlanView

log = logging.getLogger(__name__)
PREFIX_LIMIT = 7200  # samples kept for a re-forecast (two hours at 1 s)


@runtime_checkable
class ResizeSubmitter(Protocol):
    """A backend whose resize can be submitted now and observed on later ticks."""

    def submit_resize(self, handle: Handle, allocation: Allocation) -> ResizeResult:
        """Send the resize; APPLIED / a final status, or PENDING while the node actuates it."""
        ...

    def poll_resize(self, handle: Handle) -> ResizeResult | None:
        """Where the resize in flight stands (PENDING while it is), None when none is in flight."""
        ...


class EventSink(Protocol):
    def record(self, events: Sequence[ShapingEvent]) -> None: ...


class LedgerAdjuster(Protocol):
    """The part of ``ReservationLedger`` shaping needs (an applied change is a fact to record)."""

    def adjust(
        self,
        reservation_id: str,
        at: float,
        allocated: Allocation,
        *,
        desired: Allocation | None = None,
        actual: ResourceVector | None = None,
        until: float | None = None,
        force: bool = True,
    ) -> Any: ...


@dataclass(frozen=True, slots=True)
class ControllerOptions:
    """How the loop around the policy behaves.

    reforecast_every_s: call the re-forecast hook this often (0: never).
    repeat_event_s: an event equal to the last stored one for its metric (same action, cause and
        verdict) is stored again only after this long (a held-back grow is not one row per second).
    record_holds: also store plain "within the band" holds (off: they are not decisions).
    """

    reforecast_every_s: float = 0.0
    repeat_event_s: float = 30.0
    record_holds: bool = False


@dataclass(frozen=True, slots=True)
class TickReport:
    t_s: float
    running: bool
    decisions: tuple[MetricDecision, ...] = ()
    result: ResizeResult | None = None
    events: tuple[ShapingEvent, ...] = ()
    allocation: Allocation | None = None
    note: str = ""


@dataclass
class _InFlight:
    target: Allocation
    decisions: tuple[MetricDecision, ...]
    since_s: float


@dataclass
class _Window:
    """Recent (t, usage) of one metric, for the peak over the dwell window."""

    seconds: float
    points: deque[tuple[float, float]] = field(default_factory=deque)

    def add(self, t: float, value: float) -> None:
        self.points.append((t, value))
        while self.points and self.points[0][0] < t - self.seconds:
            self.points.popleft()

    def extend(self, times: Sequence[float], values: Sequence[float]) -> None:
        """``add`` of each (time, value) in turn (times ascending)."""
        points = self.points
        points.extend(zip(times, values, strict=True))
        if points:
            cut = points[-1][0] - self.seconds
            while points and points[0][0] < cut:
                points.popleft()

    def peak(self) -> float | None:
        return max((v for _, v in self.points), default=None)

    def rise_rate(self) -> float | None:
        """The fastest rise ending at the newest point (per second, >= 0): the largest slope from
        any earlier point of the window to it (None: fewer than two points)."""
        if len(self.points) < 2:
            return None
        t_now, v_now = self.points[-1]
        return max(
            0.0,
            max(((v_now - v) / (t_now - t) for t, v in self.points if t < t_now), default=0.0),
        )


class ShapingController:
    """Shapes one provisioned task through its backend until the task ends."""

    def __init__(
        self,
        backend: ResourceBackend,
        handle: Handle,
        settings: ShapingSettings,
        *,
        clock: Clock,
        expectation: Expectation | None = None,
        plan: PlanView | None = None,
        events: EventSink | None = None,
        ledger: LedgerAdjuster | None = None,
        reservation_id: str | None = None,
        reforecast: Callable[[UsageSeries], Expectation | None] | None = None,
        usage: Callable[[], ResourceVector | None] | None = None,
        options: ControllerOptions | None = None,
        run_key: str = "",
        started_s: float | None = None,
    ) -> None:
        self.backend = backend
        self.handle = handle
        self.settings = _within_backend_bounds(settings, backend, handle)
        self.clock = clock
        self.expectation = expectation
        self.plan = plan
        self.events = events
        self.ledger = ledger
        self.reservation_id = reservation_id
        self.reforecast = reforecast
        self.options = options or ControllerOptions()
        self.run_key = run_key
        self._usage = usage
        self.allocation: Allocation = handle.allocation
        self.started_s = clock.monotonic() if started_s is None else started_s
        self.histories: dict[Metric, MetricHistory] = {}
        self.windows = {m: _Window(settings.reclaim_after_s) for m in self.settings.metrics}
        self.prefix = UsagePrefix(PREFIX_LIMIT)
        self.in_flight: _InFlight | None = None
        self.resizes = 0  # resize calls made (applied or not)
        self.changes: list[tuple[float, Metric, Action, float]] = []  # (t, metric, action, target)
        self.applied = 0
        self.finished: ExitKind | None = None
        self._last_reforecast_s = 0.0
        self._last_event: dict[Metric, tuple[tuple[str, str, str], float]] = {}
        self._held: dict[Metric, Action] = {}  # metric -> action of the REJECTED episode open
        self._warned: set[str] = set()
        self._last_input: PolicyInput | None = None  # the last tick's policy input (for quiet())
        self._acted = False  # the last tick submitted a resize

    # ---- the loop --------------------------------------------------------------------------------
    def tick(self) -> TickReport:
        t = self.clock.monotonic() - self.started_s
        if self.finished is not None:
            return TickReport(t, False, allocation=self.allocation, note=f"task ended: {self.finished}")
        running, usage = self._observe(t)
        if not running:
            return TickReport(t, False, allocation=self.allocation, note=f"task ended: {self.finished}")
        events: list[ShapingEvent] = []
        settled = self._settle(t, events)
        self._maybe_reforecast(t)
        output = self._decide(t, usage)
        if self.in_flight is not None and self._supersedes(output):
            self._supersede(t, events)
        result = self._act(t, output, usage, events) if self.in_flight is None else None
        self._acted = result is not None
        self._record(t, output, events, submitted=result is not None)
        return TickReport(t, True, output.decisions, result or settled, tuple(events), self.allocation)

    # ---- steps -----------------------------------------------------------------------------------
    def _observe(self, t: float) -> tuple[bool, ResourceVector | None]:
        try:
            state = self.backend.state(self.handle)
        except Exception as exc:  # never fail the task: keep shaping blind for this tick
            self._warn("state", f"state of {self.handle.ref} unknown: {exc}")
            state = None
        if state is not None and state.kind is not ExitKind.RUNNING:
            self.finished = state.kind
            return False, None
        try:
            usage = self._usage() if self._usage is not None else self.backend.usage(self.handle)
        except Exception as exc:
            self._warn("usage", f"usage of {self.handle.ref} unreadable: {exc}")
            usage = None
        if usage is not None:
            for metric in self.settings.metrics:
                value = usage.get(metric)
                if value is not None:
                    self.windows[metric].add(t, value)
            if self.reforecast is not None:  # only a re-forecast reads the prefix
                self.prefix.append(t, usage)
        return True, usage

    def _settle(self, t: float, events: list[ShapingEvent]) -> ResizeResult | None:
        flight = self.in_flight
        if flight is None:
            return None
        try:
            if isinstance(self.backend, ResizeSubmitter):
                result = self.backend.poll_resize(self.handle)
            else:  # a backend without submit / poll: asking again for the same target is idempotent
                result = self.backend.resize(self.handle, flight.target)
        except Exception as exc:
            self._warn("poll", f"following the resize of {self.handle.ref} failed: {exc}")
            return None
        if result is not None and result.status is ResizeStatus.PENDING:
            self._events_for(t, flight.decisions, Verdict.of(result.status, result.reason), result, events)
            return result
        self.in_flight = None
        if result is None:
            return None
        self._conclude(t, flight.target, flight.decisions, result, events, None)
        return result

    def _supersedes(self, output: PolicyOutput) -> bool:
        """A grow of a metric the resize in flight reclaims: that reclaim no longer fits the task (one
        the node holds back because usage rose above it, "memory limit below current usage", stays
        in flight until usage drops: waiting for it would OOM-kill the task). A grow in flight is
        never superseded by a larger one: every new spec restarts the kubelet's actuation, so a
        ramp that asks more each tick would never see any of its grows land."""
        flight = self.in_flight
        if flight is None:
            return False
        for d in output.decisions:
            if not d.wants_change or d.action is not Action.GROW or d.target is None:
                continue
            asked = shaped_value(flight.target, d.metric)
            now = shaped_value(self.allocation, d.metric)
            if asked is not None and now is not None and asked < now and d.target > asked:
                return True
        return False

    def _supersede(self, t: float, events: list[ShapingEvent]) -> None:
        """Drop the resize in flight (the next submit replaces its spec: a resize supersedes the one
        before it) and say so in its decisions' events."""
        flight = self.in_flight
        assert flight is not None
        self.in_flight = None
        for d in flight.decisions:
            after = shaped_value(self.allocation, d.metric)
            events.append(self._event(t, d, Verdict.SUPERSEDED, f"{d.reason} -> superseded by a grow", after))

    def _maybe_reforecast(self, t: float) -> None:
        every = self.options.reforecast_every_s
        if (
            self.reforecast is None
            or every <= 0
            or t - self._last_reforecast_s < every
            or len(self.prefix) < 2
        ):
            return
        self._last_reforecast_s = t
        try:
            fresh = self.reforecast(self.prefix.series())
        except Exception as exc:
            self._warn("reforecast", f"re-forecast failed, keeping the forecast: {exc}")
            return
        if fresh is not None:
            self.expectation = fresh

    def _decide(self, t: float, usage: ResourceVector | None) -> PolicyOutput:
        observations = {
            m: MetricObservation(
                None if usage is None else usage.get(m),
                self.windows[m].peak(),
                self.windows[m].rise_rate() if reads_rise_rate(m, self.settings) else None,
            )
            for m in self.settings.metrics
        }
        plan = None
        if self.plan is not None:
            try:
                plan = self.plan.allocation_at(t)
            except Exception as exc:
                self._warn("plan", f"plan unreadable, shaping without it: {exc}")
        current = self.in_flight.target if self.in_flight is not None else self.allocation
        self._last_input = PolicyInput(t, current, observations, self.expectation, plan)
        output = decide(self._last_input, self.settings, self.histories)
        self.histories.update(output.histories)
        return output

    def _act(
        self, t: float, output: PolicyOutput, usage: ResourceVector | None, events: list[ShapingEvent]
    ) -> ResizeResult | None:
        changes = output.changes()
        if not changes:
            return None
        target = target_allocation(self.allocation, changes, self.settings.minimum)
        wanted = tuple(d for d in output.decisions if d.metric in changes)
        try:
            if isinstance(self.backend, ResizeSubmitter):
                result = self.backend.submit_resize(self.handle, target)
            else:
                result = self.backend.resize(self.handle, target)
        except Exception as exc:  # a backend must not raise; if it does, the task keeps what it has
            result = ResizeResult(ResizeStatus.ERROR, f"backend raised: {exc}", self.allocation)
        self.resizes += 1
        for d in wanted:
            self.changes.append((t, d.metric, d.action, changes[d.metric]))
            self.histories[d.metric] = replace(
                self.histories.get(d.metric, MetricHistory()),
                last_change_s=t,
                below_since_s=None,
                plan_seen=self._plan_value(t, d.metric),
            )
        if result.status is ResizeStatus.PENDING:
            self.in_flight = _InFlight(target, wanted, t)
            self._events_for(t, wanted, Verdict.of(result.status, result.reason), result, events)
            return result
        self._conclude(t, target, wanted, result, events, usage)
        return result

    def _conclude(
        self,
        t: float,
        target: Allocation,
        decisions: tuple[MetricDecision, ...],
        result: ResizeResult,
        events: list[ShapingEvent],
        usage: ResourceVector | None,
    ) -> None:
        if result.allocation is not None:
            self.allocation = result.allocation
        elif result.applied:
            self.allocation = target
        self._events_for(t, decisions, Verdict.of(result.status, result.reason), result, events)
        if result.applied:
            self.applied += 1
            self._account(target, usage)

    def _account(self, target: Allocation, usage: ResourceVector | None) -> None:
        if self.ledger is None or self.reservation_id is None:
            return
        now = self.clock.now().timestamp()
        try:
            self.ledger.adjust(
                self.reservation_id,
                now,
                self.allocation,
                desired=target,
                actual=usage,
                until=self._segment_end(now),
            )
        except Exception as exc:
            self._warn("ledger", f"ledger adjust of {self.reservation_id} failed: {exc}")

    def _segment_end(self, now: float) -> float | None:
        """Epoch seconds of the plan's next step (None: the reservation's end): an applied change
        holds only the current segment, the plan's future steps stay in the ledger."""
        segment_end = getattr(self.plan, "segment_end", None)
        if not callable(segment_end):
            return None
        try:
            end = segment_end(self.clock.monotonic() - self.started_s, now)
        except Exception as exc:
            self._warn("plan", f"plan unreadable, adjusting the ledger to its end: {exc}")
            return None
        return None if end is None else float(end)

    def _record(self, t: float, output: PolicyOutput, events: list[ShapingEvent], *, submitted: bool) -> None:
        for d in output.decisions:  # a held episode ends once the policy stops asking for that change
            if d.metric in self._held and d.action is not self._held[d.metric]:
                del self._held[d.metric]
        decided = {e.metric for e in events}
        for d in output.decisions:
            if d.metric in decided or (submitted and d.wants_change):
                continue
            if d.verdict is None:  # wanted a change, but a resize is still in flight
                verdict, reason = Verdict.PENDING, f"{d.reason}; waits for the resize in flight"
            else:
                verdict, reason = d.verdict, d.reason
            if verdict is Verdict.NO_CHANGE and not self.options.record_holds:
                continue
            events.append(self._event(t, d, verdict, reason, after=d.before))
        fresh = [e for e in events if self._is_new(e)]
        if not fresh or self.events is None:
            return
        try:
            self.events.record(fresh)
        except Exception as exc:
            self._warn("events", f"shaping events not stored: {exc}")

    # ---- event-driven loops (the cluster simulator) -----------------------------------------------
    def quiet(self) -> Quiet | None:
        """After the last tick: until when, and for which usage, later ticks would change nothing
        (``core/shaping/quiet.py``); None when the next tick may act (a resize in flight or just
        submitted, a re-forecast hook due, a plan step waiting)."""
        inp = self._last_input
        if inp is None or self.finished is not None or self.in_flight is not None or self._acted:
            return None
        plan_next = _next_plan_change(self.plan, inp.t_s)
        if self.reforecast is not None and self.options.reforecast_every_s > 0:
            plan_next = min(plan_next, self._last_reforecast_s + self.options.reforecast_every_s)
        inp = replace(inp, current=self.allocation)
        return quiet(inp, self.settings, self.histories, plan_next_s=plan_next)

    def observe(self, t_s: float, usage: ResourceVector, *, prefix: bool = True) -> None:
        """A usage sample seen at ``t_s`` (seconds since start) by a loop that skipped its tick:
        the dwell window's peak and (``prefix``) the re-forecast prefix see it as if the tick had
        run (a loop that adds the prefix's samples in bulk, ``prefix.extend``, passes False)."""
        for metric in self.settings.metrics:
            value = usage.get(metric)
            if value is not None:
                self.windows[metric].add(t_s, value)
        if prefix and self.reforecast is not None:
            self.prefix.append(t_s, usage)

    def observe_skipped(self, times: np.ndarray, usage: Mapping[Metric, np.ndarray]) -> None:
        """The samples of the ticks a loop skipped under the last ``quiet()`` promise (``times``
        ascending, seconds since start; one array per metric), seen as if each tick had run: the
        dwell window's, the re-forecast prefix's and the ratio guard's peak so far (the one part
        of the history such a tick may change: ``quiet.py``). No ``ResourceVector`` per sample."""
        if times.size == 0:
            return
        if self.reforecast is not None:  # the re-forecast reads the whole prefix
            self.prefix.extend(times, usage)
        t_last = float(times[-1])
        first = int(np.searchsorted(times, t_last - self.settings.reclaim_after_s))  # older ones drop out
        recent = times[first:].tolist()
        inp = self._last_input
        for metric in self.settings.metrics:
            values = usage.get(metric)
            if values is None:
                continue
            self.windows[metric].extend(recent, values[first:].tolist())
            history = self.histories.get(metric)
            if history is not None and inp is not None:
                # the median read at the skipped ticks is the last tick's (quiet() holds it constant)
                folded = seen_ratio(
                    self.expectation, metric, inp.t_s, self.settings, float(values.max()), history
                )
                if folded is not history:
                    self.histories[metric] = folded

    # ---- helpers ---------------------------------------------------------------------------------
    def _events_for(
        self,
        t: float,
        decisions: Sequence[MetricDecision],
        verdict: Verdict,
        result: ResizeResult,
        events: list[ShapingEvent],
    ) -> None:
        for d in decisions:
            after = shaped_value(self.allocation, d.metric)
            events.append(
                self._event(t, d, verdict, f"{d.reason} -> {result.status}: {result.reason}", after)
            )

    def _event(
        self, t: float, d: MetricDecision, verdict: Verdict, reason: str, after: float | None
    ) -> ShapingEvent:
        return ShapingEvent(
            at=self.clock.now(),
            t_s=t,
            subject=self.handle.ref,
            backend=self.handle.backend,
            metric=d.metric,
            action=d.action,
            cause=d.cause,
            verdict=verdict,
            reason=reason,
            before=d.before,
            target=d.target,
            after=after,
            usage=d.usage,
            predicted=d.predicted,
            run_key=self.run_key,
        )

    def _is_new(self, event: ShapingEvent) -> bool:
        """Changes are always new; a repeated hold is stored again only after ``repeat_event_s``; a
        REJECTED change (the pool is full) is stored once per held episode: again only after the
        policy stopped asking for it or another change was applied, not at every grow cooldown."""
        if event.verdict is Verdict.REJECTED:
            if self._held.get(event.metric) is event.action:
                return False
            self._held[event.metric] = event.action
        elif event.verdict in (Verdict.APPLIED, Verdict.ERROR, Verdict.INFEASIBLE):
            self._held.pop(event.metric, None)
        key = (event.action.value, event.cause.value, event.verdict.value)
        last = self._last_event.get(event.metric)
        changed = event.verdict in (Verdict.APPLIED, Verdict.ERROR, Verdict.INFEASIBLE, Verdict.REJECTED)
        if (
            not changed
            and last is not None
            and last[0] == key
            and event.t_s - last[1] < self.options.repeat_event_s
        ):
            return False
        self._last_event[event.metric] = (key, event.t_s)
        return True

    def _plan_value(self, t: float, metric: Metric) -> float | None:
        if self.plan is None:
            return None
        try:
            return shaped_value(self.plan.allocation_at(t), metric)
        except Exception:
            return None

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning("shaping %s: %s (the task keeps its resources)", self.handle.name, message)
        else:
            log.debug("shaping %s: %s", self.handle.name, message)


def _next_plan_change(plan: PlanView | None, t_s: float) -> float:
    """When the plan's allocation next changes after ``t_s`` (inf: never; an opaque plan: now)."""
    if plan is None:
        return math.inf
    steps = getattr(plan, "steps", None)
    if steps is None:
        return t_s
    return min((float(step.at_s) for step in steps if step.at_s > t_s), default=math.inf)


def _within_backend_bounds(
    settings: ShapingSettings, backend: ResourceBackend, handle: Handle
) -> ShapingSettings:
    """``settings`` with min / max narrowed to what the backend can set, and only live metrics shaped."""
    try:
        caps = backend.capabilities()
    except Exception as exc:
        log.warning(
            "shaping %s: backend capabilities unknown (%s); using the settings' bounds", handle.name, exc
        )
        return settings
    lo, hi = dict(settings.minimum.present()), dict(settings.maximum.present())
    for metric, bounds in caps.bounds.items():
        lo[metric] = max(lo.get(metric, 0.0), bounds.minimum)
        hi[metric] = min(hi.get(metric, bounds.maximum), bounds.maximum)
    metrics = tuple(m for m in settings.metrics if m in caps.live) if caps.enforcing else ()
    return replace(
        settings,
        minimum=ResourceVector.from_mapping(lo),
        maximum=ResourceVector.from_mapping(hi),
        metrics=metrics,
    )
