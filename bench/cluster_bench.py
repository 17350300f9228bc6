"""Cluster benchmark: every sizing policy replays the held-out runs of the real traces on one pool.

Usage: .venv/bin/python bench/cluster_bench.py [--data DIR] [--quick] [--split training]
       [--candidates a,b,c]   (default ../shared/data, the held-out half)

``--split training`` is the harness for choices: the training half of each task's runs only, its
first half training the profiler and its second half replayed (docs/benchmarks/cluster_training.md).

kseg-eager (2 s CPU / memory series) is imported through the profiler's importer, split per task
chronologically (first half trains the profiler, second half is replayed), and replayed under
declared, VPA-style, Autopilot-style, reactive, oracle and ours (profiler forecast -> planner ->
shaping controller). A reactive sweep (its margins varied) draws the slack / OOM trade-off that
prediction must beat. The simulator's speed is measured on a synthetic scale-up to 100,000
executions. nextflow-traces holds peaks only (no curves): it is imported and reported as not
replayable. Writes docs/benchmarks/cluster.md and PNG plots in docs/benchmarks/img/.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from airflow_predictive.core.model.resources import GIB  # noqa: E402
from airflow_predictive.simulation.bench import (  # noqa: E402
    BASELINES,
    BENCH_CANDIDATES,
    DEFAULT_POOL,
    BenchOptions,
    BenchResult,
    run_on_workload,
)
from airflow_predictive.simulation.cluster import replay  # noqa: E402
from airflow_predictive.simulation.loading import load_trace_folder  # noqa: E402
from airflow_predictive.simulation.metrics import PolicyMetrics, summarise  # noqa: E402
from airflow_predictive.simulation.policies.reactive import ReactivePolicy, ReactiveSettings  # noqa: E402
from airflow_predictive.simulation.workload import build_workload, scaled_up  # noqa: E402

if TYPE_CHECKING:
    from airflow_predictive.simulation.execution import SimSettings
    from airflow_predictive.simulation.workload import Workload

log = logging.getLogger("cluster_bench")
OUT = ROOT / "docs" / "benchmarks" / "cluster.md"
IMG = ROOT / "docs" / "benchmarks" / "img"
NOTES_MARKER = "<!-- notes: kept when the benchmark rewrites this file -->"
SCALE_RUNS = 100_000
OOM_BUDGET = 2.0  # OOM kills per 1,000 tries the target allows
# (grow_margin, shrink_margin) of the reactive sweep: from aggressive to cautious
REFORECAST_EVERY_S = 60.0  # the re-forecast interval of the ablation when ours ships without one
REACTIVE_SWEEP = ((0.1, 0.05), (0.2, 0.1), (0.3, 0.2), (0.5, 0.35), (0.75, 0.5), (1.0, 0.75), (1.5, 1.0))


def pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def reactive_sweep(result: BenchResult) -> list[tuple[float, float, float, float]]:
    """(grow_margin, shrink_margin, memory slack, OOM per 1000) for each reactive setting."""
    out = []
    for grow, shrink in REACTIVE_SWEEP:
        policy = ReactivePolicy(
            ReactiveSettings(grow_margin=grow, shrink_margin=shrink), name="reactive_sweep"
        )
        m = summarise(replay(result.workload, policy, result.pool, result.settings))
        out.append((grow, shrink, m.memory_slack, m.oom_per_1000))
    return out


def reactive_oom_at(sweep: list[tuple[float, float, float, float]], slack: float) -> float | None:
    """The reactive shaper's OOM rate at ``slack`` (linear between the sweep's points; None outside)."""
    pts = sorted((s, o) for _, _, s, o in sweep)
    xs = [s for s, _ in pts]
    if not pts or slack < xs[0] or slack > xs[-1]:
        return None
    return float(np.interp(slack, xs, [o for _, o in pts]))


def speed_figures(
    workload: Any, settings: SimSettings, result: BenchResult, executions: int = SCALE_RUNS
) -> dict[str, Any]:
    """Replay time of a synthetic scale-up to SCALE_RUNS executions, per baseline policy; ours
    extrapolated from its replay of the real runs (the real controller, ticked event-driven)."""
    from airflow_predictive.simulation.bench import make_policies

    big = scaled_up(workload, executions)
    out: dict[str, Any] = {"executions": len(big.runs), "copies": big.synthetic_factor, "per_policy_s": {}}
    for policy in make_policies(BASELINES, None):
        began = time.process_time()
        r = replay(big, policy, result.pool, settings)
        out["per_policy_s"][policy.name] = time.process_time() - began
        log.info(
            "speed: %s replayed %d executions in %.1f s CPU",
            policy.name,
            r.runs,
            out["per_policy_s"][policy.name],
        )
    if result.forecasts is not None:
        # ours replays the real runs again, timed in CPU seconds of this process (the machine is
        # shared: wall time is noisy); 100,000 executions of it would take too long to run here
        from airflow_predictive.simulation.policies.predictive import PredictivePolicy, PredictiveSettings

        for name, ours in (
            ("predictive", PredictiveSettings()),
            ("predictive_no_reforecast", PredictiveSettings(reforecast=None)),
        ):
            began = time.process_time()
            r = replay(workload, PredictivePolicy(result.forecasts, ours, name=name), result.pool, settings)
            out[f"{name}_s_per_run"] = (time.process_time() - began) / max(r.runs, 1)
            out[f"{name}_extrapolated_s"] = out[f"{name}_s_per_run"] * executions
            log.info("speed: %s %.1f ms CPU per run", name, 1000 * out[f"{name}_s_per_run"])
    return out


def reforecast_ablation(workload: Any, result: BenchResult) -> None:
    """Ours with the mid-run re-forecast the other way from its default (on if it is off, off if
    on), on the same forecasts: an ablation of the held-out half, nothing is chosen from it."""
    from airflow_predictive.core.shaping.reforecast import ReforecastSettings
    from airflow_predictive.simulation.bench import ProgressBar
    from airflow_predictive.simulation.policies.predictive import (
        REFORECAST,
        PredictivePolicy,
        PredictiveSettings,
    )

    if result.forecasts is None or "predictive" not in result.metrics:
        return
    flipped = None if REFORECAST is not None else ReforecastSettings(REFORECAST_EVERY_S)
    name = "predictive_no_reforecast" if REFORECAST is not None else "predictive_reforecast"
    policy = PredictivePolicy(result.forecasts, PredictiveSettings(reforecast=flipped), name=name)
    replayed = replay(workload, policy, result.pool, result.settings, ProgressBar(name, sys.stderr))
    result.replays[name] = replayed
    result.metrics[name] = summarise(replayed)
    every = (REFORECAST or flipped).every_s  # type: ignore[union-attr]
    result.notes[name] = (
        f"ours {'without' if REFORECAST is not None else 'with'} the mid-run re-forecast (its default: every "
        f"{every:g} s, core/shaping/reforecast.py) on the same forecasts: an ablation, nothing chosen from it"
    )


FORECAST_RECLAIM_MARGIN = 0.15  # the reclaim above the need of the ablation rows (ShapingSettings)


def segments_ablation(workload: Any, result: BenchResult, *, only: tuple[str, ...] | None = None) -> None:
    """Ours with the other re-forecasts / reclaim rules, on the same forecasts and interval: the
    prefix path alone (what shipped before), the k-Segments re-forecast over the task's earlier
    runs, and either with ``ShapingSettings.forecast_reclaim_margin`` (a limit above the
    re-forecast's need is reclaimed while usage is inside the band); the shipped default's own
    combination is the ``predictive`` row and is not replayed twice. ``only``: these rows."""
    from airflow_predictive.core.profiler.estimators.segments import SegmentPolicy
    from airflow_predictive.core.shaping.policy import ShapingSettings
    from airflow_predictive.core.shaping.reforecast import ReforecastSettings
    from airflow_predictive.simulation.bench import ProgressBar
    from airflow_predictive.simulation.policies.predictive import (
        REFORECAST,
        PredictivePolicy,
        PredictiveSettings,
    )

    if result.forecasts is None or "predictive" not in result.metrics:
        return
    base = REFORECAST or ReforecastSettings(REFORECAST_EVERY_S)
    segments = replace(base, segments=base.segments or SegmentPolicy(), reclaim_margin=None)
    with_reclaim = replace(segments, reclaim_margin=FORECAST_RECLAIM_MARGIN)
    prefix_only = replace(base, segments=None)
    shipped = (REFORECAST, ShapingSettings().forecast_reclaim_margin)
    reclaim = f"a memory limit above the re-forecast's need reclaimed inside the band (margin {FORECAST_RECLAIM_MARGIN:g})"
    rows = {
        "predictive_prefix_only": (
            prefix_only,
            None,
            "from the observed prefix only (`condition_on_prefix`)",
        ),
        "predictive_segments": (
            segments,
            None,
            "from the task's earlier runs (k-Segments, `segment_reforecast`; the prefix path where the "
            "history cannot answer), without the reclaim above the need",
        ),
        "predictive_segments_reclaim": (
            with_reclaim,
            None,
            f"from the task's earlier runs (k-Segments), and {reclaim} where they answered",
        ),
        "predictive_prefix_reclaim": (
            prefix_only,
            FORECAST_RECLAIM_MARGIN,
            f"from the observed prefix only, and {reclaim} always (`ShapingSettings.forecast_reclaim_margin`)",
        ),
    }
    if only is not None:
        rows = {k: v for k, v in rows.items() if k in only}
    for name, (reforecast, margin, what) in rows.items():
        if (reforecast, margin) == shipped:
            continue
        shaping = replace(ShapingSettings(), forecast_reclaim_margin=margin)
        settings = PredictiveSettings(reforecast=reforecast, shaping=shaping)
        policy = PredictivePolicy(result.forecasts, settings, name=name)
        replayed = replay(workload, policy, result.pool, result.settings, ProgressBar(name, sys.stderr))
        result.replays[name] = replayed
        result.metrics[name] = summarise(replayed)
        result.notes[name] = (
            f"ours with the mid-run re-forecast every {reforecast.every_s:g} s {what}, on the same "
            "forecasts: an ablation"
        )


def training_split(examples: Any, train_fraction: float = 0.5) -> Any:
    """The training half of each task's runs (chronological, as the held-out replay splits them): the
    tuning harness replays its second half, trained on its first, never touching the held-out half."""
    from airflow_predictive.training.dataset import chronological, split_chronologically

    train, _ = split_chronologically(chronological(examples), train_fraction)
    return list(train)


def diagnostic_workload(description: str) -> tuple[Workload, str]:
    """A cluster diagnostic's command line (``--data DIR``, ``--split training|held-out``, the
    training split by default) and the replay it names (``kseg_workload``)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--split", choices=("training", "held-out"), default="training")
    args = ap.parse_args()
    return kseg_workload(Path(args.data), args.split), args.split


def kseg_workload(data: Path, split: str) -> Workload:
    """The kseg-eager replay the cluster diagnostics share: the held-out half as the benchmark
    replays it, or (``split`` "training") the training split's second half (``training_split``)."""
    _, examples = load_trace_folder(data / "kseg-eager")
    if split == "training":
        examples = training_split(examples)
    return build_workload(examples, grid_s=1.0)


def write_training_report(result: BenchResult, out: Path, extra: dict[str, Any]) -> None:
    """The policy table of the training-split replay (what re-forecast / guard choices are made on)."""
    m = result.metrics
    lines = [
        "# Cluster benchmark on the training split (for choices, not for claims)",
        "",
        "Generated by `bench/cluster_bench.py --split training` (reproduce with "
        "`.venv/bin/python bench/cluster_bench.py --data ../shared/data --split training`). Only the "
        "*training half* of each task's kseg-eager runs is used: its first half trains the profiler, "
        f"its second half ({len(result.workload.runs)} runs of {result.workload.tasks} tasks) is replayed; "
        "the held-out half (docs/benchmarks/cluster.md) is never read. Settings otherwise as there "
        f"(pool {result.pool.describe()}).",
        "",
        "| policy | mem slack | cpu slack | mem waste GiB*s | OOM / 1,000 | throttled | resizes / run | "
        "tick ms p50 / p99 | tries |",
        "|" + "---|" * 9,
    ]
    for name, x in m.items():
        lines.append(
            f"| {name} | {pct(x.memory_slack)} | {pct(x.cpu_slack)} | {x.memory_waste_gib_s:,.0f} | "
            f"{x.oom_per_1000:.1f} | {pct(x.throttled_share)} | {x.resizes_per_run:.1f} | "
            f"{x.tick_ms_p50:.3f} / {x.tick_ms_p99:.3f} | {x.tries} |"
        )
    for name, note in result.notes.items():
        lines.append(f"\n{name}: {note}.")
    lines.append("")
    lines += [f"- {k}: {v}" for k, v in extra.items()]
    notes = ""
    if out.exists() and NOTES_MARKER in out.read_text():
        notes = out.read_text().split(NOTES_MARKER, 1)[1]
    out.write_text("\n".join(lines) + "\n\n" + NOTES_MARKER + notes)
    log.info("wrote %s", out)


def best_baseline(metrics: dict[str, PolicyMetrics]) -> str:
    """The non-oracle baseline with the least memory waste within the OOM budget (VPA if none is)."""
    ok = [
        n
        for n in ("declared", "vpa", "autopilot", "reactive")
        if n in metrics and metrics[n].oom_per_1000 <= OOM_BUDGET
    ]
    return min(ok, key=lambda n: metrics[n].memory_waste_gib_s) if ok else "vpa"


def plots(result: BenchResult, sweep: list[tuple[float, float, float, float]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    IMG.mkdir(parents=True, exist_ok=True)
    files = []
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=90)
    xs = [100 * s for _, _, s, _ in sweep]
    ys = [o for _, _, _, o in sweep]
    ax.plot(xs, ys, "o--", color="grey", lw=1, ms=3, label="reactive (margins swept)")
    colors = {"predictive": "tab:red", "predictive_shadow": "tab:pink", "predictive_plan": "tab:orange"}
    colors["oracle"] = "black"
    shown: list[tuple[float, float]] = []
    for name, m in result.metrics.items():
        if name == "predictive_shadow" and m is result.metrics.get("predictive"):
            continue  # the same figures (no cold start): one point, labelled as both
        same = name == "predictive" and m is result.metrics.get("predictive_shadow")
        label = "predictive (= predictive_shadow)" if same else name
        x, y = 100 * m.memory_slack, m.oom_per_1000
        ax.scatter(x, y, s=40, color=colors.get(name, "tab:blue"), zorder=3)
        near = sum(1 for px, py in shown if abs(px - x) < 12 and abs(py - y) <= max(1.0, 0.5 * y))
        ax.annotate(label, (x, y), fontsize=7, xytext=(4, 3 + 9 * near), textcoords="offset points")
        shown.append((x, y))
    ax.set_xlabel("memory slack (% of allocated memory*time unused)")
    ax.set_ylabel("OOM kills per 1,000 tries")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_title("held-out kseg-eager runs: slack vs OOM kills per policy", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = IMG / "cluster_slack_vs_oom.png"
    fig.savefig(path)
    plt.close(fig)
    files.append(path.name)
    # one run's allocation over time per policy against its true curve
    run = _showcase(result)
    if run is not None:
        names = list(result.replays)
        fig, axes = plt.subplots(len(names), 1, figsize=(6.5, 1.35 * len(names)), dpi=80, sharex=True)
        for ax, name in zip(np.atleast_1d(axes), names, strict=True):
            tries = [t for t in result.replays[name].tries if t.run == run.index]
            t0 = tries[0].started_s
            for t in tries:
                times = [t.started_s - t0 + at for at, _ in t.result.changes] + [t.ended_s - t0]
                vals = [lim.memory_bytes / GIB for _, lim in t.result.changes]
                ax.step(
                    times,
                    [*vals, vals[-1]],
                    where="post",
                    color="tab:red" if t.result.oom else "tab:blue",
                    lw=1,
                )
            ax.plot(np.arange(run.steps) * run.grid_s, run.memory / GIB, color="black", lw=0.8)
            kills = sum(t.result.oom for t in tries)
            ax.set_ylabel("GiB", fontsize=7)
            ax.set_title(
                f"{name}" + (f" ({kills} OOM kill{'s' * (kills > 1)}, red)" if kills else ""),
                fontsize=8,
                loc="left",
            )
            ax.tick_params(labelsize=7)
        np.atleast_1d(axes)[-1].set_xlabel(
            f"seconds since the first try of {run.example.record.identity.run_id}"
        )
        fig.tight_layout()
        path = IMG / "cluster_run_allocation.png"
        fig.savefig(path)
        plt.close(fig)
        files.append(path.name)
    return files


def _showcase(result: BenchResult) -> Any:
    """A held-out run of a few minutes to an hour whose memory moves the most (in GiB): the kind of
    run shaping is for."""
    best, score = None, -1.0
    for run in result.workload.runs:
        if not 300 <= run.duration_s <= 3600:
            continue
        swing = run.peak_memory - float(np.median(run.memory))
        if swing > score:
            best, score = run, swing
    return best


def write_report(
    result: BenchResult,
    sweep: list[tuple[float, float, float, float]],
    speed: dict[str, Any],
    images: list[str],
    extra: dict[str, Any],
) -> None:
    m = result.metrics
    oracle = m["oracle"]
    best = best_baseline(m)
    lines = [
        "# Cluster benchmark",
        "",
        "Generated by `bench/cluster_bench.py` (part of `make bench`; reproduce with "
        "`.venv/bin/python bench/cluster_bench.py --data ../shared/data`, or any folder with "
        "`airflow predictive bench --traces DIR --json`). The real traces stay in `../shared/data` "
        "(never committed).",
        "",
        f"Replay: kseg-eager, {len(result.workload.runs)} held-out runs of {result.workload.tasks} tasks "
        f"(per task, the second half of its runs in recorded order; the first half, {len(result.workload.train)} "
        "runs, trains the profiler and is never replayed). Each run replays its true 2 s memory / CPU "
        f"curve on a {result.settings.grid_s:g} s grid, arriving at its recorded start, on a pool of "
        f"{result.pool.describe()}. Memory above the limit is an OOM kill (the killed try's whole "
        "allocation counts as waste; the run is retried under the policy's own rule, at most "
        f"{result.settings.max_tries} tries); CPU above the limit is throttled (the step runs usage / limit "
        f"times longer); a resize is in force {result.settings.actuation_delay_s:g} s after it is asked for "
        f"(rounded up to the grid); VPA-style sees usage at {result.settings.metrics_resolution_s:g} s resolution on a "
        f"{result.settings.vpa_loop_s:g} s loop; the oracle steps every {result.settings.oracle_step_s:g} s.",
        "",
        "Ours (`predictive`) is the product's own code end to end: the profiler's backtest picks each "
        f"task's champion among {', '.join(BENCH_CANDIDATES)} on the training half (forecasters that "
        f"answered: {dict(result.forecasts.answered_by) if result.forecasts else {}}), each replayed run "
        "is forecast before it starts from its task's earlier runs only, `planner.plan_from_forecast` "
        "makes its plan (p99 memory / p90 CPU, timed steps) and a real `ShapingController` shapes the "
        "simulated try (ticked only where its policy could act: the decisions of ticking every second; "
        "`planner.oom_retry_plan` after a kill). Default settings "
        "everywhere: nothing was tuned on the held-out half.",
        "",
        "## Targets",
        "",
        "| target | goal | reached | met |",
        "|---|---|---|---|",
    ]
    ours = m.get("predictive")
    if ours is not None:
        vpa = m["vpa"]
        less = 1 - ours.memory_waste_gib_s / vpa.memory_waste_gib_s if vpa.memory_waste_gib_s else 0.0
        at = reactive_oom_at(sweep, ours.memory_slack)
        top = max(sweep, key=lambda p: p[2]) if sweep else None
        rows = [
            (
                "predictive memory slack",
                "<= 15% with <= 2 OOM kills / 1,000 tries",
                f"{pct(ours.memory_slack)} at {ours.oom_per_1000:.1f} / 1,000",
                ours.memory_slack <= 0.15 and ours.oom_per_1000 <= OOM_BUDGET,
            ),
            (
                "predictive slack vs the 30 s oracle",
                "within 2x",
                f"{ours.memory_slack / oracle.memory_slack:.2f}x ({pct(ours.memory_slack)} vs {pct(oracle.memory_slack)})",
                ours.memory_slack <= 2 * oracle.memory_slack,
            ),
            (
                "less memory waste than vpa, at no more OOM kills",
                ">= 35%",
                f"{100 * abs(less):.1f}% {'less' if less >= 0 else 'more'} ({ours.memory_waste_gib_s:,.0f} vs "
                f"{vpa.memory_waste_gib_s:,.0f} GiB*s; "
                f"OOM {ours.oom_per_1000:.1f} vs {vpa.oom_per_1000:.1f} / 1,000)",
                less >= 0.35 and ours.oom_per_1000 <= vpa.oom_per_1000,
            ),
            (
                "fewer OOM kills than reactive at equal slack",
                "fewer",
                (
                    f"{ours.oom_per_1000:.1f} vs {at:.1f} / 1,000 at {pct(ours.memory_slack)} slack (reactive sweep, interpolated)"
                    if at is not None
                    else f"{ours.oom_per_1000:.1f} / 1,000 at {pct(ours.memory_slack)} slack; the reactive sweep's most "
                    f"cautious setting already has {top[3]:.1f} / 1,000 at {pct(top[2])}"
                    if top is not None and ours.memory_slack > top[2]
                    else f"{ours.oom_per_1000:.1f} / 1,000 at {pct(ours.memory_slack)}: below the reactive sweep's range"
                ),
                (at is not None and ours.oom_per_1000 < at)
                or (top is not None and ours.memory_slack > top[2] and ours.oom_per_1000 < top[3])
                or (
                    at is None
                    and bool(sweep)
                    and ours.memory_slack <= min(p[2] for p in sweep)
                    and ours.oom_per_1000 < min(sweep, key=lambda p: p[2])[3]
                ),
            ),
        ]
        rows.append(
            (
                f"simulator: {speed['executions']:,} executions (synthetic scale-up) on one core",
                "< 60 s",
                ", ".join(f"{n} {s:.1f} s" for n, s in speed["per_policy_s"].items())
                + f" CPU; predictive ~{speed.get('predictive_extrapolated_s', 0):,.0f} s CPU extrapolated from its "
                f"replay of the real runs ({1000 * speed.get('predictive_s_per_run', 0):.1f} ms CPU per run; "
                f"{1000 * speed.get('predictive_no_reforecast_s_per_run', 0):.1f} ms, "
                f"~{speed.get('predictive_no_reforecast_extrapolated_s', 0):,.0f} s, without the re-forecast: the "
                "real planner and controller, ticked only when its policy could act)",
                all(s < 60 for s in speed["per_policy_s"].values())
                and speed.get("predictive_extrapolated_s", 0) < 60,
            )
        )
        for target, goal, reached, met in rows:
            lines.append(f"| {target} | {goal} | {reached} | {'yes' if met else 'no'} |")
    lines += [
        "",
        "## All policies",
        "",
        f"Ratios: memory slack over the oracle's; memory waste over the best baseline's ({best}: the "
        f"baseline with the least waste within {OOM_BUDGET:g} OOM kills / 1,000 tries).",
        "",
        "| policy | mem slack | cpu slack | mem waste GiB*s | cpu waste core*s | OOM / 1,000 | throttled | "
        "wait p50 / p95 s | makespan s | resizes / run | slack / oracle | waste / best baseline | "
        "plan ms p50 / p99 | tick ms p50 / p99 | tries | failed runs | overcommitted grows |",
        "|" + "---|" * 17,
    ]
    for name, x in m.items():
        lines.append(
            f"| {name} | {pct(x.memory_slack)} | {pct(x.cpu_slack)} | {x.memory_waste_gib_s:,.0f} | "
            f"{x.cpu_waste_core_s:,.0f} | {x.oom_per_1000:.1f} | {pct(x.throttled_share)} | "
            f"{x.queue_wait_s_p50:,.0f} / {x.queue_wait_s_p95:,.0f} | {x.makespan_s:,.0f} | {x.resizes_per_run:.1f} | "
            f"{x.memory_slack / oracle.memory_slack:.2f} | {x.memory_waste_gib_s / m[best].memory_waste_gib_s:.2f} | "
            f"{x.plan_ms_p50:.3f} / {x.plan_ms_p99:.3f} | {x.tick_ms_p50:.3f} / {x.tick_ms_p99:.3f} | {x.tries} | "
            f"{x.failed_runs} | {x.overcommitted_grows} |"
        )
    for name, note in result.notes.items():
        lines.append(f"\n{name}: {note}.")
    lines += [
        "",
        "Reactive sweep (grow margin, shrink margin -> memory slack, OOM kills / 1,000 tries):",
        "",
        "| grow margin | shrink margin | mem slack | OOM / 1,000 |",
        "|---|---|---|---|",
    ]
    lines += [f"| {g:g} | {s:g} | {pct(sl)} | {o:.1f} |" for g, s, sl, o in sweep]
    lines += [
        "",
        f"Speed: {speed['executions']:,} executions = the {len(result.workload.runs)} held-out runs repeated "
        f"{speed['copies']} times back to back (synthetic; copies share curves, histories and forecasts), CPU "
        f"seconds of one process: {json.dumps({k: round(v, 1) for k, v in speed['per_policy_s'].items()})}; "
        f"ours (the held-out runs replayed once more, CPU per run x 100,000): "
        f"{json.dumps({k: round(speed[f'{k}_extrapolated_s']) for k in ('predictive', 'predictive_no_reforecast') if f'{k}_extrapolated_s' in speed})}.",
        "",
    ]
    for key, value in extra.items():
        lines.append(f"- {key}: {value}")
    lines.append("")
    lines += [f"![{f}](img/{f})" for f in images]
    notes = ""
    if OUT.exists() and NOTES_MARKER in OUT.read_text():
        notes = OUT.read_text().split(NOTES_MARKER, 1)[1]
    OUT.write_text("\n".join(lines) + "\n\n" + NOTES_MARKER + notes)
    log.info("wrote %s", OUT)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("airflow_predictive").setLevel(logging.WARNING)
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--quick", action="store_true", help="baseline estimators only, first 200 runs")
    ap.add_argument(
        "--split",
        choices=("held-out", "training"),
        default="held-out",
        help="training: replay the second half of the training half only (choices), writes "
        "docs/benchmarks/cluster_training.md; held-out: the published benchmark",
    )
    ap.add_argument(
        "--candidates", default=None, help="comma-separated profiler candidates (default: the bench's)"
    )
    args = ap.parse_args()
    data = Path(args.data)
    kseg = data / "kseg-eager"
    if not kseg.is_dir():
        log.warning("no kseg-eager folder at %s: cluster benchmark skipped", kseg)
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    began = time.monotonic()
    summary, examples = load_trace_folder(kseg)
    extra: dict[str, Any] = {"kseg-eager import": f"{summary.describe()}; {time.monotonic() - began:.0f} s"}
    training = args.split == "training"
    if training:
        examples = training_split(examples)
    workload = build_workload(examples, grid_s=1.0)
    options = BenchOptions(policies=(*BASELINES, "predictive", "predictive_plan"), pool=DEFAULT_POOL)
    if args.quick:
        workload = replace(workload, runs=workload.runs[:200])
        options = replace(options, candidates=("last_run", "median_peak", "linear_input"))
    if args.candidates:
        options = replace(
            options, candidates=tuple(c.strip() for c in args.candidates.split(",") if c.strip())
        )
    result = run_on_workload(workload, options, progress=True, log=log.info)
    if training:
        reforecast_ablation(workload, result)
        segments_ablation(workload, result)
        extra["candidates"] = ", ".join(options.candidates or BENCH_CANDIDATES)
        extra["machine"] = f"{os.cpu_count()} CPUs (shared); {time.monotonic() - began:.0f} s"
        write_training_report(result, OUT.with_name("cluster_training.md"), extra)
        print(json.dumps(result.as_json(), sort_keys=True))
        return 0
    # predictive_shadow differs only where a replayed run is a cold start (no champion forecast)
    if result.forecasts is not None and not result.forecasts.cold_start:
        result.metrics["predictive_shadow"] = result.metrics["predictive"]
        result.notes["predictive_shadow"] = (
            "no replayed run is a cold start (every held-out task has a trained champion), so no shadow "
            "runs: its figures are those of predictive (same code path, not replayed twice)"
        )
    else:
        shadow = run_on_workload(
            workload,
            replace(options, policies=("predictive_shadow",)),
            forecasts=result.forecasts,
            progress=True,
        )
        result.metrics.update(shadow.metrics)
        result.replays.update(shadow.replays)
        result.notes.update(shadow.notes)
    reforecast_ablation(workload, result)
    segments_ablation(workload, result, only=("predictive_prefix_only",))  # what shipped before
    sweep = reactive_sweep(result)
    speed = speed_figures(workload, result.settings, result, 5_000 if args.quick else SCALE_RUNS)
    nextflow = data / "nextflow-traces"
    if nextflow.is_dir():
        nf_summary, nf_examples = load_trace_folder(nextflow)
        with_series = sum(1 for e in nf_examples if e.series is not None and len(e.series) > 0)
        extra["nextflow-traces"] = (
            f"{nf_summary.describe()}; {with_series} runs carry a usage curve, so nothing can be replayed "
            "(peaks and totals only: a flat curve at the peak would measure nothing about shaping)"
        )
    extra["machine"] = f"{os.cpu_count()} CPUs (shared); whole benchmark {time.monotonic() - began:.0f} s"
    images = plots(result, sweep)
    write_report(result, sweep, speed, images, extra)
    print(json.dumps(result.as_json(), sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
