"""Local GPUs as a provision-time resource: discovery (NVML / nvidia-smi) and ``GpuBackend``.

Importing this package loads no GPU library; NVML is imported when discovery runs.
"""

from __future__ import annotations
