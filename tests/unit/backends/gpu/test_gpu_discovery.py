"""GPU discovery through a fake NVML object, a fake nvidia-smi on PATH, and with nothing at all."""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

import pytest

from airflow_predictive.backends.gpu.discovery import (
    GpuDevice,
    discover,
    parse_nvidia_smi_list,
    read_devices,
    visible_filter,
)
from tests.unit.backends.gpu.fake_nvml import FakeNvml, two_gpus

if TYPE_CHECKING:
    from pathlib import Path

SMI_OUTPUT = """\
GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-aaaa-0000)
  MIG 1g.5gb      Device  0: (UUID: MIG-1111)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-bbbb-1111)
"""


def _fake_smi(folder: Path, body: str, code: int = 0) -> str:
    path = folder / "nvidia-smi"
    path.write_text(f"#!/bin/sh\ncat <<'OUT'\n{body}OUT\nexit {code}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_parses_nvidia_smi_list_and_skips_mig_lines() -> None:
    devices = parse_nvidia_smi_list(SMI_OUTPUT)
    assert devices == [
        GpuDevice(0, "GPU-aaaa-0000", "NVIDIA A100-SXM4-40GB"),
        GpuDevice(1, "GPU-bbbb-1111", "NVIDIA A100-SXM4-40GB"),
    ]
    assert parse_nvidia_smi_list("No devices were found\n") == []


def test_nvml_discovery_reads_devices_and_closes_nvml() -> None:
    nvml = two_gpus()
    found = discover("auto", nvml=nvml, environ={})
    assert found.source == "nvml"
    assert [d.uuid for d in found.devices] == ["GPU-aaaa", "GPU-bbbb"]
    assert found.devices[0].memory_bytes == 16e9
    assert nvml.open == 0


def test_nvml_failure_falls_back_to_nvidia_smi_on_path(tmp_path: Path) -> None:
    smi = _fake_smi(tmp_path, SMI_OUTPUT)
    found = discover("auto", nvml=FakeNvml([], fail_init="Driver Not Loaded"), smi=smi, environ={})
    assert found.source == "nvidia-smi"
    assert len(found.devices) == 2


def test_fake_nvidia_smi_found_through_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_smi(tmp_path, SMI_OUTPUT)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    found = discover("nvidia-smi", environ={})
    assert found.source == "nvidia-smi" and len(found.devices) == 2


def test_nothing_installed_gives_no_device_and_says_why(tmp_path: Path) -> None:
    found = discover("nvidia-smi", smi=str(tmp_path / "absent-nvidia-smi"), environ={})
    assert found.devices == ()
    assert found.source == "none"
    assert "could not run" in found.reason


def test_failing_nvidia_smi_reports_its_exit(tmp_path: Path) -> None:
    smi = _fake_smi(tmp_path, "NVIDIA-SMI has failed because it couldn't communicate with the driver\n", 9)
    found = discover("nvidia-smi", smi=smi, environ={})
    assert found.devices == () and "exited with 9" in found.reason


def test_off_means_no_discovery() -> None:
    found = discover("off", nvml=two_gpus())
    assert found.devices == () and "off" in found.reason


def test_our_own_cuda_visible_devices_restricts_the_pool() -> None:
    devices = [GpuDevice(0, "GPU-aaaa", "A"), GpuDevice(1, "GPU-bbbb", "B"), GpuDevice(2, "GPU-cccc", "C")]
    assert [d.index for d in visible_filter(devices, "2,0")] == [2, 0]
    assert [d.index for d in visible_filter(devices, "GPU-bbbb")] == [1]
    assert visible_filter(devices, "") == []
    assert visible_filter(devices, None) == devices
    found = discover("nvml", nvml=two_gpus(), environ={"CUDA_VISIBLE_DEVICES": "1"})
    assert [d.uuid for d in found.devices] == ["GPU-bbbb"]


def test_device_readings_leave_unreadable_values_absent() -> None:
    readings = read_devices(two_gpus(), [0, 1])
    assert readings[0].utilisation == pytest.approx(0.5)
    assert readings[0].memory_used_bytes == 1e9
    assert readings[1].utilisation is None  # "not supported" is absent, never 0
    assert readings[1].memory_used_bytes == 2e9
