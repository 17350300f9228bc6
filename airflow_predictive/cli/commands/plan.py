"""`airflow predictive plan DAG TASK [--param k=v ...] [--json]`: forecast, plan, admission now.

What the PredictiveExecutor would do with the next try of a task: the forecast it would be served
(the declared resources are the last recorded run's), the plan (initial requests / limits and the
timed steps with their reasons) and whether the local pool admits it now, or from when, and what
the bottleneck is. Reads only; never reserves. JSON keys: ``plan.initial.requests``,
``plan.initial.limits``, ``plan.steps[].at_s``, ``admission`` (vectors keyed by metric names).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from airflow_predictive.core.model.plan import PlanSource
from airflow_predictive.core.model.query import ForecastQuery
from airflow_predictive.core.model.resources import ResourceVector, format_bytes
from airflow_predictive.core.model.runs import TaskKey
from airflow_predictive.core.profiler.run_features import run_features
from airflow_predictive.core.scheduling import codec
from airflow_predictive.core.scheduling.ledger import profile_of
from airflow_predictive.core.scheduling.planner import (
    PlanSettings,
    against_pool,
    held_at_declared,
    plan_from_forecast,
    thin_history_floor,
)
from airflow_predictive.runtime import get_runtime
from airflow_predictive.storage.engine import StorageUnavailable

ARGS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("dag_id",), {"help": "DAG id"}),
    (("task_id",), {"help": "task id"}),
    (
        ("--param",),
        {"action": "append", "default": [], "metavar": "K=V", "help": "a param of the run (repeat)"},
    ),
    (("--pool",), {"default": "local", "help": "pool to check admission against (default local)"}),
    (("--json",), {"action": "store_true", "help": "print JSON instead of text"}),
]


def _params(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"error: --param takes K=V, got {pair!r}")
        try:
            out[name] = json.loads(raw)
        except ValueError:
            out[name] = raw
    return out


def build(key: TaskKey, params: dict[str, Any], pool_name: str, now: float) -> dict[str, Any]:
    runtime = get_runtime()
    runs = runtime.run_store().runs(key, limit=1)
    declared = runs[-1].declared if runs else ResourceVector()
    features = run_features(params, try_number=1)
    served = runtime.forecasts().forecast_for(ForecastQuery(key, features=features, declared=declared))
    backend = runtime.local_backend()
    # the executors' rule too: memory not below the declared value on a thin history
    settings = thin_history_floor(
        PlanSettings(), declared, served.history_runs, runtime.scheduler_settings().trust_after_runs
    )
    outcome = plan_from_forecast(
        served.forecast if served.source.value not in ("none", "declared") else None,
        declared=declared,
        settings=settings,
        capabilities=backend.capabilities(),
        model_version=served.model_version,
    )
    if served.limit_bound and outcome.plan.source is PlanSource.FORECAST:
        outcome = held_at_declared(outcome, declared)
    plan = outcome.plan
    forecast: dict[str, Any] = {
        "source": served.source.value,
        "model_version": served.model_version,
        "note": served.note,
    }
    if served.forecast is not None:
        forecast["estimator"] = served.forecast.estimator
        forecast["duration_s"] = {repr(q): v for q, v in served.forecast.duration_s.items()}
        forecast["peaks"] = {
            repr(q): codec.vector_to_dict(served.forecast.peaks(q)) for q in (0.5, 0.9, 0.99)
        }
    admission: dict[str, Any] = {"pool": pool_name}
    ledger = runtime.ledger()
    pool = next((p for p in ledger.pools() if p.name == pool_name), None)
    if pool is None:
        admission.update(
            known=False, reason=f"no pool {pool_name!r} in the ledger yet (no PredictiveExecutor ran)"
        )
    else:
        profile = profile_of(pool, [r for r in ledger.reservations(pool_name) if r.expires_at >= now])
        degraded, start, bottleneck = against_pool(plan, profile, now)
        admission.update(
            known=True,
            admitted_now=start is not None and start <= now + 1e-6,
            never_fits=start is None,
            earliest_start_in_s=None if start is None else max(0.0, start - now),
            degraded=None if degraded is None else codec.plan_to_dict(degraded.plan),
            bottleneck=None
            if bottleneck is None
            else {
                "metric": bottleneck.metric.value,
                "side": bottleneck.side,
                "in_s": bottleneck.at - now,
                "needed": bottleneck.needed,
                "available": bottleneck.available,
                "over_by": bottleneck.over_by,
                "text": bottleneck.describe(now),
            },
        )
    return {
        "task": str(key),
        "declared": codec.vector_to_dict(declared),
        "forecast": forecast,
        "decision": outcome.decision.value,
        "reason": outcome.reason,
        "plan": codec.plan_to_dict(plan),
        "admission": admission,
    }


def _vec(v: dict[str, float]) -> str:
    parts = [f"{k}={format_bytes(x) if 'bytes' in k else f'{x:g}'}" for k, x in v.items()]
    return ", ".join(parts) or "(none)"


def render_text(out: dict[str, Any]) -> str:
    plan = out["plan"]
    lines = [
        f"{out['task']}: {out['decision']} — {out['reason']}",
        f"  forecast: {out['forecast']['source']} {out['forecast'].get('estimator', '')} {out['forecast']['note']}".rstrip(),
        f"  initial: requests {_vec(plan['initial']['requests'])}; limits {_vec(plan['initial']['limits'])}",
    ]
    for step in plan["steps"]:
        lines.append(f"  +{step['at_s']:.0f} s: limits {_vec(step['limits'])} ({step['reason']})")
    lines.append(f"  lasts {plan['duration_s']:.0f} s")
    adm = out["admission"]
    if not adm.get("known"):
        lines.append(f"  admission: {adm['reason']}")
    elif adm["admitted_now"]:
        lines.append(f"  admission: fits pool {adm['pool']} now")
    elif adm["never_fits"]:
        lines.append(f"  admission: can never fit pool {adm['pool']}: {adm['bottleneck']['text']}")
    else:
        lines.append(
            f"  admission: would wait {adm['earliest_start_in_s']:.0f} s in pool {adm['pool']}: {adm['bottleneck']['text']}"
        )
    return "\n".join(lines)


def run(args: Any) -> None:
    key = TaskKey(args.dag_id, args.task_id)
    try:
        out = build(key, _params(args.param or []), args.pool, time.time())
    except StorageUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(out) if args.json else render_text(out))
