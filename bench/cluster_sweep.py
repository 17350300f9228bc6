"""Fast sweep of ours' shaping / re-forecast settings on the cluster benchmark's training split.

Usage: .venv/bin/python bench/cluster_sweep.py [--data DIR] [--candidates a,b,c | --shipped]
       [--only v1,v2] [--set name:shaping.grow_margin=0.2,reforecast.reclaim_margin=0.1 ...]
       [--tasks] [--cache FILE]

The split is bench/cluster_bench.py's ``--split training`` (the training half of each task's
kseg-eager runs: its first half trains the profiler, its second half is replayed; the held-out half
is never read). The profiler is trained and every replayed run forecast ONCE (cached in ``--cache``,
keyed by the candidates); then only ``predictive`` is replayed, once per variant, on the same
forecasts, pool and simulator settings as the benchmark (the ablations of cluster_bench.py do the
same, one variant each). A variant is a set of overrides of ``ShapingSettings`` (``shaping.*``),
``ReforecastSettings`` (``reforecast.*``) and ``PlanSettings`` (``plan.*``) on the shipped
defaults. ``--tasks`` adds, per variant, each task's share of the allocated memory*time and its
own slack (where the slack is). Numpy candidates by default (fast); ``--shipped``: the benchmark's
own candidates, LSTM included (how a winner is confirmed).

Near misses (more power than the kill count: 406 tries cannot tell 0 from ~3 kills per 1,000):
per try the smallest (memory limit - usage) / usage over the run (``TryResult.min_headroom``);
the table counts the tries that survived with a smallest headroom under 1 %, 2 % and 5 %, and
gives the smallest one. A variant is acceptable only with 0 kills and no more tries under 2 %
than the shipped defaults.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import logging
import os
import pickle
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from airflow_predictive.core.model.resources import GIB, Metric  # noqa: E402
from airflow_predictive.core.scheduling.planner import PlanSettings  # noqa: E402
from airflow_predictive.core.shaping.policy import ShapingSettings  # noqa: E402
from airflow_predictive.simulation.bench import BENCH_CANDIDATES, DEFAULT_POOL  # noqa: E402
from airflow_predictive.simulation.cluster import replay  # noqa: E402
from airflow_predictive.simulation.execution import SimSettings  # noqa: E402
from airflow_predictive.simulation.metrics import summarise  # noqa: E402
from airflow_predictive.simulation.policies.predictive import (  # noqa: E402
    REFORECAST,
    PredictivePolicy,
    PredictiveSettings,
)
from bench.cluster_bench import OOM_BUDGET, pct, training_split  # noqa: E402

if TYPE_CHECKING:
    from airflow_predictive.simulation.cluster import Replay
    from airflow_predictive.simulation.forecasting import HeldOutForecasts
    from airflow_predictive.simulation.workload import Workload

log = logging.getLogger("cluster_sweep")
NUMPY_CANDIDATES = tuple(c for c in BENCH_CANDIDATES if c != "lstm")  # the shipped ones, numpy only

# the shipped defaults before session 9, so that every variant below reads as it was measured
SESSION8: dict[str, Any] = {  # the shipped defaults (session 8's; the rise-aware headroom off)
    "shaping.ratio_floor": 0.5,
    "shaping.guard_margin": 0.1,
    "reforecast.reclaim_margin": 0.15,
    "shaping.rise_horizon_s": None,
}
ADOPTED: dict[str, Any] = {  # session 9's candidate (not adopted: the held-out half's kills)
    "shaping.ratio_floor": 0.3,
    "shaping.guard_margin": 0.0,
    "reforecast.reclaim_margin": 0.05,
    "shaping.rise_horizon_s": None,
}
# session 10's candidate with rise_horizon_s 10 (not adopted: the held-out half's kills)
RISE = {"shaping.ratio_floor": 0.3, "reforecast.reclaim_margin": 0.05}
NEAR_005 = {**ADOPTED, "shaping.near_limit": 0.05}
# name -> overrides of the shipped defaults ("shipped": as they are); session 9's sweep, in order
VARIANTS: dict[str, dict[str, Any]] = {
    "shipped": {},
    "session8": SESSION8,
    "ratio_floor_0.3": {**SESSION8, "shaping.ratio_floor": 0.3},
    "guard_margin_0": {**SESSION8, "shaping.guard_margin": 0.0},
    "ratio_floor_0.3_guard_margin_0": {**SESSION8, "shaping.ratio_floor": 0.3, "shaping.guard_margin": 0.0},
    "adopted": ADOPTED,
    "adopted_guard_horizon_60": {**ADOPTED, "shaping.guard_horizon_s": 60.0},
    "adopted_reclaim_after_10": {**ADOPTED, "shaping.reclaim_after_s": 10.0},
    "near_0.05": NEAR_005,
    "near_0.075": {**ADOPTED, "shaping.near_limit": 0.075},
    "near_0.075_grow_0.2": {**ADOPTED, "shaping.near_limit": 0.075, "shaping.grow_margin": 0.2},
    "near_0.05_grow_0.2": {**NEAR_005, "shaping.grow_margin": 0.2},
    "near_0.05_grow_0.2_floor_0.2": {**NEAR_005, "shaping.grow_margin": 0.2, "shaping.ratio_floor": 0.2},
    "near_0.05_grow_0.2_risk_0.95": {**NEAR_005, "shaping.grow_margin": 0.2, "plan.memory_risk": 0.95},
    "near_0.05_grow_0.2_ratio_after_120": {
        **NEAR_005,
        "shaping.grow_margin": 0.2,
        "shaping.ratio_after_s": 120.0,
    },
    "near_0.05_grow_0.2_cooldown_30": {
        **NEAR_005,
        "shaping.grow_margin": 0.2,
        "shaping.shrink_cooldown_s": 30.0,
    },
    "near_0.05_shrink_fraction_1": {**NEAR_005, "shaping.shrink_fraction": 1.0},
    # session 10: the rise-aware headroom (ShapingSettings.rise_horizon_s), over SESSION8
    "rise_10": {**SESSION8, "shaping.rise_horizon_s": 10.0},
    "ratio_floor_0.3_reclaim_0.05": {**SESSION8, **RISE},
    "ratio_floor_0.3_reclaim_0.05_rise_10": {**SESSION8, **RISE, "shaping.rise_horizon_s": 10.0},
    "ratio_floor_0.3_reclaim_0.05_rise_20": {**SESSION8, **RISE, "shaping.rise_horizon_s": 20.0},
    "ratio_floor_0.2_reclaim_0.05_rise_10": {
        **SESSION8,
        **RISE,
        "shaping.ratio_floor": 0.2,
        "shaping.rise_horizon_s": 10.0,
    },
    "ratio_floor_0.3_reclaim_0.05_rise_10_floor_0.05": {
        **SESSION8,
        **RISE,
        "shaping.rise_horizon_s": 10.0,
        "shaping.rise_floor": 0.05,
        "shaping.rise_keeps_margin": False,
    },
    "adopted_rise_10": {**ADOPTED, "shaping.rise_horizon_s": 10.0},
}


def parse_set(spec: str) -> tuple[str, dict[str, Any]]:
    """``name:shaping.x=1,reforecast.y=None`` -> (name, overrides)."""
    name, _, body = spec.partition(":")
    out: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in body.split(","))):
        key, _, raw = item.partition("=")
        out[key.strip()] = ast.literal_eval(raw.strip())
    return name.strip(), out


def settings_for(overrides: dict[str, Any]) -> PredictiveSettings:
    groups: dict[str, dict[str, Any]] = {"shaping": {}, "reforecast": {}, "plan": {}}
    for key, value in overrides.items():
        group, _, field_name = key.partition(".")
        if group not in groups or not field_name:
            raise ValueError(f"unknown override {key!r} (shaping.*, reforecast.*, plan.*)")
        groups[group][field_name] = value
    shaping = replace(ShapingSettings(), **groups["shaping"])
    reforecast = replace(REFORECAST, **groups["reforecast"]) if REFORECAST is not None else None
    if groups["reforecast"] and reforecast is None:
        raise ValueError("re-forecast overrides with the re-forecast off by default")
    risk = groups["plan"].pop("memory_risk", None)  # plan.memory_risk: the plan's memory quantile
    plan = replace(PlanSettings(), **groups["plan"])
    if risk is not None:
        plan = replace(plan, risk={**plan.risk, Metric.MEMORY_BYTES: float(risk)})
    return PredictiveSettings(shaping=shaping, reforecast=reforecast, plan=plan)


def _default_cache(candidates: tuple[str, ...]) -> Path:
    """A per-user cache file keyed by the candidates *and* the profiler's source (a forecast cached
    before a profiler change must not be replayed after it), never in a world-writable directory."""
    digest = hashlib.sha1(",".join(candidates).encode())
    for source in sorted((ROOT / "airflow_predictive" / "core" / "profiler").rglob("*.py")):
        digest.update(source.read_bytes())
    folder = Path.home() / ".cache" / "airflow-predictive"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"cluster_sweep_forecasts_{digest.hexdigest()[:12]}.pkl"


def forecasts_for(workload: Workload, candidates: tuple[str, ...], cache: Path) -> HeldOutForecasts:
    """The training split's forecasts, computed once per candidate set (pickled without the fitted
    estimators: the sweep replays no shadow runs, which alone re-forecast through them)."""
    from airflow_predictive.simulation.forecasting import held_out_forecasts

    if cache.exists():
        if cache.stat().st_uid != os.getuid():  # a pickle runs code: only one this user wrote
            raise SystemExit(f"refusing the forecast cache {cache}: not written by this user")
        log.info("forecasts from %s", cache)
        with cache.open("rb") as f:
            got: HeldOutForecasts = pickle.load(f)
        return got
    began = time.monotonic()
    forecasts = held_out_forecasts(workload, candidates)
    log.info("forecasts in %.0f s (answered by %s)", time.monotonic() - began, dict(forecasts.answered_by))
    with cache.open("wb") as f:
        pickle.dump(replace(forecasts, fitted={}, chain=None), f)
    return forecasts


NEAR_MISS = (0.01, 0.02, 0.05)


def near_misses(result: Replay) -> tuple[tuple[int, ...], float]:
    """(tries that survived with a smallest headroom under each of ``NEAR_MISS``, the smallest)."""
    left = [t.result.min_headroom for t in result.tries if not t.result.oom]
    counts = tuple(sum(1 for h in left if h < bound) for bound in NEAR_MISS)
    return counts, min(left, default=float("inf"))


def per_task(workload: Workload, result: Replay) -> dict[str, tuple[float, float, int, float]]:
    """task -> (share of allocated memory*time, its slack, its OOM kills, its surviving tries'
    smallest headroom)."""
    alloc: dict[str, float] = {}
    used: dict[str, float] = {}
    kills: dict[str, int] = {}
    nearest: dict[str, float] = {}
    for t in result.tries:
        task = workload.runs[t.run].key.task_id
        alloc[task] = alloc.get(task, 0.0) + t.result.memory_alloc
        used[task] = used.get(task, 0.0) + (0.0 if t.result.oom else t.result.memory_used)
        kills[task] = kills.get(task, 0) + int(t.result.oom)
        if not t.result.oom:
            nearest[task] = min(nearest.get(task, float("inf")), t.result.min_headroom)
    total = sum(alloc.values()) or 1.0
    return {
        k: (
            alloc[k] / total,
            1 - used[k] / alloc[k] if alloc[k] else 0.0,
            kills[k],
            nearest.get(k, float("inf")),
        )
        for k in sorted(alloc, key=lambda k: -alloc[k])
    }


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("airflow_predictive").setLevel(logging.WARNING)
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--candidates", default=",".join(NUMPY_CANDIDATES))
    ap.add_argument("--shipped", action="store_true", help="the benchmark's candidates (LSTM included)")
    ap.add_argument("--only", default=None, help="comma-separated built-in variants (default: all)")
    ap.add_argument("--set", action="append", default=[], help="name:group.field=value,... (repeatable)")
    ap.add_argument("--tasks", action="store_true", help="per-task share of allocation and slack")
    ap.add_argument(
        "--cache",
        default=None,
        help="forecast cache (default: ~/.cache/airflow-predictive, keyed by candidates and profiler source)",
    )
    ap.add_argument("--json", default=None, help="append one JSON line per variant to this file")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    candidates = BENCH_CANDIDATES if args.shipped else tuple(c for c in args.candidates.split(",") if c)
    from airflow_predictive.simulation.loading import load_trace_folder
    from airflow_predictive.simulation.workload import build_workload

    _, examples = load_trace_folder(Path(args.data) / "kseg-eager")
    workload = build_workload(training_split(examples), grid_s=1.0)
    cache = Path(args.cache) if args.cache else _default_cache(candidates)
    forecasts = forecasts_for(workload, candidates, cache)
    variants = dict(VARIANTS)
    if args.only:
        variants = {k: v for k, v in variants.items() if k in args.only.split(",")}
    for spec in args.set:
        name, overrides = parse_set(spec)
        variants[name] = overrides
    sim = SimSettings()
    rows = []
    print(
        "| variant | overrides | mem slack | GiB*s | OOM / 1,000 | tries | resizes / run | ok "
        "| near misses < 1 / 2 / 5 % | smallest headroom |"
    )
    print("|" + "---|" * 10)
    for name, overrides in variants.items():
        began = time.process_time()
        try:
            settings = settings_for(overrides)
        except ValueError as exc:
            print(f"| {name} | {json.dumps(overrides)} | refused: {exc} |", flush=True)
            continue
        policy = PredictivePolicy(forecasts, settings, name=name)
        result = replay(workload, policy, DEFAULT_POOL, sim)
        m = summarise(result)
        ok = m.oom_per_1000 <= OOM_BUDGET
        rows.append((name, m))
        misses, smallest = near_misses(result)
        print(
            f"| {name} | {json.dumps(overrides)} | {pct(m.memory_slack)} | {m.memory_waste_gib_s:,.0f} | "
            f"{m.oom_per_1000:.1f} | {m.tries} | {m.resizes_per_run:.1f} | {'yes' if ok else 'no'} | "
            f"{' / '.join(str(c) for c in misses)} | {smallest:.1%} |  "
            f"({time.process_time() - began:.0f} s CPU)",
            flush=True,
        )
        if args.tasks:
            for task, (share, slack, kills, nearest) in per_task(workload, result).items():
                print(
                    f"    {task}: {pct(share)} of allocation, slack {pct(slack)}, {kills} kills, "
                    f"smallest headroom {nearest:.1%}"
                )
        if args.json:
            with open(args.json, "a") as f:
                line = {"variant": name, "overrides": overrides, "candidates": list(candidates)}
                extra = {"near_misses": dict(zip(map(str, NEAR_MISS), misses, strict=True))}
                f.write(json.dumps({**line, **m.as_dict(), **extra, "smallest_headroom": smallest}) + "\n")
    log.info("%d variants; memory in GiB = %g bytes", len(rows), GIB)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
