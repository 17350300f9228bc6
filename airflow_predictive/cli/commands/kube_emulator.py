"""`airflow predictive kube-emulator`: serve the Kubernetes API emulator and write a kubeconfig.

For trying the Kubernetes backend, kubectl or the official clients on a machine without a
cluster. ``--kubelet process`` runs pods' containers as local processes under cgroups (anyone who
can reach the loopback port can then run programs as this user: it says so on start). It binds only 127.0.0.1 (or the given loopback host), prints the URL and the kubeconfig
path, and serves until interrupted (Ctrl-C / SIGTERM). It never touches a real cluster or an
existing kubeconfig unless that path is given explicitly.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from typing import Any


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kube-emulator", description=__doc__)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    for flags, kwargs in ARGS:
        p.add_argument(*flags, **kwargs)


def _default_kubeconfig() -> str:
    home = os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow"))
    return os.path.join(home, "predictive", "kube-emulator.kubeconfig")


ARGS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--port",), {"type": int, "default": 0, "help": "TCP port (default: a free one)"}),
    (("--host",), {"default": "127.0.0.1", "help": "address to bind (default 127.0.0.1)"}),
    (("--kubeconfig",), {"default": None, "help": "where to write the kubeconfig"}),
    (("--nodes",), {"type": int, "default": 1, "help": "number of emulated nodes (default 1)"}),
    (("--node-cpu",), {"default": "4", "help": "allocatable CPU per node (default 4)"}),
    (("--node-memory",), {"default": "16Gi", "help": "allocatable memory per node (default 16Gi)"}),
    (("--gpus",), {"type": int, "default": 0, "help": "nvidia.com/gpu per node (default 0)"}),
    (
        ("--actuation-delay",),
        {"type": float, "default": 1.8, "help": "seconds from allocation to new limits"},
    ),
    (("--start-delay",), {"type": float, "default": 0.5, "help": "seconds from binding to running"}),
    (("--metrics-window",), {"type": float, "default": 15.0, "help": "PodMetrics window in seconds"}),
    (
        ("--kubelet",),
        {
            "choices": ("simulated", "process"),
            "default": "simulated",
            "help": "simulated: workload curves (scales to thousands of pods); process: every container "
            "runs as a local process under its own cgroup (real exits, OOM kills, logs, usage)",
        },
    ),
    (
        ("--image-map",),
        {
            "default": None,
            "help": "JSON image map for --kubelet process (default: every image runs on the host)",
        },
    ),
    (
        ("--backoff",),
        {"type": float, "default": 10.0, "help": "CrashLoopBackOff base in seconds (default 10)"},
    ),
]


def serve(args: Any, stop: threading.Event) -> None:
    from airflow_predictive.emulator.kubernetes.emulator import Emulator, NodeSpec
    from airflow_predictive.emulator.kubernetes.kubelet import KubeletConfig

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"kube-emulator binds loopback addresses only, not {args.host!r}")
    nodes = tuple(
        NodeSpec(name=f"emulator-node-{i + 1}", cpu=args.node_cpu, memory=args.node_memory, gpus=args.gpus)
        for i in range(max(1, args.nodes))
    )
    images = None
    mode = getattr(args, "kubelet", "simulated")
    if getattr(args, "image_map", None):
        from airflow_predictive.emulator.kubernetes.images import ImageMapError, load_image_map

        try:
            images = load_image_map(args.image_map)
        except ImageMapError as exc:
            raise SystemExit(f"kube-emulator: {exc}") from None
    emulator = Emulator(
        kubelet=KubeletConfig(
            actuation_delay_s=args.actuation_delay,
            start_delay_s=args.start_delay,
            metrics_window_s=args.metrics_window,
            backoff_base_s=getattr(args, "backoff", 10.0),
        ),
        nodes=nodes,
        mode=mode,
        images=images,
    ).start(args.host, args.port)
    path = emulator.write_kubeconfig(args.kubeconfig or _default_kubeconfig())
    print(f"kube-emulator (Kubernetes 1.35) serving at {emulator.url}", flush=True)
    print(f"kubeconfig: {path}", flush=True)
    print(f"  export KUBECONFIG={path}", flush=True)
    print(f"kubelet: {mode}", flush=True)
    if mode == "process":
        import sys

        print(
            f"kube-emulator: the process kubelet runs every pod's commands as local processes "
            f"(uid {os.getuid()}); any client of {emulator.url} can run programs here",
            file=sys.stderr,
            flush=True,
        )
    try:
        stop.wait()
    finally:
        emulator.stop()


def run(args: Any) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        serve(args, stop)
    except KeyboardInterrupt:
        stop.set()


def main(argv: list[str] | None = None) -> None:
    run(_parser().parse_args(argv))


if __name__ == "__main__":
    main()
