"""What every PredictiveExecutor does around its base executor: forecast, plan, admit, reserve,
step, renew, release. Executor-agnostic (the Local and Kubernetes executors feed it keys and
launch what it admits), driven by ``tick(now)`` from the executor's heartbeat, never blocking.

Never hurts the task: a forecast that fails or is missing plans the declared resources; a ledger
that is unavailable launches the task on its declared resources (one log line per outage); a plan
that can never fit runs declared or fails fast (``on_never_fits``); every decision is stored.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from airflow_predictive.core.model.backend import Allocation
from airflow_predictive.core.model.plan import (
    AdmissionDecision,
    AdmissionOutcome,
    AllocationPlan,
    LedgerStatus,
    PlanOutcome,
    PlanSource,
    Pool,
    ReservationRequest,
)
from airflow_predictive.core.model.query import ForecastQuery, ForecastSource
from airflow_predictive.core.model.resources import ResourceVector, format_bytes
from airflow_predictive.core.scheduling import codec
from airflow_predictive.core.scheduling.admission import AdmissionSettings, WaitingTask, admit_round
from airflow_predictive.core.scheduling.ledger import profile_of
from airflow_predictive.core.scheduling.planner import (
    PlanSettings,
    declared_plan,
    held_at_declared,
    oom_retry_plan,
    plan_from_forecast,
    thin_history_floor,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_predictive.core.model.backend import Capabilities
    from airflow_predictive.core.model.runs import RunIdentity
    from airflow_predictive.core.model.series import Forecast
    from airflow_predictive.core.ports import ForecastService, ReservationLedger
    from airflow_predictive.core.scheduling.coming import ComingCapacity
    from airflow_predictive.core.scheduling.profile import Profile
    from airflow_predictive.core.scheduling.start_choice import StartChoice
    from airflow_predictive.executors.opt_in import TaskSettings
    from airflow_predictive.storage.ledger_store import DecisionLog

log = logging.getLogger(__name__)
START_CHOICE_EVERY_S = 5.0  # a held-back task's start choice is remade at most this often
START_CHOICES_PER_ROUND = 8  # ... and at most this many per admission round (the head's always)
OOM_KIND = "oom"  # stored decision kind of an OOM-killed try (payload: OomMemory.to_payload)
# a retry queued before its earlier try's end was seen (an OOM kill is known only then) waits for
# it at most this long before it is admitted on the plan it has
EARLIER_TRY_WAIT_S = 30.0
EXTEND_AHEAD_S = 10.0  # a running task is extended once this close to its predicted end


@dataclass
class Waiting:
    key: Any
    run: RunIdentity
    settings: TaskSettings
    outcome: PlanOutcome
    priority: int
    queued_at: float
    last_reason: str = ""
    forecast: Forecast | None = None  # what the plan came from (the shaping loop compares usage to it)
    earliest_start: float | None = None  # predicted start while held back (epoch s; warm capacity)
    start: StartChoice | None = None  # the last start choice (wait for coming capacity, start smaller ...)
    start_checked: float = float("-inf")  # when it was made (epoch s)
    query: ForecastQuery | None = None  # what it was planned from (re-planned after an earlier try's end)
    after_try: bool = False  # a retry whose earlier try has not been seen to end: it waits for that


@dataclass
class Launch:
    """What the executor must start: with ``allocation`` as limits (None: as Airflow would)."""

    key: Any
    run: RunIdentity
    allocation: Allocation | None
    plan: AllocationPlan | None
    reservation_id: str | None
    decision: AdmissionDecision
    reason: str
    settings: TaskSettings | None = None
    forecast: Forecast | None = None


@dataclass
class Running:
    key: Any
    run: RunIdentity
    plan: AllocationPlan | None
    reservation_id: str | None
    started: float
    end: float
    next_step: int = 0
    handle: Any = None
    allocation: Allocation | None = None
    shaped: bool = False  # a shaping loop owns its resizes (and follows the plan's steps itself)


@dataclass(frozen=True)
class OomMemory:
    """The last OOM-killed try of a task instance: what the next try plans from.

    Kept in the executor's memory and stored as a decision of kind ``oom`` (``to_payload``), so
    that a restarted executor, or another one of an HA pair on the same database, plans the retry
    from it too."""

    peak: ResourceVector
    still_rising: bool
    plan: AllocationPlan | None
    try_number: int = 1

    def to_payload(self) -> dict[str, Any]:
        return {
            "peak": codec.vector_to_dict(self.peak),
            "still_rising": self.still_rising,
            "plan": None if self.plan is None else codec.plan_to_dict(self.plan),
            "try_number": self.try_number,
        }

    @classmethod
    def from_payload(cls, raw: Any, try_number: int) -> OomMemory:
        """ValueError for a payload that is not one (hand-edited, another version's)."""
        if not isinstance(raw, dict):
            raise ValueError(f"an OOM record is an object, got {type(raw).__name__}")
        plan = raw.get("plan")
        return cls(
            codec.vector_from_dict(raw.get("peak")),
            bool(raw.get("still_rising", False)),
            None if plan is None else codec.plan_from_dict(plan),
            int(raw.get("try_number", try_number)),
        )


@dataclass
class CoordinatorSettings:
    plan: PlanSettings = field(default_factory=PlanSettings)
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)
    lease_s: float = 120.0
    extend_s: float = 60.0  # a task past its predicted end keeps this much more reserved, renewed
    # the pool grows on demand (node pools): a plan above present + coming capacity waits this long
    # for a node (its warm capacity makes one) before its declared fallback; None: falls back now
    grow_wait_s: float | None = None
    # until a task has this many recorded runs its memory is never planned below the declared value
    trust_after_runs: int = 3


class Coordinator:
    """One pool, one holder (this executor instance); see the module docstring."""

    def __init__(
        self,
        *,
        ledger: ReservationLedger,
        forecasts: ForecastService | None,
        pool: Pool,
        holder: str,
        settings: CoordinatorSettings,
        capabilities: Capabilities | None = None,
        decisions: DecisionLog | None = None,
        clock: Callable[[], float] = time.time,
        grows: Callable[[], bool] | None = None,
    ) -> None:
        self.ledger = ledger
        self.forecasts = forecasts
        self.pool = pool
        self.holder = holder
        self.settings = settings
        self.capabilities = capabilities
        self.decisions = decisions
        self.clock = clock
        self.grows = grows  # can the pool grow now (node pools known)? None: as grow_wait_s says
        self.waiting: dict[Any, Waiting] = {}
        self.running: dict[Any, Running] = {}
        self.oom: dict[tuple[Any, ...], OomMemory] = {}
        self._ledger_down = False
        self._last_renew = 0.0
        self._choices_left = START_CHOICES_PER_ROUND
        self._pool_ok = self._publish_pool()

    # -- pool -------------------------------------------------------------------------------------

    def _publish_pool(self) -> bool:
        if self.pool.capacity.is_unknown():
            log.warning(
                "predictive: capacity of pool %s is unknown: tasks are planned but never held back",
                self.pool.name,
            )
        try:
            self.ledger.set_pool(self.pool)
            return True
        except Exception as exc:
            log.warning("predictive: could not publish pool %s to the ledger (%s)", self.pool.name, exc)
            return False

    def set_capacity(self, pool: Pool) -> None:
        """The pool changed (quota edited, node added): later admissions use the new capacity."""
        self.pool = pool
        self._pool_ok = self._publish_pool()

    # -- intake: forecast and plan ----------------------------------------------------------------

    def plan_for(self, run: RunIdentity, settings: TaskSettings, query: ForecastQuery) -> PlanOutcome:
        return self._plan(run, settings, query)[0]

    def _plan_settings(self, settings: TaskSettings) -> PlanSettings:
        return replace(
            self.settings.plan,
            risk=dict(settings.risk),
            minimum=settings.minimum,
            maximum=settings.maximum,
            default_duration_s=settings.duration_s or self.settings.plan.default_duration_s,
        )

    def _plan(
        self, run: RunIdentity, settings: TaskSettings, query: ForecastQuery
    ) -> tuple[PlanOutcome, Forecast | None]:
        plan_settings = self._plan_settings(settings)
        previous = self._previous_oom(run) if run.try_number > 1 else None
        if previous is not None:
            out = oom_retry_plan(
                previous.plan,
                previous.peak,
                still_rising=previous.still_rising,
                settings=plan_settings,
                declared=settings.declared,
            )
            log.info("predictive: %s try %d: %s", run.key, run.try_number, out.reason)
            return out, None
        if self.forecasts is None:
            return declared_plan(
                settings.declared, plan_settings, "no forecast service: declared resources"
            ), None
        try:
            served = self.forecasts.forecast_for(query)
        except Exception as exc:  # a broken service never stops the task
            log.warning(
                "predictive: forecast for %s failed (%s); planning the declared resources", run.key, exc
            )
            return declared_plan(settings.declared, plan_settings, f"forecast failed: {exc}"), None
        if served.forecast is None or served.source in (ForecastSource.NONE, ForecastSource.DECLARED):
            why = f"no learned forecast ({served.source.value}{': ' + served.note if served.note else ''})"
            return declared_plan(settings.declared, plan_settings, f"{why}; declared resources"), None
        plan_settings = thin_history_floor(
            plan_settings, settings.declared, served.history_runs, self.settings.trust_after_runs
        )
        try:
            outcome = plan_from_forecast(
                served.forecast,
                declared=settings.declared,
                settings=plan_settings,
                capabilities=self.capabilities,
                model_version=served.model_version,
            )
            if served.limit_bound:
                outcome = held_at_declared(outcome, settings.declared)
            return outcome, served.forecast
        except Exception as exc:  # a corrupt forecast (shape, NaN ...) plans the declared resources
            log.warning(
                "predictive: unusable forecast for %s (%s); planning the declared resources", run.key, exc
            )
            return declared_plan(settings.declared, plan_settings, f"unusable forecast: {exc}"), None

    def _previous_oom(self, run: RunIdentity) -> OomMemory | None:
        """The OOM kill of an earlier try of this task instance: this executor's memory, else the
        stored record (a restarted executor, another HA executor); none readable: None (logged)."""
        known = self.oom.get(_oom_key(run))
        if known is not None and known.try_number < run.try_number:
            return known
        reader = getattr(self.decisions, "latest", None)
        if reader is None:
            return None
        try:
            row = reader(run, kind=OOM_KIND, before_try=run.try_number)
            if row is None:
                return None
            found = OomMemory.from_payload(row.get("payload"), int(row.get("try_number") or 1))
        except Exception as exc:  # the database is down or the record unreadable: plan as usual
            log.warning(
                "predictive: %s try %d: stored OOM record unreadable (%s); planning from the forecast",
                run.key,
                run.try_number,
                exc,
            )
            return None
        log.info("predictive: %s try %d: try %d's OOM kill read from the database",
                 run.key, run.try_number, found.try_number)  # fmt: skip
        return found

    def submit(
        self, key: Any, run: RunIdentity, settings: TaskSettings, query: ForecastQuery, priority: int
    ) -> Waiting:
        outcome, forecast = self._plan(run, settings, query)
        self._record_plan(run, outcome)
        item = Waiting(key, run, settings, outcome, priority, self.clock(), forecast=forecast, query=query)
        item.after_try = outcome.plan.source is not PlanSource.OOM_RETRY and self._earlier_try_running(run)
        self.waiting[key] = item
        return item

    def _earlier_try_running(self, run: RunIdentity) -> bool:
        if run.try_number <= 1:
            return False
        return any(
            r.run.key == run.key and r.run.run_id == run.run_id and r.run.try_number < run.try_number
            for r in self.running.values()
        )

    def _ready(self, item: Waiting, now: float) -> bool:
        """False while a retry waits for its earlier try's end (bounded); once it ended, a retry
        that an OOM kill of that try now concerns is re-planned from the kill."""
        if not item.after_try:
            return True
        if self._earlier_try_running(item.run) and now - item.queued_at < EARLIER_TRY_WAIT_S:
            return False
        item.after_try = False
        if item.query is not None and self._previous_oom(item.run) is not None:
            item.outcome, item.forecast = self._plan(item.run, item.settings, item.query)
            self._record_plan(item.run, item.outcome)
        return True

    # -- admission ----------------------------------------------------------------------------------

    def admit(self, slots: int | None = None) -> list[Launch]:
        """One admission round: what to launch now (the rest stays waiting). ``slots``: how many
        tasks the executor can start now (free workers); admitted tasks beyond them wait, unreserved,
        for the next round (a reservation starts when the task can)."""
        if not self.waiting or (slots is not None and slots <= 0):
            return []
        now = self.clock()
        if not self._pool_ok:
            self._pool_ok = self._publish_pool()
        try:
            held = [r for r in self.ledger.reservations(self.pool.name) if r.expires_at >= now]
        except Exception as exc:
            return self._all_declared(f"ledger unavailable: {exc}")
        coming = self._coming()
        present = profile_of(self.pool, held)
        profile = profile_of(self.pool, held, coming=coming, now=now) if coming else present
        queue = [
            WaitingTask(str(w.key), w.run, w.outcome.plan, w.priority, w.queued_at, w.settings.declared)
            for w in self.waiting.values()
            if self._ready(w, now)
        ]
        by_name = {str(w.key): w for w in self.waiting.values()}
        launches: list[Launch] = []
        queued_before = False  # a task ahead in the queue waits: a smaller start could delay it
        self._choices_left = START_CHOICES_PER_ROUND
        for task, outcome in admit_round(queue, profile, now, self.settings.admission):
            item = by_name[task.key]
            if (
                slots is not None
                and len(launches) >= slots
                and outcome.decision is AdmissionDecision.ADMITTED
            ):
                continue  # fits, but no worker is free: next round
            launch = self._act(item, outcome, now)
            if launch is None and outcome.decision is not AdmissionDecision.ADMITTED:
                launch = self._choose_start(item, present, profile, coming, now, head=not queued_before)
                queued_before = True
            if launch is not None:
                launches.append(launch)
                del self.waiting[item.key]
        return launches

    def _act(self, item: Waiting, outcome: AdmissionOutcome, now: float) -> Launch | None:
        d = outcome.decision
        if d is AdmissionDecision.DECLARED_FALLBACK and self._may_grow(item, now):
            d = AdmissionDecision.QUEUED  # the pool grows on demand: wait for a node, not declared
            outcome = replace(outcome, decision=d, reason=outcome.reason.split(";")[0] + "; waits for a node")
        if d is AdmissionDecision.QUEUED:
            item.earliest_start = outcome.earliest_start
            # one stored decision per distinct cause (metric and side), not per round: the text's
            # numbers (wait, free bytes) change every heartbeat
            b = outcome.bottleneck
            cause = f"{b.metric.value}/{b.side}" if b is not None else outcome.reason.split(":")[0]
            if cause != item.last_reason:
                if not item.last_reason:
                    log.info("predictive: %s held back: %s", item.run.key, outcome.reason)
                item.last_reason = cause
                self._record("admission", d.value, item.run, outcome.reason, _payload(outcome))
            return None
        if d is AdmissionDecision.FAILED_FAST:
            log.error("predictive: %s fails fast: %s", item.run.key, outcome.reason)
            self._record("admission", d.value, item.run, outcome.reason, _payload(outcome))
            return Launch(item.key, item.run, None, None, None, d, outcome.reason)
        if d is AdmissionDecision.DECLARED_FALLBACK:
            return self._declared(item, outcome.reason)
        result = self.ledger.reserve(
            ReservationRequest(
                pool=self.pool.name,
                run=item.run,
                holder=self.holder,
                plan=item.outcome.plan,
                start=now,
                lease_s=self.settings.lease_s,
                priority=item.priority,
            )
        )
        if result.status is LedgerStatus.RESERVED and result.reservation is not None:
            self._ledger_down = False
            self._record(
                "admission",
                d.value,
                item.run,
                outcome.reason,
                {"reservation": result.reservation.id, "waited_s": now - item.queued_at},
            )
            plan = item.outcome.plan
            return Launch(
                item.key,
                item.run,
                plan.initial,
                plan,
                result.reservation.id,
                d,
                outcome.reason,
                settings=item.settings,
                forecast=item.forecast,
            )
        if result.status is LedgerStatus.REFUSED:  # another executor got there first: next round
            b = result.bottleneck
            item.last_reason = f"{b.metric.value}/{b.side}" if b is not None else "refused"
            return None
        # UNAVAILABLE / UNKNOWN pool: never hold the task hostage to the ledger
        return self._declared(item, f"ledger: {result.reason}")

    def _may_grow(self, item: Waiting, now: float) -> bool:
        wait = self.settings.grow_wait_s
        if wait is None or now - item.queued_at >= wait:
            return False
        try:
            return self.grows is None or bool(self.grows())
        except Exception:
            return False

    def _coming(self) -> tuple[ComingCapacity, ...]:
        """The pool's coming capacity as its owner last published it (none when unreadable)."""
        read = getattr(self.ledger, "coming", None)
        if read is None:
            return ()
        try:
            return tuple(read(self.pool.name))
        except Exception as exc:
            log.debug("predictive: coming capacity of %s unreadable (%s)", self.pool.name, exc)
            return ()

    def _choose_start(
        self,
        item: Waiting,
        present: Profile,
        with_coming: Profile,
        coming: tuple[ComingCapacity, ...],
        now: float,
        *,
        head: bool,
    ) -> Launch | None:
        """A held-back task: wait (for coming capacity or reservations ending), or start now on a
        smaller plan at its own risk quantile (only the head of the queue: it delays nobody who
        waited before it). The choice is stored (kind ``start``) when it changes."""
        from airflow_predictive.core.scheduling.start_choice import StartDecision, choose_start

        if item.start is not None and now - item.start_checked < START_CHOICE_EVERY_S:
            return None  # bounded cost per heartbeat: the choice is remade every few seconds
        if not head and self._choices_left <= 0:
            return None  # this round's budget is spent: a later round makes it
        self._choices_left -= 1
        item.start_checked = now
        try:
            choice = choose_start(
                item.outcome,
                present=present,
                with_coming=with_coming,
                coming=coming,
                now=now,
                forecast=item.forecast,
                declared=item.settings.declared,
                settings=self._plan_settings(item.settings),
                capabilities=self.capabilities,
            )
        except Exception as exc:  # the choice only refines admission: never fail the round for it
            log.warning("predictive: start choice for %s failed (%s)", item.run.key, exc)
            return None
        previous = item.start
        item.start = choice
        if previous is None or previous.decision is not choice.decision:
            self._record(
                "start", choice.decision.value, item.run, choice.reason, codec.start_choice_to_dict(choice)
            )
        if choice.decision is not StartDecision.START_SMALLER or not head:
            if choice.decision is StartDecision.WAIT_FOR_COMING and choice.start is not None:
                item.earliest_start = choice.start
            return None
        smaller = replace(
            item.outcome, plan=choice.plan, reason=f"{item.outcome.reason}; start: {choice.reason}"
        )
        item.outcome = smaller
        return self._act(item, AdmissionOutcome(AdmissionDecision.ADMITTED, choice.reason), now)

    def _declared(self, item: Waiting, reason: str) -> Launch:
        declared = item.settings.declared
        allocation = None if declared.is_empty() else Allocation.exactly(declared)
        what = "declared resources" if allocation is not None else "no limits (nothing declared)"
        if "ledger" in reason:
            if not self._ledger_down:
                log.warning("predictive: %s; tasks run on their declared resources until it is back", reason)
            self._ledger_down = True
        else:
            log.warning("predictive: %s runs on %s: %s", item.run.key, what, reason)
        self._record("admission", AdmissionDecision.DECLARED_FALLBACK.value, item.run, reason, None)
        return Launch(
            item.key,
            item.run,
            allocation,
            None,
            None,
            AdmissionDecision.DECLARED_FALLBACK,
            reason,
            settings=item.settings,
        )

    def _all_declared(self, reason: str) -> list[Launch]:
        out = [self._declared(w, reason) for w in list(self.waiting.values())]
        self.waiting.clear()
        return out

    # -- running tasks ------------------------------------------------------------------------------

    def started(self, launch: Launch, handle: Any = None) -> Running:
        now = self.clock()
        plan = launch.plan
        end = now + (plan.duration_s if plan is not None else 0.0)
        item = Running(
            launch.key,
            launch.run,
            plan,
            launch.reservation_id,
            now,
            end,
            handle=handle,
            allocation=launch.allocation,
        )
        self.running[launch.key] = item
        return item

    def adopted(
        self,
        key: Any,
        run: RunIdentity,
        settings: TaskSettings,
        query: ForecastQuery,
        *,
        handle: Any,
        allocation: Allocation | None,
        started: float | None,
        priority: int = 1,
    ) -> tuple[Running, Forecast | None]:
        """A try another executor launched, now this one's (a restarted scheduler adopted its pod).

        Its reservation is taken over when the ledger still holds it (the plan, and the plan's
        clock, are the try's own); else (a clean stop released it, or its lease lapsed) it is
        planned now and reserved from ``started`` (the pod's start), and runs unreserved, logged,
        when the pool refuses it. Due steps resume on the plan's clock: the latest step already due
        is sent once more (the old executor may have died before it), earlier ones never.
        ``allocation``: what the pod holds now. Returns the item and the forecast (for shaping)."""
        now = self.clock()
        outcome, forecast = self._plan(run, settings, query)
        taken = self.ledger.take_over(run, self.holder, now + self.settings.lease_s)
        res = taken.reservation
        rid: str | None
        if res is not None:
            plan, began, rid, how = res.plan or outcome.plan, res.start, res.id, taken.reason
        else:
            plan, began = outcome.plan, now if started is None else min(started, now)
            made = self.ledger.reserve(
                ReservationRequest(
                    self.pool.name, run, self.holder, plan, began, self.settings.lease_s, priority
                )
            )
            rid = made.reservation.id if made.reservation is not None else None
            how = f"{taken.reason}; reserved anew" if rid else f"{taken.reason}; unreserved ({made.reason})"
        due = sum(1 for step in plan.steps if step.at_s <= now - began)
        item = Running(
            key, run, plan, rid, began, began + plan.duration_s, handle=handle, allocation=allocation
        )
        item.next_step = max(due - 1, 0)  # the latest due step is sent again, the earlier ones never
        self.running[key] = item
        log.info("predictive: %s adopted after a restart (%s)", run.key, how)
        self._record("adoption", "adopted", run, how, {"reservation": rid, "at_s": now - began})
        return item, forecast

    def ended_elsewhere(self, key: Any, run: RunIdentity, *, oom_killed: bool = False) -> Running | None:
        """A try launched by an executor that died ended before this one adopted it (its pod is
        handed over completed): its reservation, if still active, is released now rather than at
        its lease's end, and an OOM kill is remembered for the retry (at the limit the ledger held
        then, still rising). None when the ledger holds nothing for it."""
        now = self.clock()
        res = self.ledger.take_over(run, self.holder, now + self.settings.lease_s).reservation
        if res is None:
            return None
        held = res.charge_at(min(max(now, res.start), res.end - 1e-6))
        item = Running(key, run, res.plan, res.id, res.start, res.end, allocation=held)
        self.running[key] = item
        log.info(
            "predictive: %s ended while its executor was down; its reservation %s is released",
            run.key,
            res.id,
        )
        peak = held.limits if oom_killed and held is not None else None
        return self.finished(key, oom_killed=oom_killed, peak=peak, still_rising=oom_killed)

    def due_steps(self, now: float) -> list[tuple[Running, Allocation, str]]:
        """Planned steps whose time has come (the executor applies them, then calls ``stepped``)."""
        out = []
        for item in self.running.values():
            plan = item.plan
            if plan is None or item.handle is None or item.shaped:
                continue
            while item.next_step < len(plan.steps) and plan.steps[item.next_step].at_s <= now - item.started:
                step = plan.steps[item.next_step]
                item.next_step += 1
                out.append((item, step.allocation, step.reason))
        return out

    def stepped(
        self, item: Running, allocated: Allocation, desired: Allocation, usage: ResourceVector | None
    ) -> None:
        """A step was applied (or not): the ledger holds max(desired, allocated, actual) from now."""
        item.allocation = allocated
        if item.reservation_id is None:
            return
        next_step = (
            item.plan.steps[item.next_step] if item.plan and item.next_step < len(item.plan.steps) else None
        )
        until = None if next_step is None else item.started + next_step.at_s
        result = self.ledger.adjust(
            item.reservation_id, self.clock(), allocated, desired=desired, actual=usage, until=until
        )
        if result.status is LedgerStatus.OVERCOMMITTED:
            log.warning("predictive: %s: %s", item.run.key, result.reason)

    def step_applied(
        self,
        item: Running,
        target: Allocation,
        reason: str,
        *,
        status: str,
        detail: str,
        allocated: Allocation | None,
        usage: ResourceVector | None = None,
    ) -> None:
        """What an executor did with a due plan step (``status``: the backend's resize status;
        ``allocated``: what the task now holds, None when the resize was not applied): one log line,
        one stored decision of kind ``step`` and the ledger following it (``stepped``)."""
        holds = allocated or item.allocation or target
        log.info("predictive: %s plan step (%s): %s (%s)", item.run.key, reason, status, detail)
        self._record(
            "step",
            status,
            item.run,
            f"{reason}: {detail}" if detail else reason,
            {
                "at_s": self.clock() - item.started,
                "target": codec.allocation_to_dict(target),
                "allocated": codec.allocation_to_dict(holds),
                "usage": None if usage is None else codec.vector_to_dict(usage),
                "reservation": item.reservation_id,
            },
        )
        self.stepped(item, holds, target, usage)

    def keep_alive(self, now: float) -> None:
        """Renew this holder's lease; extend reservations of tasks running past their predicted end."""
        if now - self._last_renew >= self.settings.lease_s / 4:
            self._last_renew = now
            self.ledger.renew(self.holder, now + self.settings.lease_s)
            self.ledger.expire(now)  # lapse what crashed holders left behind
        for item in self.running.values():
            # near its predicted end (the last EXTEND_AHEAD_S, a few heartbeats), and never before its
            # plan's last step: a plan shorter than extend_s / 2 was re-charged at its current
            # allocation from the first heartbeat on, which erased its planned steps from the ledger
            # (seen through real Airflow on K8s) and held extend_s from launch on
            last = item.plan.steps[-1].at_s if item.plan is not None and item.plan.steps else 0.0
            ahead = min(self.settings.extend_s / 2, EXTEND_AHEAD_S)
            if item.reservation_id is None or now < max(item.end - ahead, item.started + last):
                continue
            charge = item.allocation or (item.plan.allocation_at(now - item.started) if item.plan else None)
            if charge is None:
                continue
            item.end = now + self.settings.extend_s
            result = self.ledger.adjust(item.reservation_id, now, charge, until=item.end)
            if result.status is LedgerStatus.OVERCOMMITTED:
                log.warning(
                    "predictive: %s is about to run past its predicted end; keeping it reserved %.0f s more: %s",
                    item.run.key,
                    self.settings.extend_s,
                    result.reason,
                )

    def finished(
        self,
        key: Any,
        *,
        oom_killed: bool = False,
        peak: ResourceVector | None = None,
        still_rising: bool = False,
    ) -> Running | None:
        """The task ended: release its reservation now (early when before its predicted end)."""
        item = self.running.pop(key, None)
        if item is None:
            return None
        if item.reservation_id is not None:
            self.ledger.release(item.reservation_id, self.clock())
        notify = getattr(self.forecasts, "run_finished", None)  # online update: no I/O, never raises
        if notify is not None:
            notify(item.run.key)
        if oom_killed:
            self._remember_oom(item, peak, still_rising)
        return item

    def _remember_oom(self, item: Running, peak: ResourceVector | None, still_rising: bool) -> None:
        memory = OomMemory(peak or ResourceVector(), still_rising, item.plan, item.run.try_number)
        self.oom[_oom_key(item.run)] = memory
        mem = memory.peak.memory_bytes
        reason = (
            f"try {item.run.try_number} was OOM-killed (peak {'unknown' if mem is None else format_bytes(mem)}"
            f"{', still rising' if still_rising else ''}); the next try plans from that peak"
        )
        log.warning("predictive: %s %s", item.run.key, reason)
        self._record(OOM_KIND, "oom_killed", item.run, reason, memory.to_payload())

    def forget(self, key: Any) -> None:
        """Drop a waiting task (revoked, or handed back to the scheduler)."""
        self.waiting.pop(key, None)

    def release_all(self) -> None:
        for key in list(self.running):
            self.finished(key)

    # -- shadow pre-stage (executors/local_shadow.py) ---------------------------------------------

    def hold_for_shadow(self, run: RunIdentity, note: str) -> None:
        """The task stays queued while its shadow runs (planned when it ends): a stored decision."""
        reason = f"shadow run in progress: {note}"
        self._record("admission", AdmissionDecision.QUEUED.value, run, reason, {"shadow": True})

    def shadow_ended(self, run: RunIdentity, end: str, note: str, summary: dict[str, Any]) -> None:
        """How its shadow ended (or why none ran); the task is planned next."""
        self._record("shadow", end[:32], run, note or end, summary or None)

    # -- records ------------------------------------------------------------------------------------

    def _record_plan(self, run: RunIdentity, outcome: PlanOutcome) -> None:
        self._record(
            "plan", outcome.decision.value, run, outcome.reason, {"plan": codec.plan_to_dict(outcome.plan)}
        )

    def _record(
        self, kind: str, decision: str, run: RunIdentity, reason: str, payload: dict[str, Any] | None
    ) -> None:
        if self.decisions is not None:
            self.decisions.record(
                kind=kind, decision=decision, run=run, reason=reason, pool=self.pool.name, payload=payload
            )


def _oom_key(run: RunIdentity) -> tuple[Any, ...]:
    return (run.key, run.run_id)


def _payload(outcome: AdmissionOutcome) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if outcome.earliest_start is not None:
        out["earliest_start"] = outcome.earliest_start
    b = outcome.bottleneck
    if b is not None:
        out["bottleneck"] = {
            "metric": b.metric.value,
            "side": b.side,
            "at": b.at,
            "needed": b.needed,
            "available": b.available,
            "over_by": b.over_by,
        }
    return out
