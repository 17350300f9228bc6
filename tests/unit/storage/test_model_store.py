from __future__ import annotations

import hashlib
import json
import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from airflow_predictive.core.model.resources import GIB, Metric, ResourceVector
from airflow_predictive.core.model.runs import RunIdentity, RunRecord, TaskKey
from airflow_predictive.core.profiler.estimators.base import ForecastQuery, RunExample
from airflow_predictive.core.profiler.estimators.baselines import FallbackChain, OperatorPrior, VpaStyle
from airflow_predictive.storage.model_store import (
    GLOBAL_SCOPE,
    ModelStore,
    ModelUnavailable,
    scope_for,
)

KEY = TaskKey("etl", "load")


class FixedClock:
    def monotonic(self) -> float:
        return 0.0

    def now(self) -> datetime:
        return datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _runs(n: int = 4) -> list[RunExample]:
    return [
        RunExample(
            RunRecord(
                identity=RunIdentity(TaskKey("etl", f"t{i}"), f"r{i}"),
                operator="BashOperator",
                peak=ResourceVector(memory_bytes=(1 + i) * GIB),
            ),
            None,
        )
        for i in range(n)
    ]


def _store(tmp_path: Path, keep: int = 3) -> ModelStore:
    return ModelStore(tmp_path / "models", keep=keep, clock=FixedClock())


def test_save_then_load_gives_the_same_forecasts(tmp_path):
    store = _store(tmp_path)
    prior = OperatorPrior().fit(_runs())
    manifest = store.save(prior, GLOBAL_SCOPE, scores={"pinball.memory": 0.12})
    assert manifest.version == 1 and manifest.estimator == "operator_prior"
    assert manifest.created == FixedClock().now() and manifest.scores == {"pinball.memory": 0.12}
    assert all(len(h) == 64 for h in manifest.files.values())
    loaded = store.load(GLOBAL_SCOPE)
    q = ForecastQuery(key=KEY, operator="BashOperator")
    assert np.array_equal(
        loaded.predict(q).curve(Metric.MEMORY_BYTES).at(0.99),
        prior.predict(q).curve(Metric.MEMORY_BYTES).at(0.99),
    )


def test_versions_increase_and_only_the_newest_are_kept(tmp_path):
    store = _store(tmp_path, keep=2)
    for margin in (0.1, 0.2, 0.3):
        store.save(VpaStyle(margin=margin), scope_for(KEY))
    assert store.versions(scope_for(KEY)) == [2, 3]
    assert store.load(scope_for(KEY)).margin == 0.3
    assert store.load(scope_for(KEY), version=2).margin == 0.2
    assert store.scopes() == [scope_for(KEY)]


def test_nested_estimators_are_stored_with_every_file_checked(tmp_path):
    store = _store(tmp_path)
    chain = FallbackChain([VpaStyle(), OperatorPrior().fit(_runs())])
    manifest = store.save(chain)
    assert sorted(manifest.files) == [
        "artefact/estimator.json",
        "artefact/level_0/estimator.json",
        "artefact/level_1/estimator.json",
    ]
    assert [lvl.name for lvl in store.load().levels] == ["vpa", "operator_prior"]


def test_tampered_file_is_refused(tmp_path):
    store = _store(tmp_path)
    store.save(VpaStyle())
    directory, _ = store.verified()
    (directory / "estimator.json").write_text(json.dumps({"name": "vpa", "margin": 5.0}))
    with pytest.raises(ModelUnavailable, match="checksum mismatch"):
        store.load()


def test_missing_and_added_files_are_refused(tmp_path):
    store = _store(tmp_path)
    store.save(VpaStyle())
    directory, _ = store.verified()
    (directory / "extra.keras").write_bytes(b"x")
    with pytest.raises(ModelUnavailable, match="unexpected files"):
        store.load()
    (directory / "extra.keras").unlink()
    (directory / "estimator.json").unlink()
    with pytest.raises(ModelUnavailable, match="missing"):
        store.load()


def test_nothing_saved_is_unavailable_and_fallback_logs_one_line(tmp_path, caplog):
    store = _store(tmp_path)
    with pytest.raises(ModelUnavailable, match="no model saved"):
        store.load(scope_for(KEY))
    with caplog.at_level(logging.WARNING):
        assert store.load_or_none(scope_for(KEY)) is None
    assert len([r for r in caplog.records if "falling back" in r.getMessage()]) == 1


def test_manifest_naming_code_outside_the_estimators_is_refused(tmp_path):
    store = _store(tmp_path)
    store.save(VpaStyle())
    path = next((tmp_path / "models").glob("*/v000001/manifest.json"))
    data = json.loads(path.read_text())
    data["estimator_class"] = "os:system"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelUnavailable, match="refusing"):
        store.load()


def test_corrupt_manifest_is_unavailable(tmp_path):
    store = _store(tmp_path)
    store.save(VpaStyle())
    next((tmp_path / "models").glob("*/v000001/manifest.json")).write_text("{not json")
    with pytest.raises(ModelUnavailable, match="unreadable manifest"):
        store.load()


def test_estimators_writing_other_formats_are_rejected(tmp_path):
    class Pickler(VpaStyle):
        def save(self, directory: Path) -> None:
            directory.mkdir(parents=True)
            (directory / "model.pkl").write_bytes(b"\x80\x04")

    store = _store(tmp_path)
    with pytest.raises(ModelUnavailable, match=r"only \.json"):
        store.save(Pickler())
    assert store.versions() == []
    assert not list((tmp_path / "models").glob("*/.tmp-*"))


def test_a_broken_estimator_load_becomes_model_unavailable(tmp_path):
    store = _store(tmp_path)
    store.save(VpaStyle())

    def boom(directory: Path) -> None:
        raise ValueError("bad shapes")

    with pytest.raises(ModelUnavailable, match="load failed: ValueError: bad shapes"):
        store.load(loader=boom)


def test_scope_folders_do_not_collide():
    assert scope_for(TaskKey("a", "b_c")) != scope_for(TaskKey("a_b", "c"))
    assert scope_for(None) == GLOBAL_SCOPE


def _rewrite_manifest(store: ModelStore, scope: str, change) -> None:
    directory, _ = store.verified(scope)
    path = directory.parent / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("entry", ["../outside.json", "artefact/../../outside.json", "/etc/hostname"])
def test_manifest_entries_outside_the_version_folder_are_refused(tmp_path, entry):
    """A manifest naming a file outside its folder is refused before that file is read or hashed
    (the outside file is valid and its checksum is right: only containment can refuse it)."""
    store = _store(tmp_path)
    store.save(VpaStyle(), scope_for(KEY))
    outside = tmp_path / "models" / "outside.json"
    outside.write_text("{}")
    content = Path(entry).read_bytes() if entry.startswith("/") else b"{}"
    digest = hashlib.sha256(content).hexdigest()
    _rewrite_manifest(store, scope_for(KEY), lambda d: d["files"].update({entry: digest}))
    with pytest.raises(ModelUnavailable, match="refusing manifest entry"):
        store.load(scope_for(KEY))


def test_a_symbolic_link_in_a_version_folder_is_refused(tmp_path):
    store = _store(tmp_path)
    store.save(VpaStyle(margin=0.3), scope_for(KEY))
    directory, _ = store.verified(scope_for(KEY))
    real = directory / "estimator.json"
    outside = tmp_path / "elsewhere.json"
    outside.write_bytes(real.read_bytes())  # same bytes: the checksum alone would accept it
    real.unlink()
    real.symlink_to(outside)
    with pytest.raises(ModelUnavailable, match="symbolic link"):
        store.load(scope_for(KEY))


def test_a_scope_folder_linked_outside_the_store_is_refused(tmp_path):
    elsewhere = _store(tmp_path / "other")
    elsewhere.save(VpaStyle(), scope_for(KEY))
    store = _store(tmp_path)
    store.root.mkdir(parents=True)
    folder = next(p for p in elsewhere.root.iterdir())
    (store.root / folder.name).symlink_to(folder)
    with pytest.raises(ModelUnavailable, match="outside"):
        store.load(scope_for(KEY))


def test_an_estimator_writing_a_link_cannot_be_saved(tmp_path):
    class Linker(VpaStyle):
        def save(self, directory):
            super().save(directory)
            (directory / "extra.json").symlink_to(tmp_path / "somewhere.json")

    (tmp_path / "somewhere.json").write_text("{}")
    with pytest.raises(ModelUnavailable, match="symbolic link"):
        _store(tmp_path).save(Linker(), scope_for(KEY))


def test_pin_refuses_a_version_whose_content_differs_from_the_calibrations(tmp_path):
    store = _store(tmp_path)
    first = store.save(VpaStyle(margin=0.1), scope_for(KEY))
    assert store.check_pin(scope_for(KEY), 1, first.digest).version == 1
    # the store is wiped and retrained: the same version number now holds another model
    shutil.rmtree(store.root)
    again = store.save(VpaStyle(margin=0.5), scope_for(KEY))
    assert again.version == 1 and again.digest != first.digest
    with pytest.raises(ModelUnavailable, match="calibration was fitted for"):
        store.check_pin(scope_for(KEY), 1, first.digest)
    with pytest.raises(ModelUnavailable):
        store.check_pin(scope_for(KEY), 1, None)
