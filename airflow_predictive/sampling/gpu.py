"""GPU utilisation and memory of one process tree, through NVML or nvidia-smi, else absent.

``pynvml`` (the ``nvidia-ml-py`` package) is imported lazily and only when installed; without it
``nvidia-smi`` on PATH is used; with neither the GPU metrics are absent (``None``), never zero.
Zero is reported only when a GPU is there and the tree uses none of it.

Utilisation is per process where the driver reports it (NVML process samples); otherwise a
device's utilisation is attributed to the tree only when every compute process on that device
belongs to the tree, and is absent when the device is shared with foreign processes.

It must never raise into the sampler: a failing driver call logs once and gives an absent reading.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Collection

log = logging.getLogger(__name__)

MIB = 1024 * 1024


class GpuMode:
    """The values ``gpu_metrics`` / ``--gpu`` accept."""

    AUTO = "auto"
    NVML = "nvml"
    NVIDIA_SMI = "nvidia-smi"
    OFF = "off"
    ALL: tuple[str, ...] = (AUTO, NVML, NVIDIA_SMI, OFF)


@dataclass(frozen=True, slots=True)
class GpuUsage:
    """util: summed over devices (1.0 = one device busy); memory_bytes: summed over devices."""

    util: float | None
    memory_bytes: float | None


class GpuReader(Protocol):
    name: str

    def read(self, pids: Collection[int], now: float) -> GpuUsage | None:
        """Usage of these processes at monotonic time ``now``, or None when the GPU is unreadable."""
        ...


class _WarnOnce:
    def __init__(self) -> None:
        self._said: set[str] = set()

    def __call__(self, key: str, msg: str, *args: object) -> None:
        if key not in self._said:
            self._said.add(key)
            log.warning(msg, *args)


class NvmlGpu:
    """Reads NVML through a pynvml-shaped object (the real module, or a fake in tests)."""

    name = "nvml"

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        self._last_ts: dict[int, int] = {}
        self._warn = _WarnOnce()

    @classmethod
    def load(cls) -> NvmlGpu | None:
        try:
            import pynvml  # the nvidia-ml-py package; optional

            pynvml.nvmlInit()
            if pynvml.nvmlDeviceGetCount() < 1:
                return None
        except Exception as exc:  # not installed, no driver, no device: all mean "no NVML"
            log.debug("predictive sampler: NVML unavailable: %s", exc)
            return None
        return cls(pynvml)

    def read(self, pids: Collection[int], now: float = 0.0) -> GpuUsage | None:
        nvml = self._nvml
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except Exception as exc:
            self._warn("count", "predictive sampler: NVML stopped answering (%s); GPU usage absent", exc)
            return None
        memory: float | None = 0.0
        util: float | None = 0.0
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                procs = list(nvml.nvmlDeviceGetComputeRunningProcesses(handle))
            except Exception as exc:
                self._warn(f"dev{index}", "predictive sampler: NVML device %s unreadable (%s)", index, exc)
                return None
            mine = [p for p in procs if int(p.pid) in pids]
            if not mine:
                continue
            used = [getattr(p, "usedGpuMemory", None) for p in mine]
            if memory is not None and all(isinstance(u, int | float) and u >= 0 for u in used):
                memory += float(sum(used))  # type: ignore[arg-type]
            else:
                memory = None  # the driver hides per-process memory (e.g. some containers)
            dev_util = self._device_util(handle, index, pids, all_mine=len(mine) == len(procs))
            util = None if util is None or dev_util is None else util + dev_util
        return GpuUsage(util=util, memory_bytes=memory)

    def _device_util(self, handle: Any, index: int, pids: Collection[int], *, all_mine: bool) -> float | None:
        nvml = self._nvml
        try:
            samples = list(nvml.nvmlDeviceGetProcessUtilization(handle, self._last_ts.get(index, 0)))
        except Exception as exc:
            if "not found" in str(exc).lower():
                return 0.0  # NVML_ERROR_NOT_FOUND: no process ran on the device since the last call
            samples = None
            self._warn(f"putil{index}", "predictive sampler: no per-process GPU utilisation (%s)", exc)
        if samples is not None:
            per_pid: dict[int, list[float]] = {}
            for s in samples:
                self._last_ts[index] = max(self._last_ts.get(index, 0), int(s.timeStamp))
                if int(s.pid) in pids:
                    per_pid.setdefault(int(s.pid), []).append(float(s.smUtil))
            return sum(sum(v) / len(v) for v in per_pid.values()) / 100.0
        if not all_mine:
            return None  # shared device without per-process numbers: cannot attribute
        try:
            return float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu) / 100.0
        except Exception:
            return None


def _number(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None  # "[N/A]", "[Not Supported]"


class NvidiaSmiGpu:
    """Reads ``nvidia-smi`` query output; at most once per ``min_period_s`` (it costs ~50 ms CPU)."""

    name = "nvidia-smi"

    def __init__(self, exe: str, *, min_period_s: float = 5.0, timeout_s: float = 5.0) -> None:
        self._exe = exe
        self._min_period_s = min_period_s
        self._timeout_s = timeout_s
        self._last_t: float | None = None
        self._last: GpuUsage | None = None
        self._warn = _WarnOnce()

    @classmethod
    def find(cls, **kwargs: float) -> NvidiaSmiGpu | None:
        """nvidia-smi from PATH, if it is there and lists at least one GPU."""
        exe = shutil.which("nvidia-smi")
        if not exe:
            return None
        reader = cls(exe, **kwargs)
        try:
            if not reader._query("--query-gpu=uuid,utilization.gpu"):
                return None
        except (OSError, subprocess.SubprocessError) as exc:
            log.debug("predictive sampler: nvidia-smi present but unusable: %s", exc)
            return None
        return reader

    def _query(self, *args: str) -> list[list[str]]:
        out = subprocess.run(
            [self._exe, *args, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=self._timeout_s,
            check=True,
        ).stdout
        return [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]

    def read(self, pids: Collection[int], now: float = 0.0) -> GpuUsage | None:
        if self._last_t is not None and now - self._last_t < self._min_period_s:
            return self._last
        try:
            devices = self._query("--query-gpu=uuid,utilization.gpu")
            apps = self._query("--query-compute-apps=pid,gpu_uuid,used_memory")
        except (OSError, subprocess.SubprocessError) as exc:
            self._warn("run", "predictive sampler: nvidia-smi failed (%s); GPU usage absent", exc)
            return None
        self._last_t = now
        self._last = self._parse(devices, apps, pids)
        return self._last

    @staticmethod
    def _parse(devices: list[list[str]], apps: list[list[str]], pids: Collection[int]) -> GpuUsage | None:
        dev_util = {row[0]: _number(row[1]) for row in devices if len(row) >= 2}
        if not dev_util:
            return None
        memory: float | None = 0.0
        apps_on: dict[str, list[int]] = {}
        for row in apps:
            if len(row) < 3 or not row[0].isdigit():
                continue  # a corrupt or partial row
            pid, uuid, used = int(row[0]), row[1], _number(row[2])
            apps_on.setdefault(uuid, []).append(pid)
            if pid in pids:
                memory = None if memory is None or used is None else memory + used * MIB
        util: float | None = 0.0
        for uuid, on in apps_on.items():
            if not any(p in pids for p in on):
                continue
            u = dev_util.get(uuid)
            if u is None or not all(p in pids for p in on):
                util = None  # shared with foreign processes, or no utilisation reported
            elif util is not None:
                util += u / 100.0
        return GpuUsage(util=util, memory_bytes=memory)


def build_gpu(mode: str) -> GpuReader | None:
    """The GPU reader for a ``--gpu`` mode, or None (GPU metrics absent). Never raises."""
    if mode == GpuMode.OFF:
        return None
    if mode in (GpuMode.AUTO, GpuMode.NVML):
        reader: GpuReader | None = NvmlGpu.load()
        if reader is not None or mode == GpuMode.NVML:
            if reader is None:
                log.warning("predictive sampler: gpu=nvml but NVML is not usable; GPU usage absent")
            return reader
    if mode in (GpuMode.AUTO, GpuMode.NVIDIA_SMI):
        reader = NvidiaSmiGpu.find()
        if reader is None and mode == GpuMode.NVIDIA_SMI:
            log.warning("predictive sampler: gpu=nvidia-smi but it is not on PATH; GPU usage absent")
        return reader
    log.warning("predictive sampler: unknown gpu mode %r; GPU usage absent", mode)
    return None
