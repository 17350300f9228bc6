"""GPUs as a provision-time resource in front of any local backend (cgroups, or the fake).

Why it exists: a GPU cannot be resized in place, so it is handed out whole, at provision, by
setting ``CUDA_VISIBLE_DEVICES`` and ``NVIDIA_VISIBLE_DEVICES`` to the assigned devices' UUIDs
(UUIDs, not indexes: CUDA's default device order differs from NVML's). CPU and memory go to the
wrapped backend unchanged, so a GPU task is still limited and measured by its cgroup. Asking for
more GPUs than the host has is INFEASIBLE; more than are free right now is PENDING; changing the
GPU share of a running task is UNSUPPORTED ("GPUs are provision-time only").

It must never claim a GPU reading it did not make: GPU usage comes from NVML for the assigned
devices only, and is absent (None) without NVML or without assigned devices. Tasks that asked
for no GPU get ``CUDA_VISIBLE_DEVICES=""`` on a host that has GPUs, so they cannot grab one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from airflow_predictive.backends.gpu.discovery import Discovery, GpuDevice, discover, read_devices
from airflow_predictive.core.model.backend import (
    Allocation,
    Bounds,
    Capabilities,
    Capacity,
    Handle,
    ProvisionSpec,
    ResizeResult,
    ResizeStatus,
    TaskState,
    changed_metrics,
)
from airflow_predictive.core.model.resources import Metric, ResourceVector
from airflow_predictive.core.ports import ProvisionError

if TYPE_CHECKING:
    from airflow_predictive.core.ports import ResourceBackend

log = logging.getLogger(__name__)

BACKEND_NAME = "gpu"
GPU_METRICS = frozenset({Metric.GPU_UTIL, Metric.GPU_MEMORY_BYTES})
PROVISION_ONLY_REASON = "GPUs are provision-time only"


@dataclass
class _Assigned:
    inner: Handle
    devices: tuple[GpuDevice, ...]
    released: bool = False


class GpuBackend:
    """Assigns whole GPUs at provision and delegates everything else to ``inner``."""

    name = BACKEND_NAME

    def __init__(
        self, inner: ResourceBackend, discovery: Discovery | None = None, *, nvml: Any = None
    ) -> None:
        self.inner = inner
        self.discovery = discovery if discovery is not None else discover(nvml=nvml)
        self._nvml = nvml if self.discovery.source == "nvml" else None
        self._tasks: dict[str, _Assigned] = {}
        if not self.discovery.devices:
            log.info("no GPU available to predictive tasks: %s", self.discovery.reason)

    @classmethod
    def for_mode(cls, inner: ResourceBackend, mode: str) -> GpuBackend:
        """Discovery as ``mode`` says ('auto', 'nvml', 'nvidia-smi', 'off': ``[predictive]
        gpu_metrics``, which the runtime reads)."""
        from airflow_predictive.backends.gpu.discovery import load_nvml

        nvml = load_nvml() if mode in ("auto", "nvml") else None
        return cls(inner, discover(mode, nvml=nvml), nvml=nvml)

    @property
    def devices(self) -> tuple[GpuDevice, ...]:
        return self.discovery.devices

    def _held(self) -> set[int]:
        return {d.index for a in self._tasks.values() if not a.released for d in a.devices}

    # -- what it can do --------------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        inner = self.inner.capabilities()
        bounds = dict(inner.bounds)
        bounds[Metric.GPU_UTIL] = Bounds(0.0, float(len(self.devices)), 1.0)
        gpu_note = (
            f"{len(self.devices)} GPU(s) via {self.discovery.source}"
            if self.devices
            else (f"no GPU: {self.discovery.reason}")
        )
        return Capabilities(
            live=inner.live - GPU_METRICS,
            provision_only=inner.provision_only | GPU_METRICS,
            bounds=bounds,
            enforcing=inner.enforcing,
            note=f"{inner.note}; {gpu_note}" if inner.note else gpu_note,
        )

    def capacity(self) -> Capacity:
        """The inner pool plus devices (``gpu_util`` counts devices: 1.0 = one whole GPU)."""
        inner = self.inner.capacity()
        memories = [d.memory_bytes for d in self.devices]
        total_memory = None if not memories or None in memories else float(sum(m or 0.0 for m in memories))
        held = [d for a in self._tasks.values() if not a.released for d in a.devices]
        allocatable = inner.allocatable.with_value(Metric.GPU_UTIL, float(len(self.devices))).with_value(
            Metric.GPU_MEMORY_BYTES, total_memory
        )
        allocated = inner.allocated
        if held:
            allocated = allocated.with_value(Metric.GPU_UTIL, float(len(held)))
            if total_memory is not None:
                allocated = allocated.with_value(
                    Metric.GPU_MEMORY_BYTES, float(sum(d.memory_bytes or 0.0 for d in held))
                )
        return Capacity(allocatable=allocatable, allocated=allocated)

    def feasibility(self, gpus: int) -> ResizeResult:
        """Whether ``gpus`` devices could be given now: APPLIED (yes), PENDING, INFEASIBLE, REJECTED."""
        if gpus < 0:
            return ResizeResult(ResizeStatus.REJECTED, f"cannot ask for {gpus} GPUs")
        total = len(self.devices)
        if gpus > total:
            why = f"{self.discovery.reason}" if not total else f"the host has {total}"
            return ResizeResult(ResizeStatus.INFEASIBLE, f"{gpus} GPU(s) asked, {why}")
        free = total - len(self._held())
        if gpus > free:
            return ResizeResult(ResizeStatus.PENDING, f"{gpus} GPU(s) asked, {free} of {total} free now")
        return ResizeResult(ResizeStatus.APPLIED, f"{gpus} GPU(s) available")

    # -- lifecycle ---------------------------------------------------------------------------------

    def provision(self, spec: ProvisionSpec, allocation: Allocation) -> Handle:
        verdict = self.feasibility(spec.gpus)
        if not verdict.applied:
            raise ProvisionError(f"{spec.name}: {verdict.reason}", status=verdict.status)
        held = self._held()
        chosen = tuple([d for d in self.devices if d.index not in held][: spec.gpus])
        env = dict(spec.env)
        if chosen or self.devices:
            visible = ",".join(d.uuid for d in chosen)
            env["CUDA_VISIBLE_DEVICES"] = visible
            env["NVIDIA_VISIBLE_DEVICES"] = visible or "void"
        inner = self.inner.provision(replace(spec, gpus=0, env=env), allocation)
        handle = Handle(
            backend=self.name, name=spec.name, ref=inner.ref, allocation=allocation, pid=inner.pid
        )
        self._tasks[handle.ref] = _Assigned(inner, chosen)
        return handle

    def assigned(self, handle: Handle) -> tuple[GpuDevice, ...]:
        task = self._tasks.get(handle.ref)
        return () if task is None or task.released else task.devices

    def resize(self, handle: Handle, allocation: Allocation) -> ResizeResult:
        task = self._tasks.get(handle.ref)
        if task is None or task.released:
            return ResizeResult(ResizeStatus.REJECTED, "not a running task of this backend (released?)")
        if changed_metrics(handle.allocation, allocation) & GPU_METRICS:
            return ResizeResult(ResizeStatus.UNSUPPORTED, PROVISION_ONLY_REASON)
        return self.inner.resize(task.inner, allocation)

    def resize_gpus(self, handle: Handle, gpus: int) -> ResizeResult:
        """Changing the device count of a running task is never possible."""
        return ResizeResult(ResizeStatus.UNSUPPORTED, PROVISION_ONLY_REASON)

    def usage(self, handle: Handle) -> ResourceVector | None:
        task = self._tasks.get(handle.ref)
        if task is None or task.released:
            return None
        usage = self.inner.usage(task.inner)
        if usage is None or not task.devices or self._nvml is None:
            return usage
        try:
            readings = read_devices(self._nvml, [d.index for d in task.devices])
        except Exception as exc:
            log.warning("GPU reading failed for %s: %s", handle.name, exc)
            return usage
        utils = [r.utilisation for r in readings.values()]
        used = [r.memory_used_bytes for r in readings.values()]
        return usage.with_value(
            Metric.GPU_UTIL, None if None in utils else sum(u or 0.0 for u in utils)
        ).with_value(Metric.GPU_MEMORY_BYTES, None if None in used else sum(u or 0.0 for u in used))

    def state(self, handle: Handle) -> TaskState:
        task = self._tasks.get(handle.ref)
        if task is None:
            return self.inner.state(handle)
        return self.inner.state(task.inner)

    def release(self, handle: Handle) -> None:
        task = self._tasks.get(handle.ref)
        if task is None or task.released:
            return
        self.inner.release(task.inner)
        task.released = True
