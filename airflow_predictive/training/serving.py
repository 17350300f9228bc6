"""The storage-backed ForecastService: "what will this run need", per query, without TensorFlow.

Why: the executor, the operators and the CLI ask for the forecast of one upcoming try with its own
features (``ForecastQuery``). This adapter reads what training left (the task's profile: champion,
pinned model version and calibration; the saved models; the cold-start chain) and the task's
recent history from storage, keeps them in memory per task for ``ttl_s`` seconds, and evaluates
the champion for the query in numpy (``core/profiler/serving.py``). It runs inside the scheduler,
executor and triggerer: it never trains, never imports TensorFlow (the LSTM is loaded with
``LstmForecaster.load_numpy``; an import contract in pyproject keeps it so), and never raises: a
storage or model failure answers from the next level (declared resources at worst), logged once
per task, and a failing store is not asked again for ``retry_s`` seconds (bounded delay).

Costs: a cached task costs one numpy evaluation per distinct query (results are memoised per
task and feature set); the first query of a task in ``ttl_s`` reads its profile and at most
``history_runs`` records plus ``series_runs`` series (bench/serving_bench.py measures both).
``invalidate(key)`` drops a task at once (the feedback loop calls it when a run finishes).
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_predictive.core.model.query import ServedForecast
from airflow_predictive.core.model.runs import Outcome
from airflow_predictive.core.ports import SystemClock
from airflow_predictive.core.profiler.estimators.base import RunExample
from airflow_predictive.core.profiler.estimators.baselines import DeclaredResources, FallbackChain
from airflow_predictive.core.profiler.estimators.scaled_curve import ScaledCurve
from airflow_predictive.core.profiler.online import OnlineProfile, OnlineUpdate
from airflow_predictive.core.profiler.serving import ServingProfile, serve

if TYPE_CHECKING:
    from collections.abc import Hashable

    from sqlalchemy.engine import Engine

    from airflow_predictive.core.model.query import ForecastQuery
    from airflow_predictive.core.model.resources import Metric
    from airflow_predictive.core.model.runs import TaskKey
    from airflow_predictive.core.ports import Clock
    from airflow_predictive.core.profiler.estimators.base import Estimator
    from airflow_predictive.storage.model_store import ModelStore
    from airflow_predictive.storage.profile_store import ForecastCache, ProfileStore, TaskProfile
    from airflow_predictive.storage.run_store import SqlRunStore

log = logging.getLogger(__name__)

# champions evaluated per query in numpy (their fit is a no-op or they are loaded from the store)
PER_QUERY = frozenset(
    {
        "scaled_curve",
        "last_run",
        "median_peak",
        "linear_input",
        "vpa",
        "autopilot",
        "declared",
        "lstm",
        "combined",
    }
)
_LABEL = re.compile(r"^(?P<name>[A-Za-z0-9_]+):v(?P<version>\d+)$")


# earlier runs of a task a forecast is served from (the simulator replays with the same window)
SERVED_HISTORY_RUNS = 50


@dataclass
class _Entry:
    expires: float
    history: tuple[RunExample, ...]
    profile: ServingProfile | None
    memo: dict[Hashable, ServedForecast] = field(default_factory=dict)


class StoredForecastService:
    """``ForecastService`` over the provider's storage and model store (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        *,
        model_store: ModelStore | None = None,
        ttl_s: float = 60.0,
        retry_s: float = 10.0,
        history_runs: int = SERVED_HISTORY_RUNS,
        series_runs: int = 5,
        clock: Clock | None = None,
    ) -> None:
        from airflow_predictive.storage.profile_store import ForecastCache, ProfileStore
        from airflow_predictive.storage.run_store import SqlRunStore

        self.engine = engine
        self.runs: SqlRunStore = SqlRunStore(engine)
        self.profiles: ProfileStore = ProfileStore(engine)
        self.cache: ForecastCache = ForecastCache(engine, ttl_s=ttl_s)
        self.model_store = model_store
        self.ttl_s = ttl_s
        self.retry_s = retry_s
        self.history_runs = history_runs
        self.series_runs = series_runs
        self.clock = clock or SystemClock()
        self._entries: dict[TaskKey, _Entry] = {}
        self._models: dict[tuple[str, int], Estimator] = {}
        self._chain: Estimator | None = None
        self._down_until = -1.0
        self._warned: set[str] = set()
        self._online: dict[TaskKey, tuple[str | None, OnlineProfile]] = {}
        self._seen: dict[TaskKey, set[int]] = {}  # run_pks already folded in (or there at first load)
        self.catch_up_runs = 10  # at most this many unseen runs folded in per reload (bounded cost)
        self._drifted: set[TaskKey] = set()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the port

    def forecast_for(self, query: ForecastQuery) -> ServedForecast:
        now = self.clock.monotonic()
        entry = self._entries.get(query.key)
        if entry is None or entry.expires <= now:
            if now < self._down_until:
                return self._without_storage(query, "storage unavailable (retrying later)")
            try:
                entry = self._load(query.key, now)
            except Exception as exc:  # database down, schema missing, unreadable rows ...
                self._down_until = now + self.retry_s
                self._warn("storage", f"predictive: forecasts unavailable ({exc}); using declared resources")
                return self._without_storage(query, f"storage unavailable: {type(exc).__name__}")
            self._entries[query.key] = entry
        memo_key = (tuple(sorted((k, repr(v)) for k, v in query.features.items())), query.declared)
        hit = entry.memo.get(memo_key)
        if hit is None:
            hit = serve(query, entry.history, entry.profile, self._cold_start())
            if len(entry.memo) < 256:
                entry.memo[memo_key] = hit
        return hit

    # ------------------------------------------------------------------ online updates

    def observe(self, run: RunExample) -> OnlineUpdate | None:
        """Fold one finished run of a task into what is served for it, at once (no TensorFlow, a
        few milliseconds): the run joins the task's cached history (baselines, scaled curve and
        LSTM features see it on the next query), and the task's calibration is updated from the
        forecast this service would have served for it (``core/profiler/online.py``). A task whose
        forecasts drifted is listed by ``retrain_due``. A task not cached here is only forgotten
        (its next query reads storage, run included). Only successful runs teach."""
        from airflow_predictive.core.model.query import ForecastQuery as RunQuery

        if run.record.outcome is not Outcome.SUCCESS:
            return None
        key = run.key
        entry = self._entries.get(key)
        if entry is None:
            return None
        query = RunQuery(key, run.record.features, run.record.declared, run.record.operator)
        served = serve(query, entry.history, entry.profile, self._cold_start())
        online = self._online_for(key, entry.profile)
        update = online.update(run, served.forecast)
        if run.record.run_pk is not None:
            self._seen.setdefault(key, set()).add(run.record.run_pk)
        entry.history = (*entry.history, run)[-self.history_runs :]
        entry.memo.clear()
        if entry.profile is not None and entry.profile.estimator is not None:
            entry.profile = _online_profile(entry.profile, update)
        if update.drifted:
            self._drifted.add(key)
            log.info("predictive: forecasts of %s drifted (%s); retraining is due", key, update.drifted)
        return update

    def observe_latest(self, key: TaskKey) -> OnlineUpdate | None:
        """``observe`` the task's newest successful run, read from storage (what the executor or
        the feedback loop calls when a try of ``key`` finished). Never raises."""
        if key not in self._entries:
            return None
        try:
            newest = self._history(key, runs=1, series_runs=1)
        except Exception as exc:
            self._warn("observe", f"predictive: online update unavailable ({exc})")
            return None
        if not newest or newest[-1].record.run_pk in self._seen.get(key, set()):
            return None
        return self.observe(newest[-1])

    def run_finished(self, key: TaskKey) -> None:
        """A try of ``key`` ended (the executor calls this from its loop): no I/O here, the task's
        cached entry only goes stale, so its next query reads storage once and folds the runs it
        has not seen into the online profile (``_load``). Never raises, never waits."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.expires = 0.0

    def replay(self, key: TaskKey, runs: int) -> tuple[Metric, ...]:
        """The metrics whose forecasts drifted over the task's ``runs`` newest runs, each forecast
        from the runs before it with the stored profile, through a fresh ``OnlineProfile`` (what
        the maintenance DAG asks in its own process: the executor's detectors are not shared).
        Reads storage; for the worker, not the hot path."""
        from airflow_predictive.core.model.query import ForecastQuery as RunQuery

        history = self._history(key, runs=self.history_runs + runs)
        record = self.profiles.profile(key)
        profile = self._serving_profile(record) if record else None
        online = OnlineProfile(base=profile.calibration if profile is not None else {})
        drifted: list[Metric] = []
        for i in range(max(0, len(history) - runs), len(history)):
            run = history[i]
            query = RunQuery(key, run.record.features, run.record.declared, run.record.operator)
            served = serve(query, history[max(0, i - self.history_runs) : i], profile, self._cold_start())
            drifted += online.update(run, served.forecast).drifted
        return tuple(dict.fromkeys(drifted))

    def retrain_due(self) -> frozenset[TaskKey]:
        """Tasks whose forecasts drifted since the last call (the maintenance DAG retrains them)."""
        due, self._drifted = frozenset(self._drifted), set()
        return due

    def _online_for(self, key: TaskKey, profile: ServingProfile | None) -> OnlineProfile:
        """The task's online state for its current training (a new training starts a new one)."""
        pin = _pin(profile) if profile is not None else None
        held = self._online.get(key)
        if held is None or held[0] != pin:
            base = profile.calibration if profile is not None else {}
            held = (pin, OnlineProfile(base=base))
            self._online[key] = held
        return held[1]

    def invalidate(self, key: TaskKey | None = None) -> None:
        """Forget a task (or everything): the next query reads storage again (after a retraining:
        the runs it finds are not folded in again, the new training has seen them)."""
        if key is None:
            self._entries.clear()
            self._seen.clear()
        else:
            self._entries.pop(key, None)
            self._seen.pop(key, None)

    # ------------------------------------------------------------------ loading

    def _load(self, key: TaskKey, now: float) -> _Entry:
        history = self._history(key)
        record = self.profiles.profile(key)
        profile = self._serving_profile(record) if record else None
        seen = self._seen.get(key)
        if seen is not None:  # reloaded: fold in the runs that finished since (oldest first)
            try:
                self._catch_up(key, history, profile, seen)
            except Exception as exc:  # the forecast is served all the same, without the update
                self._warn(f"catch-up {key}", f"predictive: online update of {key} skipped ({exc})")
        self._seen[key] = {e.record.run_pk for e in history if e.record.run_pk is not None}
        held = self._online.get(key)
        if (
            profile is not None
            and profile.estimator is not None
            and held is not None
            and held[0] == _pin(profile)
            and held[1].runs_seen
        ):
            profile = _online_profile(profile, held[1])  # keep what online updates learned
        return _Entry(now + self.ttl_s, history, profile)

    def _catch_up(
        self, key: TaskKey, history: tuple[RunExample, ...], profile: ServingProfile | None, seen: set[int]
    ) -> None:
        """Online update for each run of ``history`` not folded in yet, forecast from the runs
        before it, as the run would have been served (at most ``catch_up_runs``, a few ms each)."""
        from airflow_predictive.core.model.query import ForecastQuery as RunQuery

        new = [
            i for i, e in enumerate(history) if e.record.run_pk is not None and e.record.run_pk not in seen
        ]
        online = self._online_for(key, profile)
        drifted: list[Metric] = []
        for i in new[-self.catch_up_runs :]:
            run = history[i]
            query = RunQuery(key, run.record.features, run.record.declared, run.record.operator)
            served = serve(query, history[:i], profile, self._cold_start())
            drifted += online.update(run, served.forecast).drifted
        if drifted:
            self._drifted.add(key)
            log.info("predictive: forecasts of %s drifted (%s); retraining is due", key, tuple(drifted))

    def _history(
        self, key: TaskKey, runs: int | None = None, series_runs: int | None = None
    ) -> tuple[RunExample, ...]:
        from airflow_predictive.training.dataset import series_bulk

        wanted = self.history_runs if runs is None else runs
        records = [r for r in self.runs.runs(key, limit=2 * wanted) if r.outcome is Outcome.SUCCESS][-wanted:]
        with_series = self.series_runs if series_runs is None else series_runs
        recent = [r.run_pk for r in records[-with_series:] if r.run_pk is not None and r.n_samples > 0]
        series = series_bulk(self.runs, recent) if recent else {}
        out = []
        for rec in records:
            s = series.get(rec.run_pk) if rec.run_pk is not None else None
            if s is not None and len(s) == 0:
                s = None
            if s is None and rec.peak.is_empty():
                continue
            out.append(RunExample(rec, s))
        return tuple(out)

    def _serving_profile(self, record: TaskProfile) -> ServingProfile:
        champion = record.champion
        base = ServingProfile(
            champion=champion,
            calibration=record.calibration,
            model_version=record.model_version,
            calibration_version=record.calibration_version,
        )
        if champion is None:
            return ServingProfile(champion=None, note=f"no champion ({record.reason or 'not trained'})")
        if champion not in PER_QUERY:
            hit = self.cache.get(record.key)
            return ServingProfile(
                champion=champion,
                precomputed=hit.forecast if hit is not None else None,
                model_version=record.model_version,
                calibration_version=record.calibration_version,
                note=f"{champion} is not evaluated per query (statsmodels refits at every call)",
            )
        if champion != "lstm" and record.model_version is None:  # trained without a model store
            from airflow_predictive.training.candidates import KNOWN, estimator_class

            estimator = estimator_class(champion)(**KNOWN[champion][2])
            return ServingProfile(**{**_fields(base), "estimator": estimator})
        try:
            estimator = self._pinned_model(record)
        except Exception as exc:
            self._warn(str(record.key), f"predictive: {record.key}: {exc}; serving the next level")
            return ServingProfile(champion=champion, note=str(exc))
        return ServingProfile(**{**_fields(base), "estimator": estimator})

    def _pinned_model(self, record: TaskProfile) -> Estimator:
        """The exact model version the profile names, refused unless its content digest is the one
        the calibration was fitted for (``ModelStore.check_pin``); the LSTM without TensorFlow."""
        from airflow_predictive.core.profiler.estimators.lstm import LstmForecaster
        from airflow_predictive.storage.model_store import ModelUnavailable
        from airflow_predictive.training.artefacts import scope_of

        match = _LABEL.match(record.model_version or "")
        if match is None:
            raise ModelUnavailable(f"profile names no saved model version ({record.model_version!r})")
        if self.model_store is None:
            raise ModelUnavailable("no model store configured")
        scope, version = scope_of(match["name"]), int(match["version"])
        self.model_store.check_pin(scope, version, record.calibration_digest)
        cached = self._models.get((scope, version))
        if cached is None:
            loader = LstmForecaster.load_numpy if match["name"] == "lstm" else None
            with self._lock:
                cached = self.model_store.load(scope, version, loader=loader)
                self._models[(scope, version)] = cached
        return cached

    def _cold_start(self) -> Estimator:
        """The chain training saved (scaled curve -> operator prior -> declared), else one without
        the operator prior and with the scaled curve's defaults (nothing to fit on the hot path)."""
        if self._chain is None:
            chain: Estimator | None = None
            if self.model_store is not None:
                from airflow_predictive.training.artefacts import COLD_START, scope_of

                chain = self.model_store.load_or_none(scope_of(COLD_START))
            self._chain = chain or FallbackChain([ScaledCurve(), DeclaredResources()], name="cold_start")
        return self._chain

    def _without_storage(self, query: ForecastQuery, note: str) -> ServedForecast:
        served = serve(query, (), None, FallbackChain([DeclaredResources()], name="declared_only"))
        return ServedForecast(served.forecast, served.source, note=f"{note}; {served.note}")

    def _warn(self, what: str, message: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning(message)


def _online_profile(profile: ServingProfile, online: OnlineUpdate | OnlineProfile) -> ServingProfile:
    """``profile`` with the online calibration; the version keeps the pinned model and says how
    many runs were folded in since training."""
    calibration = online.calibration if isinstance(online, OnlineUpdate) else online.calibration()
    base = _pin(profile)
    return ServingProfile(
        **{
            **_fields(profile),
            "calibration": calibration,
            "calibration_version": f"{base}+online:{online.runs_seen}",
        }
    )


def _pin(profile: ServingProfile) -> str:
    """The training's calibration version (without the online suffix)."""
    return (profile.calibration_version or "").split("+online")[0]


def _fields(profile: ServingProfile) -> dict[str, Any]:
    return {k: getattr(profile, k) for k in profile.__dataclass_fields__}


def task_history(store: SqlRunStore, key: TaskKey, runs: int) -> tuple[RunExample, ...]:
    """A task's newest ``runs`` successful runs that have a usage series, oldest first: what the
    shaping loop's k-Segments re-forecast reads (``core/shaping/reforecast.py``), loaded once when a
    try starts shaping. Bounded (at most ``2 x runs`` records and ``runs`` series read); numpy only.
    Storage errors propagate: the caller falls back to the prefix re-forecast."""
    from airflow_predictive.training.dataset import series_bulk

    if runs <= 0:
        return ()
    records = [r for r in store.runs(key, limit=2 * runs) if r.outcome is Outcome.SUCCESS]
    records = [r for r in records if r.run_pk is not None and r.n_samples > 0][-runs:]
    series = series_bulk(store, [r.run_pk for r in records if r.run_pk is not None]) if records else {}
    out = []
    for rec in records:
        s = series.get(rec.run_pk) if rec.run_pk is not None else None
        if s is not None and len(s) > 1:
            out.append(RunExample(rec, s))
    return tuple(out)


def build_forecast_service(runtime: Any) -> StoredForecastService:
    """What ``runtime.Runtime.forecasts()`` builds: the service over the runtime's engine and model store."""
    return StoredForecastService(runtime.engine(), model_store=runtime.model_store())
