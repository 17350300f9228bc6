"""Saving the fitted estimators of one training through the model store (versioned, checksummed).

Each estimator is saved under its own scope ``estimator:<name>`` (its own safe formats: JSON,
npz, Keras native; never pickle); the returned labels (``lstm:v7``) are what profiles and cached
forecasts record as their model version.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_predictive.core.profiler.estimators.base import Estimator

log = logging.getLogger(__name__)

COLD_START = "cold_start"  # model store name of the saved cold-start chain (serving's fallback)


def scope_of(name: str) -> str:
    return f"estimator:{name}"


class ArtefactSaver:
    """Callable for ``train(model_saver=...)``: saves every fitted estimator, returns name -> label."""

    def __init__(self, root: str | os.PathLike[str] | None = None, keep: int | None = None) -> None:
        from airflow_predictive.storage.model_store import ModelStore

        self.store = ModelStore(None if root is None else os.fspath(root), keep=keep)
        self.digests: dict[str, str] = {}  # label -> content digest (pinned with calibrations)

    def __call__(self, fitted: Mapping[str, Estimator]) -> dict[str, str]:
        labels: dict[str, str] = {}
        for name, est in fitted.items():
            try:
                manifest = self.store.save(est, scope_of(name))
            except Exception as exc:  # one estimator that cannot be saved must not lose the others
                log.warning(
                    "predictive: %s could not be saved (%s); its forecasts carry no version", name, exc
                )
                continue
            labels[name] = f"{name}:v{manifest.version}"
            self.digests[labels[name]] = manifest.digest
        return labels
