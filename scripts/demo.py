"""`make demo`: run the example DAGs through real Airflow and print the recorded resource curves.

Airflow 3.3 on the embedded default (SQLite + LocalExecutor + the API server's execution API), in
./.demo/airflow-home. Three input sizes of `predictive_shapes` and one `predictive_etl` run, then
`airflow predictive history` for every task: the curves come from the sampler sidecars that the
provider's listener started for each task try.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.airflow_runs.airflow_env import AirflowEnv  # noqa: E402

RUNS = [
    ("predictive_shapes", {"input_mb": 128, "cpu_seconds": 3}),
    ("predictive_shapes", {"input_mb": 384, "cpu_seconds": 5}),
    ("predictive_shapes", {"input_mb": 768, "cpu_seconds": 4}),
    ("predictive_etl", {"input_mb": 512, "cpu_seconds": 4}),
]
TASKS = [
    ("predictive_shapes", "memory_ramp"),
    ("predictive_shapes", "cpu_phases"),
    ("predictive_shapes", "disk_io"),
    ("predictive_shapes", "network"),
    ("predictive_etl", "transform"),
]


def main() -> int:
    home = REPO / ".demo" / "airflow-home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = AirflowEnv.create(home)
    print(f"== Airflow home: {home}")
    print("== airflow db migrate (Airflow's tables and the provider's, through its DB manager)")
    env.migrate()
    print(f"== starting the API server on 127.0.0.1:{env.port}")
    env.start_api_server()
    try:
        for dag_id, conf in RUNS:
            t0 = time.monotonic()
            out = env.dags_test(dag_id, conf)
            status = "ok" if out.returncode == 0 else f"FAILED (exit {out.returncode})"
            print(f"== {dag_id} {conf}: {status} in {time.monotonic() - t0:.0f} s")
            if out.returncode != 0:
                print((out.stdout + out.stderr)[-3000:])
                return 1
    finally:
        env.stop()
    print("== airflow predictive ingest (backfill from Airflow's task_instance table)")
    print(env.airflow("predictive", "ingest").stdout.strip())
    for dag_id, task_id in TASKS:
        print(f"\n== airflow predictive history {dag_id} {task_id}")
        out = env.airflow("predictive", "history", dag_id, task_id, "--limit", "6")
        print(out.stdout.rstrip() or out.stderr[-2000:])
    print(
        f"\nRecorded samples are in {home / 'predictive.db'} (tables predictive_task_run, predictive_resource_sample)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
