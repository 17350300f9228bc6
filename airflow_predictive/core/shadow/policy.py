"""When a task gets a shadow run, and how much a shadow may cost.

Why: a shadow run (a short, small, deadline-bound calibration run of the same command before
the real try) is worth its cost only when the forecast is weak: on a cold start (fewer than
``min_runs`` successful runs), when the forecast no longer fits the task's recent runs (drift),
or when the DAG author asks for it. Its cost is budgeted: at most ``budget`` (5%) of the
predicted runtime, never longer than ``deadline_s``, on ``cpu_cores`` / ``memory_bytes``.
Pure decisions: no Airflow, no storage, no clock; callers pass the facts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from airflow_predictive.core.model.resources import MIB, ResourceVector

if TYPE_CHECKING:
    from collections.abc import Sequence


class ShadowMode(StrEnum):
    """The DAG author's ``shadow_run`` setting."""

    AUTO = "auto"  # shadow on cold start or drift
    ALWAYS = "always"  # shadow_run=True
    NEVER = "never"  # shadow_run=False

    @classmethod
    def parse(cls, value: str | bool) -> ShadowMode:
        """``True`` / ``False`` / ``"auto"`` (the operator argument), or a mode's name."""
        if value is True:
            return cls.ALWAYS
        if value is False:
            return cls.NEVER
        if isinstance(value, str):
            lowered = value.strip().lower()
            aliases = {"true": cls.ALWAYS, "false": cls.NEVER}
            if lowered in aliases:
                return aliases[lowered]
            try:
                return cls(lowered)
            except ValueError:
                pass
        raise ValueError(f"shadow_run must be 'auto', True or False, not {value!r}")


class ShadowReason(StrEnum):
    """Why a shadow runs, or why it does not."""

    COLD_START = "cold_start"
    DRIFT = "drift"
    ASKED = "asked"
    DISABLED = "disabled"  # shadow_run=False
    WELL_KNOWN = "well_known"  # enough history and no drift: not worth its cost
    NO_COMMAND = "no_command"  # a local task with nothing safe to replay (no shadow_cmds, no bash_command)


@dataclass(frozen=True)
class ShadowSettings:
    """The shadow policy and budget (``[predictive] shadow_*`` options; operator arguments override).

    min_runs: fewer successful runs than this is a cold start.
    drift_window: how many of the newest runs are compared with the forecast.
    drift_threshold: median relative error of those runs' peaks against the p50 forecast peak
        beyond which the forecast counts as drifted.
    budget: the shadow's length as a share of the predicted runtime (0.05 = 5%).
    deadline_s: hard deadline, whatever the budget says.
    min_s: the shortest shadow worth running (a shorter prefix says nothing; the budget is raised
        to this, never above ``deadline_s``).
    default_runtime_s: the runtime assumed when nothing predicts it (no forecast duration).
    cpu_cores / memory_bytes: the shadow's small resources (limits of its cgroup / pod).
    sample_interval_s: how often the shadow's usage is read.
    """

    min_runs: int = 3
    drift_window: int = 3
    drift_threshold: float = 0.3
    budget: float = 0.05
    deadline_s: float = 120.0
    min_s: float = 5.0
    default_runtime_s: float = 600.0
    cpu_cores: float = 0.5
    memory_bytes: float = 512 * MIB
    sample_interval_s: float = 0.5

    def __post_init__(self) -> None:
        if self.min_runs < 0 or self.drift_window < 1:
            raise ValueError("min_runs must be >= 0 and drift_window >= 1")
        if not 0 < self.budget <= 1:
            raise ValueError(f"shadow budget must be in (0, 1], got {self.budget}")
        for name in ("deadline_s", "min_s", "default_runtime_s", "cpu_cores", "memory_bytes"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"shadow {name} must be a positive number, got {value}")
        if not (math.isfinite(self.sample_interval_s) and self.sample_interval_s > 0):
            raise ValueError("shadow sample_interval_s must be positive")
        if self.drift_threshold <= 0:
            raise ValueError("shadow drift_threshold must be positive")

    @property
    def resources(self) -> ResourceVector:
        return ResourceVector(cpu_cores=self.cpu_cores, memory_bytes=self.memory_bytes)


@dataclass(frozen=True, slots=True)
class ShadowDecision:
    """Whether to shadow this try, and why (one line for the log)."""

    run: bool
    reason: ShadowReason
    note: str


@dataclass(frozen=True, slots=True)
class ShadowBudget:
    """How long the shadow may run and on what. ``predicted_s``: the runtime it is a share of."""

    seconds: float
    predicted_s: float
    resources: ResourceVector
    note: str


def relative_errors(p50_peak: float | None, recent_peaks: Sequence[float | None]) -> list[float]:
    """|actual - p50| / actual for each recent run with a positive peak (empty without a forecast)."""
    if p50_peak is None or not math.isfinite(p50_peak) or p50_peak <= 0:
        return []
    return [abs(p50_peak - p) / p for p in recent_peaks if p is not None and math.isfinite(p) and p > 0]


def decide(
    mode: ShadowMode, successful_runs: int, errors: Sequence[float], settings: ShadowSettings
) -> ShadowDecision:
    """Shadow or not. ``errors``: relative errors of the newest runs against the forecast
    (``relative_errors``); the newest ``drift_window`` count."""
    if mode is ShadowMode.NEVER:
        return ShadowDecision(False, ShadowReason.DISABLED, "shadow_run=False")
    if mode is ShadowMode.ALWAYS:
        return ShadowDecision(True, ShadowReason.ASKED, "shadow_run=True")
    if successful_runs < settings.min_runs:
        return ShadowDecision(
            True,
            ShadowReason.COLD_START,
            f"cold start: {successful_runs} successful run(s), fewer than {settings.min_runs}",
        )
    window = [e for e in errors if math.isfinite(e)][-settings.drift_window :]
    if len(window) >= settings.drift_window:
        median = _median(window)
        if median > settings.drift_threshold:
            return ShadowDecision(
                True,
                ShadowReason.DRIFT,
                f"drift: the newest {len(window)} runs' peaks are {100 * median:.0f}% off the forecast "
                f"(threshold {100 * settings.drift_threshold:.0f}%)",
            )
    return ShadowDecision(False, ShadowReason.WELL_KNOWN, f"{successful_runs} runs, forecast fits")


def local_gate(mode: ShadowMode, command: str | None) -> ShadowDecision | None:
    """Whether a local task under the PredictiveExecutor may be shadowed at all (None: ``decide``
    says). Running a task's real code twice can have side effects, so the executor replays only
    what is known to be a command: the task's ``shadow_cmds`` or a BashOperator-family
    ``bash_command`` (``command``: where it came from, None when neither). Without one, neither
    "auto" nor True shadows (there is nothing to run)."""
    if mode is ShadowMode.NEVER:
        return ShadowDecision(False, ShadowReason.DISABLED, "shadow_run=False")
    if command is None:
        return ShadowDecision(
            False,
            ShadowReason.NO_COMMAND,
            "no shadow_cmds and no bash_command to replay (a local task's own code is never run twice)",
        )
    return None


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def budget_for(predicted_runtime_s: float | None, settings: ShadowSettings) -> ShadowBudget:
    """The shadow's length: ``budget`` x the predicted runtime, at least ``min_s``, at most ``deadline_s``."""
    known = predicted_runtime_s is not None and math.isfinite(predicted_runtime_s) and predicted_runtime_s > 0
    predicted = float(predicted_runtime_s) if known else settings.default_runtime_s  # type: ignore[arg-type]
    share = predicted * settings.budget
    seconds = min(settings.deadline_s, max(settings.min_s, share))
    source = "predicted" if known else "assumed (nothing predicts it)"
    note = (
        f"{seconds:.1f} s = min(deadline {settings.deadline_s:g} s, max({settings.min_s:g} s, "
        f"{100 * settings.budget:g}% of the {source} runtime {predicted:.0f} s))"
    )
    return ShadowBudget(seconds, predicted, settings.resources, note)
