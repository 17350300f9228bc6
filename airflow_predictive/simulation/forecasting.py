"""The profiler's own forecasts for the replayed runs, trained only on earlier runs.

Exactly the product's path, in the held-out setting of the profiler's evaluation: the backtest
picks each task's champion on the training half only (``selection.backtest``), the champions are
fitted on the training half (``pipeline.fit_all``), and every replayed run is forecast before it
starts with all of its task's earlier runs as history (``selection.query_for``), calibrated with
the champion's backtest factors (``selection.calibrated``); tasks without a champion get the
cold-start chain. Nothing here looks at a replayed run's own usage.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airflow_predictive.core.model.resources import Metric

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow_predictive.core.model.runs import TaskKey
    from airflow_predictive.core.model.series import Forecast
    from airflow_predictive.core.profiler.estimators.base import Estimator, ForecastQuery
    from airflow_predictive.core.profiler.selection import SelectionPolicy
    from airflow_predictive.simulation.workload import Workload

log = logging.getLogger(__name__)
METRICS: tuple[Metric, ...] = (Metric.CPU_CORES, Metric.MEMORY_BYTES)


@dataclass(frozen=True)
class HeldOutForecasts:
    """Forecasts by original run index, who answered, and what it cost.

    answered_by: estimator name -> runs. cold_start: runs answered by the cold-start chain (no
    champion for their task). chain: the fitted cold-start chain (re-forecasts from a prefix).
    """

    forecasts: Mapping[int, Forecast]
    champions: Mapping[TaskKey, str | None]
    answered_by: Mapping[str, int]
    cold_start: frozenset[int]
    seconds: float
    candidates: tuple[str, ...]
    fitted: Mapping[str, Estimator] = field(default_factory=dict)
    chain: Estimator | None = None
    calibration: Mapping[TaskKey, Mapping[Metric, Mapping[float, float]]] = field(default_factory=dict)

    def predict(self, key: TaskKey, query: ForecastQuery) -> Forecast | None:
        """A fresh forecast for ``query`` (e.g. with a prefix) through the same champion / chain."""
        from airflow_predictive.core.profiler.selection import calibrated

        name = self.champions.get(key)
        if name is not None and name in self.fitted:
            try:
                return calibrated(self.fitted[name].predict(query), self.calibration.get(key, {}))
            except Exception as exc:
                log.debug("predictive bench: %s could not re-forecast %s: %s", name, key, exc)
        if self.chain is not None:
            try:
                return self.chain.predict(query)
            except Exception:
                return None
        return None


def _predict_many(est: Estimator, queries: Sequence[ForecastQuery]) -> list[Forecast | None]:
    many = getattr(est, "predict_many", None)
    if many is not None:
        try:
            return list(many(queries))
        except Exception as exc:
            log.info("predictive bench: %s batch forecast failed (%s); one by one", est.name, exc)
    out: list[Forecast | None] = []
    for q in queries:
        try:
            out.append(est.predict(q))
        except Exception:
            out.append(None)
    return out


def held_out_forecasts(
    workload: Workload,
    candidates: Sequence[str] | None = None,
    policy: SelectionPolicy | None = None,
) -> HeldOutForecasts:
    """Select and fit on ``workload.train``, forecast every replayed run (see the module docstring)."""
    from airflow_predictive.core.profiler.selection import SelectionPolicy, backtest, calibrated, query_for
    from airflow_predictive.training.candidates import DEFAULT_CANDIDATES, cold_start_chain, factories
    from airflow_predictive.training.pipeline import fit_all

    began = time.monotonic()
    names = tuple(candidates or DEFAULT_CANDIDATES)
    made = factories(names)
    policy = policy or SelectionPolicy(folds=2, metrics=METRICS)
    train = list(workload.train)
    selections = backtest(made, train, policy)
    champions = {r.key: r.champion for r in selections}
    calibration = {r.key: r.calibration for r in selections}
    fitted, _ = fit_all({c for c in champions.values() if c is not None}, made, train)
    chain = cold_start_chain().fit(train)
    originals = [r for r in workload.runs if r.origin == r.index]
    by_champion: dict[str | None, list[int]] = {}
    queries = {}
    for run in originals:
        queries[run.index] = query_for(run.example, workload.history_of(run), METRICS)
        name = champions.get(run.key)
        by_champion.setdefault(name if name in fitted else None, []).append(run.index)
    forecasts: dict[int, Forecast] = {}
    answered: dict[str, int] = {}
    cold: set[int] = set()
    for name, idx in by_champion.items():
        got = (
            _predict_many(fitted[name], [queries[i] for i in idx]) if name is not None else [None] * len(idx)
        )
        for i, f in zip(idx, got, strict=True):
            key = workload.runs[i].key
            if f is not None:
                f = calibrated(f, calibration.get(key, {}))
            else:
                cold.add(i)
                try:
                    f = chain.predict(queries[i])
                except Exception:
                    f = None
            if f is not None:
                forecasts[i] = f
                answered[f.estimator] = answered.get(f.estimator, 0) + 1
    return HeldOutForecasts(
        forecasts=forecasts,
        champions=champions,
        answered_by=answered,
        cold_start=frozenset(cold),
        seconds=time.monotonic() - began,
        candidates=tuple(made),
        fitted=fitted,
        chain=chain,
        calibration=calibration,
    )
