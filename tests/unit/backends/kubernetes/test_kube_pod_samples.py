"""A shaped pod's usage comes from the in-pod sampler's newest store sample while it is fresh and
from metrics.k8s.io otherwise; a failing store never stops a round. The samples are read from a
real store in one query for all pods."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from airflow_predictive.backends.kubernetes.pod_samples import SidecarUsage, UsageOrigin
from airflow_predictive.core.model.resources import MIB, Metric, ResourceVector
from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord, RunSource, TaskKey
from airflow_predictive.core.model.series import ResourceSample


@dataclass(frozen=True)
class Sample:
    at: float
    usage: ResourceVector


METRICS = {"ns/a": ResourceVector(cpu_cores=0.2, memory_bytes=100 * MIB)}


def test_a_fresh_sidecar_sample_wins_and_fills_its_gaps_from_metrics() -> None:
    sample = Sample(99.0, ResourceVector(memory_bytes=300 * MIB))
    usage = SidecarUsage(lambda refs: {"ns/a": sample}, wall=lambda: 100.0)
    chosen = usage.merge(["ns/a"], METRICS)["ns/a"]
    assert chosen.origin is UsageOrigin.SIDECAR and chosen.age_s == pytest.approx(1.0)
    assert chosen.usage is not None
    assert chosen.usage.get(Metric.MEMORY_BYTES) == 300 * MIB  # the spike metrics has not seen yet
    assert chosen.usage.get(Metric.CPU_CORES) == 0.2  # the sample had no CPU rate yet
    assert usage.counts() == {"sidecar": 1}


def test_a_stale_sample_falls_back_to_metrics() -> None:
    usage = SidecarUsage(
        lambda refs: {"ns/a": Sample(90.0, ResourceVector(memory_bytes=1.0))}, wall=lambda: 100.0
    )
    chosen = usage.merge(["ns/a", "ns/b"], METRICS)
    assert chosen["ns/a"].origin is UsageOrigin.METRICS
    assert chosen["ns/a"].usage == METRICS["ns/a"]
    assert chosen["ns/b"].origin is UsageOrigin.NONE and chosen["ns/b"].usage is None


def test_a_failing_store_means_metrics_for_the_round() -> None:
    calls: list[list[str]] = []

    def broken(refs: Any) -> Any:
        calls.append(list(refs))
        raise ConnectionError("database down")

    usage = SidecarUsage(broken, wall=lambda: 100.0)
    assert usage.merge(["ns/a"], METRICS)["ns/a"].origin is UsageOrigin.METRICS
    assert calls == [["ns/a"]]  # one query for all the round's pods


def test_newest_samples_come_from_the_store_per_pod_in_one_query(db_engine: Any) -> None:
    from airflow_predictive.storage.run_store import SqlRunStore

    store = SqlRunStore(db_engine)
    start = datetime(2026, 1, 1, tzinfo=UTC)

    def pod_run(pod: str, try_number: int, samples: list[tuple[float, float]], *, ended: bool = False) -> int:
        ident = RunIdentity(TaskKey("d", "t"), "r", try_number, RunSource.POD)
        pk = store.begin_leg(RunRecord(ident, start=start, hostname=pod), at=start).run_pk
        store.add_samples(pk, [ResourceSample(t, ResourceVector(memory_bytes=m * MIB)) for t, m in samples])
        if ended:
            store.finish_run(pk, outcome=Outcome.UNKNOWN, end=start)
        return pk

    pod_run("ns/a", 1, [(1.0, 10), (2.0, 20), (3.0, 30)])
    pod_run("ns/b", 2, [(5.0, 50)])
    pod_run("ns/c", 3, [(9.0, 90)], ended=True)  # the pod ended: not a usage now
    newest = store.newest_samples(["ns/a", "ns/b", "ns/c", "ns/none"])
    assert set(newest) == {"ns/a", "ns/b"}
    assert newest["ns/a"].at == pytest.approx(start.timestamp() + 3.0)
    assert newest["ns/a"].usage.get(Metric.MEMORY_BYTES) == 30 * MIB
    assert newest["ns/b"].usage.get(Metric.MEMORY_BYTES) == 50 * MIB
    assert all(r.identity.source is not RunSource.POD for r in store.runs())  # never history


def test_the_shaper_queries_the_store_only_for_pods_that_carry_the_sampler() -> None:
    from airflow_predictive.triggers.pod_shaper import SnapshotPods

    plain = {"spec": {"containers": [{"name": "base"}]}}
    sampled = {"spec": {"containers": [{"name": "base"}], "initContainers": [{"name": "predictive-sampler"}]}}

    class Backend:
        name = "kubernetes"

        def __init__(self, pods: dict[str, Any]) -> None:
            self.pods = pods

        def snapshot(self, selector: str) -> Any:
            return dict(self.pods), {ref: METRICS["ns/a"] for ref in self.pods}

    asked: list[list[str]] = []

    def newest(refs: Any) -> Any:
        asked.append(list(refs))
        return {"ns/b": Sample(100.0, ResourceVector(memory_bytes=500 * MIB))}

    view = SnapshotPods(Backend({"ns/a": plain}), "base", SidecarUsage(newest, wall=lambda: 100.0))  # type: ignore[arg-type]
    view.refresh("x")
    assert asked == [] and view.usage_by_ref["ns/a"] == METRICS["ns/a"]  # no sampler: no query
    view.backend = Backend({"ns/a": plain, "ns/b": sampled})  # type: ignore[assignment]
    view.refresh("x")
    assert asked == [["ns/b"]]  # one query, only for the sampled pod
    assert view.usage_by_ref["ns/b"].get(Metric.MEMORY_BYTES) == 500 * MIB
    assert view.usage_by_ref["ns/a"] == METRICS["ns/a"]
