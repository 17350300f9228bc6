"""Parse and format resource quantities the way Kubernetes and DAG authors write them.

"500m" CPU = 0.5 cores; "2Gi" = 2 * 1024**3 bytes; "1G" = 10**9 bytes; plain numbers are taken
as they are (cores, or bytes). Used for declared resources in executor_config and by backends.
"""

from __future__ import annotations

import math
import re

_SUFFIX = {
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "": 1.0,
    "k": 1e3,
    "K": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "Ki": 1024.0,
    "Mi": 1024.0**2,
    "Gi": 1024.0**3,
    "Ti": 1024.0**4,
    "Pi": 1024.0**5,
}
_PATTERN = re.compile(r"^\s*([+]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\s*([a-zA-Z]{0,2})\s*$")


class InvalidQuantity(ValueError):
    """A quantity string that is not a non-negative number with a known suffix."""


def parse_quantity(value: str | float | int) -> float:
    """'500m' -> 0.5, '2Gi' -> 2147483648.0, 3 -> 3.0. Raises InvalidQuantity on anything else."""
    if isinstance(value, bool):
        raise InvalidQuantity(f"not a quantity: {value!r}")
    if isinstance(value, int | float):
        v = float(value)
    else:
        match = _PATTERN.match(str(value))
        if not match or match.group(2) not in _SUFFIX:
            raise InvalidQuantity(f"not a quantity: {value!r}")
        v = float(match.group(1)) * _SUFFIX[match.group(2)]
    if not math.isfinite(v) or v < 0:
        raise InvalidQuantity(f"quantity must be finite and >= 0: {value!r}")
    return v


def format_cpu(cores: float) -> str:
    """Cores as a Kubernetes quantity in millicores, rounded up: 0.25 -> '250m'."""
    return f"{max(1, math.ceil(cores * 1000 - 1e-9))}m"


def format_memory(num_bytes: float) -> str:
    """Bytes as a Kubernetes quantity: whole Mi when exact, else Ki rounded up."""
    mib = num_bytes / 1024.0**2
    if abs(mib - round(mib)) < 1e-9 and mib >= 1:
        return f"{round(mib)}Mi"
    return f"{max(1, math.ceil(num_bytes / 1024.0))}Ki"
