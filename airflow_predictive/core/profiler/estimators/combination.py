"""A forecast combination: the median of several estimators' forecasts, as one candidate.

Why: a per-task champion picked on a few backtest folds often loses out of sample to another
candidate (issue 13 item 6), and on kseg-eager the LSTM and the scaled curve err on different runs:
their combination has a lower held-out median *and* p90 memory peak error than either alone. The
median of forecasts is the classic cure for "the champion loses out of sample": its error is
rarely far from the better member's and never driven by one member's outlier. It is a candidate
like the others, so selection keeps it only where its backtest says so.

Default members: the LSTM and the scaled curve. It costs no extra model fit: selection and
evaluation combine the members' own backtest / held-out forecasts (``member_names``,
``combine``), and training assembles it from the members it fitted anyway (``assembled``). It is
served per query in numpy (the LSTM member by its numpy forward pass, ``load``).

The combination, per metric and per quantile level the answering members share: each member's
curve is read on a common timeline (the finest member step, over the median of the members'
horizons; a member whose run is over contributes zero), the median is taken point by point, and
that shape is scaled so that its peak is the median of the members' peaks (members whose peaks come
at different times would otherwise combine into a curve lower than each of them). Duration
quantiles are the members' medians. Members that cannot answer (no history, no metric) are left
out; a metric needs ``min_members`` answering members (default two: one member is not a
combination), else the query raises ``NotFitted`` so that the next level answers. With an observed
prefix, members that ignore prefixes are conditioned on it first (``core/profiler/prefix``), so
the combination uses the prefix through every member. State: each member's own saved state plus
one JSON file naming the members (never pickle).
"""

from __future__ import annotations

import json
import logging
import math
from typing import TYPE_CHECKING, Self

import numpy as np

from airflow_predictive.core.model.series import DemandCurve, Forecast
from airflow_predictive.core.profiler.estimators.base import Estimator, ForecastQuery, NotFitted, RunExample
from airflow_predictive.core.profiler.estimators.baselines import CONFIG_FILE, _estimator_class, save_parts
from airflow_predictive.core.profiler.estimators.lstm import LstmForecaster
from airflow_predictive.core.profiler.estimators.scaled_curve import ScaledCurve
from airflow_predictive.core.profiler.prefix import condition_on_prefix, needs_conditioning

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from airflow_predictive.core.model.resources import Metric

log = logging.getLogger(__name__)

MAX_STEPS = 4096  # the common timeline never holds more points than this


def default_members() -> list[Estimator]:
    return [LstmForecaster(), ScaledCurve()]


def on_timeline(values: np.ndarray, step_s: float, grid_step_s: float, steps: int) -> np.ndarray:
    """``values`` (one value per ``step_s``) read at the start of each of ``steps`` points spaced
    ``grid_step_s`` apart; zero past the curve's end (the run is over)."""
    idx = np.floor(np.arange(steps) * grid_step_s / step_s + 1e-9).astype(int)
    out = np.zeros(steps)
    inside = idx < values.size
    out[inside] = values[idx[inside]]
    return out


def combine_curves(metric: Metric, curves: Sequence[DemandCurve]) -> DemandCurve:
    """The point-wise median of ``curves`` per quantile level they all have (see the module)."""
    if not curves:
        raise ValueError("nothing to combine")
    levels = sorted(set.intersection(*(set(c.quantiles) for c in curves)))
    if not levels:
        raise ValueError(f"{metric.value}: the curves share no quantile level")
    horizon = float(np.median([c.horizon_s for c in curves]))
    step = min(c.step_s for c in curves)
    step = max(step, horizon / MAX_STEPS)
    steps = max(1, math.ceil(horizon / step - 1e-9))
    out = {}
    for q in levels:
        shape = np.median(np.stack([on_timeline(c.at(q), c.step_s, step, steps) for c in curves]), axis=0)
        level = float(np.median([c.peak(q) for c in curves]))
        top = float(np.max(shape)) if shape.size else 0.0
        out[q] = shape * (level / top) if top > 0 else np.full(steps, level)
    return DemandCurve(metric, step, out)


class MedianCombination:
    """Estimator contract plus ``predict_many``; ``fit`` fits every member (one that fails to fit
    is dropped, logged), ``assembled`` reuses members another caller already fitted."""

    uses_prefix = True  # conditions its at-start members on query.prefix itself

    def __init__(
        self, members: Sequence[Estimator] | None = None, name: str = "combined", min_members: int = 2
    ) -> None:
        self.name = name
        self.members: list[Estimator] = list(members) if members is not None else default_members()
        self.min_members = min_members
        if not self.members:
            raise ValueError("a combination needs at least one member")

    @property
    def member_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.members)

    def assembled(self, fitted: Mapping[str, Estimator | None]) -> MedianCombination:
        """This combination over the already fitted estimators of its members' names (members
        missing from ``fitted`` are left out; ``NotFitted`` with fewer than ``min_members``)."""
        kept = [e for n in self.member_names if (e := fitted.get(n)) is not None]
        if len(kept) < self.min_members:
            raise NotFitted(f"{self.name}: only {len(kept)} of its members were fitted")
        return MedianCombination(kept, name=self.name, min_members=self.min_members)

    def fit(self, examples: Sequence[RunExample]) -> Self:
        kept: list[Estimator] = []
        for member in self.members:
            try:
                kept.append(member.fit(examples))
            except Exception as exc:
                log.warning("%s: member %s dropped, fit failed: %s", self.name, member.name, exc)
        if len(kept) < self.min_members:
            raise NotFitted(f"{self.name}: only {len(kept)} member(s) could be fitted")
        self.members = kept
        return self

    def _answers(self, member: Estimator, queries: Sequence[ForecastQuery]) -> list[Forecast | None]:
        many = getattr(member, "predict_many", None)
        raw: list[Forecast | None] = []
        if many is not None:
            try:
                raw = list(many(queries))
            except Exception as exc:
                log.debug("%s: member %s batch failed (%s); one by one", self.name, member.name, exc)
        if not raw:
            for q in queries:
                try:
                    raw.append(member.predict(q))
                except Exception as exc:
                    log.debug("%s: member %s did not answer for %s: %s", self.name, member.name, q.key, exc)
                    raw.append(None)
        if needs_conditioning(member):
            raw = [
                condition_on_prefix(f, q.prefix) if f is not None and q.prefix is not None else f
                for f, q in zip(raw, queries, strict=True)
            ]
        return raw

    def predict_many(self, queries: Sequence[ForecastQuery]) -> list[Forecast]:
        """Every query's combination, each member asked once for the whole batch. Raises
        ``NotFitted`` for the batch if one query cannot be combined (callers then ask one by one)."""
        answers = [self._answers(m, queries) for m in self.members]
        return [
            self.combine([f for a in answers if (f := a[i]) is not None], q.key)
            for i, q in enumerate(queries)
        ]

    def predict(self, query: ForecastQuery) -> Forecast:
        return self.predict_many([query])[0]

    def combine(self, forecasts: Sequence[Forecast], key: object = None) -> Forecast:
        """The combination of the members' ``forecasts`` (``NotFitted``: too few to combine)."""
        curves: dict[Metric, DemandCurve] = {}
        metrics = dict.fromkeys(m for f in forecasts for m in f.curves)
        for metric in metrics:
            have = [c for f in forecasts if (c := f.curves.get(metric)) is not None]
            if len(have) >= self.min_members:
                curves[metric] = combine_curves(metric, have)
        if not curves:
            raise NotFitted(
                f"{self.name}: {len(forecasts)} member(s) answered for {key}, {self.min_members} needed"
            )
        levels = set.intersection(*(set(f.duration_s) for f in forecasts))
        duration = {q: float(np.median([f.duration_s[q] for f in forecasts])) for q in sorted(levels)}
        return Forecast(
            curves=curves,
            duration_s=duration,
            estimator=self.name,
            peak_only=all(f.peak_only for f in forecasts),
        )

    def save(self, directory: Path) -> None:
        entries = save_parts(directory, self.members, "member")
        state = {"name": self.name, "min_members": self.min_members, "members": entries}
        (directory / CONFIG_FILE).write_text(json.dumps(state))

    @classmethod
    def load(cls, directory: Path) -> Self:
        """The saved combination, ready to forecast: members with a numpy-only loader (the LSTM's
        ``load_numpy``) are loaded with it, so serving never imports TensorFlow (a loaded
        combination forecasts; it is not trained further)."""
        try:
            state = json.loads((directory / CONFIG_FILE).read_text())
            members = []
            for e in state["members"]:
                member_cls = _estimator_class(e["class"])
                loader = getattr(member_cls, "load_numpy", None) or member_cls.load
                members.append(loader(directory / e["dir"]))
            return cls(members, name=state["name"], min_members=int(state["min_members"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise NotFitted(f"cannot load combination from {directory}: {exc}") from exc
