"""Emulators of external systems the provider drives, shipped so tests, benchmarks and users can
exercise the real client code paths on a machine without those systems.

Nothing here is imported by the provider's runtime paths (scheduler, executor, tasks).
"""

from __future__ import annotations
