"""Per-container workload curves: what an emulated container would use if nothing limited it.

A pod carries its curves in the annotation ``WORKLOAD_ANNOTATION`` as JSON::

    {"containers": {"task": {"points": [{"t": 0, "cpu": 0.2, "memory": "100Mi"},
                                        {"t": 30, "cpu": 1.5, "memory": "800Mi", "rx_bps": 1e6}],
                             "duration": 60, "exit_code": 0}}}

(or the same object without "containers" for every container). Values are interpolated linearly
between points and held after the last one; the container exits with ``exit_code`` at
``duration`` (never, when absent). The simulated kubelet caps CPU at the limit and OOM-kills a
container whose memory goes above its limit. A bad annotation is refused at pod creation, never
silently ignored.
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass
from typing import Any

from airflow_predictive.emulator.kubernetes import quantity

WORKLOAD_ANNOTATION = "emulator.predictive.airflow.apache.org/workload"
IDLE_CPU = 0.001
IDLE_MEMORY = 4 * 1024 * 1024


class WorkloadError(ValueError):
    """The workload annotation cannot be read."""


@dataclass(frozen=True, slots=True)
class Demand:
    """What a container wants at one instant: cores, bytes, bytes per second."""

    cpu: float = IDLE_CPU
    memory: float = IDLE_MEMORY
    rx_bps: float = 0.0
    tx_bps: float = 0.0
    fs_read_bps: float = 0.0
    fs_write_bps: float = 0.0

    @staticmethod
    def between(a: Demand, b: Demand, w: float) -> Demand:
        return Demand(*(x + (y - x) * w for x, y in zip(_values(a), _values(b), strict=True)))


def _values(d: Demand) -> tuple[float, ...]:
    return (d.cpu, d.memory, d.rx_bps, d.tx_bps, d.fs_read_bps, d.fs_write_bps)


@dataclass(frozen=True, slots=True)
class Workload:
    """A curve of ``Demand`` over seconds since the container started."""

    times: tuple[float, ...]
    demands: tuple[Demand, ...]
    duration_s: float | None = None
    exit_code: int = 0

    @classmethod
    def idle(cls) -> Workload:
        return cls((0.0,), (Demand(),))

    def at(self, t: float) -> Demand:
        i = bisect.bisect_right(self.times, t)
        if i == 0:
            return self.demands[0]
        if i >= len(self.times):
            return self.demands[-1]
        t0, t1 = self.times[i - 1], self.times[i]
        return Demand.between(self.demands[i - 1], self.demands[i], (t - t0) / (t1 - t0))

    def peak_memory(self, t0: float, t1: float) -> float:
        """Highest memory demand in [t0, t1] (exact for the piecewise-linear curve)."""
        inside = [d.memory for t, d in zip(self.times, self.demands, strict=True) if t0 < t < t1]
        return max([self.at(t0).memory, self.at(t1).memory, *inside])

    def finished(self, t: float) -> bool:
        return self.duration_s is not None and t >= self.duration_s


def _number(raw: Any, what: str, *, memory: bool = False) -> float:
    try:
        value = float(quantity.parse(raw)) if memory or isinstance(raw, str) else float(raw)
    except (quantity.QuantityError, TypeError, ValueError):
        raise WorkloadError(f"{what}: not a number or quantity: {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise WorkloadError(f"{what}: must be finite and >= 0, got {raw!r}")
    return value


def parse_one(raw: Any, where: str) -> Workload:
    if not isinstance(raw, dict):
        raise WorkloadError(f"{where}: must be an object")
    points = raw.get("points")
    if not isinstance(points, list) or not points:
        raise WorkloadError(f"{where}.points: a non-empty list is required")
    times: list[float] = []
    demands: list[Demand] = []
    for i, p in enumerate(points):
        if not isinstance(p, dict):
            raise WorkloadError(f"{where}.points[{i}]: must be an object")
        t = _number(p.get("t", 0), f"{where}.points[{i}].t")
        if times and t <= times[-1]:
            raise WorkloadError(f"{where}.points[{i}].t: times must increase")
        times.append(t)
        demands.append(
            Demand(
                cpu=_number(p.get("cpu", IDLE_CPU), f"{where}.points[{i}].cpu"),
                memory=_number(p.get("memory", IDLE_MEMORY), f"{where}.points[{i}].memory", memory=True),
                rx_bps=_number(p.get("rx_bps", 0), f"{where}.points[{i}].rx_bps"),
                tx_bps=_number(p.get("tx_bps", 0), f"{where}.points[{i}].tx_bps"),
                fs_read_bps=_number(p.get("fs_read_bps", 0), f"{where}.points[{i}].fs_read_bps"),
                fs_write_bps=_number(p.get("fs_write_bps", 0), f"{where}.points[{i}].fs_write_bps"),
            )
        )
    duration = raw.get("duration")
    exit_code = raw.get("exit_code", 0)
    if not isinstance(exit_code, int) or isinstance(exit_code, bool) or not 0 <= exit_code <= 255:
        raise WorkloadError(f"{where}.exit_code: must be an integer 0..255")
    return Workload(
        tuple(times),
        tuple(demands),
        None if duration is None else _number(duration, f"{where}.duration"),
        exit_code,
    )


def parse_annotation(text: str | None, container_names: list[str]) -> dict[str, Workload]:
    """Workload per container name (idle for containers the annotation does not mention)."""
    result = {name: Workload.idle() for name in container_names}
    if text is None:
        return result
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkloadError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise WorkloadError("must be a JSON object")
    if "containers" in raw:
        per = raw["containers"]
        if not isinstance(per, dict):
            raise WorkloadError("containers: must be an object keyed by container name")
        for name, curve in per.items():
            if name not in result:
                raise WorkloadError(f"containers.{name}: no such container in the pod")
            result[name] = parse_one(curve, f"containers.{name}")
    else:
        shared = parse_one(raw, "workload")
        result = dict.fromkeys(container_names, shared)
    return result
