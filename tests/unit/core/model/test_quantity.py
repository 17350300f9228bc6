from __future__ import annotations

import pytest

from airflow_predictive.core.model.quantity import (
    InvalidQuantity,
    format_cpu,
    format_memory,
    parse_quantity,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", 0.5), ("2", 2.0), ("2Gi", 2 * 1024**3), ("1G", 1e9), ("128Mi", 128 * 1024**2), (3, 3.0)],
)
def test_parses_kubernetes_quantities(text: str | int, value: float) -> None:
    assert parse_quantity(text) == pytest.approx(value)


@pytest.mark.parametrize("bad", ["", "abc", "-1", "5Xi", True, float("nan")])
def test_rejects_garbage(bad: object) -> None:
    with pytest.raises(InvalidQuantity):
        parse_quantity(bad)  # type: ignore[arg-type]


def test_formats_round_trip() -> None:
    assert format_cpu(0.25) == "250m"
    assert parse_quantity(format_memory(512 * 1024**2)) == 512 * 1024**2
    assert parse_quantity(format_memory(1000.0)) >= 1000.0
