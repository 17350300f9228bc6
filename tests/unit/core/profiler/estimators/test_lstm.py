from __future__ import annotations

import logging
import sys
from dataclasses import replace

import numpy as np
import pytest

from airflow_predictive.core.model.resources import GIB, Metric, ResourceVector
from airflow_predictive.core.model.runs import TaskKey
from airflow_predictive.core.model.series import UsageSeries
from airflow_predictive.core.profiler.estimators.base import ForecastQuery, NotFitted, RunExample
from airflow_predictive.core.profiler.estimators.baselines import FallbackChain, MedianPeak, OperatorPrior
from airflow_predictive.core.profiler.estimators.lstm import (
    LstmConfig,
    LstmForecaster,
    LstmUnavailable,
)
from airflow_predictive.core.profiler.windows import WindowConfig, truncate
from tests._real_parts import require_module

MEM = Metric.MEMORY_BYTES
TINY = LstmConfig(
    window=WindowConfig(horizon_steps=16, prefix_steps=8, prefix_fractions=(0.2, 0.4)),
    units=16,
    hidden=32,
    epochs=30,
    fine_tune_epochs=5,
    patience=30,
    seed=1,
)


def _dataset(make_run) -> tuple[list[RunExample], list[RunExample]]:
    """Two tasks of ramps; each run's level is random (only a prefix can reveal it)."""
    rng = np.random.default_rng(7)
    train, held = [], []
    for t in range(2):
        key = TaskKey("synthetic", f"ramp_{t}")
        for i in range(40):
            size = float(rng.uniform(1e9, 3e9))
            level = float(rng.uniform(0.6, 1.6))
            run = make_run(
                key,
                i,
                input_bytes=size,
                peak_gib=(1.0 + t + size / 1e9) * level,
                duration_s=60.0 + 20.0 * size / 1e9,
                step_s=2.0,
            )
            run = RunExample(
                replace(run.record, features={**run.record.features, "level_hint": 0}), run.series
            )
            (train if i < 32 else held).append(run)
    return train, held


@pytest.fixture(scope="module")
def trained(synth):
    require_module("tensorflow", "install the lstm extra")
    train, held = _dataset(synth.make_run)
    return LstmForecaster(TINY).fit(train), train, held


def _history(train: list[RunExample], key: TaskKey) -> list[RunExample]:
    return [r for r in train if r.key == key]


def _query(run: RunExample, history: list[RunExample], **kw: object) -> ForecastQuery:
    return ForecastQuery(
        key=run.key,
        features=run.record.features,
        declared=run.record.declared,
        operator=run.record.operator,
        history=tuple(history),
        start=run.record.start,
        **kw,  # type: ignore[arg-type]
    )


def _curve_error(forecast, run: RunExample) -> float:
    curve = forecast.curve(MEM)
    actual = run.series.get(MEM)
    pred = np.array([curve.value_at(t, 0.5) for t in run.series.times])
    return float(np.mean(np.abs(pred - actual)) / actual.max())


@pytest.mark.tensorflow
def test_learns_the_ramp_better_than_a_flat_baseline(trained):
    model, train, held = trained
    lstm_err, flat_err = [], []
    for run in held:
        q = _query(run, _history(train, run.key))
        lstm_err.append(_curve_error(model.predict(q), run))
        flat_err.append(_curve_error(MedianPeak().predict(q), run))
    assert np.mean(lstm_err) < 0.7 * np.mean(flat_err)
    assert model.report is not None and model.report.fine_tuned_tasks == 2


@pytest.mark.tensorflow
def test_prefix_moves_the_forecast_toward_the_observed_level(trained):
    model, train, held = trained
    without, with_prefix = [], []
    for run in held:
        history = _history(train, run.key)
        actual = run.series.peak(MEM)
        prefix = truncate(run.series, 0.3 * run.series.duration_s)
        a = model.predict(_query(run, history)).curve(MEM).peak(0.5)
        b = model.predict(_query(run, history, prefix=prefix)).curve(MEM).peak(0.5)
        without.append(abs(a - actual) / actual)
        with_prefix.append(abs(b - actual) / actual)
    assert np.median(with_prefix) < 0.75 * np.median(without)


@pytest.mark.tensorflow
def test_upper_quantiles_cover_more_held_out_peaks_and_duration_tracks_runs(trained):
    """Behaviour, not the ordering DemandCurve already enforces: the p99 peak covers most held-out
    runs, clearly more of them than the p50 peak, and the p50 duration is near the actual one."""
    model, train, held = trained
    under50, under99, dur_err = [], [], []
    for run in held:
        f = model.predict(_query(run, _history(train, run.key)))
        actual = float(run.series.get(MEM).max())
        under50.append(actual <= f.curve(MEM).peak(0.5))
        under99.append(actual <= f.curve(MEM).peak(0.99))
        dur_err.append(abs(f.duration_s[0.5] - run.series.duration_s) / run.series.duration_s)
    assert np.mean(under99) >= 0.8 and np.mean(under99) > np.mean(under50) + 0.2
    assert np.median(dur_err) < 0.3
    assert f.estimator == "lstm" and not f.peak_only


@pytest.mark.tensorflow
def test_numpy_forward_pass_equals_keras(trained, tmp_path):
    """The TensorFlow-free serving path replays the saved network exactly (prefix, fine-tuned
    adapters and an unknown task included)."""
    model, train, held = trained
    model.save(tmp_path / "m")
    served = LstmForecaster.load_numpy(tmp_path / "m")
    assert served._model is None
    queries = [_query(r, _history(train, r.key)) for r in held[:4]]
    queries += [_query(r, _history(train, r.key), prefix=truncate(r.series, 25.0)) for r in held[4:8]]
    queries.append(
        ForecastQuery(
            TaskKey("new", "task"), features={"input_bytes": 2e9}, declared=ResourceVector(memory_bytes=GIB)
        )
    )
    for a, b in zip(model.predict_many(queries), served.predict_many(queries), strict=True):
        for quantile in (0.5, 0.9, 0.99):
            assert np.allclose(a.curve(MEM).at(quantile), b.curve(MEM).at(quantile), rtol=1e-4, atol=1e-3)
        assert a.duration_s == pytest.approx(b.duration_s, rel=1e-4)


@pytest.mark.tensorflow
def test_numpy_serving_never_imports_tensorflow(trained, tmp_path):
    import subprocess

    model, _, _ = trained
    model.save(tmp_path / "m")
    code = (
        "import sys\n"
        "for m in ('tensorflow', 'keras'): sys.modules[m] = None\n"
        "from pathlib import Path\n"
        "from airflow_predictive.core.model.runs import TaskKey\n"
        "from airflow_predictive.core.model.resources import ResourceVector\n"
        "from airflow_predictive.core.profiler.estimators.base import ForecastQuery\n"
        "from airflow_predictive.core.profiler.estimators.lstm import LstmForecaster\n"
        f"est = LstmForecaster.load_numpy(Path({str(tmp_path / 'm')!r}))\n"
        "q = ForecastQuery(TaskKey('synthetic', 'ramp_0'), features={'input_bytes': 2e9},"
        " declared=ResourceVector(memory_bytes=2**31))\n"
        "f = est.predict(q)\n"
        "print(f.curve(f.curves and next(iter(f.curves))).peak(0.9))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip()) > 0


@pytest.mark.tensorflow
def test_batch_forecast_equals_one_by_one(trained):
    model, train, held = trained
    queries = [_query(r, _history(train, r.key)) for r in held[:5]]
    batch = model.predict_many(queries)
    for q, f in zip(queries, batch, strict=True):
        assert np.allclose(model.predict(q).curve(MEM).at(0.9), f.curve(MEM).at(0.9), rtol=1e-4)


@pytest.mark.tensorflow
def test_save_load_round_trip_gives_identical_predictions(trained, tmp_path):
    model, train, held = trained
    model.save(tmp_path / "m")
    loaded = LstmForecaster.load(tmp_path / "m")
    q = _query(held[1], _history(train, held[1].key), prefix=truncate(held[1].series, 20.0))
    a, b = model.predict(q), loaded.predict(q)
    for quantile in (0.5, 0.9, 0.99):
        assert np.array_equal(a.curve(MEM).at(quantile), b.curve(MEM).at(quantile))
    assert a.duration_s == b.duration_s
    assert loaded.fine_tuned == model.fine_tuned


@pytest.mark.tensorflow
def test_tampered_model_file_fails_safely(trained, tmp_path):
    model, _, _ = trained
    model.save(tmp_path / "m")
    path = tmp_path / "m" / "model.keras"
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(NotFitted, match="cannot load"):
        LstmForecaster.load(tmp_path / "m")


@pytest.mark.tensorflow
def test_tampered_state_fails_safely(trained, tmp_path):
    model, _, _ = trained
    model.save(tmp_path / "m")
    (tmp_path / "m" / "state.json").write_text('{"version": 1, "config": "not a config"}')
    with pytest.raises(NotFitted, match="cannot load"):
        LstmForecaster.load(tmp_path / "m")


@pytest.mark.tensorflow
def test_metric_the_model_never_saw_is_skipped_or_refused(trained):
    model, train, held = trained
    run = held[0]
    both = model.predict(_query(run, _history(train, run.key), metrics=(MEM, Metric.GPU_UTIL)))
    assert set(both.curves) == {MEM}
    with pytest.raises(NotFitted, match="gpu_util"):
        model.predict(_query(run, [], metrics=(Metric.GPU_UTIL,)))


@pytest.mark.tensorflow
def test_unknown_task_is_forecast_from_its_declared_resources_or_refused(trained):
    model, _, _ = trained
    declared = ForecastQuery(
        key=TaskKey("new", "task"),
        features={"input_bytes": 2e9},
        declared=ResourceVector(memory_bytes=4 * GIB),
    )
    f = model.predict(declared)
    assert set(f.curves) == {MEM}  # CPU not declared and never seen: left out
    assert np.all(np.isfinite(f.curve(MEM).at(0.99))) and f.curve(MEM).peak(0.99) > 0
    bare = ForecastQuery(key=TaskKey("new", "task"), features={"input_bytes": 2e9}, operator="BashOperator")
    with pytest.raises(NotFitted, match="nothing to anchor"):
        model.predict(bare)
    chain = FallbackChain([model, OperatorPrior().fit(_history_of_all(trained))])
    assert chain.predict(bare).estimator == "operator_prior"


def _history_of_all(trained) -> list[RunExample]:
    return list(trained[1])


@pytest.mark.tensorflow
def test_nan_and_broken_prefix_readings_do_not_break_the_forecast(trained):
    model, train, held = trained
    run = held[0]
    bad = UsageSeries(np.arange(5.0), {MEM: np.array([np.nan, -1.0, 1e40, np.nan, 2 * GIB])})
    f = model.predict(_query(run, _history(train, run.key), prefix=bad))
    assert np.all(np.isfinite(f.curve(MEM).at(0.5)))
    empty = UsageSeries(np.arange(3.0), {MEM: np.full(3, np.nan)})
    assert model.predict(_query(run, _history(train, run.key), prefix=empty)).curve(MEM) is not None


@pytest.mark.tensorflow
def test_too_little_data_refuses_to_train(synth, task_key):
    runs = [synth.make_run(task_key, 0)]
    with pytest.raises(NotFitted, match="training windows"):
        LstmForecaster(TINY).fit(runs)


@pytest.mark.tensorflow
def test_runs_without_series_cannot_train_the_lstm(synth, task_key):
    runs = [synth.make_run(task_key, i, series=False) for i in range(30)]
    with pytest.raises(NotFitted, match="no training run has a series"):
        LstmForecaster(TINY).fit(runs)


def test_predict_before_fit_is_a_clear_error(task_key):
    with pytest.raises(NotFitted, match="before fit"):
        LstmForecaster().predict(ForecastQuery(key=task_key))


def test_without_tensorflow_the_chain_falls_back_with_one_clear_line(synth, task_key, monkeypatch, caplog):
    for name in ("tensorflow", "keras", "airflow_predictive.core.profiler.estimators.lstm_network"):
        monkeypatch.setitem(sys.modules, name, None)  # import of these now raises ImportError
    runs = synth.linear_task(task_key, 6)
    with pytest.raises(LstmUnavailable, match="needs TensorFlow"):
        LstmForecaster().fit(runs)
    chain = FallbackChain([LstmForecaster(), MedianPeak()])
    with caplog.at_level(logging.WARNING):
        chain.fit(runs)
    forecast = chain.predict(synth.query_for(runs[-1], runs[:-1]))
    assert forecast.estimator == "median_peak"
    lines = [r.getMessage() for r in caplog.records if "lstm dropped" in r.getMessage()]
    assert len(lines) == 1 and "needs TensorFlow" in lines[0]


@pytest.mark.tensorflow
def test_model_store_round_trip_and_tamper_detection(trained, tmp_path):
    from airflow_predictive.storage.model_store import ModelStore, ModelUnavailable

    model, train, held = trained
    store = ModelStore(tmp_path / "models", keep=2)
    manifest = store.save(model, scores={"pinball": 0.1})
    assert set(manifest.files) == {"artefact/model.keras", "artefact/state.json", "artefact/weights.npz"}
    loaded = store.load()
    q = _query(held[2], _history(train, held[2].key))
    assert np.array_equal(loaded.predict(q).curve(MEM).at(0.9), model.predict(q).curve(MEM).at(0.9))
    directory, _ = store.verified()
    with (directory / "model.keras").open("ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(ModelUnavailable, match="checksum mismatch"):
        store.load()


def test_importing_the_estimator_does_not_import_tensorflow():
    import subprocess

    code = (
        "import sys; import airflow_predictive.core.profiler.estimators.lstm; "
        "import airflow_predictive.core.profiler.estimators.statsmodels_ets; "
        "heavy = [m for m in ('tensorflow', 'keras', 'statsmodels') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
