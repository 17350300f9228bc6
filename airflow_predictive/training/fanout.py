"""Retraining fanned out as Airflow tasks: once one process is not enough (thousands of tasks),
the maintenance DAG splits the work so that Airflow's own executors are the distributed engine.

What runs where (one function here per Airflow task of the maintenance DAG,
``airflow_provider_predictive/example_dags/predictive_maintenance.py``):

1. ``make_plan`` (one task): the due tasks (the triggers of ``maintenance.to_retrain``), the
   dimensions measured, the history's snapshot, and shards of due tasks balanced by their runs
   (``[predictive] training_shard_size`` tasks each, at most ``training_max_shards``). With one
   shard the DAG runs every step in that task (``run_in_process``) and maps nothing.
2. ``train_global`` (one task): the candidates whose fit learns across tasks (``CROSS_TASK``: the
   LSTM, the scaled curve's cross-task elasticity and spread) fitted once per backtest fold, as in
   one process, and once on all runs, into the work folder; the LSTM's backtest is forecast here
   (one batch per fold), the scaled curve's fold models are left to the shards; the cold-start
   chain is fitted here too.
3. ``backtest_shard`` (mapped, one per shard, after 2): every candidate backtested on the shard's
   tasks with only their runs loaded: the per-task ones (their forecast reads only the task's own
   history) fitted here, the scaled curve with the fold models of step 2.
4. ``select_and_store`` (one task): merges the tallies and chooses each due task's champion with
   ``select``, once: the robust default and the coverage widening pool over every task, so the
   choice cannot be made per shard. Then, as ``pipeline.store_selections`` does in one process:
   each champion saved once to the model store (the global ones as fitted in step 2, never
   refitted), every selection recorded and every next forecast cached.
5. ``clean_up`` (after any of them): the work folder goes.

Same result as one process (``maintenance.retrain``): the same fold fits, forecasts and scores,
the same pooled choice and the same saved versions (``tests/unit/training/test_fanout.py``).
Writes: shards write only their own tally file; only step 4 writes profiles and the model store,
so parallel shards never race on a row or a model version.

The work folder is ``<model_dir>/fanout/<run>``: every worker already needs the model folder
(training saves there, serving loads from there). Tallies are JSON (no pickle), small next to the
runs (a few numbers per backtest run and candidate).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_predictive.core.model.resources import Metric
from airflow_predictive.core.model.runs import TaskKey
from airflow_predictive.core.profiler.selection import Backtested, SelectionPolicy, _Tally

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sqlalchemy.engine import Engine

    from airflow_predictive.core.profiler.estimators.base import Estimator, RunExample
    from airflow_predictive.training.pipeline import TrainingResult

log = logging.getLogger(__name__)

# candidates whose fit learns from every task (trained once, in train_global); every other
# candidate forecasts from the task's own history alone, so a shard may backtest it on its tasks
CROSS_TASK = frozenset({"lstm", "scaled_curve"})
FOLDS = 2  # the maintenance schedule's backtest (as ``maintenance.retrain``)
GLOBAL_FILE = "global.json"
WORK_MODELS = "models"


@dataclass(frozen=True)
class Plan:
    """What one maintenance run retrains and how it is split (plain JSON for XCom: the due tasks
    are written once, in their shards)."""

    work: str  # the run's work folder
    model_dir: str
    candidates: tuple[str, ...]
    metrics: tuple[Metric, ...]
    shards: tuple[tuple[TaskKey, ...], ...]
    # the history as the plan saw it: every step trains on the successful runs up to here, so runs
    # that end while the DAG runs (its own tasks' among them) cannot make the steps disagree
    last_run_pk: int = 0
    last_end: datetime | None = None

    @property
    def due(self) -> tuple[TaskKey, ...]:
        """Every task the plan retrains (its shards', each once), sorted."""
        return tuple(sorted((k for shard in self.shards for k in shard), key=str))

    def examples(self, engine: Engine, keys: Sequence[TaskKey] | None = None) -> list[RunExample]:
        from airflow_predictive.storage.run_store import SqlRunStore
        from airflow_predictive.training.dataset import load_examples

        last_end = self.last_end
        return [
            e
            for e in load_examples(SqlRunStore(engine), None if keys is None else list(keys))
            if (e.record.run_pk or 0) <= self.last_run_pk
            and (last_end is None or (e.record.end is not None and e.record.end <= last_end))
        ]

    def policy(self) -> SelectionPolicy:
        return SelectionPolicy(folds=FOLDS, metrics=self.metrics)

    def to_json(self) -> dict[str, Any]:
        return {
            "work": self.work,
            "model_dir": self.model_dir,
            "candidates": list(self.candidates),
            "metrics": [m.value for m in self.metrics],
            "shards": [[_key_json(k) for k in s] for s in self.shards],
            "last_run_pk": self.last_run_pk,
            "last_end": self.last_end.isoformat() if self.last_end is not None else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        return cls(
            work=str(data["work"]),
            model_dir=str(data["model_dir"]),
            candidates=tuple(data["candidates"]),
            metrics=tuple(Metric(m) for m in data["metrics"]),
            shards=tuple(tuple(_key(k) for k in s) for s in data["shards"]),
            last_run_pk=int(data["last_run_pk"]),
            last_end=datetime.fromisoformat(data["last_end"]) if data["last_end"] else None,
        )


def _key_json(key: TaskKey) -> list[Any]:
    return [key.dag_id, key.task_id, key.map_index]


def _key(data: Sequence[Any]) -> TaskKey:
    return TaskKey(str(data[0]), str(data[1]), int(data[2]))


def shards_of(runs: Mapping[TaskKey, int], shard_size: int, max_shards: int) -> list[tuple[TaskKey, ...]]:
    """``ceil(tasks / shard_size)`` shards (at most ``max_shards``), balanced by runs: the task
    with the most runs goes to the lightest shard first. Deterministic; each shard sorted."""
    if not runs:
        return []
    count = max(1, min(max_shards, math.ceil(len(runs) / shard_size)))
    loads = [0] * count
    members: list[list[TaskKey]] = [[] for _ in range(count)]
    for key in sorted(runs, key=lambda k: (-runs[k], str(k))):
        i = min(range(count), key=lambda j: (loads[j], j))
        loads[i] += max(1, runs[key])
        members[i].append(key)
    return [tuple(sorted(m, key=str)) for m in members if m]


def make_plan(
    engine: Engine,
    model_dir: str | os.PathLike[str],
    run_id: str,
    *,
    min_new_runs: int = 3,
    drift: bool = True,
    candidates: Sequence[str] | None = None,
    shard_size: int = 100,
    max_shards: int = 32,
) -> Plan | None:
    """The plan of one maintenance run (None: no task is due). ``candidates`` None: the default
    candidates. The maintenance DAG passes ``[predictive] training_candidates``,
    ``training_shard_size`` and ``training_max_shards`` (``Runtime.training_fanout``)."""
    from airflow_predictive.core.model.runs import Outcome
    from airflow_predictive.storage.run_store import SqlRunStore
    from airflow_predictive.training.candidates import DEFAULT_CANDIDATES, KNOWN
    from airflow_predictive.training.evaluation import forecast_dimensions
    from airflow_predictive.training.maintenance import to_retrain

    names = tuple(candidates or DEFAULT_CANDIDATES)
    unknown = [n for n in names if n not in KNOWN]
    if unknown:
        raise ValueError(f"unknown estimator(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN))}")
    decision = to_retrain(engine, os.fspath(model_dir), min_new_runs, drift)
    if not decision.due:
        log.info("predictive: no task has new runs; nothing to retrain")
        return None
    peaks = []  # the dimensions one process would find in its examples (``measured_metrics``)
    last_pk, last_end = 0, None
    for rec in SqlRunStore(engine).runs(None):
        if rec.outcome is Outcome.SUCCESS and rec.end is not None:
            peaks.append(rec.peak)
            last_pk = max(last_pk, rec.run_pk or 0)
            last_end = rec.end if last_end is None else max(last_end, rec.end)
    _sweep(model_dir)
    work = work_folder(model_dir, run_id)
    shutil.rmtree(work, ignore_errors=True)  # a retried plan starts clean
    work.mkdir(parents=True)
    due = sorted(decision.due, key=str)
    plan = Plan(
        work=str(work),
        model_dir=os.fspath(model_dir),
        candidates=names,
        metrics=forecast_dimensions(peaks),
        shards=tuple(shards_of({k: decision.runs.get(k, 0) for k in due}, shard_size, max_shards)),
        last_run_pk=last_pk,
        last_end=last_end,
    )
    log.info(
        "predictive: retraining %d tasks in %d shard(s) (%s)",
        len(due),
        len(plan.shards),
        ", ".join(str(len(s)) for s in plan.shards),
    )
    return plan


# --------------------------------------------------------------------------- tallies on disk


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {m.value: [_plain(x) for x in v] for m, v in value.items()}
    if isinstance(value, list):
        return [_plain(x) for x in value]
    return value.item() if hasattr(value, "item") else value


def encode(measured: Backtested) -> dict[str, Any]:
    """JSON of a ``Backtested`` (floats round-trip exactly through JSON)."""
    return {
        "tasks": [
            {
                "key": _key_json(key),
                "runs": measured.runs[key],
                "origins": list(measured.origins[key]),
                "tallies": {
                    name: {f.name: _plain(getattr(t, f.name)) for f in fields(t)}
                    for name, t in measured.tallies.get(key, {}).items()
                },
            }
            for key in measured.runs
        ]
    }


def decode(data: Mapping[str, Any]) -> Backtested:
    runs: dict[TaskKey, int] = {}
    origins: dict[TaskKey, list[int]] = {}
    tallies: dict[TaskKey, dict[str, _Tally]] = {}
    for task in data["tasks"]:
        key = _key(task["key"])
        runs[key] = int(task["runs"])
        origins[key] = [int(c) for c in task["origins"]]
        tallies[key] = {name: _tally(state) for name, state in task["tallies"].items()}
    return Backtested(runs, origins, tallies)


def _tally(state: Mapping[str, Any]) -> _Tally:
    values: dict[str, Any] = {
        f: ({Metric(m): list(v) for m, v in value.items()} if isinstance(value, dict) else value)
        for f, value in state.items()
    }
    return _Tally(**values)


def _write(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def _read(path: Path) -> Backtested:
    try:
        return decode(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RuntimeError(f"predictive: the fan-out's tallies {path} are unreadable ({exc})") from exc


def shard_file(index: int) -> str:
    return f"shard-{index:04d}.json"


# --------------------------------------------------------------------------- the steps


def _split(plan: Plan) -> tuple[list[str], list[str]]:
    cross = [n for n in plan.candidates if n in CROSS_TASK]
    return cross, [n for n in plan.candidates if n not in CROSS_TASK]


def train_global(
    engine: Engine, plan: Plan, options: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, int]:
    """Backtest and fit the cross-task candidates once over every task; the fitted models go to
    the work folder's own model store, name -> version there (a failed fit is left out).

    A cross-task candidate with a batched forecast (``predict_many``: the LSTM) is forecast here,
    in one batch per fold. The others (the scaled curve, forecast run by run) are only fitted
    here, once per fold; their fold models go to the work folder (``fold_scope``) and each shard
    forecasts its own tasks with them. The cold-start chain is fitted here too (it learns the
    scaled curve's cross-task spread): ``select_and_store`` uses it as it is.
    ``options``: per-name estimator arguments (``candidates.factories``)."""
    from airflow_predictive.core.profiler.selection import backtest_tallies
    from airflow_predictive.training.artefacts import COLD_START, ArtefactSaver
    from airflow_predictive.training.candidates import cold_start_chain, factories
    from airflow_predictive.training.pipeline import fit_all

    began = time.monotonic()
    cross = factories(tuple(_split(plan)[0]), **dict(options or {}))
    examples = plan.examples(engine)
    batched = {n: f for n, f in cross.items() if _batched(f)}
    shipped = {n: _FoldRecorder(f) for n, f in cross.items() if n not in batched}
    measured = backtest_tallies({**batched, **shipped}, examples, plan.policy(), frozenset(plan.due))
    for by_name in measured.tallies.values():  # forecast by the shards, not here
        for name in shipped:
            by_name.pop(name, None)
    fitted: dict[str, Any] = dict(fit_all(set(cross), cross, examples)[0]) if cross else {}
    for name, recorder in shipped.items():
        fitted.update({fold_scope(name, k): m for k, m in enumerate(recorder.models) if m is not None})
    try:  # select_and_store would otherwise refit it (the scaled curve's fit, once more)
        fitted[COLD_START] = cold_start_chain().fit(examples)
    except Exception as exc:
        log.warning("predictive: the cold-start chain could not be fitted here (%s); fitted later", exc)
    saver = ArtefactSaver(Path(plan.work) / WORK_MODELS, keep=1)
    versions = {n: int(label.rpartition(":v")[2]) for n, label in saver(fitted).items()}
    for name, recorder in shipped.items():  # a fold whose fit failed: the shards record why
        for k, error in enumerate(recorder.errors):
            if error is not None:
                versions[fold_scope(name, k)] = -1
    _write(Path(plan.work) / GLOBAL_FILE, {**encode(measured), "fold_errors": _fold_errors(shipped)})
    log.info(
        "predictive: global candidates %s backtested and fitted in %.1f s",
        sorted(cross),
        time.monotonic() - began,
    )
    return versions


def fold_scope(name: str, fold: int) -> str:
    """Work-folder name of a cross-task candidate's model fitted for one backtest fold."""
    return f"{name}.fold{fold}"


def _batched(factory: Any) -> bool:
    try:
        return callable(getattr(factory(), "predict_many", None))
    except Exception:
        return False


class _FoldRecorder:
    """A factory whose estimators fit for real and keep each fold's model (in fit order, which is
    fold order: ``backtest_tallies`` fits every candidate once per fold that has test runs, and the
    folds with test runs are always 0..k-1), then refuse to forecast: their forecasts are the
    shards' work."""

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self.models: list[Any] = []
        self.errors: list[str | None] = []

    def __call__(self) -> Any:
        return _RecordingFit(self)


class _RecordingFit:
    def __init__(self, owner: _FoldRecorder) -> None:
        self.owner = owner
        self.name = "recording"

    def fit(self, examples: Sequence[RunExample]) -> _NoForecast:
        try:
            model = self.owner.factory().fit(examples)
        except Exception as exc:
            self.owner.models.append(None)
            self.owner.errors.append(f"{type(exc).__name__}: {exc}")
            raise
        self.owner.models.append(model)
        self.owner.errors.append(None)
        return _NoForecast()


class _NoForecast:
    name = "shipped"

    def predict(self, query: Any) -> Any:
        raise _Shipped("forecast by the shards")


class _Shipped(RuntimeError):
    pass


def _fold_errors(shipped: Mapping[str, _FoldRecorder]) -> dict[str, list[str | None]]:
    return {name: list(r.errors) for name, r in shipped.items()}


class _FoldModels:
    """A shard's factory for a shipped candidate: its k-th fit is fold k's model from the work
    folder (a fold whose fit failed in ``train_global`` fails again here, with that error)."""

    def __init__(self, models: list[Any], errors: list[str | None]) -> None:
        self.models, self.errors = models, errors
        self.calls = 0

    def __call__(self) -> Any:
        return _LoadedFit(self)


class _LoadedFit:
    def __init__(self, owner: _FoldModels) -> None:
        self.owner = owner
        self.name = "loaded"

    def fit(self, examples: Sequence[RunExample]) -> Any:
        k = self.owner.calls
        self.owner.calls += 1
        if k >= len(self.owner.models) or self.owner.models[k] is None:
            error = self.owner.errors[k] if k < len(self.owner.errors) else None
            raise RuntimeError(error or f"no model of fold {k} from train_global")
        return self.owner.models[k]


def backtest_shard(engine: Engine, plan: Plan, index: int, versions: Mapping[str, int]) -> int:
    """Backtest the per-task candidates on shard ``index``'s tasks, and the cross-task ones that
    ``train_global`` fitted per fold (``versions``: what it returned); returns how many tasks."""
    from airflow_predictive.core.profiler.selection import backtest_tallies
    from airflow_predictive.training.candidates import factories

    began = time.monotonic()
    keys = plan.shards[index]
    local: dict[str, Any] = dict(factories(tuple(_split(plan)[1])))
    local.update(_shipped_models(plan, versions))
    ordered = {n: local[n] for n in plan.candidates if n in local}
    examples = plan.examples(engine, keys) if ordered else []
    measured = backtest_tallies(ordered, examples, plan.policy(), frozenset(keys))
    _write(Path(plan.work) / shard_file(index), encode(measured))
    log.info(
        "predictive: shard %d: %d tasks, %d runs backtested in %.1f s",
        index,
        len(keys),
        len(examples),
        time.monotonic() - began,
    )
    return len(keys)


def _shipped_models(plan: Plan, versions: Mapping[str, int]) -> dict[str, _FoldModels]:
    from airflow_predictive.storage.model_store import ModelStore
    from airflow_predictive.training.artefacts import scope_of

    try:
        errors = json.loads((Path(plan.work) / GLOBAL_FILE).read_text()).get("fold_errors", {})
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"predictive: the fan-out's global tallies are unreadable ({exc})") from exc
    store = ModelStore(Path(plan.work) / WORK_MODELS, keep=1)
    out = {}
    for name, fold_errors in errors.items():
        models = []
        for k in range(len(fold_errors)):
            version = versions.get(fold_scope(name, k), -1)
            models.append(store.load(scope_of(fold_scope(name, k)), int(version)) if version > 0 else None)
        out[name] = _FoldModels(models, list(fold_errors))
    return out


def merged(plan: Plan, examples: Sequence[RunExample]) -> tuple[list[str], Backtested]:
    """Every shard's and the global tallies as one ``Backtested`` over all tasks (in the order one
    process walks them), and the candidates measured, in the plan's order."""
    from airflow_predictive.core.profiler.selection import origins

    policy = plan.policy()
    parts = [_read(Path(plan.work) / GLOBAL_FILE)]
    parts += [_read(Path(plan.work) / shard_file(i)) for i in range(len(plan.shards))]
    counts: dict[TaskKey, int] = {}
    for ex in examples:
        counts[ex.key] = counts.get(ex.key, 0) + 1
    due = set(plan.due)
    task_origins = {k: origins(n, policy) if k in due else [] for k, n in counts.items()}
    tallies: dict[TaskKey, dict[str, _Tally]] = {k: {} for k in counts}
    for part in parts:
        for key, by_name in part.tallies.items():
            if key in due and key in tallies:
                tallies[key].update(by_name)
    measured_names = {n for by_name in tallies.values() for n in by_name}
    names = [n for n in plan.candidates if n in measured_names]
    for key in due & set(counts):
        missing = [n for n in names if n not in tallies[key]]
        if missing and task_origins[key]:
            raise RuntimeError(f"predictive: no backtest of {', '.join(missing)} for {key} in {plan.work}")
    return names, Backtested(counts, task_origins, tallies)


def select_and_store(engine: Engine, plan: Plan, global_versions: Mapping[str, int]) -> TrainingResult | None:
    """Choose every due task's champion from the merged tallies, then save, record and cache as
    one process does (``pipeline.store_selections``)."""
    from airflow_predictive.core.profiler.selection import select
    from airflow_predictive.storage.model_store import ModelStore, ModelUnavailable
    from airflow_predictive.storage.profile_store import ForecastCache, ProfileStore
    from airflow_predictive.training.artefacts import COLD_START, ArtefactSaver, scope_of
    from airflow_predictive.training.candidates import factories
    from airflow_predictive.training.pipeline import store_selections

    began = time.monotonic()
    work_store = ModelStore(Path(plan.work) / WORK_MODELS, keep=1)
    chain = None
    if global_versions.get(COLD_START, -1) > 0:
        try:
            chain = work_store.load(scope_of(COLD_START), int(global_versions[COLD_START]))
        except ModelUnavailable as exc:
            log.warning(
                "predictive: the cold-start chain of train_global is unavailable (%s); refitting", exc
            )
    # with the cross-task fits done, only the due tasks' runs are needed here (the per-task
    # candidates learn nothing from other tasks); without the chain, it is fitted on every run
    examples = plan.examples(engine, plan.due if chain is not None else None)
    if not examples:
        return None
    names, measured = merged(plan, examples)
    records = select(names, measured, plan.policy(), frozenset(plan.due))
    champions = {r.champion for r in records if r.champion is not None}
    prefitted: dict[str, Estimator | None] = {}
    for name in sorted(champions & CROSS_TASK):
        version = global_versions.get(name)
        try:
            prefitted[name] = None if version is None else work_store.load(scope_of(name), int(version))
        except ModelUnavailable as exc:
            log.warning("predictive: %s fitted by train_global is unavailable (%s)", name, exc)
            prefitted[name] = None
        if prefitted[name] is None:
            log.warning("predictive: %s could not be fitted on all runs; its tasks get the cold start", name)
    local = factories(tuple(n for n in names if n not in CROSS_TASK))
    return store_selections(
        records,
        local,
        examples,
        profiles=ProfileStore(engine),
        cache=ForecastCache(engine),
        model_saver=ArtefactSaver(plan.model_dir),
        prefitted=prefitted,
        cold_start=chain,
        began=began,
    )


def work_folder(model_dir: str | os.PathLike[str], run_id: str) -> Path:
    """The work folder of the maintenance run ``run_id``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id).strip("._") or "run"
    return Path(model_dir) / "fanout" / safe


def clean_up(plan: Plan | Path | str) -> None:
    shutil.rmtree(plan.work if isinstance(plan, Plan) else plan, ignore_errors=True)


def _sweep(model_dir: str | os.PathLike[str], older_than_s: float = 86400.0) -> None:
    """Work folders a run left behind (its clean-up never ran: a failed plan, a killed worker)."""
    root = Path(model_dir) / "fanout"
    if not root.is_dir():
        return
    cutoff = time.time() - older_than_s
    for folder in root.iterdir():
        try:
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue


def retrain_fanned_out(
    engine: Engine,
    model_dir: str | os.PathLike[str],
    run_id: str = "local",
    *,
    min_new_runs: int = 1,
    drift: bool = True,
    candidates: Sequence[str] | None = None,
    shard_size: int = 100,
    max_shards: int = 32,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> TrainingResult | None:
    """Every step in this process, in the DAG's order (tests, the benchmark)."""
    plan = make_plan(
        engine,
        model_dir,
        run_id,
        min_new_runs=min_new_runs,
        drift=drift,
        candidates=candidates,
        shard_size=shard_size,
        max_shards=max_shards,
    )
    return None if plan is None else run_in_process(engine, plan, options)


def run_in_process(
    engine: Engine, plan: Plan, options: Mapping[str, Mapping[str, Any]] | None = None
) -> TrainingResult | None:
    """Every step of ``plan`` here, one after the other (the DAG does this inside
    ``plan_retraining`` when there is one shard: a small deployment launches no more tasks)."""
    try:
        versions = train_global(engine, plan, options)
        for i in range(len(plan.shards)):
            backtest_shard(engine, plan, i, versions)
        return select_and_store(engine, plan, versions)
    finally:
        clean_up(plan)
