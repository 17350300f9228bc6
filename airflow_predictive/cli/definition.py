"""Declares the `airflow predictive` command group. Handlers are imported lazily (by dotted path).

Each command lives in ``airflow_predictive.cli.commands.<name>`` and exposes ``run(args)``.
Add a command by appending one ``ActionCommand`` to ``_commands()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.cli.cli_config import CLICommand


def _lazy(module: str) -> Any:
    from airflow.utils.cli import action_cli

    def handler(args: Any) -> None:
        import importlib

        importlib.import_module(f"airflow_predictive.cli.commands.{module}").run(args)

    handler.__name__ = f"predictive_{module}"
    return action_cli(check_db=False)(handler)


def _commands() -> list[Any]:
    from airflow.cli.cli_config import ActionCommand, Arg

    dag_id = Arg(("dag_id",), help="DAG id")
    task_id = Arg(("task_id",), help="task id")
    limit = Arg(("--limit",), type=int, default=20, help="how many of the newest runs (default 20)")
    as_json = Arg(("--json",), action="store_true", help="print JSON instead of a table")
    return [
        ActionCommand(
            name="history",
            help="Recorded runs of a task: outcomes, declared resources and a compact view of each curve",
            func=_lazy("history"),
            args=(dag_id, task_id, limit, as_json),
        ),
        ActionCommand(
            name="ingest",
            help="Backfill run history from Airflow's task_instance table (durations, tries, states)",
            func=_lazy("ingest"),
            args=(
                Arg(("--dag-id",), help="only this DAG"),
                Arg(("--since",), help="only task instances started at or after this ISO date"),
            ),
        ),
        ActionCommand(
            name="migrate",
            help="Create or upgrade the provider's tables at the predictive sql_alchemy_conn option",
            func=_lazy("migrate"),
            args=(),
        ),
        ActionCommand(
            name="train",
            help="Backtest the forecasters per task, keep each task's champion, precompute forecasts",
            func=_lazy("train"),
            args=(
                Arg(("--dag",), dest="dag_id", help="only tasks of this DAG"),
                Arg(("--task",), dest="task_id", help="only this task id"),
                Arg(("--candidates",), help="comma-separated estimator names (default: all available)"),
            ),
        ),
        ActionCommand(
            name="evaluate",
            help="Evaluate the profiler on held-out runs of a trace folder (k-Segments or Nextflow)",
            func=_lazy("evaluate"),
            args=(
                Arg(("--traces",), required=True, help="runs.csv+samples.csv.gz or Nextflow trace folder"),
                Arg(("--json",), action="store_true", help="print one JSON object as the last line"),
                Arg(("--candidates",), help="comma-separated estimator names (default: all available)"),
            ),
        ),
        ActionCommand(
            name="upkeep",
            help="Close recorded runs left RUNNING by a crash (no end and no sampler left)",
            func=_lazy("upkeep"),
            args=(
                Arg(
                    ("--older-than",),
                    type=float,
                    default=3600.0,
                    help="seconds a leg must have run without an end (default 3600)",
                ),
                Arg(
                    ("--waiting-older-than",),
                    type=float,
                    default=None,
                    help="also close tries waiting (deferred) longer than this many seconds (default: never)",
                ),
            ),
        ),
        ActionCommand(
            name="db-grants",
            help="Print the SQL for a least-privilege PostgreSQL role that can record and nothing else",
            func=_lazy("db_grants"),
            args=(
                Arg(("--role",), required=True, help="role name to create"),
                Arg(("--password",), default=None, help="password (default: a placeholder to replace)"),
            ),
        ),
        ActionCommand(
            name="bench",
            help="Replay a trace folder's held-out runs on a simulated pool under every sizing policy",
            func=_lazy("bench"),
            args=tuple(
                Arg(flags, **kwargs)
                for flags, kwargs in __import__(
                    "airflow_predictive.cli.commands.bench", fromlist=["ARGS"]
                ).ARGS
            ),
        ),
        ActionCommand(
            name="plan",
            help="Forecast, plan and admission-now of a task's next try (what the PredictiveExecutor would do)",
            func=_lazy("plan"),
            args=tuple(
                Arg(flags, **kwargs)
                for flags, kwargs in __import__(
                    "airflow_predictive.cli.commands.plan", fromlist=["ARGS"]
                ).ARGS
            ),
        ),
        ActionCommand(
            name="pools",
            help="Each pool's capacity, reserved-over-time and the tasks held back with their reason",
            func=_lazy("pools"),
            args=tuple(
                Arg(flags, **kwargs)
                for flags, kwargs in __import__(
                    "airflow_predictive.cli.commands.pools", fromlist=["ARGS"]
                ).ARGS
            ),
        ),
        ActionCommand(
            name="kube-emulator",
            help="Serve a Kubernetes 1.35 API emulator on 127.0.0.1 and write a kubeconfig for it",
            func=_lazy("kube_emulator"),
            args=tuple(
                Arg(flags, **kwargs)
                for flags, kwargs in __import__(
                    "airflow_predictive.cli.commands.kube_emulator", fromlist=["ARGS"]
                ).ARGS
            ),
        ),
    ]


def get_predictive_cli_commands() -> list[CLICommand]:
    from airflow.cli.cli_config import GroupCommand

    # Airflow builds its CLI from this function in every `airflow ...` process before it launches
    # anything: `dags test --use-executor` creates no Job (no listener on_starting), yet its
    # LocalExecutor forks task processes that must inherit the SQLite sibling store.
    from airflow_predictive.listeners.run_recorder import export_inherited_store

    export_inherited_store()
    return [
        GroupCommand(
            name="predictive",
            help="Predictive task resources: history, training, evaluation, emulator",
            subcommands=_commands(),
        )
    ]
