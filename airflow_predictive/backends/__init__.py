"""Resource backends: adapters that implement the core's ``ResourceBackend`` port.

``cgroups`` (local processes, the embedded default), ``gpu`` (local devices, provision-time only),
``fake`` (in-memory, scripted, for tests of the planner and the shaping loop) and ``kubernetes``.
Backends are independent of each other and of storage; none is imported here, so importing this
package never touches the host or pulls a heavy client library.
"""

from __future__ import annotations
