"""Find this host's GPUs: NVML (pynvml / nvidia-ml-py, imported lazily), else ``nvidia-smi -L``.

Why it exists: the GPU backend hands out whole devices, so it must know which exist. Discovery
reports where its answer came from and, when it found nothing, why (no library, no binary, driver
error), so that "no GPU" is an explained fact, not a silent zero. Device-level readings
(utilisation, memory used) go through the same NVML handle.

It must never import NVML at module import time, never fail when no GPU stack is installed, and
never make up a reading: a value it could not read is None.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

_SMI_LINE = re.compile(r"^GPU\s+(\d+):\s*(.*?)\s*\(UUID:\s*([^)]+)\)\s*$")


@dataclass(frozen=True, slots=True)
class GpuDevice:
    index: int
    uuid: str
    name: str
    memory_bytes: float | None = None


@dataclass(frozen=True, slots=True)
class Discovery:
    """Devices found (possibly none), the source used ('nvml', 'nvidia-smi', 'none') and notes."""

    devices: tuple[GpuDevice, ...]
    source: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DeviceReading:
    utilisation: float | None  # 0..1
    memory_used_bytes: float | None


def parse_nvidia_smi_list(text: str) -> list[GpuDevice]:
    """``nvidia-smi -L`` lines: ``GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5d3f...)``; MIG lines skipped."""
    out: list[GpuDevice] = []
    for line in text.splitlines():
        m = _SMI_LINE.match(line.strip())
        if m:
            out.append(GpuDevice(index=int(m.group(1)), uuid=m.group(3).strip(), name=m.group(2)))
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def load_nvml() -> Any:
    """The pynvml module, or None when neither nvidia-ml-py nor pynvml is installed."""
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


def discover_nvml(nvml: Any) -> list[GpuDevice]:
    """Devices through an NVML module (or an object with the same functions); raises on driver errors."""
    nvml.nvmlInit()
    try:
        devices = []
        for i in range(int(nvml.nvmlDeviceGetCount())):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            try:
                memory: float | None = float(nvml.nvmlDeviceGetMemoryInfo(h).total)
            except Exception:
                memory = None
            devices.append(
                GpuDevice(
                    index=i,
                    uuid=_text(nvml.nvmlDeviceGetUUID(h)),
                    name=_text(nvml.nvmlDeviceGetName(h)),
                    memory_bytes=memory,
                )
            )
        return devices
    finally:
        nvml.nvmlShutdown()


def read_devices(nvml: Any, indexes: Sequence[int]) -> dict[int, DeviceReading]:
    """Utilisation and memory used of the given devices; a reading that fails is None."""
    out: dict[int, DeviceReading] = {}
    nvml.nvmlInit()
    try:
        for i in indexes:
            util: float | None
            used: float | None
            try:
                h = nvml.nvmlDeviceGetHandleByIndex(i)
            except Exception:
                out[i] = DeviceReading(None, None)
                continue
            try:
                util = float(nvml.nvmlDeviceGetUtilizationRates(h).gpu) / 100.0
            except Exception:
                util = None
            try:
                used = float(nvml.nvmlDeviceGetMemoryInfo(h).used)
            except Exception:
                used = None
            out[i] = DeviceReading(util, used)
    finally:
        nvml.nvmlShutdown()
    return out


def visible_filter(devices: Sequence[GpuDevice], visible: str | None) -> list[GpuDevice]:
    """Restrict to what ``CUDA_VISIBLE_DEVICES`` of this process allows (indexes or UUIDs)."""
    if visible is None:
        return list(devices)
    wanted = [v.strip() for v in visible.split(",") if v.strip()]
    out = []
    for w in wanted:
        for d in devices:
            matches = (w.isdigit() and d.index == int(w)) or d.uuid == w or d.uuid.startswith(w)
            if matches and d not in out:
                out.append(d)
    return out


def discover(
    mode: str = "auto",
    *,
    nvml: Any = None,
    smi: str = "nvidia-smi",
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
    environ: dict[str, str] | None = None,
) -> Discovery:
    """Devices by ``mode`` ('auto': NVML then nvidia-smi; 'nvml'; 'nvidia-smi'; 'off')."""
    env = os.environ if environ is None else environ
    notes: list[str] = []
    if mode == "off":
        return Discovery((), "none", "GPU discovery is off ([predictive] gpu_metrics = off)")
    if mode in ("auto", "nvml"):
        module = nvml if nvml is not None else load_nvml()
        if module is None:
            notes.append("NVML library (nvidia-ml-py) is not installed")
        else:
            try:
                found = visible_filter(discover_nvml(module), env.get("CUDA_VISIBLE_DEVICES"))
                return Discovery(tuple(found), "nvml", "" if found else "NVML reports no usable device")
            except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded ...
                notes.append(f"NVML failed: {exc}")
    if mode in ("auto", "nvidia-smi"):
        try:
            proc = run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            notes.append(f"{smi} -L could not run: {exc}")
        else:
            if proc.returncode == 0:
                found = visible_filter(parse_nvidia_smi_list(proc.stdout), env.get("CUDA_VISIBLE_DEVICES"))
                return Discovery(tuple(found), "nvidia-smi", "" if found else f"{smi} -L lists no device")
            notes.append(f"{smi} -L exited with {proc.returncode}: {proc.stderr.strip()[:200]}")
    return Discovery((), "none", "; ".join(notes) or "no GPU found")
