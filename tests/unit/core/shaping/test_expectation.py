"""When a forecast's readings next change (core/shaping/expectation.py, what quiet() promises on):
the first step edge after the asked time where a reading differs on its two sides, at any
quantile, over any horizon, whatever the order of the questions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from airflow_predictive.core.model.resources import GIB, Metric
from airflow_predictive.core.model.series import DemandCurve, Forecast
from airflow_predictive.core.shaping.expectation import ForecastExpectation

MEM = Metric.MEMORY_BYTES
HORIZONS = (10.0, 120.0)


def _every_change(exp: ForecastExpectation, metric: Metric, horizons: tuple[float, ...]) -> list[float]:
    """Reference: every time in the curve's span where some reading differs just before and just
    after (read with the expectation's own predicted / ahead_at on both sides of every edge)."""
    curve = exp.forecast.curve(metric)
    assert curve is not None
    o, step, n = exp.offset_s, curve.step_s, curve.steps
    base = [o + step * k for k in range(1, n)]
    out = set()
    for horizon in (None, *horizons):
        edges = sorted(set(base) | ({e - horizon for e in base} if horizon is not None else set()))
        mids = (
            [edges[0] - step / 2]
            + [(a + b) / 2 for a, b in itertools.pairwise(edges)]
            + [edges[-1] + step / 2]
        )

        def read(t: float, horizon: float | None = horizon) -> tuple[float | None, ...]:
            if horizon is None:
                return tuple(
                    exp._values(metric, q)[0][min(max(int((t - o) // step), 0), n - 1)]
                    for q in curve.quantiles
                )
            return tuple(exp.ahead_at(metric, t, horizon, q) for q in curve.quantiles)

        out |= {e for e, (a, b) in zip(edges, itertools.pairwise(mids), strict=False) if read(a) != read(b)}
    return sorted(out)


@pytest.mark.parametrize("seed", range(4))
def test_the_next_change_is_the_first_edge_where_a_reading_differs_whatever_the_questions(
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(25):
        n = int(rng.integers(2, 400))
        step = float(rng.choice([2.0, float(rng.uniform(1, 30))]))
        # plateaus and ramps: many edges read the same value, some differ
        level = np.repeat(rng.uniform(0.5, 4.0, n // 5 + 1), 5)[:n] * GIB
        mem = np.where(rng.random(n) < 0.3, level * rng.uniform(1, 1.2, n), level)
        exp = ForecastExpectation(
            Forecast({MEM: DemandCurve(MEM, step, {0.5: mem, 0.9: mem * 1.2})}, {0.5: n * step}, "test"),
            offset_s=float(rng.choice([0.0, float(rng.uniform(0, 300))])),
        )
        changes = _every_change(exp, MEM, HORIZONS)
        span = exp.offset_s + n * step
        asked = np.concatenate([np.sort(rng.uniform(-50, span + 200, 40)), rng.uniform(-50, span + 200, 40)])
        for t in [*asked.tolist(), *changes[:5]]:  # ascending first (a loop), then anywhere, and on edges
            later = [c for c in changes if c > t]
            first = later[0] if later else math.inf
            # with a bound, a fresh expectation reads only the edges in between (as after a re-forecast)
            before = t + float(rng.uniform(0, 200))
            bounded = ForecastExpectation(exp.forecast, offset_s=exp.offset_s).next_change_s(
                MEM, t, HORIZONS, before
            )
            assert bounded == first if first < before else bounded >= before
            assert exp.next_change_s(MEM, t, HORIZONS) == first


def test_a_flat_or_one_step_forecast_never_changes() -> None:
    flat = ForecastExpectation(
        Forecast({MEM: DemandCurve(MEM, 2.0, {0.5: np.full(50, GIB)})}, {0.5: 100.0}, "flat")
    )
    one = ForecastExpectation(Forecast({MEM: DemandCurve(MEM, 60.0, {0.5: np.ones(1)})}, {0.5: 60.0}, "one"))
    assert flat.next_change_s(MEM, 0.0, HORIZONS) == math.inf
    assert one.next_change_s(MEM, 0.0, HORIZONS) == math.inf
    assert flat.next_change_s(Metric.CPU_CORES, 0.0, HORIZONS) == math.inf
