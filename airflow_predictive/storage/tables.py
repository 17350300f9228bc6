"""Table definitions (prefix ``predictive_``) on the provider's own MetaData.

Migrations in ``migrations/versions`` are the source of truth for the schema in a database;
these definitions must match them (a test compares the two on SQLite and PostgreSQL).
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from airflow_predictive.core.model.resources import Metric

# Names stay under PostgreSQL's 63-character limit: multi-column constraints are named explicitly.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

VERSION_TABLE = "predictive_alembic_version"

METRIC_COLUMNS: tuple[str, ...] = tuple(m.value for m in Metric)


def _metric_columns(prefix: str) -> list[Column[float]]:
    return [Column(f"{prefix}{name}", Float, nullable=True) for name in METRIC_COLUMNS]


task_run = Table(
    "predictive_task_run",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(16), nullable=False),
    Column("dag_id", String(250), nullable=False),
    Column("task_id", String(250), nullable=False),
    Column("map_index", Integer, nullable=False, default=-1),
    Column("run_id", String(250), nullable=False),
    Column("try_number", Integer, nullable=False, default=1),
    Column("start_date", DateTime(timezone=True), nullable=True),
    Column("end_date", DateTime(timezone=True), nullable=True),
    Column("duration_s", Float, nullable=True),
    Column("outcome", String(16), nullable=False),
    Column("exit_code", Integer, nullable=True),
    Column("operator", String(250), nullable=True),
    Column("pool", String(250), nullable=True),
    Column("queue", String(250), nullable=True),
    Column("hostname", String(250), nullable=True),
    Column("executor_config", Text, nullable=True),
    Column("features", Text, nullable=True),  # JSON object
    Column("sample_interval_s", Float, nullable=True),
    Column("n_samples", Integer, nullable=False, default=0),
    Column("note", Text, nullable=True),
    *_metric_columns("declared_"),
    *_metric_columns("peak_"),
    # revision 0003_run_legs: the current leg (generation) of the try, see predictive_run_leg
    Column("leg", Integer, nullable=False, default=1, server_default="1"),
    UniqueConstraint(
        "source", "dag_id", "task_id", "map_index", "run_id", "try_number", name="uq_predictive_task_run_try"
    ),
    Index("ix_predictive_task_run_task_start", "dag_id", "task_id", "map_index", "start_date"),
)

resource_sample = Table(
    "predictive_resource_sample",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "run_pk",
        Integer,
        ForeignKey("predictive_task_run.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("t_s", Float, nullable=False),
    *_metric_columns(""),
    Index("ix_predictive_resource_sample_run_t", "run_pk", "t_s"),
)


# -- run legs (revision 0003_run_legs): one try across the task processes it took ----------------

run_leg = Table(
    "predictive_run_leg",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "run_pk",
        Integer,
        ForeignKey("predictive_task_run.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("leg", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True), nullable=True),
    Column("end_reason", String(16), nullable=True),  # LegEnd value; None while the leg runs
    Column("t_start_s", Float, nullable=True),  # seconds since the run's start (the samples' clock)
    Column("t_end_s", Float, nullable=True),
    UniqueConstraint("run_pk", "leg", name="uq_predictive_run_leg_run_leg"),
)


# -- profiler (revision 0002_profiles_and_forecasts) ------------------------------------------

task_profile = Table(
    "predictive_task_profile",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dag_id", String(250), nullable=False),
    Column("task_id", String(250), nullable=False),
    Column("map_index", Integer, nullable=False, default=-1),
    Column("champion", String(100), nullable=True),  # None: no backtest possible (cold start)
    Column("model_version", String(64), nullable=True),
    Column("scores", Text, nullable=True),  # JSON list of candidate scores
    Column("reason", Text, nullable=True),
    Column("runs", Integer, nullable=False, default=0),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("dag_id", "task_id", "map_index", name="uq_predictive_task_profile_task"),
)

forecast_cache = Table(
    "predictive_forecast",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dag_id", String(250), nullable=False),
    Column("task_id", String(250), nullable=False),
    Column("map_index", Integer, nullable=False, default=-1),
    Column("estimator", String(100), nullable=False),
    Column("model_version", String(64), nullable=True),
    Column("curves", Text, nullable=False),  # JSON {metric: {"step_s": s, "q": {"0.9": [...]}}}
    Column("duration", Text, nullable=False),  # JSON {"0.5": seconds, ...}
    Column("peak_only", Integer, nullable=False, default=0),
    Column("explanation", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("dag_id", "task_id", "map_index", name="uq_predictive_forecast_task"),
)

selection_record = Table(
    "predictive_selection",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dag_id", String(250), nullable=False),
    Column("task_id", String(250), nullable=False),
    Column("map_index", Integer, nullable=False, default=-1),
    Column("champion", String(100), nullable=True),
    Column("reason", Text, nullable=True),
    Column("scores", Text, nullable=True),  # JSON list of candidate scores
    Column("runs", Integer, nullable=False, default=0),
    Column("folds", Integer, nullable=False, default=0),
    Column("model_version", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_predictive_selection_task_created", "dag_id", "task_id", "map_index", "created_at"),
)


# -- scheduler (revision 0004_ledger): pools, reservations, plan and admission decisions -------

ledger_pool = Table(
    "predictive_pool",
    metadata,
    Column("name", String(250), primary_key=True),
    Column("kind", String(16), nullable=False),  # PoolKind value
    Column("capacity", Text, nullable=False),  # JSON {"requests": {...}, "limits": {...}}
    Column("note", Text, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # JSON [{"pool", "ready_at", "requests", "limits", "source", "ref"}]: capacity on its way (0008)
    Column("coming", Text, nullable=True),
)

reservation = Table(
    "predictive_reservation",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("pool", String(250), ForeignKey("predictive_pool.name", ondelete="CASCADE"), nullable=False),
    Column("dag_id", String(250), nullable=False),
    Column("task_id", String(250), nullable=False),
    Column("map_index", Integer, nullable=False, default=-1),
    Column("run_id", String(250), nullable=False),
    Column("try_number", Integer, nullable=False, default=1),
    Column("holder", String(250), nullable=False),
    Column("state", String(16), nullable=False),  # ReservationState value
    Column("start_at", Float, nullable=False),  # wall-clock epoch seconds
    Column("end_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("priority", Integer, nullable=False, default=0),
    Column("timeline", Text, nullable=False),  # JSON [{"at": s, "requests": {...}, "limits": {...}}]
    Column("plan", Text, nullable=True),  # JSON plan it was made from
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_predictive_reservation_pool_state", "pool", "state"),
)

decision_record = Table(
    "predictive_decision",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("kind", String(16), nullable=False),  # "plan" | "admission"
    Column("decision", String(32), nullable=False),  # PlanDecision / AdmissionDecision value
    Column("dag_id", String(250), nullable=False),
    Column("task_id", String(250), nullable=False),
    Column("map_index", Integer, nullable=False, default=-1),
    Column("run_id", String(250), nullable=False),
    Column("try_number", Integer, nullable=False, default=1),
    Column("pool", String(250), nullable=True),
    Column("reason", Text, nullable=True),
    Column("payload", Text, nullable=True),  # JSON: the plan, the bottleneck, the earliest start
    Index("ix_predictive_decision_task_at", "dag_id", "task_id", "at"),
)

# Every decision of the shaping controller (core/shaping/events.py), including the ones that changed
# nothing (held back by hysteresis, deferred by the node), with its reason. Written by shaping loops
# (worker, triggerer, executor) through storage/shaping_store.py; read by the UI / API and tests.
shaping_event = Table(
    "predictive_shaping_event",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("t_s", Float, nullable=False),  # seconds since shaping of this task started
    Column("subject", String(250), nullable=False),  # backend ref: cgroup path, "namespace/pod"
    Column("backend", String(32), nullable=False),
    Column("run_key", String(1000), nullable=False, default=""),  # "dag/task/map/run/try", "" unknown
    Column("metric", String(32), nullable=False),
    Column("action", String(16), nullable=False),
    Column("cause", String(32), nullable=False),
    Column("verdict", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("before_value", Float, nullable=True),
    Column("target_value", Float, nullable=True),
    Column("after_value", Float, nullable=True),
    Column("usage_value", Float, nullable=True),
    Column("predicted_value", Float, nullable=True),
    Index("ix_predictive_shaping_event_subject_at", "subject", "at"),
    Index("ix_predictive_shaping_event_run_key", "run_key"),
)


# -- shadow runs (revision 0009_shadow_forecasts): the re-forecast a shadow left for its real try ----

shadow_forecast = Table(
    "predictive_shadow_forecast",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dag_id", String(250), nullable=False),
    Column("task_id", String(250), nullable=False),
    Column("map_index", Integer, nullable=False, default=-1),
    Column("run_id", String(250), nullable=False),
    Column("shadow_run_pk", Integer, nullable=True),  # the shadow's predictive_task_run row (source shadow)
    Column("estimator", String(100), nullable=False),
    Column("model_version", String(64), nullable=True),
    Column("curves", Text, nullable=False),  # JSON, as predictive_forecast.curves
    Column("duration", Text, nullable=False),
    Column("peak_only", Integer, nullable=False, default=0),
    Column("note", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("dag_id", "task_id", "map_index", "run_id", name="uq_predictive_shadow_forecast_run"),
)
