"""The in-pod sampler on the process kubelet: real PID namespaces, real samples in a real store,
a real spike grown from them while metrics.k8s.io (60 s resolution) still shows the old usage.

One emulator and one SQLite store for the module. The pods are what ``with_pod_sampler`` builds
(a native sidecar in a pod with ``shareProcessNamespace: true``); the shaper is ``PodShaper`` with
the store-backed usage source, exactly as the operator and the trigger build it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes import client, config
from kubernetes.client import models as k8s
from kubernetes.client.rest import ApiException

from airflow_predictive.backends.kubernetes.backend import KubernetesPodBackend
from airflow_predictive.backends.kubernetes.pod_sampler import SAMPLER_CONTAINER, with_pod_sampler
from airflow_predictive.backends.kubernetes.pod_samples import SidecarUsage, UsageOrigin, store_samples
from airflow_predictive.backends.kubernetes.settings import KubernetesSettings
from airflow_predictive.core.model.quantity import parse_quantity
from airflow_predictive.core.model.resources import MIB, Metric
from airflow_predictive.core.model.runs import RunSource
from airflow_predictive.core.shaping.events import Action, ShapingEvent, Verdict
from airflow_predictive.core.shaping.policy import ShapingSettings
from airflow_predictive.emulator.kubernetes.emulator import Emulator, NodeSpec
from airflow_predictive.emulator.kubernetes.kubelet import KubeletConfig
from airflow_predictive.emulator.kubernetes.process_kubelet import ProcessKubelet
from airflow_predictive.storage.run_store import SqlRunStore
from airflow_predictive.triggers.pod_shaper import PodShaper, PodTarget
from tests._databases import migrated_engine
from tests._real_parts import missing
from tests.integration.kubernetes.conftest import require_cgroups
from tests.integration.kubernetes.test_kube_process_kubelet import wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.cgroups

_n = itertools.count()
LABEL = "predictive-test/sampled"
# ~10 MiB of interpreter for 5 s, then 140 MiB more at once, held for 40 s (limit 160 MiB)
SPIKE = "import time; time.sleep(5); b = bytearray(140 * 1024 * 1024); time.sleep(40)"


@dataclass
class Cluster:
    emulator: Emulator
    core: client.CoreV1Api
    backend: KubernetesPodBackend
    store: SqlRunStore
    url: str


@dataclass
class Sink:
    events: list[ShapingEvent] = field(default_factory=list)

    def record(self, events: Any) -> None:
        self.events.extend(events)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_cgroups()
    em = Emulator(
        mode="process",
        # metrics-server at its default 60 s resolution (--metric-resolution): a spike is invisible
        # there until the next scrape. At 15 s the scrape after the pod's first one could fall
        # between the spike and a grow delayed by a loaded machine (the spike comes ~5 s in), and
        # the "metrics had not seen it yet" check then failed a gate; at 60 s it has ~50 s of margin
        kubelet=KubeletConfig(actuation_delay_s=0.5, metrics_window_s=15.0, metrics_resolution_s=60.0),
        nodes=(NodeSpec(cpu="4", memory="8Gi"),),
        watch_poll_s=0.05,
    ).start()
    kubelet = em.kubelet
    assert isinstance(kubelet, ProcessKubelet)
    if not kubelet.namespaces:
        em.stop()
        missing("PID namespaces for the process kubelet (unshare --pid --fork --mount-proc, nsenter)")
    folder = tmp_path_factory.mktemp("pod-sampler")
    kc = em.write_kubeconfig(folder / "kubeconfig")
    with migrated_engine("sqlite", folder) as engine:
        backend = KubernetesPodBackend.from_kubeconfig(
            str(kc), settings=KubernetesSettings(container_name="base")
        )
        yield Cluster(
            em,
            client.CoreV1Api(config.new_client_from_config(str(kc))),
            backend,
            SqlRunStore(engine),
            str(engine.url),
        )
        backend.close()
    em.stop()


def logs(core: client.CoreV1Api, name: str, container: str) -> str:
    """The container's log text, "" while it has not started."""
    try:
        resp = core.read_namespaced_pod_log(name, "default", container=container, _preload_content=False)
    except ApiException:
        return ""
    return str(resp.data.decode())


def _pod(name: str, containers: list[k8s.V1Container], *, share: bool | None = None) -> k8s.V1Pod:
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=name, labels={LABEL: name}),
        spec=k8s.V1PodSpec(containers=containers, restart_policy="Never", share_process_namespace=share),
    )


def _create(cluster: Cluster, pod: k8s.V1Pod) -> str:
    body = client.ApiClient().sanitize_for_serialization(pod)
    cluster.core.create_namespaced_pod("default", body)
    return str(pod.metadata.name)


def _container(name: str, command: list[str], memory: str = "64Mi") -> k8s.V1Container:
    res = {"cpu": "500m", "memory": memory}
    return k8s.V1Container(
        name=name,
        image="python:3.11",
        command=command,
        resources=k8s.V1ResourceRequirements(requests=dict(res), limits=dict(res)),
    )


LIST_OTHERS = "sleep 1; for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done"


def test_containers_see_each_other_only_when_the_pod_shares_its_process_namespace(cluster: Cluster) -> None:
    names = {}
    for share in (True, False):
        name = f"ns-{'shared' if share else 'own'}-{next(_n)}"
        names[share] = _create(
            cluster,
            _pod(
                name,
                [
                    _container("a", ["sleep", "31415"]),
                    _container("b", ["sh", "-c", LIST_OTHERS]),
                ],
                share=share or None,
            ),
        )
    for share, name in names.items():
        out = wait_for(lambda n=name: "sh -c" in logs(cluster.core, n, "b") and logs(cluster.core, n, "b"))
        assert ("sleep 31415" in out) is share, out
        assert "sleep infinity" in out if share else True  # the pod's sandbox is its PID 1
        # nothing of the host: neither the emulator's interpreter nor the other pod's processes
        assert "pytest" not in out and "kube-emulator" not in out
        cluster.core.delete_namespaced_pod(name, "default", grace_period_seconds=0)


def test_a_spike_is_grown_from_the_sidecars_samples_while_metrics_still_show_the_old_usage(
    cluster: Cluster,
) -> None:
    name = f"spike-{next(_n)}"
    run_id = f"manual__{name}"
    pod = _pod(name, [_container("base", ["python", "-c", SPIKE], memory="160Mi")])
    with_pod_sampler(pod, "d", "spike", run_id, store_url=cluster.url, interval_s=0.5)
    assert pod.spec.share_process_namespace and pod.spec.init_containers[0].name == SAMPLER_CONTAINER
    _create(cluster, pod)
    ref = f"default/{name}"
    sidecar = SidecarUsage(store_samples(cluster.store), fresh_s=2.0)  # samples at most 2 s old count
    sink = Sink()
    shaper = PodShaper(
        PodTarget(f"{LABEL}={name}", container="base"),
        ShapingSettings(metrics=(Metric.MEMORY_BYTES,)),
        backend=cluster.backend,
        events=sink,
        sidecar=sidecar,
    )
    seen: list[tuple[UsageOrigin, float]] = []  # (origin, memory) of the pod per round
    metrics_then: list[float] = []

    def grown() -> bool:
        shaper.round()
        view = shaper._view
        usage = None if view is None else view.usage_by_ref.get(ref)
        seen.append(
            (sidecar.sources.get(ref, UsageOrigin.NONE), (usage and usage.get(Metric.MEMORY_BYTES)) or 0)
        )
        applied = [e for e in sink.events if e.action is Action.GROW and e.verdict is Verdict.APPLIED]
        if applied:
            raw = client.CustomObjectsApi(cluster.core.api_client).get_namespaced_custom_object(
                "metrics.k8s.io", "v1beta1", "default", "pods", name
            )
            base = next(c for c in raw["containers"] if c["name"] == "base")
            metrics_then.append(int(base["usage"]["memory"].removesuffix("Ki")) * 1024)
        return bool(applied)

    wait_for(grown, timeout=90, every=0.5)
    grow = next(e for e in sink.events if e.action is Action.GROW and e.verdict is Verdict.APPLIED)
    assert grow.usage is not None and grow.usage >= 130 * MIB  # the spike itself, seen by the sampler
    assert grow.after is not None and grow.after > 160 * MIB
    assert UsageOrigin.SIDECAR in {o for o, _ in seen}  # a sample at most 2 s old was the pod's usage
    assert metrics_then and metrics_then[0] < 100 * MIB  # metrics.k8s.io had not seen it yet
    # the cgroup limit of the container really moved, and the pod ran on
    wait_for(lambda: _limit_in_force(cluster, name) > 160 * MIB, 30)
    assert cluster.core.read_namespaced_pod(name, "default").status.phase == "Running"
    (run,) = [r for r in cluster.store.runs(source=RunSource.POD) if r.identity.run_id == run_id]
    assert run.hostname == ref and run.identity.key.task_id == "spike"
    cluster.core.delete_namespaced_pod(name, "default", grace_period_seconds=1)


def _limit_in_force(cluster: Cluster, name: str) -> float:
    pod = cluster.core.read_namespaced_pod(name, "default")
    for status in pod.status.container_statuses or []:
        if status.name == "base" and status.resources is not None and status.resources.limits:
            return float(parse_quantity(status.resources.limits["memory"]))
    return 0.0
