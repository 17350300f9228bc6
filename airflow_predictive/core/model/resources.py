"""Resource metrics, their units, and the ResourceVector that carries one value per metric.

Five dimensions (CPU, memory, disk I/O, network, GPU) are measured through eight metrics with
explicit units, plus two that say what the memory is made of (anonymous vs file-backed). A metric
that was not measured is ``None`` (absent), never zero: a task on a host without a GPU has no GPU
reading, which is different from a GPU that sat idle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping


class Dimension(StrEnum):
    """The five resource dimensions the product reasons about."""

    CPU = "cpu"
    MEMORY = "memory"
    DISK_IO = "disk_io"
    NETWORK = "network"
    GPU = "gpu"


class Unit(StrEnum):
    CORES = "cores"
    BYTES = "bytes"
    BYTES_PER_SECOND = "bytes/s"
    FRACTION = "fraction"


class Metric(StrEnum):
    """One measured quantity; its value names the ResourceVector field that holds it."""

    CPU_CORES = "cpu_cores"
    MEMORY_BYTES = "memory_bytes"
    DISK_READ_BPS = "disk_read_bps"
    DISK_WRITE_BPS = "disk_write_bps"
    NET_RX_BPS = "net_rx_bps"
    NET_TX_BPS = "net_tx_bps"
    GPU_UTIL = "gpu_util"
    GPU_MEMORY_BYTES = "gpu_memory_bytes"
    # memory access patterns (issue 13 item 5, sampling/memstat.py): what the memory is made of,
    # usage only (not resources one allocates on their own). Page-fault rates were measured and
    # dropped: docs/benchmarks/profiler_memstat.md
    MEMORY_ANON_BYTES = "memory_anon_bytes"
    MEMORY_FILE_BYTES = "memory_file_bytes"

    @property
    def dimension(self) -> Dimension:
        return _DIMENSION[self]

    @property
    def unit(self) -> Unit:
        return _UNIT[self]


# what memory_bytes is made of: recorded and shown, never forecast nor allocated on their own (the
# profiler would otherwise learn two more curves per task from every run that has them)
COMPOSITION_METRICS: frozenset[Metric] = frozenset({Metric.MEMORY_ANON_BYTES, Metric.MEMORY_FILE_BYTES})
FORECAST_METRICS: tuple[Metric, ...] = tuple(m for m in Metric if m not in COMPOSITION_METRICS)

_DIMENSION: dict[Metric, Dimension] = {
    Metric.CPU_CORES: Dimension.CPU,
    Metric.MEMORY_BYTES: Dimension.MEMORY,
    Metric.DISK_READ_BPS: Dimension.DISK_IO,
    Metric.DISK_WRITE_BPS: Dimension.DISK_IO,
    Metric.NET_RX_BPS: Dimension.NETWORK,
    Metric.NET_TX_BPS: Dimension.NETWORK,
    Metric.GPU_UTIL: Dimension.GPU,
    Metric.GPU_MEMORY_BYTES: Dimension.GPU,
    Metric.MEMORY_ANON_BYTES: Dimension.MEMORY,
    Metric.MEMORY_FILE_BYTES: Dimension.MEMORY,
}
_UNIT: dict[Metric, Unit] = {
    Metric.CPU_CORES: Unit.CORES,
    Metric.MEMORY_BYTES: Unit.BYTES,
    Metric.DISK_READ_BPS: Unit.BYTES_PER_SECOND,
    Metric.DISK_WRITE_BPS: Unit.BYTES_PER_SECOND,
    Metric.NET_RX_BPS: Unit.BYTES_PER_SECOND,
    Metric.NET_TX_BPS: Unit.BYTES_PER_SECOND,
    Metric.GPU_UTIL: Unit.FRACTION,
    Metric.GPU_MEMORY_BYTES: Unit.BYTES,
    Metric.MEMORY_ANON_BYTES: Unit.BYTES,
    Metric.MEMORY_FILE_BYTES: Unit.BYTES,
}


class InvalidResourceValue(ValueError):
    """A metric value that cannot describe a resource (NaN, infinite or negative)."""


# (metric, field name) in declaration order: iterating an enum and reading ``.value`` cost ~1 us
# per metric, and every ResourceVector is built and read per metric (the shaping loop's hot path)
_FIELDS: tuple[tuple[Metric, str], ...] = tuple((m, m.value) for m in Metric)


def _check(metric: Metric, value: float | None) -> float | None:
    if value is None:
        return None
    v = float(value)
    if math.isnan(v) or math.isinf(v) or v < 0:
        raise InvalidResourceValue(f"{metric.value} must be a finite value >= 0, got {value!r}")
    return v


@dataclass(frozen=True, slots=True)
class ResourceVector:
    """One value per metric, in the metric's unit; ``None`` means not measured / not set.

    cpu_cores: CPU in cores (1.5 = one and a half cores busy or allocated).
    memory_bytes: memory in bytes (RSS / working set for usage, limit for allocations).
    disk_read_bps, disk_write_bps: block I/O in bytes per second.
    net_rx_bps, net_tx_bps: network traffic in bytes per second.
    gpu_util: GPU utilisation summed over devices (1.0 = one device fully busy).
    gpu_memory_bytes: GPU memory in bytes, summed over devices.
    memory_anon_bytes: anonymous memory + shmem (cannot be dropped without swap), usage only.
    memory_file_bytes: page cache minus shmem (file-backed, reclaimable), usage only.
    """

    cpu_cores: float | None = None
    memory_bytes: float | None = None
    disk_read_bps: float | None = None
    disk_write_bps: float | None = None
    net_rx_bps: float | None = None
    net_tx_bps: float | None = None
    gpu_util: float | None = None
    gpu_memory_bytes: float | None = None
    memory_anon_bytes: float | None = None
    memory_file_bytes: float | None = None

    def __post_init__(self) -> None:
        for metric, name in _FIELDS:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _check(metric, value))

    @classmethod
    def from_mapping(cls, values: Mapping[Metric, float | None]) -> ResourceVector:
        return cls(**{m.value: v for m, v in values.items()})

    @classmethod
    def lenient(cls, values: Mapping[Metric, float | None]) -> ResourceVector:
        """Build from untrusted readings: NaN, infinite or negative values become absent."""
        clean: dict[str, float | None] = {}
        for m, v in values.items():
            try:
                clean[m.value] = _check(m, v)
            except (InvalidResourceValue, TypeError, ValueError):
                clean[m.value] = None
        return cls(**clean)

    def get(self, metric: Metric) -> float | None:
        value: float | None = getattr(self, metric)  # a Metric is its field's name (StrEnum)
        return value

    def with_value(self, metric: Metric, value: float | None) -> ResourceVector:
        return replace(self, **{metric.value: value})

    def items(self) -> Iterator[tuple[Metric, float | None]]:
        for metric, name in _FIELDS:
            yield metric, getattr(self, name)

    def present(self) -> dict[Metric, float]:
        """The metrics that carry a value."""
        return {m: v for m, name in _FIELDS if (v := getattr(self, name)) is not None}

    @property
    def disk_bps(self) -> float | None:
        return _sum_present(self.disk_read_bps, self.disk_write_bps)

    @property
    def network_bps(self) -> float | None:
        return _sum_present(self.net_rx_bps, self.net_tx_bps)

    def combine(self, other: ResourceVector, op: Callable[[float, float], float]) -> ResourceVector:
        """Apply ``op`` metric-wise where both carry a value; keep the one present otherwise."""
        out: dict[str, float | None] = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            out[f.name] = a if b is None else b if a is None else op(a, b)
        return ResourceVector(**out)

    def maximum(self, other: ResourceVector) -> ResourceVector:
        return self.combine(other, max)

    def minimum(self, other: ResourceVector) -> ResourceVector:
        """Element-wise minimum where both carry a value; the one present otherwise."""
        return self.combine(other, min)

    def plus(self, other: ResourceVector) -> ResourceVector:
        """Element-wise sum; a metric absent on one side keeps the other side's value."""
        return self.combine(other, lambda a, b: a + b)

    def minus(self, other: ResourceVector) -> ResourceVector:
        """Element-wise difference, never below zero. Absent in ``self`` stays absent (nothing to
        subtract from); absent in ``other`` leaves ``self``'s value."""
        out: dict[str, float | None] = {}
        for metric, a in self.items():
            b = other.get(metric)
            out[metric.value] = None if a is None else a if b is None else max(0.0, a - b)
        return ResourceVector(**out)

    def fits_within(self, capacity: ResourceVector, *, tolerance: float = 1e-9) -> bool:
        """True when every metric present on both sides is <= capacity (absent = unconstrained
        in ``capacity``, no demand in ``self``)."""
        return not self.exceeding(capacity, tolerance=tolerance)

    def exceeding(self, capacity: ResourceVector, *, tolerance: float = 1e-9) -> dict[Metric, float]:
        """The metrics above ``capacity`` and by how much (empty when it fits)."""
        over: dict[Metric, float] = {}
        for metric, a in self.items():
            b = capacity.get(metric)
            if a is not None and b is not None and a > b + tolerance * max(1.0, abs(b)):
                over[metric] = a - b
        return over

    def scaled(self, factor: float) -> ResourceVector:
        return ResourceVector(**{m.value: (None if v is None else v * factor) for m, v in self.items()})

    def is_empty(self) -> bool:
        return not self.present()


def _sum_present(a: float | None, b: float | None) -> float | None:
    if a is None and b is None:
        return None
    return (a or 0.0) + (b or 0.0)


GIB = 1024.0**3
MIB = 1024.0**2


def format_bytes(value: float) -> str:
    """Human units for a byte count: '3.1 GiB', '512 MiB'."""
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024.0)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"
