"""A kubelet that runs every container of a scheduled pod as a real local process in its own cgroup.

Why it exists: the simulated kubelet can only say what a workload curve would do. This one makes
Kubernetes paths real on a machine without a cluster: each container's ``command`` / ``args`` run
(after the ``ImageMap`` resolved the image) with the container's ``env`` and ``workingDir``, in a
per-container cgroup made by the local cgroup backend (``CgroupBackend``: limits from the
container's resources, OOM kills read from the kernel's counter). It keeps the simulated
kubelet's scheduler, resize admission and status formatting (one set of rules for both modes)
and replaces what a container *is*:

- lifecycle from real exits: init containers one after the other, native sidecars
  (``restartPolicy: Always`` init containers) started first and kept running until the app
  containers are done; ``restartPolicy`` with ``restartCount`` / ``lastState`` and CrashLoopBackOff;
  ``OOMKilled`` / 137 only when the group's ``oom_kill`` counter moved;
- deletion: SIGTERM to the container's process group, SIGKILL after the grace period;
- in-place resize: the accepted limits are written to the cgroup after the actuation delay;
- usage: CPU seconds, working set and block I/O read from the cgroup files;
- logs: stdout / stderr captured per container instance with a timestamp per line;
- PID namespaces: every container runs in a PID namespace of its own (it sees only its own
  processes, as in a real pod); a pod with ``shareProcessNamespace: true`` runs all its containers
  in one, whose PID 1 is a per-pod sandbox process (real pods: the pause container). The sandbox is
  ``unshare --pid --fork --mount-proc``, a container joins it with ``nsenter --pid --mount``.
  Without ``unshare`` / the privilege for it the containers run in the host's namespace (one
  warning) and ``ProcessKubelet.namespaces`` says so;
- bad input: a program that does not exist -> ``StartError`` / 128, an image the map does not know
  -> ``ErrImagePull`` (the pod stays Pending), never an exception out of ``tick``.

``shutdown`` (called by ``Emulator.stop``, also on SIGTERM through the CLI, and at interpreter exit)
kills every process and removes every cgroup it made.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_predictive.backends.cgroups.backend import CgroupBackend
from airflow_predictive.backends.cgroups.group import TaskGroup, group_from_ref
from airflow_predictive.core.model.backend import Allocation, ExitKind, Handle, ProvisionSpec
from airflow_predictive.core.model.resources import ResourceVector
from airflow_predictive.core.ports import ProvisionError
from airflow_predictive.emulator.kubernetes import quantity
from airflow_predictive.emulator.kubernetes.images import ContainerConfigError, ImageMap
from airflow_predictive.emulator.kubernetes.kubelet import (
    ContainerRuntime,
    Kubelet,
    KubeletConfig,
    PodRuntime,
)
from airflow_predictive.emulator.kubernetes.logs import LogCapture
from airflow_predictive.emulator.kubernetes.resources import PODS
from airflow_predictive.emulator.kubernetes.workload import Workload

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow_predictive.core.ports import Clock
    from airflow_predictive.emulator.kubernetes.store import Obj, Store

log = logging.getLogger(__name__)

SANDBOX_START_S = 2.0  # how long a sandbox's PID 1 may take to appear
START_ERROR_EXIT = 128  # what containerd reports for a container whose process could not start
SAMPLE_INTERVAL_S = 0.25  # cgroup usage read-outs (metrics resolution is seconds anyway)


@dataclass
class ProcessContainer(ContainerRuntime):
    """A container instance backed by a process (``handle``) and its cgroup (``group``)."""

    spec: dict[str, Any] = field(default_factory=dict)
    handle: Handle | None = None
    group: TaskGroup | None = None
    capture: LogCapture | None = None
    logs: list[str] = field(default_factory=list)  # one file per instance, oldest first
    pull_failed_at: float | None = None
    sampled_at: float = -1e9
    instance_oom_kills: int = 0  # the kernel's oom_kill counter of this instance's cgroup


def _allocation(resources: dict[str, Any]) -> Allocation:
    def vec(part: str) -> ResourceVector:
        values = resources.get(part) or {}
        cpu, mem = values.get("cpu"), values.get("memory")
        return ResourceVector(
            cpu_cores=None if cpu is None else quantity.millis(cpu) / 1000.0,
            memory_bytes=None if mem is None else float(quantity.integer(mem)),
        )

    return Allocation(requests=vec("requests"), limits=vec("limits"))


def _leaf(*parts: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", "kube-" + "-".join(parts))[:60]


class ProcessKubelet(Kubelet):
    """The scheduler and resize rules of ``Kubelet`` over real processes under cgroups."""

    events_default = True

    def __init__(
        self,
        store: Store,
        clock: Clock,
        config: KubeletConfig | None = None,
        *,
        images: ImageMap | None = None,
        backend: CgroupBackend | None = None,
        log_dir: str | None = None,
        pid_namespaces: bool = True,
    ) -> None:
        super().__init__(store, clock, config)
        self._sandboxes: dict[str, Sandbox] = {}  # pod uid (shared) or "uid/container" -> sandbox
        self.namespaces = pid_namespaces and _namespaces_work()
        self.images = images or ImageMap()
        self.backend = backend or CgroupBackend()
        self._own_log_dir = log_dir is None
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="kube-emulator-logs-")
        self._kill_at: dict[str, float] = {}
        self._closed = False
        if not self.backend.layout.enforcing:
            log.warning(
                "kube-emulator process kubelet: no writable cgroups, limits are NOT enforced (%s)",
                self.backend.layout.reason,
            )
        atexit.register(_shutdown_at_exit, weakref.ref(self))

    # ---- container lifecycle ------------------------------------------------------------------
    def _start(self, pod: Obj, rt: PodRuntime, now: float) -> None:
        ts = self.ts()
        rt.started, rt.start_ts = True, ts
        for c in pod["spec"].get("initContainers") or []:
            cr = self._container(c, now, sidecar=c.get("restartPolicy") == "Always")
            cr.waiting = ("PodInitializing", "")
            rt.init_containers[c["name"]] = cr
        for c in pod["spec"]["containers"]:
            cr = self._container(c, now, sidecar=False)
            cr.waiting = ("PodInitializing", "") if rt.init_containers else ("ContainerCreating", "")
            rt.containers[c["name"]] = cr
        rt.initialized = not rt.init_containers

    @staticmethod
    def _container(c: dict[str, Any], now: float, *, sidecar: bool) -> ProcessContainer:
        cr = ProcessContainer(
            c["name"], c.get("image", ""), Workload.idle(), now, "", sidecar=sidecar, spec=dict(c)
        )
        cr.running = False
        return cr

    def _advance_usage(self, pod: Obj, rt: PodRuntime, now: float, dt: float) -> None:
        policy = self._restart_policy(pod)
        if rt.finished:
            self._stop_sidecars(pod, rt, now)
            if self._sandboxes and all(c.handle is None for c in self._all(rt)):
                self._drop_sandboxes(rt)
            return
        if not rt.initialized:
            self._advance_init(pod, rt, policy, now)
            if not rt.initialized:
                return
        for cr in rt.init_containers.values():
            if cr.sidecar:
                self._step(pod, rt, cr, "Always", now)  # sidecars always restart
        for cr in rt.containers.values():
            self._step(pod, rt, cr, policy, now)
        if all(
            not c.running and c.waiting_until is None and c.waiting is None for c in rt.containers.values()
        ):
            rt.finished = True
            self._stop_sidecars(pod, rt, now)

    def _advance_init(self, pod: Obj, rt: PodRuntime, policy: str, now: float) -> None:
        # Regular init containers restart on failure unless the pod's policy is Never.
        init_policy = "Never" if policy == "Never" else "OnFailure"
        for cr in rt.init_containers.values():
            assert isinstance(cr, ProcessContainer)
            if cr.sidecar:
                self._step(pod, rt, cr, "Always", now)  # starts, watches or restarts it
                if not cr.running:
                    return  # the next init container waits for this sidecar to (re)start
                continue
            if cr.terminated is not None and cr.terminated.get("exitCode") == 0:
                continue
            self._step(pod, rt, cr, init_policy, now)
            if cr.terminated is not None and cr.terminated.get("exitCode") != 0:
                rt.init_failed = rt.finished = True
                for app in rt.containers.values():
                    app.waiting = ("PodInitializing", "")
                self._stop_sidecars(pod, rt, now)
                return
            if not (cr.terminated is not None and cr.terminated.get("exitCode") == 0):
                return
        rt.initialized = True
        for app in rt.containers.values():
            if app.waiting is not None and app.waiting[0] == "PodInitializing":
                app.waiting = ("ContainerCreating", "")

    def _step(self, pod: Obj, rt: PodRuntime, cr: ContainerRuntime, policy: str, now: float) -> None:
        """Start, watch or restart one container; a failure here never stops the kubelet's loop."""
        assert isinstance(cr, ProcessContainer)
        try:
            self._step_container(pod, rt, cr, policy, now)
        except Exception as exc:  # an emulator bug or a host problem: fail this container, not all
            log.exception("container %s of pod %s/%s failed in the kubelet", cr.name, rt.namespace, rt.name)
            self._release(cr)
            if cr.terminated is None:
                self._start_error(pod, rt, cr, policy, now, f"emulator error: {exc}")

    def _step_container(
        self, pod: Obj, rt: PodRuntime, cr: ProcessContainer, policy: str, now: float
    ) -> None:
        if cr.running:
            self._poll(pod, rt, cr, policy, now)
            return
        if cr.terminated is not None:
            return
        if cr.waiting_until is not None:
            if now < cr.waiting_until:
                return
            cr.waiting_until = None
        if cr.pull_failed_at is not None:
            pulling = cr.waiting is not None and cr.waiting[0] == "ErrImagePull"
            if pulling and now - cr.pull_failed_at >= self.config.backoff_base_s:
                msg = f'Back-off pulling image "{cr.image}"'
                cr.waiting = ("ImagePullBackOff", msg)
                self.event(pod, "BackOff", msg, type_="Normal", container=cr.name)
            return
        self._spawn(pod, rt, cr, policy, now)

    def _spawn(self, pod: Obj, rt: PodRuntime, cr: ProcessContainer, policy: str, now: float) -> None:
        rule = self.images.rule_for(cr.image)
        if rule is None:
            msg = (
                f'failed to pull and unpack image "{cr.image}": the emulator\'s image map has no rule '
                "for it (no image is pulled here)"
            )
            cr.waiting, cr.pull_failed_at = ("ErrImagePull", msg), now
            self.event(
                pod, "Failed", f'Failed to pull image "{cr.image}": {msg}', type_="Warning", container=cr.name
            )
            self.event(pod, "Failed", "Error: ErrImagePull", type_="Warning", container=cr.name)
            return
        if cr.waiting is None or cr.waiting[0] != "CreateContainerConfigError":
            self.event(
                pod, "Pulled", f'Container image "{cr.image}" already present on machine', container=cr.name
            )
        try:
            launch = self.images.launch(rule, cr.spec, pod)
        except ContainerConfigError as exc:
            if cr.waiting is None or cr.waiting[0] != "CreateContainerConfigError":
                self.event(pod, "Failed", f"Error: {exc}", type_="Warning", container=cr.name)
            cr.waiting = ("CreateContainerConfigError", str(exc))
            return
        except ValueError as exc:
            self._start_error(pod, rt, cr, policy, now, str(exc))
            return
        folder = os.path.join(self.log_dir, f"{rt.namespace}_{rt.name}_{rt.uid}", cr.name)
        os.makedirs(folder, exist_ok=True)
        capture = LogCapture(os.path.join(folder, f"{len(cr.logs)}.log"))
        out_fd, err_fd = capture.pipe("stdout"), capture.pipe("stderr")
        resources = rt.actual.get(cr.name) or {
            k: dict(v) for k, v in (cr.spec.get("resources") or {}).items() if k in ("requests", "limits")
        }
        argv = launch.argv
        if self.namespaces and shutil.which(argv[0], path=launch.env.get("PATH")) is None:
            # nsenter would turn a missing program into exit 127: the runtime's StartError instead
            self._start_error(
                pod, rt, cr, policy, now, _start_message(argv[0], ValueError("not an executable program"))
            )
            return
        if self.namespaces:
            sandbox = self._sandbox(pod, rt, cr.name)
            if sandbox is None:
                self._start_error(
                    pod, rt, cr, policy, now, "failed to create the pod sandbox (PID namespace)"
                )
                return
            argv = sandbox.enter(argv, launch.cwd or os.getcwd())
        try:
            handle = self.backend.provision(
                ProvisionSpec(name=_leaf(rt.namespace, rt.name, cr.name), command=argv, env=launch.env),
                _allocation(resources),
                cwd=launch.cwd,
                stdout=out_fd,
                stderr=err_fd,
            )
        except (ProvisionError, ValueError, OSError) as exc:
            self._start_error(pod, rt, cr, policy, now, _start_message(launch.argv[0], exc))
            return
        finally:  # the child has its copies; ours must go or the capture never sees EOF
            os.close(out_fd)
            os.close(err_fd)
        cr.logs.append(capture.path)
        cr.handle, cr.capture = handle, capture
        cr.group = group_from_ref(handle.ref) if not handle.ref.startswith("pid:") else None
        cr.running, cr.waiting, cr.started_at, cr.started_ts = True, None, now, self.ts()
        cr.samples.clear()
        cr.cpu_seconds = cr.cpu_rate = cr.memory = 0.0
        cr.instance_oom_kills = 0
        self._sample(cr, now, force=True)
        self.event(pod, "Created", f"Created container: {cr.name}", container=cr.name)
        self.event(pod, "Started", f"Started container {cr.name}", container=cr.name)

    # ---- PID namespaces -----------------------------------------------------------------------
    def _sandbox(self, pod: Obj, rt: PodRuntime, container: str) -> Sandbox | None:
        """The PID namespace ``container`` runs in: the pod's when it shares one, else its own."""
        shared = bool(pod["spec"].get("shareProcessNamespace"))
        key = rt.uid if shared else f"{rt.uid}/{container}"
        box = self._sandboxes.get(key)
        if box is not None and box.alive():
            return box
        if box is not None:
            box.close()
        try:
            box = Sandbox.start()
        except (OSError, RuntimeError) as exc:
            log.warning("pod %s/%s: no PID namespace for %s: %s", rt.namespace, rt.name, container, exc)
            return None
        self._sandboxes[key] = box
        return box

    def _drop_sandboxes(self, rt: PodRuntime) -> None:
        for key in [k for k in self._sandboxes if k == rt.uid or k.startswith(f"{rt.uid}/")]:
            self._sandboxes.pop(key).close()

    def _start_error(
        self, pod: Obj, rt: PodRuntime, cr: ProcessContainer, policy: str, now: float, message: str
    ) -> None:
        full = (
            "failed to create containerd task: failed to create shim task: OCI runtime create failed: "
            f"runc create failed: unable to start container process: {message}: unknown"
        )
        self.event(pod, "Failed", f"Error: {full}", type_="Warning", container=cr.name)
        cr.started_ts = cr.started_ts or self.ts()
        cr.waiting = None
        self._exit(cr, rt, policy, START_ERROR_EXIT, "StartError", now)
        record = cr.terminated if cr.terminated is not None else cr.last_terminated
        if record is not None:
            record["message"] = full
            record["startedAt"] = "1970-01-01T00:00:00Z"

    def _poll(self, pod: Obj, rt: PodRuntime, cr: ProcessContainer, policy: str, now: float) -> None:
        assert cr.handle is not None
        alive = _alive(cr.handle.pid)  # one /proc read per tick
        self._sample(cr, now, force=not alive)
        if alive:
            return
        state = self.backend.state(cr.handle)
        if state.kind is ExitKind.RUNNING:
            return
        oom = state.kind is ExitKind.OOM_KILLED
        code = state.exit_code if state.exit_code is not None else (137 if oom else 1)
        reason = "OOMKilled" if oom else "Completed" if code == 0 else "Error"
        if oom:
            cr.oom_events = max(cr.oom_events, state.oom_events or 1)
            self.event(
                pod,
                "OOMKilling",
                f"Memory cgroup out of memory: container {cr.name} was killed by the kernel OOM killer "
                f"({state.reason})",
                type_="Warning",
                container=cr.name,
            )
        self._release(cr)
        self._exit(cr, rt, policy, code, reason, now)
        if cr.waiting_until is not None:
            self.event(
                pod,
                "BackOff",
                f"Back-off restarting failed container {cr.name} in pod {rt.name}_{rt.namespace}({rt.uid})",
                type_="Warning",
                container=cr.name,
            )

    def _sample(self, cr: ProcessContainer, now: float, *, force: bool = False) -> None:
        """Usage from the kernel: CPU seconds, working set, block I/O, throttling, OOM kills
        (at most every ``SAMPLE_INTERVAL_S`` unless ``force``)."""
        if cr.group is None or (not force and now - cr.sampled_at < SAMPLE_INTERVAL_S):
            return
        cr.sampled_at = now
        reading = cr.group.read()
        if reading is None:
            return
        if reading.cpu_seconds is not None:
            cr.cpu_seconds = reading.cpu_seconds
            cr.samples.append((now, reading.cpu_seconds))
            if len(cr.samples) >= 2:
                (t0, c0), (t1, c1) = cr.samples[-2], cr.samples[-1]
                if t1 > t0:
                    cr.cpu_rate = max(0.0, (c1 - c0) / (t1 - t0))
            while len(cr.samples) > 2 and cr.samples[1][0] <= now - 4 * self.config.metrics_window_s:
                cr.samples.popleft()
        if reading.memory_working_set is not None:
            cr.memory = float(reading.memory_working_set)
        if reading.io is not None:
            cr.fs_read_bytes, cr.fs_write_bytes = float(reading.io.read), float(reading.io.write)
        if reading.oom_kills is not None:
            cr.oom_events = max(cr.oom_events, reading.oom_kills)
            if reading.oom_kills > cr.instance_oom_kills:
                cr.instance_oom_kills = reading.oom_kills
                self._oom_group_kill(cr)
        stat = _cpu_stat(cr.group)
        if stat:
            cr.periods = float(stat.get("nr_periods", 0))
            cr.throttled_periods = float(stat.get("nr_throttled", 0))

    @staticmethod
    def _oom_group_kill(cr: ProcessContainer) -> None:
        """The kernel OOM-killed a process of this container: kill all of them, as the kubelet asks
        on cgroup v2 (``memory.oom.group = 1``, unless ``singleProcessOOMKill``). Without it a
        container whose child was killed keeps running, its main process may exit 0, and the pod
        ``Succeeded`` with no ``OOMKilled`` for anyone to see; the cgroups here are v1, which has no
        such switch, so the kubelet does it. The exit is then read as OOMKilled (SIGKILL with the
        counter moved)."""
        if cr.group is None or not cr.running:
            return
        log.info("container %s: the kernel OOM-killed one of its processes; killing the container", cr.name)
        cr.group.kill()

    def _release(self, cr: ProcessContainer) -> None:
        if cr.handle is not None:
            try:
                self.backend.release(cr.handle)
            except Exception:  # never let cleanup of one container break the kubelet
                log.exception("releasing container %s failed", cr.name)
        if cr.capture is not None:
            cr.capture.join(1.0)
        cr.handle, cr.group, cr.capture = None, None, None
        cr.running, cr.cpu_rate = False, 0.0

    def _signal(self, cr: ProcessContainer, sig: int) -> None:
        if cr.handle is None or cr.handle.pid is None:
            return
        if self.namespaces and sig != signal.SIGKILL:
            # the group leader is nsenter (outside the container): it would die of the signal and
            # take the container's exit with it; the container's own processes get it instead
            for pid in _group_members(cr.handle.pid):
                if pid != cr.handle.pid:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, sig)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(cr.handle.pid, sig)

    def _stop_sidecars(self, pod: Obj, rt: PodRuntime, now: float) -> None:
        for cr in rt.init_containers.values():
            assert isinstance(cr, ProcessContainer)
            if not cr.sidecar or not cr.running or cr.handle is None:
                continue
            if not cr.stopping:
                cr.stopping = True
                cr.started_at = now  # reused as "stop asked at"
                self.event(pod, "Killing", f"Stopping container {cr.name}", container=cr.name)
                self._signal(cr, signal.SIGTERM)
            state = self.backend.state(cr.handle)
            grace = float(pod["spec"].get("terminationGracePeriodSeconds", 30))
            if state.kind is ExitKind.RUNNING and now - cr.started_at < grace:
                continue
            code = state.exit_code if state.exit_code is not None else 137
            self._release(cr)
            cr.terminated = {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": cr.started_ts,
                "finishedAt": self.ts(),
                "containerID": cr.container_id,
            }

    def _deadline_exceeded(self, pod: Obj, rt: PodRuntime) -> None:
        super()._deadline_exceeded(pod, rt)  # the records first: they are of the running containers
        for cr in self._all(rt):  # then the kubelet kills their processes
            if cr.handle is not None:
                self._signal(cr, signal.SIGKILL)
                self._release(cr)
        self._drop_sandboxes(rt)

    # ---- deletion -----------------------------------------------------------------------------
    def _all(self, rt: PodRuntime) -> list[ProcessContainer]:
        out = [*rt.init_containers.values(), *rt.containers.values()]
        return [c for c in out if isinstance(c, ProcessContainer)]

    def _terminate(self, pod: Obj, rt: PodRuntime) -> None:
        now = self.clock.monotonic()
        live = [c for c in self._all(rt) if c.handle is not None]
        if rt.uid not in self._kill_at:
            grace = pod["metadata"].get("deletionGracePeriodSeconds")
            if grace is None:
                grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
            self._kill_at[rt.uid] = now + float(grace)
            for cr in live:
                self.event(pod, "Killing", f"Stopping container {cr.name}", container=cr.name)
                self._signal(cr, signal.SIGTERM)
        exited = all(
            c.handle is None or self.backend.state(c.handle).kind is not ExitKind.RUNNING for c in live
        )
        if not exited and now < self._kill_at[rt.uid]:
            return
        self._kill_at.pop(rt.uid, None)
        for cr in live:
            self._release(cr)
        self._drop_sandboxes(rt)
        super()._terminate(pod, rt)

    def _forget(self, rt: PodRuntime) -> None:
        self._kill_at.pop(rt.uid, None)
        for cr in self._all(rt):
            self._release(cr)
        self._drop_sandboxes(rt)

    # ---- resize -------------------------------------------------------------------------------
    def _apply_limits(self, pod: Obj, rt: PodRuntime) -> str | None:
        """Write the allocated limits into each running container's cgroup and read them back.

        The kubelet's rules (node capacity, memory below usage) were applied before; here only the
        kernel can refuse. The cgroup backend's own ``resize`` policy (host-sized bounds, safety
        margins) is deliberately not used: the emulated node, not this host, sets what fits.
        """
        for name, res in rt.allocated.items():
            before = rt.actual.get(name) or {}
            if res == before:
                continue
            cr = rt.containers.get(name)
            if not isinstance(cr, ProcessContainer) or cr.handle is None or cr.group is None:
                continue  # not running now (or observe-only): the next start uses the new limits
            new, old = _allocation(res), _allocation(before)
            try:
                if new.limits.memory_bytes != old.limits.memory_bytes:
                    cr.group.set_memory(new.limits.memory_bytes)
                if (
                    new.limits.cpu_cores != old.limits.cpu_cores
                    or new.requests.cpu_cores != old.requests.cpu_cores
                ):
                    cr.group.set_cpu(new.limits.cpu_cores, new.requests.cpu_cores)
            except (OSError, ValueError) as exc:
                return f"failed to resize container {name}: {exc}"
            reading = cr.group.read()
            want = new.limits.memory_bytes
            got = None if reading is None else reading.memory_limit
            if want is not None and (got is None or abs(got - want) > 4096):
                return f"failed to resize container {name}: memory limit reads back as {got}, not {int(want)}"
        return None

    def _needs_restart(self, pod: Obj, rt: PodRuntime) -> list[str]:
        names = super()._needs_restart(pod, rt)
        for name in names:  # RestartContainer: a real restart of the process
            cr = rt.containers.get(name)
            if isinstance(cr, ProcessContainer):
                self.event(pod, "Killing", f"Container {name} resize requires restart", container=name)
                self._release(cr)
                cr.running = False
        return names

    # ---- logs and shutdown --------------------------------------------------------------------
    def log_file(self, rt: PodRuntime, container: str, previous: bool) -> str | None:
        cr = rt.containers.get(container) or rt.init_containers.get(container)
        if not isinstance(cr, ProcessContainer) or not cr.logs:
            return None
        if previous:
            return cr.logs[-2] if len(cr.logs) >= 2 else None
        return cr.logs[-1]

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        for rt in list(self.pods.values()):
            for cr in self._all(rt):
                self._signal(cr, signal.SIGKILL)
                self._release(cr)
        for box in self._sandboxes.values():
            box.close()
        self._sandboxes.clear()
        if self._own_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def running_pids(self) -> list[int]:
        """Pids of the container processes alive now (tests check cleanup with it)."""
        return [c.handle.pid for rt in self.pods.values() for c in self._all(rt) if c.handle and c.handle.pid]

    def pod_of_uid(self, uid: str) -> Obj | None:
        rt = self.pods.get(uid)
        if rt is None:
            return None
        try:
            return self.store.get(PODS, rt.namespace, rt.name)
        except Exception:
            return None


@dataclass
class Sandbox:
    """A PID namespace (with its own /proc) held open by a sleeping PID 1, like a pod's pause.

    ``unshare`` (our child) forks ``init``, PID 1 inside; killing ``init`` ends the namespace and
    the kernel kills every process still in it.
    """

    unshare: subprocess.Popen[bytes]
    init: int

    @classmethod
    def start(cls) -> Sandbox:
        proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "sleep", "infinity"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + SANDBOX_START_S
        while time.monotonic() < deadline:
            kids = _children(proc.pid)
            if kids and _in_new_namespace(kids[0]):
                return cls(proc, kids[0])
            if proc.poll() is not None:
                break
            time.sleep(0.01)
        with contextlib.suppress(OSError):
            proc.kill()
        proc.wait(timeout=5)
        raise RuntimeError(f"unshare did not start a namespace (exit {proc.returncode})")

    def enter(self, argv: Sequence[str], cwd: str) -> tuple[str, ...]:
        return ("nsenter", f"--target={self.init}", "--pid", "--mount", f"--wd={cwd}", "--", *argv)

    def alive(self) -> bool:
        return self.unshare.poll() is None and _alive(self.init)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.kill(self.init, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.unshare.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.unshare.wait(timeout=5)


def _group_members(pgid: int) -> list[int]:
    """Pids of the processes in process group ``pgid`` (from /proc/<pid>/stat)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid):
            out.append(int(name))
    return out


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(k) for k in fh.read().split()]
    except (OSError, ValueError):
        return []


def _in_new_namespace(pid: int) -> bool:
    """``pid`` is PID 1 of a namespace nested in ours (and its exec is done: it sleeps)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            status = fh.read()
    except OSError:
        return False
    nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
    name = next((line.split()[1] for line in status.splitlines() if line.startswith("Name:")), "")
    return len(nspid) > 1 and nspid[-1] == "1" and name == "sleep"


_NAMESPACES: bool | None = None


def _namespaces_work() -> bool:
    """Whether this machine can make PID namespaces (checked once per process)."""
    global _NAMESPACES
    if _NAMESPACES is None:
        try:
            box = Sandbox.start()
        except (OSError, RuntimeError) as exc:
            log.warning(
                "kube-emulator process kubelet: no PID namespaces (%s); containers see the host's "
                "processes and shareProcessNamespace is not honoured",
                exc,
            )
            _NAMESPACES = False
        else:
            box.close()
            _NAMESPACES = shutil.which("nsenter") is not None
            if not _NAMESPACES:
                log.warning("kube-emulator process kubelet: no nsenter; PID namespaces are not used")
    return _NAMESPACES


def _shutdown_at_exit(ref: weakref.ref[ProcessKubelet]) -> None:
    kubelet = ref()
    if kubelet is not None:
        kubelet.shutdown()


def _start_message(program: str, exc: Exception) -> str:
    text = str(exc)
    if "not an executable program" in text:
        return f'exec: "{program}": executable file not found in $PATH'
    return text


def _alive(pid: int | None) -> bool:
    """Running (not exited, not a zombie waiting to be reaped) from one read of /proc/<pid>/stat."""
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _cpu_stat(group: TaskGroup) -> dict[str, int]:
    folder = group.dirs.get("cpu") or group.dirs.get("unified")
    if folder is None:
        return {}
    try:
        with open(os.path.join(folder, "cpu.stat")) as f:
            return {k: int(v) for k, v in (line.split() for line in f if line.strip())}
    except (OSError, ValueError):
        return {}
