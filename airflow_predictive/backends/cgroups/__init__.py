"""Local cgroup backend (v2, or v1 cpu/cpuacct/memory/blkio) and the cgroup usage source.

Modules: ``files`` (pure parsing of interface files), ``hierarchy`` (where groups can be made),
``group`` (one task's group, v1 or v2), ``usage`` (``CgroupUsageSource``), ``observe`` (psutil
reader for observe-only mode), ``backend`` (``CgroupBackend``). Importing this package touches
nothing on the host; detection runs when a backend is built.
"""

from __future__ import annotations
