"""A fake NVML module (the pynvml functions discovery and readings use), for tests without a GPU."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any


class FakeNvml:
    """The subset of the pynvml API discovery uses, over an in-memory device list."""

    def __init__(self, devices: list[dict[str, Any]], *, fail_init: str | None = None) -> None:
        self.devices = devices
        self.fail_init = fail_init
        self.open = 0

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise RuntimeError(self.fail_init)
        self.open += 1

    def nvmlShutdown(self) -> None:
        self.open -= 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> dict[str, Any]:
        return self.devices[i]

    def nvmlDeviceGetUUID(self, h: dict[str, Any]) -> bytes:
        return h["uuid"].encode()

    def nvmlDeviceGetName(self, h: dict[str, Any]) -> str:
        return str(h["name"])

    def nvmlDeviceGetMemoryInfo(self, h: dict[str, Any]) -> SimpleNamespace:
        return SimpleNamespace(total=h["total"], used=h.get("used", 0))

    def nvmlDeviceGetUtilizationRates(self, h: dict[str, Any]) -> SimpleNamespace:
        if "util" not in h:
            raise RuntimeError("not supported")
        return SimpleNamespace(gpu=h["util"], memory=0)


def two_gpus() -> FakeNvml:
    return FakeNvml(
        [
            {"uuid": "GPU-aaaa", "name": "Fake A", "total": 16e9, "used": 1e9, "util": 50},
            {"uuid": "GPU-bbbb", "name": "Fake B", "total": 16e9, "used": 2e9},
        ]
    )
