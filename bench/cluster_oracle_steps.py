"""How much of the oracle's slack comes from its 30 s steps: the oracle replayed at longer steps.

Usage: .venv/bin/python bench/cluster_oracle_steps.py [--data DIR] [--split training|held-out]

The oracle knows each run's true curve and, every ``oracle_step_s``, sets its limits to the next
window's true peak (``simulation/policies/baselines.OraclePolicy``). Replayed at 30 s to 600 s
steps on the cluster benchmark's workload (default: the training split, as bench/cluster_bench.py
``--split training`` builds it), it shows what perfect foresight at a given cadence could give: a
bound for a policy that re-forecasts every minute. Not part of ``make bench`` (about a minute).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cluster_bench import diagnostic_workload  # noqa: E402

from airflow_predictive.simulation.bench import DEFAULT_POOL  # noqa: E402
from airflow_predictive.simulation.cluster import replay  # noqa: E402
from airflow_predictive.simulation.execution import SimSettings  # noqa: E402
from airflow_predictive.simulation.metrics import summarise  # noqa: E402
from airflow_predictive.simulation.policies.baselines import OraclePolicy  # noqa: E402

STEPS = (30.0, 60.0, 120.0, 300.0, 600.0)


def main() -> int:
    workload, split = diagnostic_workload(__doc__.splitlines()[0])
    print(f"| oracle step | memory slack | OOM / 1,000 |  ({split}, {len(workload.runs)} runs)")
    print("|---|---|---|")
    for step in STEPS:
        m = summarise(
            replay(workload, OraclePolicy(), DEFAULT_POOL, SimSettings(oracle_step_s=step))
        ).as_dict()
        print(f"| {step:g} s | {100 * m['memory_slack']:.1f} % | {m['oom_per_1000']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
