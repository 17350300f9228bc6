"""DAGs for recording's real-Airflow tests (not shipped).

One DAG, ``recording_checks``, two tasks: ``allocate`` allocates ``alloc_mb`` MiB, holds it, and writes its own peak RSS
(VmHWM from /proc/self/status) to ``hwm_file``: the recorded absolute peak must match it.
``work_then_defer``: a deferrable task works a little, defers to a real TimeDeltaTrigger (the
triggerer fires it), resumes in a new task process, works again and succeeds: one run, two legs.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, BaseOperator, task


def _burn(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


class WorkThenDefer(BaseOperator):
    """Works ``work_s``, defers ``defer_s`` to a TimeDeltaTrigger, then works ``work_s`` again."""

    def __init__(self, *, work_s: float = 3.0, defer_s: float = 3.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.work_s = work_s
        self.defer_s = defer_s

    def execute(self, context: Any) -> None:
        from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

        _burn(self.work_s)
        defer_s = float(context["params"].get("defer_s", self.defer_s))
        self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=defer_s)), method_name="resume")

    def resume(self, context: Any, event: Any = None) -> str:
        _burn(self.work_s)
        return "resumed"


# one DAG run for the module (each `dags test` costs ~30 s of Airflow start-up): the two tasks
# side by side, in processes and cgroups of their own
with DAG(
    "recording_checks",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    # `dags test --use-executor` processes the first leg's executor event only once its
    # supervisor is done (seen: up to ~10 s after the deferral on a loaded machine); a trigger that
    # fires before that makes Airflow fail the resumed leg, recording or not. Hence 15 s.
    params={"hwm_file": "", "defer_s": 15.0},
) as checks:

    @task
    def allocate(alloc_mb: int = 120, hold_s: float = 4.0, hwm_file: str = "") -> int:
        block = bytearray(alloc_mb * 1024 * 1024)
        for i in range(0, len(block), 4096):  # touch every page: resident, not just reserved
            block[i] = 1
        time.sleep(hold_s)
        with open("/proc/self/status") as fh:
            hwm_kb = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
        if hwm_file:
            with open(hwm_file, "w") as out:
                out.write(str(hwm_kb * 1024))
        del block
        time.sleep(1.5)
        return hwm_kb

    allocate(hwm_file="{{ params.hwm_file }}")
    WorkThenDefer(task_id="work_then_defer", work_s=3.0, defer_s=15.0)
