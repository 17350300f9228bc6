"""Saving fitted estimators as a versioned set of artefacts (each estimator's own safe format).

Each training writes ``<model_dir>/<version>/<estimator>/`` through the estimator's ``save``
(JSON / npz / Keras native, never pickle) plus a ``manifest.json`` naming them. When the
provider's model store (``airflow_predictive.storage.model_store``) offers ``save_set`` this
delegates to it; otherwise it writes the same layout itself.
"""

from __future__ import annotations

import importlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import os
    from collections.abc import Mapping

    from airflow_predictive.core.profiler.estimators.base import Estimator

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def new_version(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")


class ArtefactSaver:
    """Callable for ``train(model_saver=...)``: saves every fitted estimator, returns the version."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __call__(self, fitted: Mapping[str, Estimator]) -> str:
        try:
            model_store = importlib.import_module("airflow_predictive.storage.model_store")
        except ImportError:
            model_store = None
        if model_store is not None and hasattr(model_store, "save_set"):
            return str(model_store.save_set(self.root, dict(fitted)))
        version = new_version()
        target = self.root / version
        saved = {}
        for name, est in fitted.items():
            try:
                est.save(target / name)
                cls = type(est)
                saved[name] = f"{cls.__module__}:{cls.__qualname__}"
            except Exception as exc:
                log.warning(
                    "predictive: %s could not be saved (%s); it is not in version %s", name, exc, version
                )
        target.mkdir(parents=True, exist_ok=True)
        (target / MANIFEST).write_text(json.dumps({"version": version, "estimators": saved}, indent=1))
        return version
