"""Wait for coming capacity, or start now on a smaller plan: the planner's choice, with its reason (pure).

Why: once nodes are made ahead of demand (warm capacity, a node booting), a plan that does not
fit the pool now may fit in 40 s when a node is Ready. Starting it now on a plan that reserves
less is worth it only when that plan is still safe: its memory must cover the forecast at the
task's configured risk quantile at every moment, so the only smaller plan considered is the same
forecast at the same risk planned more finely (shorter pieces, more steps: it follows the curve
instead of holding each piece's maximum for long) and, CPU being compressible, with CPU capped to
what is free. Memory is never cut below the risk quantile to start sooner: that is the OOM kill
the planner exists to avoid. If no such plan fits now the task waits, and the choice says for
what: the coming capacity (which node, ready when) or reservations ending.

Decisions (``StartDecision``): START_NOW (the plan fits; coming capacity may carry its later
steps), START_SMALLER, WAIT_FOR_COMING, WAIT, NEVER_FITS (above present + coming capacity).
Stored as decisions of kind ``start`` (``codec.start_choice_to_dict`` is the payload).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from airflow_predictive.core.model.plan import PlanSource
from airflow_predictive.core.model.resources import format_bytes
from airflow_predictive.core.scheduling.coming import pending
from airflow_predictive.core.scheduling.planner import against_pool, plan_from_forecast
from airflow_predictive.core.scheduling.profile import relative_pieces

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow_predictive.core.model.backend import Capabilities
    from airflow_predictive.core.model.plan import AllocationPlan, Bottleneck, PlanOutcome
    from airflow_predictive.core.model.resources import Metric, ResourceVector
    from airflow_predictive.core.model.series import Forecast
    from airflow_predictive.core.scheduling.coming import ComingCapacity
    from airflow_predictive.core.scheduling.planner import PlanSettings
    from airflow_predictive.core.scheduling.profile import Profile


class StartDecision(StrEnum):
    START_NOW = "start_now"
    START_SMALLER = "start_smaller"
    WAIT_FOR_COMING = "wait_for_coming"
    WAIT = "wait"
    NEVER_FITS = "never_fits"


@dataclass(frozen=True, slots=True)
class SmallerPlan:
    """How the smaller plan is made: the same forecast at ``risk`` (None: the task's own risk)
    with pieces as short as ``min_step_s`` and up to ``max_steps`` steps."""

    min_step_s: float = 10.0
    max_steps: int = 12
    risk: Mapping[Metric, float] | None = None


@dataclass(frozen=True, slots=True)
class StartChoice:
    """The choice for one task now.

    plan: the plan to run (the smaller one for START_SMALLER). start: when it starts (epoch s;
    None: never fits). ready_at / waits_for: the coming capacity it waits for (WAIT_FOR_COMING).
    bottleneck: what does not fit now.
    """

    decision: StartDecision
    plan: AllocationPlan
    reason: str
    start: float | None
    bottleneck: Bottleneck | None = None
    ready_at: float | None = None
    waits_for: str = ""

    @property
    def starts_now(self) -> bool:
        return self.decision in (StartDecision.START_NOW, StartDecision.START_SMALLER)


def _fits_now(plan: AllocationPlan, profile: Profile, now: float) -> bool:
    return profile.fit(relative_pieces(plan.segments()), now).fits


def _memory(plan: AllocationPlan) -> str:
    v = plan.peak().limits.memory_bytes or plan.peak().requests.memory_bytes
    return "?" if v is None else format_bytes(v)


def smaller_plan(
    forecast: Forecast,
    *,
    declared: ResourceVector,
    settings: PlanSettings,
    capabilities: Capabilities | None,
    smaller: SmallerPlan,
) -> AllocationPlan | None:
    """The finer plan at the configured risk (None when the forecast gives no forecast plan)."""
    finer = replace(
        settings,
        min_step_s=min(settings.min_step_s, smaller.min_step_s),
        max_steps=max(settings.max_steps, smaller.max_steps),
        risk=dict(smaller.risk) if smaller.risk is not None else settings.risk,
    )
    out = plan_from_forecast(forecast, declared=declared, settings=finer, capabilities=capabilities)
    return out.plan if out.plan.source is PlanSource.FORECAST else None


def choose_start(
    outcome: PlanOutcome,
    *,
    present: Profile,
    with_coming: Profile,
    coming: Sequence[ComingCapacity],
    now: float,
    forecast: Forecast | None = None,
    declared: ResourceVector | None = None,
    settings: PlanSettings | None = None,
    capabilities: Capabilities | None = None,
    smaller: SmallerPlan | None = None,
) -> StartChoice:
    """Start now, start smaller, or wait (for which capacity); see the module docstring.

    present: the pool's profile without coming capacity; with_coming: with it
    (``ledger.profile_of(..., coming=..., now=...)``). forecast/declared/settings: to make the
    smaller plan (without a forecast there is none: the task waits).
    """
    from airflow_predictive.core.model.resources import ResourceVector
    from airflow_predictive.core.scheduling.planner import PlanSettings

    plan = outcome.plan
    pieces = relative_pieces(plan.segments())
    fit = with_coming.fit(pieces, now)
    if fit.fits:
        relies = not present.fit(pieces, now).fits
        why = "fits the pool now" + (
            " (its later steps use capacity that is coming: " + _coming_text(coming, now) + ")"
            if relies
            else ""
        )
        return StartChoice(StartDecision.START_NOW, plan, why, now)
    bottleneck = fit.bottleneck
    start = with_coming.earliest_start(pieces, now)
    if start is None:
        return StartChoice(
            StartDecision.NEVER_FITS,
            plan,
            f"above the pool's present and coming capacity: {bottleneck.describe(now) if bottleneck else ''}",
            None,
            bottleneck,
        )
    if forecast is not None:
        settings = settings or PlanSettings()
        finer = smaller_plan(
            forecast,
            declared=declared or ResourceVector(),
            settings=settings,
            capabilities=capabilities,
            smaller=smaller or SmallerPlan(),
        )
        candidates: list[tuple[AllocationPlan, str]] = []
        if finer is not None:
            candidates.append((finer, "finer steps"))
            degraded, _, _ = against_pool(finer, with_coming, now)
            if degraded is not None:
                candidates.append((degraded.plan, "finer steps, cpu capped to what is free"))
        degraded, _, _ = against_pool(plan, with_coming, now)
        if degraded is not None:
            candidates.append((degraded.plan, "cpu capped to what is free"))
        for cand, how in candidates:
            if _fits_now(cand, with_coming, now):
                q = ", ".join(f"{m.value} p{round(v * 100):d}" for m, v in cand.quantiles.items())
                return StartChoice(
                    StartDecision.START_SMALLER,
                    cand,
                    f"starts now on a smaller plan ({how}; {q}, memory peak {_memory(cand)} vs "
                    f"{_memory(plan)}) instead of waiting {start - now:.0f} s: "
                    f"{bottleneck.describe(now) if bottleneck else 'the full plan does not fit now'}",
                    now,
                    bottleneck,
                )
    present_start = present.earliest_start(pieces, now)
    if present_start is None or present_start > start + 1e-6:
        enabling = [c for c in pending(coming, None, now) if c.ready_at <= start + 1e-6]
        last = max(enabling, key=lambda c: c.ready_at) if enabling else None
        return StartChoice(
            StartDecision.WAIT_FOR_COMING,
            plan,
            f"waits {start - now:.0f} s for coming capacity"
            + (f" ({last.source or last.ref}, ready in {last.ready_at - now:.0f} s)" if last else "")
            + f"; no plan at the task's risk fits now: {bottleneck.describe(now) if bottleneck else ''}",
            start,
            bottleneck,
            ready_at=last.ready_at if last else start,
            waits_for=(last.source or last.ref) if last else "",
        )
    return StartChoice(
        StartDecision.WAIT,
        plan,
        f"waits {start - now:.0f} s for reservations to end; no plan at the task's risk fits now: "
        f"{bottleneck.describe(now) if bottleneck else ''}",
        start,
        bottleneck,
    )


def _coming_text(coming: Sequence[ComingCapacity], now: float) -> str:
    ahead = pending(coming, None, now)
    return ", ".join(f"{c.source or c.ref} in {c.ready_at - now:.0f} s" for c in ahead[:3]) or "none"
