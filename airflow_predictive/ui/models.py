"""Response models of the UI's JSON API (pydantic: they are the OpenAPI schema FastAPI publishes).

Why a module of their own: the pages, the browser tests and any other client read these shapes;
keeping them apart from the routes and the queries makes the contract one file. Units are in the
field names or in ``unit`` (bytes, cores, seconds); times of a try are seconds since its start,
pool times are epoch seconds.
"""

from __future__ import annotations

from datetime import datetime  # noqa: TC003 (pydantic resolves annotations at runtime)

from pydantic import BaseModel, Field


class TaskSummary(BaseModel):
    """One task under prediction: what it declared, used, is predicted to need, and how well."""

    dag_id: str
    task_id: str
    map_index: int = -1
    runs: int
    oom_killed: int
    last_start: datetime | None = None
    champion: str | None = Field(None, description="the estimator that won the task's backtest")
    model_version: str | None = None
    declared_memory_bytes: float | None = None
    declared_cpu_cores: float | None = None
    peak_memory_max_bytes: float | None = None
    peak_cpu_max_cores: float | None = None
    predicted_memory_p99_bytes: float | None = Field(None, description="peak of the cached forecast, p99")
    predicted_cpu_p90_cores: float | None = None
    memory_saved_bytes: float | None = Field(None, description="declared minus predicted p99 peak, per try")
    cpu_saved_cores: float | None = Field(None, description="declared minus predicted p90 peak, per try")
    backtest_memory_under_rate: float | None = Field(
        None, description="champion's backtest: share of forecasts whose memory fell short of the actual"
    )
    backtest_pinball: float | None = None
    live_coverage: float | None = Field(
        None, description="share of the last tries whose memory peak stayed within the forecast's p99 peak"
    )


class DailyPoint(BaseModel):
    day: str
    runs: int
    oom_killed: int
    memory_headroom_bytes: float = Field(description="sum over tries of declared minus actual peak memory")
    cpu_headroom_cores: float


class Overview(BaseModel):
    tasks: list[TaskSummary]
    daily: list[DailyPoint]


class RunSummary(BaseModel):
    run_pk: int
    dag_id: str
    task_id: str
    map_index: int
    run_id: str
    try_number: int
    start: datetime | None = None
    end: datetime | None = None
    duration_s: float | None = None
    outcome: str
    declared: dict[str, float] = Field(default_factory=dict, description="metric -> declared value")
    peak: dict[str, float] = Field(default_factory=dict, description="metric -> measured peak")
    n_samples: int = 0


class RunPage(BaseModel):
    items: list[RunSummary]
    total: int
    offset: int
    limit: int


class Curve(BaseModel):
    """The measured curve of one metric, downsampled (min/max buckets keep the peaks)."""

    metric: str
    unit: str
    t: list[float]
    v: list[float | None]
    source_points: int


class Band(BaseModel):
    """A forecast for one metric: quantile curves on a regular step (seconds since start)."""

    metric: str
    unit: str
    t: list[float]
    p50: list[float]
    p90: list[float]
    p99: list[float]


class ForecastView(BaseModel):
    estimator: str
    model_version: str | None = None
    created_at: datetime | None = None
    explanation: str | None = None
    duration_s: dict[str, float] = Field(default_factory=dict)
    bands: list[Band]


class AllocationView(BaseModel):
    requests: dict[str, float] = Field(default_factory=dict)
    limits: dict[str, float] = Field(default_factory=dict)


class PlanStepView(BaseModel):
    at_s: float
    allocation: AllocationView
    reason: str


class PlanView(BaseModel):
    reservation_id: str
    pool: str
    state: str
    source: str
    why: str
    duration_s: float
    initial: AllocationView
    steps: list[PlanStepView]


class StepSeries(BaseModel):
    """A step function of one metric over the try (the value holds from each t until the next)."""

    metric: str
    unit: str
    t: list[float]
    v: list[float | None]


class ShapingEventView(BaseModel):
    at: datetime
    t_s: float
    metric: str
    action: str
    cause: str
    verdict: str
    reason: str
    before: float | None = None
    target: float | None = None
    after: float | None = None
    usage: float | None = None
    predicted: float | None = None


class ScoreView(BaseModel):
    estimator: str
    forecasts: int
    pinball: float | None = None
    memory_under_rate: float | None = None
    memory_shortfall: float | None = None
    score: float | None = None
    error: str | None = None


class ChampionView(BaseModel):
    champion: str | None = None
    model_version: str | None = None
    reason: str | None = None
    runs: int = 0
    updated_at: datetime | None = None
    scores: list[ScoreView] = Field(default_factory=list)


class TryDetail(BaseModel):
    run: RunSummary
    tries: list[int] = Field(description="the try numbers recorded for this task instance")
    curves: list[Curve]
    forecast: ForecastView | None = None
    plan: PlanView | None = None
    planned: list[StepSeries] = Field(default_factory=list, description="the plan's limits over time")
    in_force: list[StepSeries] = Field(
        default_factory=list, description="limits in force: the plan, changed by applied shaping events"
    )
    shaping: list[ShapingEventView] = Field(default_factory=list)
    champion: ChampionView | None = None


class PoolSummary(BaseModel):
    name: str
    kind: str
    note: str = ""
    capacity_requests: dict[str, float] = Field(default_factory=dict)
    capacity_limits: dict[str, float] = Field(default_factory=dict)
    active_reservations: int = 0


class HeldBack(BaseModel):
    at: datetime
    dag_id: str
    task_id: str
    run_id: str
    try_number: int
    decision: str
    reason: str


class PoolDetail(BaseModel):
    pool: PoolSummary
    start: float
    end: float
    t: list[float] = Field(description="epoch seconds")
    reserved_memory_bytes: list[float]
    reserved_cpu_cores: list[float]
    used_memory_bytes: list[float | None]
    used_cpu_cores: list[float | None]
    held_back: list[HeldBack]


class PoolList(BaseModel):
    pools: list[PoolSummary]
