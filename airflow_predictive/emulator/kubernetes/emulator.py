"""The emulated cluster as one object: store + kubelet + API + HTTP server + kubeconfig.

``Emulator(...).start()`` serves on 127.0.0.1 (a free port unless one is given) and, unless
``auto_tick=False``, ticks the kubelet on a background thread with the system clock. Tests pass a
manual clock and ``auto_tick=False`` and call ``tick()`` themselves. It never binds anything but
the loopback address it is given and never writes outside the kubeconfig path it is handed (the
process kubelet also writes container logs to a temporary folder and makes cgroups, all removed
by ``stop()``).

``mode="simulated"`` (default) uses workload curves; ``mode="process"`` runs each container as a
local process under its own cgroup (``process_kubelet``). Both share the store, API and rules.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_predictive.emulator.kubernetes.api import DEFAULT_CLASS_ANNOTATION, Api
from airflow_predictive.emulator.kubernetes.faults import Faults
from airflow_predictive.emulator.kubernetes.kubelet import Kubelet, KubeletConfig
from airflow_predictive.emulator.kubernetes.resources import (
    NAMESPACES,
    NODEPOOLS,
    NODES,
    PRIORITY_CLASSES,
    PVCS,
    STORAGE_CLASSES,
)
from airflow_predictive.emulator.kubernetes.store import Store

if TYPE_CHECKING:
    from airflow_predictive.backends.cgroups.backend import CgroupBackend
    from airflow_predictive.core.model.nodes import NodePool
    from airflow_predictive.core.ports import Clock
    from airflow_predictive.emulator.kubernetes.images import ImageMap
    from airflow_predictive.emulator.kubernetes.server import EmulatorHTTPServer


@dataclass(frozen=True)
class NodeSpec:
    """One emulated node: allocatable CPU (cores), memory (bytes), pod slots and GPUs."""

    name: str = "emulator-node-1"
    cpu: str = "4"
    memory: str = "16Gi"
    pods: int = 110
    gpus: int = 0


class Emulator:
    """A Kubernetes 1.35 API server plus simulated kubelet, on a real HTTP port."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        kubelet: KubeletConfig | None = None,
        nodes: tuple[NodeSpec, ...] = (NodeSpec(),),
        auto_tick: bool = True,
        tick_interval_s: float = 0.05,
        watch_poll_s: float = 0.5,
        mode: str = "simulated",
        images: ImageMap | None = None,
        cgroups: CgroupBackend | None = None,
        node_pools: tuple[NodePool, ...] = (),
    ) -> None:
        """``mode``: "simulated" (workload curves, scales to thousands of pods) or "process" (each
        container a real local process under its own cgroup; see ``process_kubelet``).
        ``node_pools``: Karpenter NodePools served under karpenter.sh/v1 whose nodes the emulated
        autoscaler (``nodes.NodeAutoscaler``) launches for Pending pods and consolidates."""
        from airflow_predictive.core.ports import SystemClock

        self.clock: Clock = clock or SystemClock()
        self.store = Store(self._timestamp)
        self.lock = threading.RLock()
        self.mode = mode
        if mode == "process":
            from airflow_predictive.emulator.kubernetes.process_kubelet import ProcessKubelet

            self.kubelet: Kubelet = ProcessKubelet(
                self.store, self.clock, kubelet, images=images, backend=cgroups
            )
        elif mode == "simulated":
            self.kubelet = Kubelet(self.store, self.clock, kubelet)
        else:
            raise ValueError(f"unknown kubelet mode {mode!r} (simulated or process)")
        self.api = Api(self.store, self.kubelet, self.lock, watch_poll_s)
        from airflow_predictive.emulator.kubernetes.nodes import NodeAutoscaler

        self.autoscaler = NodeAutoscaler(self.store, self.clock, self.kubelet)
        self.faults = Faults()
        self.auto_tick = auto_tick
        self.tick_interval_s = tick_interval_s
        self._server: EmulatorHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._resizing_volumes: dict[str, float] = {}
        for ns in ("default", "kube-system"):
            self.store.create(
                NAMESPACES,
                "",
                {
                    "metadata": {"name": ns},
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                },
            )
        for node in nodes:
            self.add_node(node)
        self._add_priority_classes()
        for pool in node_pools:
            self.add_node_pool(pool)
        self.store.create(
            STORAGE_CLASSES,
            "",
            {
                "metadata": {"name": "standard", "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
                "provisioner": "emulator.predictive/hostpath",
                "allowVolumeExpansion": True,
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate",
            },
        )
        self.store.create(
            STORAGE_CLASSES,
            "",
            {
                "metadata": {"name": "fixed"},
                "provisioner": "emulator.predictive/hostpath",
                "allowVolumeExpansion": False,
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate",
            },
        )

    def _timestamp(self) -> str:
        return self.clock.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def add_node(self, node: NodeSpec) -> None:
        resources: dict[str, Any] = {
            "cpu": node.cpu,
            "memory": node.memory,
            "pods": str(node.pods),
            "ephemeral-storage": "100Gi",
        }
        if node.gpus:
            resources["nvidia.com/gpu"] = str(node.gpus)
        self.store.create(
            NODES,
            "",
            {
                "metadata": {
                    "name": node.name,
                    "labels": {"kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux"},
                },
                "spec": {},
                "status": {
                    "capacity": dict(resources),
                    "allocatable": dict(resources),
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "kubelet is posting ready status",
                        }
                    ],
                    "nodeInfo": {
                        "architecture": "amd64",
                        "bootID": node.name,
                        "containerRuntimeVersion": "containerd://2.1.0",
                        "kernelVersion": "6.8.0",
                        "kubeProxyVersion": "",
                        "kubeletVersion": "v1.35.0",
                        "machineID": node.name,
                        "operatingSystem": "linux",
                        "osImage": "Predictive emulator",
                        "systemUUID": node.name,
                    },
                    "addresses": [
                        {"type": "InternalIP", "address": "10.0.0.1"},
                        {"type": "Hostname", "address": node.name},
                    ],
                },
            },
        )

    def _add_priority_classes(self) -> None:
        from airflow_predictive.emulator.kubernetes.priority import builtin_classes

        for obj in builtin_classes():
            self.store.create(PRIORITY_CLASSES, "", obj)

    def add_node_pool(self, pool: NodePool) -> None:
        """Serve ``pool`` as a karpenter.sh/v1 NodePool; the autoscaler launches its nodes."""
        from airflow_predictive.backends.nodes.karpenter import to_object

        self.store.create(NODEPOOLS, "", to_object(pool))

    # ---- time ---------------------------------------------------------------------------------
    def tick(self) -> None:
        """One step of every simulated controller (scheduler, kubelet, node autoscaler, volume
        expansion)."""
        with self.lock:
            self.kubelet.tick()
            self.autoscaler.tick()
            self._tick_volumes()

    def _tick_volumes(self) -> None:
        from airflow_predictive.emulator.kubernetes import quantity

        now = self.clock.monotonic()
        for pvc in self.store.list(PVCS, None)[0]:
            uid = pvc["metadata"]["uid"]
            want = ((pvc.get("spec", {}).get("resources") or {}).get("requests") or {}).get("storage")
            have = ((pvc.get("status") or {}).get("capacity") or {}).get("storage")
            if want is None or have is None or quantity.parse(want) <= quantity.parse(have):
                self._resizing_volumes.pop(uid, None)
                continue
            started = self._resizing_volumes.setdefault(uid, now)
            meta = pvc["metadata"]
            done = now - started >= self.kubelet.config.actuation_delay_s

            def mutate(cur: dict[str, Any], done: bool = done, want: str = want) -> dict[str, Any]:
                status = cur.setdefault("status", {})
                status["allocatedResources"] = {"storage": want}
                if done:
                    status["capacity"] = {"storage": want}
                    status.pop("conditions", None)
                    status.pop("allocatedResourceStatuses", None)
                else:
                    status["allocatedResourceStatuses"] = {"storage": "ControllerResizeInProgress"}
                    status["conditions"] = [
                        {
                            "type": "Resizing",
                            "status": "True",
                            "lastProbeTime": None,
                            "lastTransitionTime": self._timestamp(),
                        }
                    ]
                return cur

            self.store.replace(PVCS, meta["namespace"], meta["name"], mutate, spec_changes_generation=False)

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.tick_interval_s):
            try:
                self.tick()
            except Exception:  # a broken tick must not kill the emulator; it is logged
                import logging

                logging.getLogger(__name__).exception("emulator tick failed")

    # ---- serving ------------------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> Emulator:
        from airflow_predictive.emulator.kubernetes.server import EmulatorHTTPServer

        self._server = EmulatorHTTPServer((host, port), self.api, self.faults)
        serve = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="kube-emulator-http",
            daemon=True,
        )
        serve.start()
        self._threads.append(serve)
        if self.auto_tick:
            ticker = threading.Thread(target=self._tick_loop, name="kube-emulator-kubelet", daemon=True)
            ticker.start()
            self._threads.append(ticker)
        return self

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not serving")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop serving; the process kubelet kills its processes and removes its cgroups."""
        self._stop.set()
        self.store.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()
        with self.lock:
            self.kubelet.shutdown()

    def __enter__(self) -> Emulator:
        return self if self._server is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_kubeconfig(
        self, path: str | Path, *, context: str = "predictive-emulator", namespace: str = "default"
    ) -> Path:
        return write_kubeconfig(path, self.url, context=context, namespace=namespace)


def write_kubeconfig(
    path: str | Path, server: str, *, context: str = "predictive-emulator", namespace: str = "default"
) -> Path:
    """A kubeconfig with one cluster/user/context pointing at ``server`` (plain HTTP, token auth)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        "apiVersion: v1\n"
        "kind: Config\n"
        "clusters:\n"
        f"- name: {context}\n"
        "  cluster:\n"
        f"    server: {server}\n"
        "users:\n"
        f"- name: {context}\n"
        "  user:\n"
        "    token: emulator\n"
        "contexts:\n"
        f"- name: {context}\n"
        "  context:\n"
        f"    cluster: {context}\n"
        f"    user: {context}\n"
        f"    namespace: {namespace}\n"
        f"current-context: {context}\n"
    )
    return target
