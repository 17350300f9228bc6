"""Exact Kubernetes quantities for the emulator (Decimal, like apimachinery's resource.Quantity).

The emulator compares and sums quantities exactly, so a request equal to a limit stays equal; it
must never round a value a client sent. Canonical output follows Kubernetes' short forms
("500m", "2Gi", "1").
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_RE = re.compile(
    r"^([+-]?[0-9]+(?:\.[0-9]*)?|[+-]?\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)


class QuantityError(ValueError):
    """Text that is not a Kubernetes quantity (the server answers 400 / 422 with it)."""


def parse(value: object) -> Decimal:
    """'500m' -> Decimal('0.5'); '2Gi' -> 2147483648; ints and floats as they are."""
    if isinstance(value, bool) or value is None:
        raise QuantityError(f"quantities must match the regular expression '{_RE.pattern}'")
    if isinstance(value, int | float):
        return Decimal(str(value))
    text = str(value).strip()
    match = _RE.match(text)
    if not match:
        raise QuantityError(f"quantities must match the regular expression '{_RE.pattern}'")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        base = Decimal(number)
    except InvalidOperation:
        raise QuantityError(f"invalid quantity {text!r}") from None
    if suffix in _BINARY:
        return base * _BINARY[suffix]
    if suffix in _DECIMAL:
        return base * _DECIMAL[suffix]
    return base * (Decimal(10) ** int(suffix[1:]))


def millis(value: object) -> int:
    """CPU quantity in millicores, rounded up like Quantity.MilliValue()."""
    d = parse(value) * 1000
    i = int(d)
    return i + 1 if d > i else i


def integer(value: object) -> int:
    """Quantity as an integer, rounded up like Quantity.Value() (bytes)."""
    d = parse(value)
    i = int(d)
    return i + 1 if d > i else i


def format_cpu(value: Decimal) -> str:
    """Canonical CPU text: whole cores as '2', else millicores '1500m', else nanocores."""
    if value == value.to_integral_value():
        return str(int(value))
    m = value * 1000
    if m == m.to_integral_value():
        return f"{int(m)}m"
    return f"{int((value * 10**9).to_integral_value())}n"


def format_bytes(value: Decimal) -> str:
    """Canonical byte text: the largest exact binary suffix ('2Gi', '512Mi'), else the integer."""
    n = int(value.to_integral_value())
    if n == value and n > 0:
        for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
            if n % _BINARY[suffix] == 0:
                return f"{n // _BINARY[suffix]}{suffix}"
    return str(n)


def canonical(resource: str, value: object) -> str:
    """The text the API server stores for ``resource`` (it normalises quantities on write)."""
    d = parse(value)
    if resource == "cpu":
        return format_cpu(d)
    if resource in ("memory", "ephemeral-storage", "storage") or resource.startswith("hugepages-"):
        return format_bytes(d)
    return format_cpu(d) if d != d.to_integral_value() else str(int(d))
