"""What shaping decided and what became of it, as enums and frozen values.

Every decision the controller takes, including the ones that change nothing ("held back by
hysteresis", "deferred by the node"), becomes one ``ShapingEvent`` per metric with a reason, so
the UI and the tests can say why a task was (or was not) grown or reclaimed. Pure values: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from airflow_predictive.core.model.backend import ResizeStatus

if TYPE_CHECKING:
    from datetime import datetime

    from airflow_predictive.core.model.resources import Metric


class Action(StrEnum):
    """What the policy wants for one metric."""

    GROW = "grow"
    RECLAIM = "reclaim"
    HOLD = "hold"


class Cause(StrEnum):
    """Why the policy wants it."""

    ABOVE_FORECAST = "above_forecast"  # actual > predicted x (1 + tolerance)
    BELOW_FORECAST = "below_forecast"  # actual < predicted x (1 - tolerance), long enough
    NEAR_LIMIT = "near_limit"  # usage within the headroom fraction of the limit (OOM / throttling risk)
    FORECAST_RISE = "forecast_rise"  # the forecast ahead needs more than the limit: grow before the ramp
    PLAN_STEP = "plan_step"  # the plan's timed step says so
    IDLE_LIMIT = "idle_limit"  # no forecast; usage far below the limit for long enough
    ABOVE_NEED = "above_need"  # usage in the band, the limit above the forecast's need ahead (opt-in)
    WITHIN_BAND = "within_band"  # nothing to do
    NO_USAGE = "no_usage"  # the metric was not measured this tick
    NOT_SHAPED = "not_shaped"  # neither request nor limit set (BestEffort), or not live


class Verdict(StrEnum):
    """What became of a decision. APPLIED is the only one that changed the task."""

    APPLIED = "applied"
    PENDING = "pending"  # submitted, not yet in force (Kubernetes: not yet actuated)
    SUPERSEDED = "superseded"  # a resize still in flight replaced by a newer one (a grow over a held reclaim)
    DEFERRED_BY_NODE = "deferred_by_node"  # PodResizePending Deferred: no room on the node now
    INFEASIBLE = "infeasible"
    REJECTED = "rejected"
    ERROR = "error"
    UNSUPPORTED = "unsupported"
    HELD_BACK_HYSTERESIS = "held_back_hysteresis"  # change too small, or not below the band long enough
    HELD_BACK_COOLDOWN = "held_back_cooldown"  # too soon after the last change of this metric
    AT_BOUND = "at_bound"  # the min / max bound (or the usage floor) leaves nothing to change
    NO_CHANGE = "no_change"  # HOLD: within the band
    NO_USAGE = "no_usage"

    @classmethod
    def of(cls, status: ResizeStatus, reason: str = "") -> Verdict:
        if status is ResizeStatus.PENDING and "deferred" in reason.lower():
            return cls.DEFERRED_BY_NODE
        return _FROM_STATUS[status]


_FROM_STATUS = {
    ResizeStatus.APPLIED: Verdict.APPLIED,
    ResizeStatus.PENDING: Verdict.PENDING,
    ResizeStatus.INFEASIBLE: Verdict.INFEASIBLE,
    ResizeStatus.REJECTED: Verdict.REJECTED,
    ResizeStatus.ERROR: Verdict.ERROR,
    ResizeStatus.UNSUPPORTED: Verdict.UNSUPPORTED,
}


@dataclass(frozen=True, slots=True)
class MetricDecision:
    """The policy's answer for one metric (before anything was attempted).

    before / target: the shaped value (the limit, else the request) now and wanted.
    verdict: set when the policy itself holds back (hysteresis, cooldown, bound, no usage, hold);
        None when the target should be submitted.
    """

    metric: Metric
    action: Action
    cause: Cause
    before: float | None
    target: float | None
    usage: float | None
    predicted: float | None
    reason: str
    verdict: Verdict | None = None

    @property
    def wants_change(self) -> bool:
        return self.verdict is None and self.action is not Action.HOLD


@dataclass(frozen=True, slots=True)
class ShapingEvent:
    """One stored decision about one metric of one shaped task.

    subject: the shaped task (backend ref: cgroup path, "namespace/pod"); run_key: the try it
    belongs to ("dag/task/run/try"), when known. t_s: seconds since shaping started.
    """

    at: datetime
    t_s: float
    subject: str
    backend: str
    metric: Metric
    action: Action
    cause: Cause
    verdict: Verdict
    reason: str
    before: float | None
    target: float | None
    after: float | None
    usage: float | None
    predicted: float | None
    run_key: str = ""
