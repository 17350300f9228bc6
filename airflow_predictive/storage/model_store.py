"""Versioned model artefacts on disk: one folder per version, a manifest with checksums, safe loading.

Why: training runs in the maintenance DAG or the CLI; forecasting runs elsewhere and later. Both
meet here. Every saved model is a folder ``<model_dir>/<scope>/v000007/`` holding the estimator's
own files under ``artefact/`` (JSON, ``.npz`` without pickle, Keras native ``.keras``: nothing
else is accepted) and ``manifest.json`` (estimator name and class, version, creation time,
evaluation scores, sha256 of every file).

What the checks are, and are not:
- Containment: a manifest entry is a relative path inside its version folder; absolute paths,
  ``..`` parts and symbolic links anywhere in the folder are refused, so no manifest can make the
  store read (or hash) a file outside its own folder.
- The sha256 sums detect corruption (a truncated copy, a half-written file, a disk error, a file
  swapped in by another training run): loading verifies every checksum and refuses files the
  manifest does not list before the estimator reads anything, and raises ``ModelUnavailable``
  (callers log one line and fall back). They are not authentication: whoever can write the model
  folder can rewrite the manifest too, so the folder must be writable only by the deployment that
  trains (the formats accepted are still pickle-free, so a rewritten folder cannot run code).
- Pinning: ``ModelManifest.digest`` names the exact content of a version; a calibration fitted
  for one version carries that digest, and ``check_pin`` refuses a version whose digest differs
  (e.g. a folder recreated after the store was wiped, reusing the version number).

This module never imports TensorFlow or any estimator module at import time: the estimator class
is resolved, only inside the estimators package, when a model is loaded.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import re
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from airflow_predictive import config

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from airflow_predictive.core.model.runs import TaskKey
    from airflow_predictive.core.ports import Clock
    from airflow_predictive.core.profiler.estimators.base import Estimator

log = logging.getLogger(__name__)

GLOBAL_SCOPE = "global"
MANIFEST = "manifest.json"
ARTEFACT_DIR = "artefact"
ALLOWED_SUFFIXES: tuple[str, ...] = (".json", ".npz", ".keras")
_ESTIMATOR_PACKAGE = "airflow_predictive.core.profiler.estimators."
_VERSION_DIR = re.compile(r"^v(\d{6})$")


class ModelUnavailable(RuntimeError):
    """No usable model for a scope: none saved, missing files, checksum mismatch, or a load failure."""


@dataclass(frozen=True)
class ModelManifest:
    """What a version folder holds. ``files`` maps paths (relative to the version folder) to sha256."""

    scope: str
    version: int
    estimator: str
    estimator_class: str
    created: datetime
    scores: Mapping[str, float] = field(default_factory=dict)
    files: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "version": self.version,
            "estimator": self.estimator,
            "estimator_class": self.estimator_class,
            "created": self.created.isoformat(),
            "scores": dict(self.scores),
            "files": dict(self.files),
        }

    @property
    def digest(self) -> str:
        """sha256 of what identifies this version's content (scope, version, class, file sums)."""
        ident = {
            "scope": self.scope,
            "version": self.version,
            "estimator_class": self.estimator_class,
            "files": dict(sorted(self.files.items())),
        }
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelManifest:
        return cls(
            scope=str(data["scope"]),
            version=int(data["version"]),
            estimator=str(data["estimator"]),
            estimator_class=str(data["estimator_class"]),
            created=datetime.fromisoformat(str(data["created"])),
            scores={str(k): float(v) for k, v in dict(data.get("scores", {})).items()},
            files={str(k): str(v) for k, v in dict(data["files"]).items()},
        )


def scope_for(key: TaskKey | None) -> str:
    """The scope of a per-task model (``str(key)``), or the global scope for ``None``."""
    return GLOBAL_SCOPE if key is None else f"task:{key}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def contained(base: Path, rel: str) -> Path:
    """``base / rel`` when ``rel`` is a plain relative path inside ``base``; else ModelUnavailable.

    Refused: absolute paths (POSIX or Windows style), ``..`` or empty parts, backslashes, and any
    path whose resolution (symbolic links followed) leaves ``base``.
    """
    pure = PurePosixPath(rel)
    if (
        not rel
        or "\\" in rel
        or pure.is_absolute()
        or re.match(r"^[A-Za-z]:", rel)
        or any(part in ("", ".", "..") for part in rel.split("/"))
    ):
        raise ModelUnavailable(f"refusing manifest entry {rel!r}: not a plain path inside the version folder")
    path = base / pure
    root = base.resolve()
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise ModelUnavailable(f"refusing manifest entry {rel!r}: it resolves outside the version folder")
    return path


def _no_links(base: Path) -> None:
    """Refuse a version folder holding a symbolic link anywhere (a link may point anywhere)."""
    if base.is_symlink():
        raise ModelUnavailable(f"refusing {base}: the version folder is a symbolic link")
    for path in base.rglob("*"):
        if path.is_symlink():
            raise ModelUnavailable(f"refusing {base}: {path.relative_to(base)} is a symbolic link")


def _folder_name(scope: str) -> str:
    """A readable, collision-free folder name for any scope text."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", scope)[:80]
    return f"{readable}-{hashlib.sha256(scope.encode()).hexdigest()[:10]}"


class ModelStore:
    """Save, list, verify and load model versions under ``root`` (default ``[predictive] model_dir``)."""

    def __init__(
        self, root: Path | str | None = None, *, keep: int | None = None, clock: Clock | None = None
    ):
        self.root = Path(root) if root is not None else Path(config.model_dir())
        self.keep = keep if keep is not None else config.model_versions_kept()
        if self.keep < 1:
            raise ValueError("keep must be at least 1")
        self._clock = clock

    # ------------------------------------------------------------------ writing

    def save(
        self, estimator: Estimator, scope: str = GLOBAL_SCOPE, scores: Mapping[str, float] | None = None
    ) -> ModelManifest:
        """Write a new version (atomically: a temporary folder renamed into place), prune old ones."""
        folder = self.root / _folder_name(scope)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".tmp-{uuid.uuid4().hex}"
        try:
            estimator.save(tmp / ARTEFACT_DIR)
            _no_links(tmp)
            files: dict[str, str] = {}
            for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
                if path.suffix not in ALLOWED_SUFFIXES:
                    raise ModelUnavailable(
                        f"{estimator.name} wrote {path.name}: only {', '.join(ALLOWED_SUFFIXES)} files are stored"
                    )
                files[path.relative_to(tmp).as_posix()] = _sha256(path)
            cls = type(estimator)
            version = (self.versions(scope) or [0])[-1] + 1
            manifest = ModelManifest(
                scope=scope,
                version=version,
                estimator=estimator.name,
                estimator_class=f"{cls.__module__}:{cls.__qualname__}",
                created=self._now(),
                scores=dict(scores or {}),
                files=files,
            )
            (tmp / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=1, sort_keys=True))
            tmp.rename(folder / f"v{version:06d}")
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self._prune(scope)
        log.info("model store: saved %s v%d (%s) under %s", scope, version, estimator.name, folder)
        return manifest

    def _prune(self, scope: str) -> None:
        for version in self.versions(scope)[: -self.keep]:
            shutil.rmtree(self._version_dir(scope, version), ignore_errors=True)

    def _now(self) -> datetime:
        return self._clock.now() if self._clock is not None else datetime.now(UTC)

    # ------------------------------------------------------------------ reading

    def scopes(self) -> list[str]:
        """Scopes with at least one readable manifest."""
        found = set()
        if self.root.is_dir():
            for manifest in self.root.glob(f"*/v*/{MANIFEST}"):
                try:
                    found.add(str(json.loads(manifest.read_text())["scope"]))
                except (OSError, ValueError, KeyError, TypeError):
                    continue
        return sorted(found)

    def versions(self, scope: str = GLOBAL_SCOPE) -> list[int]:
        """Stored versions of ``scope``, oldest first."""
        folder = self.root / _folder_name(scope)
        if not folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _VERSION_DIR.match(p.name)))

    def _version_dir(self, scope: str, version: int) -> Path:
        return self.root / _folder_name(scope) / f"v{version:06d}"

    def manifest(self, scope: str = GLOBAL_SCOPE, version: int | None = None) -> ModelManifest:
        versions = self.versions(scope)
        if not versions:
            raise ModelUnavailable(f"no model saved for {scope} under {self.root}")
        version = versions[-1] if version is None else version
        path = self._version_dir(scope, version) / MANIFEST
        try:
            manifest = ModelManifest.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelUnavailable(f"{scope} v{version}: unreadable manifest {path}: {exc}") from exc
        if manifest.scope != scope or manifest.version != version:
            raise ModelUnavailable(f"{scope} v{version}: manifest names {manifest.scope} v{manifest.version}")
        return manifest

    def verified(self, scope: str = GLOBAL_SCOPE, version: int | None = None) -> tuple[Path, ModelManifest]:
        """(artefact folder, manifest) after checking that every entry stays inside the version
        folder, that no symbolic link is there, that no file was added, and every file's sha256."""
        manifest = self.manifest(scope, version)
        base = self._version_dir(scope, manifest.version)
        root = self.root.resolve()
        if root not in base.resolve().parents:
            raise ModelUnavailable(f"{scope} v{manifest.version}: {base} resolves outside {self.root}")
        _no_links(base)
        checked = {rel: contained(base, rel) for rel in manifest.files}
        present = {p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()} - {MANIFEST}
        extra = present - set(manifest.files)
        if extra:
            raise ModelUnavailable(f"{scope} v{manifest.version}: unexpected files {sorted(extra)}")
        for rel, digest in manifest.files.items():
            path = checked[rel]
            if not path.is_file():
                raise ModelUnavailable(f"{scope} v{manifest.version}: missing {rel}")
            if _sha256(path) != digest:
                raise ModelUnavailable(f"{scope} v{manifest.version}: checksum mismatch for {rel}")
        return base / ARTEFACT_DIR, manifest

    def check_pin(self, scope: str, version: int, digest: str | None) -> ModelManifest:
        """The manifest of ``scope`` v``version`` when its content digest is ``digest``; else
        ``ModelUnavailable`` (a calibration fitted for another model's content must not be used
        with this one). ``digest=None`` (nothing pinned) is refused too."""
        manifest = self.manifest(scope, version)
        if digest is None or manifest.digest != digest:
            raise ModelUnavailable(
                f"{scope} v{version}: the calibration was fitted for content "
                f"{(digest or 'unknown')[:12]}, this version is {manifest.digest[:12]}"
            )
        return manifest

    def load(
        self,
        scope: str = GLOBAL_SCOPE,
        version: int | None = None,
        loader: Callable[[Path], Any] | None = None,
    ) -> Any:
        """Verify, then load with ``loader`` (default: the manifest's estimator class ``load``).

        Any failure (nothing saved, checksum, unknown class, the estimator's own load) raises
        ``ModelUnavailable`` naming the scope, the version and the cause.
        """
        directory, manifest = self.verified(scope, version)
        try:
            load = loader or _estimator_class(manifest.estimator_class).load
            return load(directory)
        except Exception as exc:
            raise ModelUnavailable(
                f"{scope} v{manifest.version} ({manifest.estimator}): load failed: {type(exc).__name__}: {exc}"
            ) from exc

    def load_or_none(
        self, scope: str = GLOBAL_SCOPE, loader: Callable[[Path], Any] | None = None
    ) -> Any | None:
        """``load`` for callers that fall back: logs one line and returns None when unavailable."""
        try:
            return self.load(scope, loader=loader)
        except ModelUnavailable as exc:
            log.warning("model store: %s; falling back", exc)
            return None


def _estimator_class(path: str) -> Any:
    """Resolve ``module:Class`` only inside the estimators package (a manifest never names other code)."""
    module, _, qualname = path.partition(":")
    if not module.startswith(_ESTIMATOR_PACKAGE) or not qualname.isidentifier():
        raise ModelUnavailable(f"refusing estimator class {path!r}")
    return getattr(importlib.import_module(module), qualname)
