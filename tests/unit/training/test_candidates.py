from __future__ import annotations

import pytest

from airflow_predictive.training import candidates
from airflow_predictive.training.candidates import DEFAULT_CANDIDATES, KNOWN, REFERENCES, factories


def test_every_known_estimator_builds_under_its_own_name() -> None:
    built = {name: make() for name, make in factories(tuple(KNOWN)).items()}
    assert {n: e.name for n, e in built.items()} == {n: n for n in built}
    assert set(REFERENCES) <= set(built) and set(DEFAULT_CANDIDATES) <= set(KNOWN)


def test_unknown_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown estimator 'prophet'"):
        factories(("prophet",))


def test_missing_optional_library_leaves_the_candidate_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(candidates.KNOWN, "lstm", ("no_such_module_here", "Model", {}))
    assert set(factories(("vpa", "lstm"))) == {"vpa"}


def test_combined_candidate_combines_the_lstm_and_scaled_curve_candidates() -> None:
    from airflow_predictive.core.profiler.selection import composite_members

    assert composite_members(factories(("lstm", "scaled_curve", "combined"))) == {
        "combined": ("lstm", "scaled_curve")
    }
    assert composite_members(factories(("scaled_curve", "combined"))) == {}  # no LSTM: not a composite
    assert "combined" not in DEFAULT_CANDIDATES  # opt-in (see the candidates module)
