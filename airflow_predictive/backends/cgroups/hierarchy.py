"""Find where this host lets us make task cgroups: cgroup v2 with controllers, else v1 hierarchies.

Why it exists: hosts differ (pure v2; hybrid v1 + an empty v2; containers whose cgroup mount root
is not "/"; read-only cgroupfs). ``plan_candidates`` is pure (mountinfo and /proc/self/cgroup text
in, candidate parents out) and unit-tested; ``detect`` tries them on the host (making the parent
folder and a probe child) and returns a ``CgroupLayout`` naming the writable controllers, or an
observe-only layout with the reason. It must never leave probe cgroups behind and never raise for
an unusable host: the reason goes into the layout.

Where groups go (when ``cgroup_root`` is empty):
- v2: ``<cgroup2 mount>/airflow-predictive`` (a child of the root: under our own cgroup the
  "no internal processes" rule forbids enabling controllers while we live there);
- v1: ``<hierarchy>/<our own cgroup in that hierarchy>/airflow-predictive``, per controller, so
  task groups stay inside whatever limits the container or sandbox already sets for us.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from airflow_predictive.backends.cgroups.files import CgroupFileError

if TYPE_CHECKING:
    from collections.abc import Mapping

log = logging.getLogger(__name__)

SUBDIR = "airflow-predictive"
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "blkio")
V2_CONTROLLERS = ("cpu", "memory", "io")


class CgroupVersion(StrEnum):
    V1 = "v1"
    V2 = "v2"


@dataclass(frozen=True, slots=True)
class CgroupMount:
    fstype: str  # "cgroup" (v1) or "cgroup2"
    path: str  # where it is mounted
    root: str  # which cgroup of the hierarchy appears at ``path`` (mountinfo field 4)
    controllers: frozenset[str]  # v1: from the mount options; v2: empty here (read cgroup.controllers)


def parse_mountinfo(text: str) -> list[CgroupMount]:
    """cgroup and cgroup2 mounts from /proc/self/mountinfo."""
    mounts: list[CgroupMount] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lparts, rparts = left.split(), right.split()
        if len(lparts) < 5 or len(rparts) < 3 or rparts[0] not in ("cgroup", "cgroup2"):
            continue
        opts = set(rparts[2].split(",")) | set(lparts[5].split(",") if len(lparts) > 5 else [])
        controllers = (
            frozenset(o for o in opts if o in V1_CONTROLLERS) if rparts[0] == "cgroup" else frozenset()
        )
        mounts.append(CgroupMount(rparts[0], _unescape(lparts[4]), _unescape(lparts[3]), controllers))
    return mounts


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/<pid>/cgroup: controller -> cgroup path; the v2 entry ("0::/x") under key ""."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            if line.strip():
                raise CgroupFileError(f"/proc/self/cgroup: unexpected line {line[:60]!r}")
            continue
        _, controllers, path = parts
        if not controllers:
            out[""] = path
            continue
        for c in controllers.split(","):
            out[c] = path
    return out


@dataclass(frozen=True, slots=True)
class Candidate:
    """A place to try: controller -> parent folder for task groups."""

    version: CgroupVersion
    parents: Mapping[str, str]
    mount: str  # v2 mount path (to enable controllers down to the parent); "" for v1


def _join(base: str, *parts: str) -> str:
    out = base.rstrip("/")
    for p in parts:
        p = p.strip("/")
        if p:
            out = f"{out}/{p}"
    return out


def _relative(path: str, root: str) -> str:
    """Our cgroup path as seen inside a mount whose root is ``root`` ("" when outside it)."""
    if root in ("", "/"):
        return path
    if path == root or path.startswith(root.rstrip("/") + "/"):
        return path[len(root.rstrip("/")) :] or "/"
    return "/"


def plan_candidates(
    mountinfo: str, proc_cgroup: str, cgroup_root: str = "", v2_controllers: frozenset[str] | None = None
) -> list[Candidate]:
    """Where task groups could go, best first (v2 with cpu+memory, then v1). Pure.

    ``cgroup_root``: empty = default placement (module docstring); an absolute path inside a
    cgroup mount = that folder (for v1, the same relative cgroup in every hierarchy); any other
    path = a cgroup path below each hierarchy's mount point.
    ``v2_controllers``: the cgroup2 root's ``cgroup.controllers`` (None = not read).
    """
    mounts = parse_mountinfo(mountinfo)
    own = parse_proc_cgroup(proc_cgroup)
    out: list[Candidate] = []
    root = cgroup_root.rstrip("/")
    for m in mounts:
        if m.fstype != "cgroup2" or not v2_controllers or not {"cpu", "memory"} <= v2_controllers:
            continue
        if root and _under(root, m.path):
            parent = root
        elif root and not _under(root, "/sys/fs/cgroup"):
            parent = _join(m.path, root)
        elif root:
            continue  # a root inside some other (v1) mount
        else:
            parent = _join(m.path, SUBDIR)
        present = tuple(c for c in V2_CONTROLLERS if c in v2_controllers)
        out.append(Candidate(CgroupVersion.V2, {c: parent for c in present}, m.path))
    v1_root_rel: str | None = None
    if root:
        for m in mounts:
            if m.fstype == "cgroup" and _under(root, m.path):
                v1_root_rel = root[len(m.path.rstrip("/")) :] or "/"
        if v1_root_rel is None and not _under(root, "/sys/fs/cgroup"):
            v1_root_rel = root
    parents: dict[str, str] = {}
    for m in mounts:
        if m.fstype != "cgroup":
            continue
        for c in sorted(m.controllers):
            if c in parents:
                continue
            if root:
                if v1_root_rel is None:
                    continue
                parents[c] = _join(m.path, v1_root_rel)
            else:
                parents[c] = _join(m.path, _relative(own.get(c, "/"), m.root), SUBDIR)
    if parents:
        out.append(Candidate(CgroupVersion.V1, parents, ""))
    return out


def _under(path: str, base: str) -> bool:
    base = base.rstrip("/")
    return path == base or path.startswith(base + "/")


@dataclass(frozen=True, slots=True)
class CgroupLayout:
    """The outcome of detection: where task groups go and which controllers we can write.

    version None means observe-only; ``reason`` then says why (and is logged once).
    """

    version: CgroupVersion | None
    parents: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""

    @property
    def controllers(self) -> frozenset[str]:
        return frozenset(self.parents)

    @property
    def enforcing(self) -> bool:
        return "memory" in self.parents or "cpu" in self.parents


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _probe(parent: str) -> str | None:
    """Make ``parent`` and a probe child below it; None when writable, else the reason."""
    probe = os.path.join(parent, f".probe-{os.getpid()}")
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        return f"{parent}: {exc.strerror or exc}"
    try:
        os.mkdir(probe)
    except FileExistsError:
        pass  # left by an earlier run of this pid: still proves the folder is writable
    except OSError as exc:
        return f"{parent}: {exc.strerror or exc}"
    try:
        os.rmdir(probe)
    except OSError:
        pass
    return None


def _enable_v2(mount: str, parent: str, wanted: tuple[str, ...]) -> str | None:
    """Enable ``wanted`` controllers in every subtree_control from the mount down to ``parent``."""
    chain = [mount]
    rel = parent[len(mount.rstrip("/")) :].strip("/")
    for part in rel.split("/") if rel else []:
        chain.append(os.path.join(chain[-1], part))
    for folder in chain:
        have = set((_read(os.path.join(folder, "cgroup.subtree_control")) or "").split())
        missing = [c for c in wanted if c not in have]
        if not missing:
            continue
        try:
            with open(os.path.join(folder, "cgroup.subtree_control"), "w") as f:
                f.write(" ".join(f"+{c}" for c in missing))
        except OSError as exc:
            return f"cannot enable {', '.join(missing)} in {folder}: {exc.strerror or exc}"
    return None


def detect(
    cgroup_root: str = "",
    *,
    mountinfo_path: str = "/proc/self/mountinfo",
    proc_cgroup_path: str = "/proc/self/cgroup",
) -> CgroupLayout:
    """Try the candidates on this host; the first with a writable memory or cpu controller wins."""
    mountinfo = _read(mountinfo_path) or ""
    proc_cgroup = _read(proc_cgroup_path) or ""
    v2_controllers: frozenset[str] | None = None
    notes: list[str] = []
    for m in parse_mountinfo(mountinfo):
        if m.fstype == "cgroup2":
            raw = _read(os.path.join(m.path, "cgroup.controllers"))
            v2_controllers = frozenset((raw or "").split())
            if not {"cpu", "memory"} <= v2_controllers:
                notes.append(f"cgroup v2 at {m.path} has no cpu/memory controllers ({raw and raw.strip()!r})")
    try:
        candidates = plan_candidates(mountinfo, proc_cgroup, cgroup_root, v2_controllers)
    except CgroupFileError as exc:
        return CgroupLayout(None, reason=f"cannot read this process's cgroups: {exc}")
    for cand in candidates:
        writable: dict[str, str] = {}
        for controller, parent in cand.parents.items():
            if cand.version is CgroupVersion.V2:
                why = _probe(parent) or _enable_v2(cand.mount, parent, tuple(cand.parents))
            else:
                why = _probe(parent)
            if why is None:
                writable[controller] = parent
            else:
                notes.append(f"{cand.version.value} {controller}: {why}")
        layout = CgroupLayout(cand.version, writable, "; ".join(notes))
        if layout.enforcing:
            return layout
    reason = "; ".join(notes) or "no cgroup hierarchy is mounted"
    return CgroupLayout(None, reason=f"no writable cgroup hierarchy ({reason})")


def effective_memory_limit(layout: CgroupLayout) -> int | None:
    """The memory limit that already applies above our task groups (container, sandbox), if any.

    v1: ``hierarchical_memory_limit`` in the parent's ``memory.stat``; v2: the smallest
    ``memory.max`` from the parent up to the mount. None when unlimited or unreadable.
    """
    from airflow_predictive.backends.cgroups import files

    parent = layout.parents.get("memory")
    if parent is None:
        return None
    if layout.version is CgroupVersion.V1:
        text = _read(os.path.join(parent, "memory.stat"))
        try:
            value = files.parse_flat_keyed(text or "").get("hierarchical_memory_limit")
        except CgroupFileError:
            return None
        return None if value is None or value >= files.V1_UNLIMITED_THRESHOLD else value
    limits: list[int] = []
    folder = parent
    while os.path.exists(os.path.join(folder, "cgroup.controllers")):
        text = _read(os.path.join(folder, "memory.max"))
        if text is not None:
            try:
                value = files.parse_v2_max(text)
            except CgroupFileError:
                value = None
            if value is not None:
                limits.append(value)
        up = os.path.dirname(folder)
        if up == folder:
            break
        folder = up
    return min(limits) if limits else None


def task_group_ref(proc_cgroup: str, mountinfo: str, marker: str = "airflow-predictive") -> str | None:
    """The ``ref`` of the task cgroup this process runs in, when the backend put it in one.

    A process counts as ours when its memory (v1) or unified (v2) cgroup path has a ``marker``
    folder above its leaf. Returns a ref ``group_from_ref`` understands, or None.
    """
    paths = parse_proc_cgroup(proc_cgroup)
    mounts = parse_mountinfo(mountinfo)

    def ours(path: str | None) -> bool:
        return (
            path is not None and f"/{marker}/" in f"{path}/" and not path.rstrip("/").endswith(f"/{marker}")
        )

    unified = paths.get("")
    if ours(unified):
        v2 = next((m for m in mounts if m.fstype == "cgroup2"), None)
        if v2 is not None:
            return "v2:" + _join(v2.path, _relative(unified or "/", v2.root))
    if not ours(paths.get("memory")):
        return None
    dirs: dict[str, str] = {}
    for controller in ("cpu", "cpuacct", "memory", "blkio"):
        mount = next((m for m in mounts if controller in m.controllers), None)
        path = paths.get(controller)
        if mount is not None and path is not None:
            dirs[controller] = _join(mount.path, _relative(path, mount.root))
    return "v1:" + ";".join(f"{c}={d}" for c, d in sorted(dirs.items())) if "memory" in dirs else None


def own_task_group_ref(pid: int | None = None) -> str | None:
    """``task_group_ref`` for a live process (default: this one); None when unreadable."""
    who = "self" if pid is None else str(pid)
    try:
        with open(f"/proc/{who}/cgroup") as fh:
            proc_cgroup = fh.read()
        with open("/proc/self/mountinfo") as fh:
            mountinfo = fh.read()
    except OSError:
        return None
    try:
        return task_group_ref(proc_cgroup, mountinfo)
    except CgroupFileError:
        return None
