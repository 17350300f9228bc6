"""Capacity that is coming (a node booting, warm capacity being made): ready at a time, not yet present.

Why: a pool's capacity is no longer a constant once nodes are made ahead of demand. A node the
autoscaler decided on at 12:00:00 with a 90 s boot holds nothing before 12:01:30 and everything
after. Fit checks over time therefore use ``capacity(t) = present + sum(coming with ready_at <= t)``.

How, without changing the fit algorithms: the profile's capacity becomes present + all coming,
and each coming amount is held by a *phantom* piece from the past until its ``ready_at``. Every
question the profile answers (does it fit, the first bottleneck, the earliest start) then sees
exactly ``capacity(t)``. A coming amount only adds to metrics the present capacity constrains (an
absent metric is unconstrained and stays so).

Never counted as present: an amount whose ``ready_at`` has passed (an overdue node: booting
late, or Ready but not yet in the pool's present capacity) stays *coming*, ready "in a moment"
(``now + OVERDUE_STEP_S``), until its owner makes it present (``set_pool`` with the new capacity)
or withdraws it; counting it as present would over-commit the pool to a node that is not there,
and dropping it would flip a task queued for that node to "never fits". An amount overdue by more
than ``OVERDUE_MAX_S`` (its owner is gone, or the node failed) is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from airflow_predictive.core.model.backend import Allocation
from airflow_predictive.core.model.plan import PoolCapacity
from airflow_predictive.core.model.resources import ResourceVector

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from airflow_predictive.core.model.nodes import Node
    from airflow_predictive.core.model.plan import Pool
    from airflow_predictive.core.scheduling.profile import Piece

PHANTOM_FROM_S = 86_400.0  # a phantom piece starts this long before "now" (covers adjusts dated in the past)
OVERDUE_STEP_S = 30.0  # an overdue amount counts as ready this long after "now"
OVERDUE_MAX_S = 600.0  # ... until it is this late; then it is left out


@dataclass(frozen=True, slots=True)
class ComingCapacity:
    """An amount of capacity that joins ``pool`` at ``ready_at`` (epoch s).

    amount: what it adds, per side (a node's allocatable bounds the sum of requests:
    ``PoolCapacity(requests=allocatable)``). source: what it is, for the CLI and the logs
    ("node default-3 (n2-standard-8) provisioning"). ref: its owner's id (node or placeholder name).
    """

    pool: str
    amount: PoolCapacity
    ready_at: float
    source: str = ""
    ref: str = ""

    @classmethod
    def of_node(cls, pool: str, node: Node, *, limits_too: bool = False) -> ComingCapacity:
        """A provisioning node's allocatable as coming capacity (requests side; ``limits_too``
        also on the limits side, for pools that constrain the sum of limits by the nodes)."""
        alloc = node.allocatable
        return cls(
            pool=pool,
            amount=PoolCapacity(requests=alloc, limits=alloc if limits_too else ResourceVector()),
            ready_at=node.ready_at,
            source=f"node {node.name} ({node.instance_type.name}) {node.state.value}",
            ref=node.name,
        )


@dataclass(frozen=True, slots=True)
class CapacityStep:
    """The pool's capacity from ``at`` on (until the next step)."""

    at: float
    capacity: PoolCapacity
    sources: tuple[str, ...] = field(default=())


def is_overdue(c: ComingCapacity, now: float) -> bool:
    return c.ready_at <= now


def pending(coming: Iterable[ComingCapacity], pool: str | None, now: float | None) -> list[ComingCapacity]:
    """The pool's coming amounts as counted at ``now``, by ready time: overdue ones moved to
    ``now + OVERDUE_STEP_S``, those overdue by more than ``OVERDUE_MAX_S`` left out (all as given
    when ``now`` is None; every pool's when ``pool`` is None)."""
    out = []
    for c in coming:
        if pool is not None and c.pool != pool:
            continue
        if now is not None and c.ready_at <= now:
            if now - c.ready_at > OVERDUE_MAX_S:
                continue
            c = replace(c, ready_at=now + OVERDUE_STEP_S)
        out.append(c)
    return sorted(out, key=lambda c: (c.ready_at, c.ref))


def _constrained_sum(base: ResourceVector, extra: ResourceVector) -> ResourceVector:
    """base + extra on the metrics base constrains (absent in base = unconstrained, stays absent)."""
    return ResourceVector.from_mapping({m: v + (extra.get(m) or 0.0) for m, v in base.present().items()})


def _constrained_part(base: ResourceVector, extra: ResourceVector) -> ResourceVector:
    return ResourceVector.from_mapping({m: v for m, v in extra.present().items() if base.get(m) is not None})


def with_coming(capacity: PoolCapacity, coming: Sequence[ComingCapacity]) -> PoolCapacity:
    """Present capacity plus every amount in ``coming`` (what the pool holds once all are ready)."""
    req, lim = capacity.requests, capacity.limits
    for c in coming:
        req = _constrained_sum(req, c.amount.requests)
        lim = _constrained_sum(lim, c.amount.limits)
    return PoolCapacity(requests=req, limits=lim)


def phantom_pieces(capacity: PoolCapacity, coming: Sequence[ComingCapacity], now: float) -> list[Piece]:
    """Pieces that hold each coming amount until its ready_at (the capacity it is not yet)."""
    out: list[Piece] = []
    for c in coming:
        charge = Allocation(
            requests=_constrained_part(capacity.requests, c.amount.requests),
            limits=_constrained_part(capacity.limits, c.amount.limits),
        )
        if c.ready_at > now and not (charge.requests.is_empty() and charge.limits.is_empty()):
            out.append((now - PHANTOM_FROM_S, c.ready_at, charge))
    return out


def capacity_steps(pool: Pool, coming: Iterable[ComingCapacity], now: float) -> list[CapacityStep]:
    """capacity(t) as steps: the present capacity now, then one step per ready_at ahead."""
    ahead = pending(coming, pool.name, now)
    steps = [CapacityStep(now, pool.capacity, ("present",))]
    cap = pool.capacity
    for c in ahead:
        cap = with_coming(cap, [c])
        if steps[-1].at == c.ready_at:
            steps[-1] = CapacityStep(c.ready_at, cap, (*steps[-1].sources, c.source))
        else:
            steps.append(CapacityStep(c.ready_at, cap, (c.source,)))
    return steps


def capacity_at(pool: Pool, coming: Iterable[ComingCapacity], t: float, now: float) -> PoolCapacity:
    """capacity(t) = present + the pool's coming amounts ready by ``t`` (as ``pending`` counts them)."""
    return with_coming(pool.capacity, [c for c in pending(coming, pool.name, now) if c.ready_at <= t])
