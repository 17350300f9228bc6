"""The process kubelet through the official client: real processes, real cgroups, real exits.

Every pod here runs its containers as local processes in per-container cgroups made by the
cgroup backend; the assertions read what the kernel did (cgroup files, exit codes, OOM counter)
through the API, never a simulated curve. Waits are bounded polls, never timing asserts.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from airflow_predictive.emulator.kubernetes.emulator import Emulator
from airflow_predictive.emulator.kubernetes.images import ImageMap, ImageRule
from airflow_predictive.emulator.kubernetes.process_kubelet import ProcessContainer, ProcessKubelet
from tests.integration.kubernetes.conftest import require_cgroups

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytestmark = pytest.mark.cgroups

_n = itertools.count()
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def core(process_emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> client.CoreV1Api:
    path = process_emulator.write_kubeconfig(tmp_path_factory.mktemp("kc") / "kubeconfig")
    return client.CoreV1Api(config.new_client_from_config(str(path)))


def wait_for(what: Callable[[], Any], timeout: float = 60.0, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout}s: {what}")
        time.sleep(every)


def make_pod(
    core: client.CoreV1Api,
    command: list[str],
    *,
    memory: str = "128Mi",
    cpu: str = "1",
    policy: str = "Never",
    image: str = "busybox",
    init: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
    grace: int | None = None,
) -> str:
    name = f"proc-{next(_n)}"
    container: dict[str, Any] = {
        "name": "c",
        "image": image,
        "command": command,
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}},
        **(extra or {}),
    }
    spec: dict[str, Any] = {"restartPolicy": policy, "containers": [container]}
    if init:
        spec["initContainers"] = init
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    core.create_namespaced_pod("default", {"metadata": {"name": name}, "spec": spec})
    return name


def phase(core: client.CoreV1Api, name: str) -> str:
    return str(core.read_namespaced_pod(name, "default").status.phase)


def finished(core: client.CoreV1Api, name: str, timeout: float = 60.0) -> client.V1Pod:
    wait_for(lambda: phase(core, name) in ("Succeeded", "Failed"), timeout)
    return core.read_namespaced_pod(name, "default")


def container_of(em: Emulator, name: str, container: str = "c") -> ProcessContainer:
    kubelet = em.kubelet
    assert isinstance(kubelet, ProcessKubelet)

    def find() -> ProcessContainer | None:
        with em.lock:
            rt = next((r for r in kubelet.pods.values() if r.name == name), None)
            cr = None if rt is None else rt.containers.get(container) or rt.init_containers.get(container)
        return cr if isinstance(cr, ProcessContainer) else None

    found = wait_for(find, timeout=30)
    assert isinstance(found, ProcessContainer)
    return found


def logs(core: client.CoreV1Api, name: str, **query: Any) -> str:
    """The log text (the client's own ``str`` decoding of log bodies is broken in kubernetes 36:
    it returns ``str(bytes)``; the KubernetesPodOperator reads raw, like this)."""
    resp = core.read_namespaced_pod_log(name, "default", _preload_content=False, **query)
    return str(resp.data.decode())


def memory_limit_file(cr: ProcessContainer) -> int:
    assert cr.group is not None
    folder = cr.group.dirs.get("memory") or cr.group.dirs["unified"]
    name = "memory.limit_in_bytes" if "memory" in cr.group.dirs else "memory.max"
    with open(os.path.join(folder, name)) as f:
        return int(f.read().strip())


def test_a_pod_runs_its_command_with_env_and_working_dir_and_succeeds(
    core: client.CoreV1Api, tmp_path: Path
) -> None:
    script = "import os; print('env', os.environ['GREETING']); print('cwd', os.getcwd())"
    name = make_pod(
        core,
        ["python", "-c", script],
        image="python:3.11-slim",
        extra={"env": [{"name": "GREETING", "value": "hello"}], "workingDir": str(tmp_path)},
    )
    pod = finished(core, name)
    state = pod.status.container_statuses[0].state.terminated
    assert pod.status.phase == "Succeeded" and state.exit_code == 0 and state.reason == "Completed"
    log = logs(core, name)
    assert log == f"env hello\ncwd {tmp_path}\n"


def test_exit_code_fails_the_pod_and_on_failure_restarts_with_last_state(core: client.CoreV1Api) -> None:
    failed = make_pod(core, ["sh", "-c", "exit 3"])
    restarting = make_pod(core, ["sh", "-c", "echo run; exit 4"], policy="OnFailure")
    pod = finished(core, failed)
    assert pod.status.phase == "Failed"
    term = pod.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason) == (3, "Error")

    def restarted() -> client.V1ContainerStatus | None:
        cs = core.read_namespaced_pod(restarting, "default").status.container_statuses[0]
        return cs if cs.restart_count >= 2 else None

    cs = wait_for(restarted)
    assert cs.last_state.terminated.exit_code == 4 and cs.last_state.terminated.reason == "Error"
    assert phase(core, restarting) == "Running"  # restarting, as Kubernetes shows CrashLoopBackOff
    assert logs(core, restarting, previous=True) == "run\n"
    core.delete_namespaced_pod(restarting, "default", grace_period_seconds=0)


def test_memory_above_the_limit_is_a_real_kernel_oom_kill(
    core: client.CoreV1Api, process_emulator: Emulator
) -> None:
    ramp = "b = []\nwhile True:\n    b.append(bytearray(8 * 1024 * 1024))"
    name = make_pod(core, ["python", "-c", ramp], memory="64Mi", image="python")
    pod = finished(core, name)
    term = pod.status.container_statuses[0].state.terminated
    assert pod.status.phase == "Failed" and (term.exit_code, term.reason) == (137, "OOMKilled")
    events = core.list_namespaced_event("default", field_selector=f"involvedObject.name={name}").items
    oom = [e for e in events if e.reason == "OOMKilling"]
    assert oom and "kernel OOM killer" in oom[0].message and oom[0].type == "Warning"
    assert container_of(process_emulator, name).oom_events >= 1  # the cgroup's oom_kill counter


def test_a_child_oom_kill_kills_the_whole_container_as_memory_oom_group_does(
    core: client.CoreV1Api,
) -> None:
    """The kernel picks the child (the largest); the parent would exit 0 and the pod succeed."""
    ramp = "b = []\nwhile True:\n    b.append(bytearray(8 * 1024 * 1024))"
    parent = f"import subprocess, sys, time\nsubprocess.run([sys.executable, '-c', {ramp!r}])\ntime.sleep(30)"
    name = make_pod(core, ["python", "-c", parent], memory="96Mi", image="python")
    pod = finished(core, name)
    term = pod.status.container_statuses[0].state.terminated
    assert pod.status.phase == "Failed" and (term.exit_code, term.reason) == (137, "OOMKilled")


def test_a_process_killed_without_oom_is_not_reported_as_oom(core: client.CoreV1Api) -> None:
    name = make_pod(core, ["sh", "-c", "kill -9 $$"])
    term = finished(core, name).status.container_statuses[0].state.terminated
    assert term.exit_code == 137 and term.reason == "Error"


def test_missing_program_is_start_error_128(core: client.CoreV1Api) -> None:
    name = make_pod(core, ["no-such-program-here", "x"])
    pod = finished(core, name)
    term = pod.status.container_statuses[0].state.terminated
    assert pod.status.phase == "Failed" and (term.exit_code, term.reason) == (128, "StartError")
    assert 'exec: "no-such-program-here": executable file not found in $PATH' in term.message


def test_unmapped_image_waits_with_err_image_pull_and_stays_pending(
    core: client.CoreV1Api, process_emulator: Emulator
) -> None:
    kubelet = process_emulator.kubelet
    assert isinstance(kubelet, ProcessKubelet)
    before = kubelet.images
    kubelet.images = ImageMap((ImageRule("busybox"), ImageRule("python")))  # no "*": strict
    try:
        name = make_pod(core, ["true"], image="registry.example/unknown:1")

        def waiting() -> str | None:
            cs = core.read_namespaced_pod(name, "default").status.container_statuses
            w = cs[0].state.waiting if cs else None
            return w.reason if w is not None and w.reason != "ContainerCreating" else None

        assert wait_for(waiting) in ("ErrImagePull", "ImagePullBackOff")
        assert phase(core, name) == "Pending"
        reasons = {
            e.message
            for e in core.list_namespaced_event("default", field_selector=f"involvedObject.name={name}").items
        }
        assert "Error: ErrImagePull" in reasons
    finally:
        kubelet.images = before


def test_init_containers_run_in_order_and_a_native_sidecar_keeps_running(
    core: client.CoreV1Api, tmp_path: Path
) -> None:
    trace = tmp_path / "order"
    init = [
        {"name": "first", "image": "busybox", "command": ["sh", "-c", f"echo first >> {trace}"]},
        {
            "name": "side",
            "image": "busybox",
            "restartPolicy": "Always",
            "command": ["sh", "-c", f"echo side >> {trace}; exec sleep 300"],
        },
        {"name": "second", "image": "busybox", "command": ["sh", "-c", f"echo second >> {trace}"]},
    ]
    name = make_pod(core, ["sh", "-c", f"echo app >> {trace}; sleep 1"], init=init)

    def sidecar_running() -> client.V1ContainerStatus | None:
        pod = core.read_namespaced_pod(name, "default")
        statuses = {s.name: s for s in pod.status.init_container_statuses or []}
        side = statuses.get("side")
        return side if side is not None and side.state.running and pod.status.phase == "Running" else None

    side = wait_for(sidecar_running)
    assert side.started is True and side.ready is True
    pod = finished(core, name)
    assert pod.status.phase == "Succeeded"
    assert trace.read_text().split() == ["first", "side", "second", "app"]
    statuses = {s.name: s for s in pod.status.init_container_statuses}
    assert statuses["first"].state.terminated.reason == "Completed"
    assert statuses["second"].state.terminated.exit_code == 0
    # the sidecar is stopped once the app container is done, and the pod still succeeded
    wait_for(
        lambda: (
            next(
                s
                for s in core.read_namespaced_pod(name, "default").status.init_container_statuses
                if s.name == "side"
            ).state.terminated
        )
    )


def test_failed_init_container_fails_the_pod_without_starting_the_app(core: client.CoreV1Api) -> None:
    init = [{"name": "broken", "image": "busybox", "command": ["sh", "-c", "exit 2"]}]
    name = make_pod(core, ["sh", "-c", "echo never"], init=init)
    pod = finished(core, name)
    assert pod.status.phase == "Failed"
    assert pod.status.init_container_statuses[0].state.terminated.exit_code == 2
    assert pod.status.container_statuses[0].state.waiting.reason == "PodInitializing"


def test_logs_filters_and_errors(core: client.CoreV1Api) -> None:
    name = make_pod(core, ["sh", "-c", "for i in 1 2 3 4 5; do echo line $i; done; sleep 0.3; echo oops >&2"])
    finished(core, name)
    assert logs(core, name, tail_lines=2) == "line 5\noops\n"
    stamped = logs(core, name, timestamps=True).splitlines()
    assert len(stamped) == 6 and all(line.split(" ", 1)[0].endswith("Z") for line in stamped)
    assert stamped[0].split(" ", 1)[1] == "line 1"
    assert logs(core, name, since_seconds=3600).count("line") == 5
    with pytest.raises(ApiException) as err:
        logs(core, name, container="nope")
    assert err.value.status == 400 and "container nope is not valid" in err.value.body


def test_follow_streams_lines_until_the_container_exits(core: client.CoreV1Api) -> None:
    name = make_pod(core, ["sh", "-c", "for i in 1 2 3; do echo tick $i; sleep 0.3; done"])
    wait_for(lambda: phase(core, name) == "Running")
    resp = core.read_namespaced_pod_log(name, "default", follow=True, _preload_content=False)
    text = b"".join(resp.stream()).decode()
    assert text == "tick 1\ntick 2\ntick 3\n"


def test_delete_sends_sigterm_then_sigkill_after_the_grace_period(
    core: client.CoreV1Api, process_emulator: Emulator, tmp_path: Path
) -> None:
    polite = make_pod(
        core, ["sh", "-c", f"trap 'echo term > {tmp_path}/polite; exit 0' TERM; while :; do sleep 0.1; done"]
    )
    stubborn = make_pod(core, ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"], grace=1)
    wait_for(lambda: phase(core, polite) == "Running" and phase(core, stubborn) == "Running")
    pids = [container_of(process_emulator, n).handle.pid for n in (polite, stubborn)]  # type: ignore[union-attr]
    for n in (polite, stubborn):
        core.delete_namespaced_pod(n, "default")
    assert core.read_namespaced_pod(stubborn, "default").metadata.deletion_timestamp is not None

    def gone(n: str) -> bool:
        try:
            core.read_namespaced_pod(n, "default")
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(lambda: gone(polite) and gone(stubborn), timeout=30)
    assert (tmp_path / "polite").read_text().strip() == "term"
    for pid in pids:
        wait_for(lambda pid=pid: not os.path.exists(f"/proc/{pid}"), timeout=10)


def test_metrics_and_summary_report_the_kernel_usage(
    core: client.CoreV1Api, process_emulator: Emulator
) -> None:
    burn = "import time\nb = bytearray(96 * 1024 * 1024)\nwhile True:\n    sum(range(10000))"
    name = make_pod(core, ["python", "-c", burn], memory="256Mi", cpu="500m", image="python")
    wait_for(lambda: phase(core, name) == "Running")
    custom = client.CustomObjectsApi(core.api_client)

    def busy() -> dict[str, Any] | None:
        try:
            m = custom.get_namespaced_custom_object("metrics.k8s.io", "v1beta1", "default", "pods", name)
        except ApiException:
            return None
        usage = m["containers"][0]["usage"]
        cpu, mem = int(usage["cpu"].rstrip("n")), int(usage["memory"].rstrip("Ki")) * 1024
        return m if cpu > 0.2e9 and mem > 90 * MiB else None

    m = wait_for(busy, timeout=30)
    cpu = int(m["containers"][0]["usage"]["cpu"].rstrip("n"))
    assert cpu <= 0.6e9  # the 500m CFS quota holds (rate over the window, small slack)
    summary = core.api_client.call_api(
        "/api/v1/nodes/emulator-node-1/proxy/stats/summary",
        "GET",
        response_types_map={200: "object"},
        _return_http_data_only=True,
    )
    pod = next(p for p in summary["pods"] if p["podRef"]["name"] == name)
    assert pod["memory"]["workingSetBytes"] > 90 * MiB
    assert pod["cpu"]["usageCoreNanoSeconds"] > 0
    cr = container_of(process_emulator, name)
    assert cr.periods > 0  # CFS periods from the cgroup's cpu.stat (throttling depends on the host's load)
    core.delete_namespaced_pod(name, "default", grace_period_seconds=0)


def test_in_place_resize_raises_the_cgroup_limit_and_the_pod_survives_a_ramp(
    core: client.CoreV1Api, process_emulator: Emulator, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    ramp = (
        "import os, time\n"
        f"while not os.path.exists({str(go)!r}):\n"
        "    time.sleep(0.05)\n"
        "b = [bytearray(8 * 1024 * 1024) for _ in range(20)]\n"
        "print('survived 160MiB', flush=True)\n"
    )
    kept = make_pod(core, ["python", "-c", ramp], memory="100Mi", image="python")
    grown = make_pod(core, ["python", "-c", ramp], memory="100Mi", image="python")
    wait_for(lambda: phase(core, kept) == "Running" and phase(core, grown) == "Running")
    assert memory_limit_file(container_of(process_emulator, grown)) == 100 * MiB
    new = {"requests": {"cpu": "1", "memory": "300Mi"}, "limits": {"cpu": "1", "memory": "300Mi"}}
    core.patch_namespaced_pod_resize(
        grown, "default", {"spec": {"containers": [{"name": "c", "resources": new}]}}
    )

    def actuated() -> bool:
        pod = core.read_namespaced_pod(grown, "default")
        conds = {c.type for c in pod.status.conditions}
        actual = pod.status.container_statuses[0].resources
        return "PodResizeInProgress" not in conds and actual.limits.get("memory") == "300Mi"

    wait_for(actuated)
    assert memory_limit_file(container_of(process_emulator, grown)) == 300 * MiB
    go.touch()
    assert finished(core, grown).status.phase == "Succeeded"
    assert logs(core, grown) == "survived 160MiB\n"
    term = finished(core, kept).status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason) == (137, "OOMKilled")
    reasons = [
        e.reason
        for e in core.list_namespaced_event("default", field_selector=f"involvedObject.name={grown}").items
    ]
    assert "ResizeCompleted" in reasons


def test_memory_limit_below_usage_stays_in_progress_with_an_error(
    core: client.CoreV1Api, process_emulator: Emulator
) -> None:
    hold = "b = bytearray(120 * 1024 * 1024)\nimport time\nwhile True:\n    time.sleep(1)"
    name = make_pod(core, ["python", "-c", hold], memory="256Mi", image="python")
    wait_for(lambda: container_of(process_emulator, name).memory > 110 * MiB)
    small = {"requests": {"cpu": "1", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "64Mi"}}
    body = {"spec": {"containers": [{"name": "c", "resources": small}]}}
    core.api_client.call_api(  # a JSON merge patch (RFC 7386): takes only the resources
        f"/api/v1/namespaces/default/pods/{name}/resize",
        "PATCH",
        body=body,
        header_params={"Content-Type": "application/merge-patch+json", "Accept": "application/json"},
        response_types_map={200: "object"},
    )

    def error() -> client.V1PodCondition | None:
        conds = core.read_namespaced_pod(name, "default").status.conditions
        return next((c for c in conds if c.type == "PodResizeInProgress" and c.reason == "Error"), None)

    cond = wait_for(error)
    assert "below current usage" in cond.message
    assert memory_limit_file(container_of(process_emulator, name)) == 256 * MiB
    assert phase(core, name) == "Running"
    core.delete_namespaced_pod(name, "default", grace_period_seconds=0)


def test_stop_kills_every_process_and_removes_every_cgroup(tmp_path: Path) -> None:
    require_cgroups()
    em = Emulator(mode="process").start()
    core = client.CoreV1Api(config.new_client_from_config(str(em.write_kubeconfig(tmp_path / "kc"))))
    names = [make_pod(core, ["sleep", "300"]) for _ in range(2)]
    wait_for(lambda: all(phase(core, n) == "Running" for n in names))
    crs = [container_of(em, n) for n in names]
    pids = [cr.handle.pid for cr in crs if cr.handle is not None]
    folders = [d for cr in crs if cr.group is not None for d in cr.group.folders]
    assert len(pids) == 2 and folders and all(os.path.isdir(d) for d in folders)
    em.stop()
    assert not [p for p in pids if os.path.exists(f"/proc/{p}")]
    assert not [d for d in folders if os.path.isdir(d)]


@pytest.fixture
def cli_emulator(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], client.CoreV1Api]]:
    require_cgroups()
    kc = tmp_path / "kc"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_predictive.cli.commands.kube_emulator",
            "--kubelet",
            "process",
            "--kubeconfig",
            str(kc),
            "--start-delay",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines = [proc.stdout.readline() for _ in range(4)]
    assert lines[3].strip() == "kubelet: process", lines
    yield proc, client.CoreV1Api(config.new_client_from_config(str(kc)))
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def test_cli_process_kubelet_cleans_up_on_sigterm(
    cli_emulator: tuple[subprocess.Popen[str], client.CoreV1Api],
) -> None:
    proc, core = cli_emulator
    name = make_pod(core, ["sh", "-c", "echo pid $$; cat /proc/self/cgroup; exec sleep 300"])
    wait_for(lambda: phase(core, name) == "Running")
    out = wait_for(lambda: logs(core, name))
    assert int(out.split()[1]) > 0
    v1 = [line for line in out.splitlines() if ":memory:" in line]
    line = v1[0] if v1 else next(x for x in out.splitlines() if x.startswith("0::"))
    cgroup = line.split(":", 2)[2]
    assert "/airflow-predictive/kube-default-" in cgroup
    folder = ("/sys/fs/cgroup/memory" if v1 else "/sys/fs/cgroup") + cgroup
    assert os.path.isdir(folder)
    with open(os.path.join(folder, "cgroup.procs")) as fh:  # host pids: the container has its own
        host_pids = [int(p) for p in fh.read().split()]
    assert host_pids
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    # killed; a container's process in its PID namespace is reaped once its sandbox is gone
    wait_for(lambda: not any(os.path.exists(f"/proc/{p}") for p in host_pids), timeout=10)
    assert not os.path.isdir(folder)


def test_an_env_from_a_secret_waits_with_create_container_config_error(core: client.CoreV1Api) -> None:
    secret = {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}
    name = make_pod(core, ["sh", "-c", "echo $TOKEN"], extra={"env": [secret]})

    def waiting() -> str | None:
        cs = core.read_namespaced_pod(name, "default").status.container_statuses
        w = cs[0].state.waiting if cs else None
        return w.reason if w is not None and w.reason != "ContainerCreating" else None

    assert wait_for(waiting) == "CreateContainerConfigError"
    assert phase(core, name) == "Pending"
    core.delete_namespaced_pod(name, "default", grace_period_seconds=0)


def test_resize_above_the_node_is_infeasible_and_leaves_the_cgroup_alone(
    core: client.CoreV1Api, process_emulator: Emulator
) -> None:
    name = make_pod(core, ["sleep", "300"], memory="64Mi")
    wait_for(lambda: phase(core, name) == "Running")
    huge = {"requests": {"cpu": "1", "memory": "64Gi"}, "limits": {"cpu": "1", "memory": "64Gi"}}
    core.patch_namespaced_pod_resize(
        name, "default", {"spec": {"containers": [{"name": "c", "resources": huge}]}}
    )

    def pending() -> client.V1PodCondition | None:
        conds = core.read_namespaced_pod(name, "default").status.conditions
        return next((c for c in conds if c.type == "PodResizePending"), None)

    cond = wait_for(pending)
    assert cond.reason == "Infeasible" and "Node didn't have enough capacity: memory" in cond.message
    assert memory_limit_file(container_of(process_emulator, name)) == 64 * MiB
    core.delete_namespaced_pod(name, "default", grace_period_seconds=0)


def test_a_host_failure_while_starting_fails_that_container_not_the_emulator(
    core: client.CoreV1Api, process_emulator: Emulator
) -> None:
    kubelet = process_emulator.kubelet
    assert isinstance(kubelet, ProcessKubelet)
    before = kubelet.log_dir
    kubelet.log_dir = "/dev/null/not-a-folder"  # the log folder cannot be made
    try:
        broken = make_pod(core, ["true"])
        term = finished(core, broken).status.container_statuses[0].state.terminated
    finally:
        kubelet.log_dir = before
    assert (term.exit_code, term.reason) == (128, "StartError") and "emulator error" in term.message
    fine = make_pod(core, ["true"])  # the kubelet goes on with the next pod
    assert finished(core, fine).status.phase == "Succeeded"


def test_a_sidecar_that_exits_is_restarted_while_the_app_runs(core: client.CoreV1Api) -> None:
    side = {
        "name": "side",
        "image": "busybox",
        "restartPolicy": "Always",
        "command": ["sh", "-c", "sleep 0.3; exit 1"],
    }
    name = make_pod(core, ["sleep", "30"], init=[side])

    def restarted() -> client.V1ContainerStatus | None:
        pod = core.read_namespaced_pod(name, "default")
        s = (pod.status.init_container_statuses or [None])[0]
        return s if s is not None and s.restart_count >= 1 and pod.status.phase == "Running" else None

    status = wait_for(restarted)
    assert status.last_state.terminated.exit_code == 1
    app = core.read_namespaced_pod(name, "default").status.container_statuses[0]
    assert app.restart_count == 0 and app.state.running is not None
    core.delete_namespaced_pod(name, "default", grace_period_seconds=0)


def test_a_deferred_resize_is_applied_to_the_cpu_quota_once_room_frees_up(
    core: client.CoreV1Api, process_emulator: Emulator
) -> None:
    holder = make_pod(core, ["sleep", "300"], cpu="2")  # the node has 4 cpu
    grown = make_pod(core, ["sleep", "300"], cpu="1")
    wait_for(lambda: phase(core, holder) == "Running" and phase(core, grown) == "Running")
    more = {"requests": {"cpu": "3", "memory": "128Mi"}, "limits": {"cpu": "3", "memory": "128Mi"}}
    core.patch_namespaced_pod_resize(
        grown, "default", {"spec": {"containers": [{"name": "c", "resources": more}]}}
    )

    def condition(reason: str) -> client.V1PodCondition | None:
        conds = core.read_namespaced_pod(grown, "default").status.conditions
        return next((c for c in conds if c.type == "PodResizePending" and c.reason == reason), None)

    cond = wait_for(lambda: condition("Deferred"))
    assert "Node didn't have enough resource: cpu, requested: 3000" in cond.message
    cr = container_of(process_emulator, grown)
    assert cr.group is not None
    quota_file = os.path.join(cr.group.dirs.get("cpu") or cr.group.dirs["unified"], "cpu.cfs_quota_us")
    with open(quota_file) as f:
        assert int(f.read()) == 100000  # still 1 cpu
    core.delete_namespaced_pod(holder, "default", grace_period_seconds=0)

    def applied() -> bool:
        pod = core.read_namespaced_pod(grown, "default")
        return pod.status.container_statuses[0].resources.limits.get("cpu") == "3"

    wait_for(applied)
    with open(quota_file) as f:
        assert int(f.read()) == 300000  # 3 cpu of CFS quota per 100 ms period
    core.delete_namespaced_pod(grown, "default", grace_period_seconds=0)


def test_active_deadline_kills_the_pod_and_fails_it_with_deadline_exceeded(
    core: client.CoreV1Api, process_emulator: Emulator
) -> None:
    """What ends a shadow pod whose worker died: the kubelet, at activeDeadlineSeconds."""
    import psutil

    name = make_pod(core, ["sleep", "300"], policy="Always")
    core.patch_namespaced_pod(name, "default", {"spec": {"activeDeadlineSeconds": 2}})
    wait_for(lambda: phase(core, name) == "Running")
    pid = container_of(process_emulator, name).handle.pid  # type: ignore[union-attr]
    pod = finished(core, name, timeout=30)
    assert (pod.status.phase, pod.status.reason) == ("Failed", "DeadlineExceeded")
    assert pod.status.container_statuses[0].state.terminated.exit_code == 137
    assert pod.status.container_statuses[0].restart_count == 0  # never restarted, policy Always or not

    def gone() -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_for(gone)  # the container's process was killed
