"""GPU readers: NVML through an injected fake, nvidia-smi through a fake executable on PATH.

No GPU exists on the machines these tests run on: every number here comes from the fakes.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from airflow_predictive.sampling import gpu
from airflow_predictive.sampling.gpu import GpuUsage, NvidiaSmiGpu, NvmlGpu, build_gpu

if TYPE_CHECKING:
    from pathlib import Path

MIB = 1024 * 1024


@dataclass
class _Proc:
    pid: int
    usedGpuMemory: int | None


@dataclass
class _Sample:
    pid: int
    smUtil: int
    timeStamp: int


@dataclass
class _Rates:
    gpu: int


class FakeNvml:
    """The part of pynvml the reader uses: two devices, configurable processes and samples."""

    class NVMLError(Exception):
        pass

    def __init__(self) -> None:
        self.procs: dict[int, list[_Proc]] = {0: [], 1: []}
        self.samples: dict[int, list[_Sample] | Exception] = {0: [], 1: []}
        self.device_util = {0: 0, 1: 0}
        self.seen_ts: list[int] = []

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[_Proc]:
        return self.procs[h]

    def nvmlDeviceGetProcessUtilization(self, h: int, ts: int) -> list[_Sample]:
        self.seen_ts.append(ts)
        s = self.samples[h]
        if isinstance(s, Exception):
            raise s
        return s

    def nvmlDeviceGetUtilizationRates(self, h: int) -> _Rates:
        return _Rates(self.device_util[h])


def test_nvml_sums_the_trees_processes_over_devices() -> None:
    nvml = FakeNvml()
    nvml.procs[0] = [_Proc(10, 1000 * MIB), _Proc(99, 5000 * MIB)]  # 99 is not ours
    nvml.procs[1] = [_Proc(11, 500 * MIB)]
    nvml.samples[0] = [_Sample(10, 40, 5), _Sample(10, 60, 7), _Sample(99, 90, 7)]
    nvml.samples[1] = [_Sample(11, 25, 9)]
    usage = NvmlGpu(nvml).read({10, 11})
    assert usage == GpuUsage(util=pytest.approx(0.5 + 0.25), memory_bytes=1500 * MIB)
    reader = NvmlGpu(nvml)
    reader.read({10, 11})
    reader.read({10, 11})
    assert nvml.seen_ts[-2:] == [7, 9]  # asks only for samples newer than the last seen


def test_nvml_with_gpu_but_no_tree_process_reads_zero() -> None:
    nvml = FakeNvml()
    nvml.procs[0] = [_Proc(99, 5000 * MIB)]
    assert NvmlGpu(nvml).read({10}) == GpuUsage(util=0.0, memory_bytes=0.0)


def test_nvml_without_process_utilisation_uses_device_only_when_not_shared() -> None:
    nvml = FakeNvml()
    nvml.procs[0] = [_Proc(10, 100 * MIB)]
    nvml.procs[1] = [_Proc(11, 100 * MIB), _Proc(99, 100 * MIB)]
    nvml.samples[0] = nvml.samples[1] = FakeNvml.NVMLError("Not Supported")
    nvml.device_util = {0: 70, 1: 30}
    assert NvmlGpu(nvml).read({10}) == GpuUsage(util=pytest.approx(0.7), memory_bytes=100 * MIB)
    # device 1 is shared with a foreign process: its utilisation cannot be attributed
    assert NvmlGpu(nvml).read({10, 11}).util is None  # type: ignore[union-attr]


def test_nvml_hidden_process_memory_is_absent() -> None:
    nvml = FakeNvml()
    nvml.procs[0] = [_Proc(10, None)]
    usage = NvmlGpu(nvml).read({10})
    assert usage is not None and usage.memory_bytes is None


def test_nvml_that_stops_answering_gives_absent() -> None:
    class Broken(FakeNvml):
        def nvmlDeviceGetCount(self) -> int:
            raise FakeNvml.NVMLError("GPU is lost")

    assert NvmlGpu(Broken()).read({10}) is None


def _fake_smi(tmp_path: Path, devices: str, apps: str, fail: bool = False) -> Path:
    (tmp_path / "devices.csv").write_text(devices)
    (tmp_path / "apps.csv").write_text(apps)
    (tmp_path / "calls").write_text("")
    script = tmp_path / "nvidia-smi"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys, pathlib\n"
        f"d = pathlib.Path({str(tmp_path)!r})\n"
        "with open(d / 'calls', 'a') as f: f.write(' '.join(sys.argv[1:]) + '\\n')\n"
        + ("sys.exit(9)\n" if fail else "")
        + "q = [a for a in sys.argv if a.startswith('--query')][0]\n"
        "print((d / ('apps.csv' if 'compute-apps' in q else 'devices.csv')).read_text(), end='')\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.fixture
def on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def test_nvidia_smi_reads_memory_and_unshared_device_utilisation(on_path: Path) -> None:
    _fake_smi(
        on_path,
        devices="GPU-a, 80\nGPU-b, 10\n",
        apps="10, GPU-a, 1024\n11, GPU-b, 256\n99, GPU-b, 512\n",
    )
    reader = NvidiaSmiGpu.find()
    assert reader is not None
    usage = reader.read({10, 11}, now=0.0)
    assert usage is not None
    assert usage.memory_bytes == (1024 + 256) * MIB
    assert usage.util is None  # GPU-b is shared with pid 99
    assert reader.read({10}, now=10.0) == GpuUsage(util=pytest.approx(0.8), memory_bytes=1024 * MIB)


def test_nvidia_smi_is_not_run_more_often_than_its_period(on_path: Path) -> None:
    _fake_smi(on_path, devices="GPU-a, 80\n", apps="10, GPU-a, 1024\n")
    reader = NvidiaSmiGpu.find(min_period_s=5.0)
    assert reader is not None
    calls_before = len((on_path / "calls").read_text().splitlines())
    for t in (0.0, 1.0, 2.0, 3.0):
        assert reader.read({10}, now=t) is not None
    reader.read({10}, now=5.5)
    calls = (on_path / "calls").read_text().splitlines()[calls_before:]
    assert len(calls) == 4  # two queries at t=0 and two at t=5.5


def test_nvidia_smi_corrupt_rows_and_na_values_are_skipped(on_path: Path) -> None:
    _fake_smi(
        on_path,
        devices="GPU-a, [N/A]\n",
        apps="garbage line\n10, GPU-a, [N/A]\n, ,\n",
    )
    reader = NvidiaSmiGpu.find()
    assert reader is not None
    assert reader.read({10}) == GpuUsage(util=None, memory_bytes=None)


def test_failing_nvidia_smi_is_not_a_gpu(on_path: Path) -> None:
    _fake_smi(on_path, devices="GPU-a, 80\n", apps="", fail=True)
    assert NvidiaSmiGpu.find() is None


def test_no_gpu_anywhere_means_absent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails: not installed
    assert build_gpu("auto") is None
    assert build_gpu("nvml") is None
    assert build_gpu("nvidia-smi") is None
    assert build_gpu("off") is None


def test_auto_falls_back_to_nvidia_smi_without_nvml(on_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    _fake_smi(on_path, devices="GPU-a, 5\n", apps="")
    reader = build_gpu("auto")
    assert isinstance(reader, NvidiaSmiGpu)
    assert build_gpu("off") is None


def test_auto_prefers_nvml_when_it_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml()
    fake.nvmlInit = lambda: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    reader = build_gpu("auto")
    assert isinstance(reader, NvmlGpu)
    assert gpu.GpuMode.AUTO in gpu.GpuMode.ALL
