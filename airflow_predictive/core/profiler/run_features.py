"""What is known about one try before it starts, as features: params, input size, try number.

Why: the recorder stores these features with every run and every caller that asks for a
forecast (executor, operators, CLI) builds its query with them, so the two must come from one
function (``run_features``). Input sizes hide in params (``input_mb=512``, ``input_bytes``,
``source_gb``) or are declared (``executor_config={"predictive": {"input_size": "2Gi"}}``); the
best cheap predictor, linear in input size, only fires when they become one ``input_bytes``
number. Pure and numpy-free on purpose: the listener imports it on the task's start path.
"""

from __future__ import annotations

import math
from collections import abc
from typing import TYPE_CHECKING, Any

from airflow_predictive.core.model.quantity import InvalidQuantity, parse_quantity

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow_predictive.core.model.runs import FeatureValue

# Feature keys the importers and the recorder use for a run's input size (first present wins).
INPUT_SIZE_KEYS: tuple[str, ...] = ("input_bytes", "input_size_bytes", "input_size")
# Sizes of what upstream tasks produced, when the recorder knows them (kept as features whenever seen).
UPSTREAM_OUTPUT_KEYS: tuple[str, ...] = ("upstream_output_bytes", "upstream_output_files")


def numeric_feature(features: Mapping[str, FeatureValue], keys: Sequence[str]) -> float | None:
    """The first of ``keys`` that holds a finite, non-negative number (bools and text are not numbers)."""
    for key in keys:
        value = features.get(key)
        if value is None or isinstance(value, bool | str):
            continue
        v = float(value)
        if math.isfinite(v) and v >= 0:
            return v
    return None


def input_size(features: Mapping[str, FeatureValue]) -> float | None:
    """The run's input size: an explicit key (importers, the recorder, ``executor_config``), else
    what the run's params say (``param.input_mb`` ... see ``param_input_bytes``), else None."""
    explicit = numeric_feature(features, INPUT_SIZE_KEYS)
    return explicit if explicit is not None else param_input_bytes(features)


# ----------------------------------------------------------------------------- per-run features

PARAM_PREFIX = "param."
# Unit suffixes of param names, binary multiples (``input_mb=512`` = 512 MiB): the linear-in-input
# fit is scale-free, the unit only matters when two params of one task are added up.
SIZE_SUFFIXES: tuple[tuple[str, float], ...] = (
    ("_bytes", 1.0),
    ("_kib", 2.0**10),
    ("_kb", 2.0**10),
    ("_mib", 2.0**20),
    ("_mb", 2.0**20),
    ("_gib", 2.0**30),
    ("_gb", 2.0**30),
    ("_tib", 2.0**40),
    ("_tb", 2.0**40),
)
PREDICTIVE_CONFIG_KEY = "predictive"
DECLARED_INPUT_KEY = "input_size"  # executor_config={"predictive": {"input_size": "2Gi"}}


def _param_size(name: str, value: FeatureValue) -> tuple[float, bool] | None:
    """(size, has_unit) of one param when its name says it is an input size, else None."""
    if value is None or isinstance(value, bool | str):
        return None
    v = float(value)
    if not math.isfinite(v) or v < 0:
        return None
    lower = name.lower()
    if lower.startswith(("output", "out_")):
        return None
    for suffix, factor in SIZE_SUFFIXES:
        if lower.endswith(suffix):
            return v * factor, True
    if lower.startswith("input_") or lower == "input":
        return v, False
    return None


def param_input_bytes(features: Mapping[str, FeatureValue]) -> float | None:
    """The input size the run's params describe (keys ``param.<name>``).

    Params named ``*_bytes`` / ``*_kb`` / ``*_mb`` / ``*_gb`` / ``*_tb`` (binary multiples) are
    converted to bytes and added up; without any of those, numeric ``input_*`` params (counts:
    rows, files) are added up as they are. None when no param looks like an input size.
    """
    sized: list[float] = []
    counts: list[float] = []
    for key, value in features.items():
        if not key.startswith(PARAM_PREFIX):
            continue
        found = _param_size(key[len(PARAM_PREFIX) :], value)
        if found is not None:
            (sized if found[1] else counts).append(found[0])
    if sized:
        return float(sum(sized))
    if counts:
        return float(sum(counts))
    return None


def primitive_params(params: Mapping[str, Any] | None) -> dict[str, FeatureValue]:
    """Params as features ``param.<name>``: numbers (finite), strings and booleans only."""
    out: dict[str, FeatureValue] = {}
    for name, value in (params or {}).items():
        if isinstance(value, bool | str) or (isinstance(value, int | float) and math.isfinite(float(value))):
            out[f"{PARAM_PREFIX}{name}"] = value
    return out


def declared_input_size(executor_config: Any) -> float | None:
    """``executor_config={"predictive": {"input_size": ...}}`` in bytes (a number or "2Gi"); None
    when absent; a value that is not a quantity is ignored (the caller's params still count)."""
    if not isinstance(executor_config, abc.Mapping):
        return None
    cfg = executor_config.get(PREDICTIVE_CONFIG_KEY)
    if not isinstance(cfg, abc.Mapping) or cfg.get(DECLARED_INPUT_KEY) is None:
        return None
    try:
        return parse_quantity(cfg[DECLARED_INPUT_KEY])
    except InvalidQuantity:
        return None


def run_features(
    params: Mapping[str, Any] | None,
    *,
    executor_config: Any = None,
    try_number: int | None = None,
    upstream_output_bytes: float | None = None,
) -> dict[str, FeatureValue]:
    """What is known about one try before it starts, in the vocabulary the profiler reads.

    The one feature extraction shared by the recorder (stored with the run) and by every caller
    that asks for a forecast (executor, operators, CLI), so that a forecast is asked with the
    same features its training runs were recorded with:
    - ``param.<name>``: primitive params;
    - ``input_bytes``: the declared ``executor_config["predictive"]["input_size"]``, else the size
      the params describe (``param_input_bytes``), absent when neither says anything;
    - ``upstream_output_bytes``: what upstream tasks produced (XCom sizes), when the caller knows;
    - ``try_number``.
    """
    out = primitive_params(params)
    size = declared_input_size(executor_config)
    if size is None:
        size = param_input_bytes(out)
    if size is not None:
        out[INPUT_SIZE_KEYS[0]] = size
    if (
        upstream_output_bytes is not None
        and math.isfinite(upstream_output_bytes)
        and upstream_output_bytes >= 0
    ):
        out[UPSTREAM_OUTPUT_KEYS[0]] = float(upstream_output_bytes)
    if try_number is not None:
        out["try_number"] = int(try_number)
    return out
