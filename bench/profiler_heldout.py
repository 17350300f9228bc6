"""Selection on trace families no tuning has seen: leave one Nextflow workflow out.

Usage: .venv/bin/python bench/profiler_heldout.py [--data DIR] [--out docs/benchmarks/profiler_heldout.md]

The four Nextflow workflows of ``nextflow-traces`` (chipseq, eager, methylseq, rnaseq) are each
evaluated on their own (first half of every task's runs trains and is backtested, second half is
held out). The selection rule is then *tuned on three workflows and evaluated on the fourth*:
among a small grid of selection policies (criterion: penalised pinball score or a quantile of the
backtest memory peak errors; shrinkage gain towards the pooled default), the one with the fewest
tasks worse than the best simple baseline (then the lowest median) on the three others is applied
to the held-out one. The choice is replayed from each task's backtest scores (the same
``selection._choose`` the backtest uses), so every variant is judged on the same forecasts: the p50
peak error does not depend on the calibration, only on which candidate is champion.

Reported per workflow: the former default (``criterion="score"``), the leave-one-out choice and
the shipped default, by median / p90 memory peak error and tasks worse than the best simple
baseline (last run, median of peaks, linear in input size); then, for the shipped default, every
task where the champion lost to a simpler candidate on the held-out runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from airflow_predictive.core.model.resources import Metric  # noqa: E402
from airflow_predictive.core.profiler.selection import (  # noqa: E402
    AUTO,
    SelectionPolicy,
    _choose,
    pooled_default,
    ranking,
    task_default,
)
from airflow_predictive.core.profiler.selection import SIMPLE as SIMPLE_DEFAULT  # noqa: E402
from airflow_predictive.training.candidates import DEFAULT_CANDIDATES, REFERENCES, factories  # noqa: E402
from airflow_predictive.training.evaluation import PROFILER, Evaluation, evaluate, measured_metrics  # noqa: E402

OUT = ROOT / "docs" / "benchmarks" / "profiler_heldout.md"
SIMPLE = ("last_run", "median_peak", "linear_input")
FORMER = "score, gain 5%"


def variants() -> dict[str, dict]:
    out = {FORMER: {"criterion": "score", "min_gain": 0.05}}
    for gain in (0.0, 0.05, 0.1, 0.2):
        out[f"score, gain {100 * gain:.0f}%"] = {"criterion": "score", "min_gain": gain}
        for q in (0.5, 0.75):
            peak = {"criterion": "peak_error", "peak_quantile": q, "min_gain": gain}
            out[f"peak p{100 * q:.0f}, gain {100 * gain:.0f}%"] = peak
            out[f"peak p{100 * q:.0f}, gain {100 * gain:.0f}%, fold majority"] = {
                **peak,
                "fold_majority": True,
            }
            out[f"peak p{100 * q:.0f}, gain {100 * gain:.0f}%, last fold"] = {**peak, "rank_last_fold": True}
            out[f"peak p{100 * q:.0f}, gain {100 * gain:.0f}%, tail guard"] = {**peak, "tail_quantile": 0.9}
            out[f"peak p{100 * q:.0f}, gain {100 * gain:.0f}%, simple default"] = {
                **peak,
                "default": SIMPLE_DEFAULT,
            }
            out[f"peak p{100 * q:.0f}, gain {100 * gain:.0f}%, simple default, fold majority"] = {
                **peak,
                "default": SIMPLE_DEFAULT,
                "fold_majority": True,
            }
    return out


def held_errors(ev: Evaluation) -> dict[tuple[str, object], list[float]]:
    """(estimator, task) -> held-out relative memory peak errors (p50)."""
    out: dict[tuple[str, object], list[float]] = {}
    for name, scored in ev.scores.items():
        for key, s in scored:
            if s.metric is Metric.MEMORY_BYTES and np.isfinite(s.peak_error):
                out.setdefault((name, key), []).append(s.peak_error)
    return out


def replay(ev: Evaluation, errors: dict, policy: SelectionPolicy) -> tuple[list[float], list[tuple]]:
    """Held-out errors of every run when champions are chosen with ``policy``, and per task
    (task, champion, its median, best simple baseline, its median, the simple baseline the
    task's backtest ranks first, its median)."""
    scored = {r.key: [s for s in r.scores if s.eligible] for r in ev.selections if r.champion is not None}
    pooled = pooled_default(scored.values(), policy) if policy.default in (AUTO, SIMPLE_DEFAULT) else None
    runs = {r.key: r.runs for r in ev.selections}
    all_errors: list[float] = []
    rows = []
    for key in {k for _, k in errors}:
        ok = scored.get(key)
        default = task_default(ok, policy, pooled) if ok else None
        champ = _choose(ok, replace(policy, default=default or ""), runs[key])[0].estimator if ok else None
        mine = errors.get((champ, key)) if champ else None
        mine = mine or errors.get((PROFILER, key), [])
        all_errors += mine
        simple = {n: float(np.median(errors[(n, key)])) for n in SIMPLE if errors.get((n, key))}
        if mine and simple:
            best = min(simple, key=lambda n: simple[n])
            backed = [s for s in ok or [] if s.estimator in simple]
            rank = ranking(backed, policy) if backed else {}
            chosen = min(rank, key=lambda n: (rank[n], n)) if rank else best
            rows.append(
                (
                    key,
                    champ or "cold start",
                    float(np.median(mine)),
                    best,
                    simple[best],
                    chosen,
                    simple[chosen],
                )
            )
    return all_errors, rows


def figures(errs: list[float], rows: list[tuple]) -> tuple[float, float, int, int, int]:
    """median, p90, tasks worse than the best simple baseline on the held-out runs (an oracle),
    tasks, tasks worse than the simple baseline the backtest chose (the issue's definition)."""
    worse = sum(1 for r in rows if r[2] > r[4] + 1e-9)
    chosen = sum(1 for r in rows if r[2] > r[6] + 1e-9)
    return float(np.median(errs)), float(np.quantile(errs, 0.9)), worse, len(rows), chosen


def fmt(f: tuple[float, float, int, int, int]) -> str:
    return f"{100 * f[0]:.2f}% / {100 * f[1]:.1f}% / {f[2]} ({f[4]}) of {f[3]}"


def oracle_p90(per_wf: dict) -> float:
    """p90 of the held-out errors when every task is served by the candidate with the fewest
    held-out errors above 25% (an oracle on the held-out runs: the bound no selection can pass)."""
    errs: list[float] = []
    for ev, errors, _ in per_wf.values():
        del ev
        for key in {k for n, k in errors if n == PROFILER}:
            mine = errors[(PROFILER, key)]
            opts = [v for (n, k), v in errors.items() if k == key and n != PROFILER and len(v) == len(mine)]
            errs += min(opts, key=lambda v: float(np.mean(np.asarray(v) > 0.25))) if opts else mine
    return float(np.quantile(errs, 0.9))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from profiler_bench import load  # type: ignore[import-not-found]

    began = time.monotonic()
    _, examples, _ = load(Path(args.data) / "nextflow-traces")
    # no series in Nextflow traces: no LSTM, so no combination of it either
    names = tuple(n for n in DEFAULT_CANDIDATES if n not in ("lstm", "combined"))
    grid = variants()
    shipped = SelectionPolicy()
    per_wf: dict[str, tuple[Evaluation, dict, SelectionPolicy]] = {}
    for wf in sorted({e.key.dag_id for e in examples}):
        mine = [e for e in examples if e.key.dag_id == wf]
        policy = SelectionPolicy(folds=2, metrics=measured_metrics(mine))
        ev = evaluate(mine, factories(names), factories(REFERENCES), policy=policy, prefix_fraction=None)
        per_wf[wf] = (ev, held_errors(ev), policy)
        print(f"{wf}: evaluated in {ev.seconds:.0f} s", flush=True)

    def result(wfs: list[str], opts: dict) -> tuple[list[float], list[tuple]]:
        errs: list[float] = []
        rows: list[tuple] = []
        for w in wfs:
            ev, errors, policy = per_wf[w]
            e, r = replay(ev, errors, replace(policy, **opts))
            errs += e
            rows += r
        return errs, rows

    def objective(name: str, wfs: list[str]) -> tuple[int, float]:
        f = figures(*result(wfs, grid[name]))
        return f[2], f[0]

    wfs = list(per_wf)
    ship_opts = {
        "criterion": shipped.criterion,
        "peak_quantile": shipped.peak_quantile,
        "min_gain": shipped.min_gain,
        "default": shipped.default,
        "fold_majority": shipped.fold_majority,
        "rank_last_fold": shipped.rank_last_fold,
        "tail_quantile": shipped.tail_quantile,
    }
    lines = [
        "# Held-out trace families: leave one Nextflow workflow out (memory peaks)",
        "",
        "Reproduce: `.venv/bin/python bench/profiler_heldout.py` (part of `make bench`). Candidates: "
        f"{', '.join(names)} (the LSTM, and so its combination with the scaled curve, needs series, which Nextflow traces lack). Each cell: median / p90 "
        "memory peak error over the held-out half / tasks whose median is worse than the best simple "
        "baseline (last run, median of peaks, linear in input size: the best of the three *on the "
        "held-out runs*, an oracle no per-task choice can always match), in brackets those worse than "
        "the simple baseline the task's own backtest ranks first (the issue's target: *never worse than "
        "the best simple baseline per task, chosen per task by backtest*; a task too short to backtest "
        "counts against the held-out best). *Tuned on the other three*: "
        "the selection policy of the grid below with the fewest such tasks (then the lowest median) on "
        "the three other workflows, applied to this one.",
        "",
        f"Shipped default: criterion `{shipped.criterion}`, p{100 * shipped.peak_quantile:.0f} of the "
        f"backtest peak errors, gain {100 * shipped.min_gain:.0f}% towards the pooled default "
        f"(x2 under {shipped.short_history} runs). Grid: {', '.join(g for g in grid if g != FORMER)} "
        "(*fold majority*: a challenger must also beat the default in most backtest folds; *last fold*: "
        "rank by the last fold's errors alone, the models fitted on the most runs; *tail guard*: a "
        "challenger whose p90 backtest error is 10% above the default's cannot replace it; *simple "
        "default*: shrink towards the simple baseline the task's own backtest ranks first instead of "
        "the pooled default).",
        "",
        "| held-out workflow | former default (score) | tuned on the other three | chosen there | shipped default |",
        "|---|---|---|---|---|",
    ]
    total: dict[str, tuple[list[float], list[tuple]]] = {
        "former": ([], []),
        "lowo": ([], []),
        "ship": ([], []),
    }
    for held in wfs:
        rest = [w for w in wfs if w != held]
        chosen = min((n for n in grid if n != FORMER), key=lambda n: objective(n, rest))
        cells = {"former": grid[FORMER], "lowo": grid[chosen], "ship": ship_opts}
        res = {k: result([held], v) for k, v in cells.items()}
        for k, (e, r) in res.items():
            total[k][0].extend(e)
            total[k][1].extend(r)
        lines.append(
            f"| {held} | {fmt(figures(*res['former']))} | {fmt(figures(*res['lowo']))} | {chosen} | "
            f"{fmt(figures(*res['ship']))} |"
        )
        print(lines[-1], flush=True)
    lines.append(
        f"| **all four** | {fmt(figures(*total['former']))} | {fmt(figures(*total['lowo']))} | | "
        f"{fmt(figures(*total['ship']))} |"
    )
    ranked = sorted(grid, key=lambda n: objective(n, wfs))
    bound = oracle_p90(per_wf)
    lines += [
        "",
        "Every grid policy on all four workflows (tasks worse, median): "
        + "; ".join(f"{n}: {objective(n, wfs)[0]}, {100 * objective(n, wfs)[1]:.2f}%" for n in ranked),
        "",
        f"Bound on the p90: serving every task with the candidate that has the fewest held-out errors "
        f"above 25% (an oracle on the held-out runs) gives a p90 of {100 * bound:.1f}% "
        f"(goal 25%): the runs that make the p90 are mispredicted by every candidate (e.g. "
        "methylseq's BISMARK tasks, whose peaks jump between ~0.2 and ~2.5 GiB by sample with no "
        "input size in the traces), so no selection rule among these candidates can reach it.",
        "",
        "## Where the shipped champion lost to a simpler candidate (held-out median memory peak error)",
        "",
        "| task | champion | its median | best simple baseline | its median | backtest's simple choice | its median |",
        "|---|---|---|---|---|---|---|",
    ]
    lost = [r for r in total["ship"][1] if r[2] > r[4] + 1e-9]
    for key, champ, mine, best, theirs, chosen, its in sorted(lost, key=lambda r: r[4] - r[2]):
        lines.append(
            f"| {str(key)[-60:]} | {champ} | {100 * mine:.2f}% | {best} | {100 * theirs:.2f}% | {chosen} | "
            f"{100 * its:.2f}%{' (worse)' if mine > its + 1e-9 else ''} |"
        )
    lines += ["", f"Took {time.monotonic() - began:.0f} s on this shared 2-core machine.", ""]
    Path(args.out).write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
