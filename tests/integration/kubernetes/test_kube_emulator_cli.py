"""`kube-emulator` as a separate process: writes a kubeconfig the official client can use, stops on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import TYPE_CHECKING

from kubernetes import client, config

if TYPE_CHECKING:
    from pathlib import Path


def test_cli_serves_until_terminated(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc.yaml"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_predictive.cli.commands.kube_emulator",
            "--port",
            "0",
            "--kubeconfig",
            str(kubeconfig),
            "--nodes",
            "2",
            "--node-cpu",
            "2",
            "--gpus",
            "1",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("kube-emulator (Kubernetes 1.35) serving at http://127.0.0.1:"), first
        assert proc.stdout.readline().strip() == f"kubeconfig: {kubeconfig}"
        core = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
        nodes = core.list_node().items
        assert [n.metadata.name for n in nodes] == ["emulator-node-1", "emulator-node-2"]
        assert (
            nodes[0].status.allocatable["cpu"] == "2" and nodes[0].status.allocatable["nvidia.com/gpu"] == "1"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_cli_refuses_non_loopback_hosts(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow_predictive.cli.commands.kube_emulator",
            "--host",
            "0.0.0.0",
            "--kubeconfig",
            str(tmp_path / "kc"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0 and "loopback addresses only" in done.stderr
