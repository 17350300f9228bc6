"""The image map: which images run on this host, and the argv / env / cwd a container gets."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

import pytest

from airflow_predictive.emulator.kubernetes.images import (
    ContainerConfigError,
    ImageMap,
    ImageMapError,
    ImageRule,
    load_image_map,
)

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize(
    "image",
    ["python", "python:3.11-slim", "docker.io/library/python:3.12", "library/python@sha256:abc"],
)
def test_python_images_match_the_python_rule_whatever_the_tag_or_registry_prefix(image: str) -> None:
    rule = ImageMap().rule_for(image)
    assert rule is not None and rule.pattern == "python"


def test_prefix_rules_and_the_default_fallback() -> None:
    images = ImageMap()
    airflow = images.rule_for("apache/airflow:3.3.2-python3.11")
    assert airflow is not None and airflow.pattern == "apache/airflow*"
    fallback = images.rule_for("ghcr.io/acme/tool:1")
    assert fallback is not None and fallback.pattern == "*"


def test_a_map_without_a_fallback_does_not_know_other_images() -> None:
    images = ImageMap((ImageRule("busybox"),))
    assert images.rule_for("busybox:1.36") is not None
    assert images.rule_for("alpine") is None


def test_python_resolves_to_the_running_interpreter_and_its_bin_comes_first_on_path() -> None:
    images = ImageMap()
    rule = images.rule_for("python:3.11")
    assert rule is not None
    launch = images.launch(rule, {"command": ["python", "-c", "pass"], "env": [{"name": "A", "value": "1"}]})
    assert launch.argv == (sys.executable, "-c", "pass")
    assert launch.env["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
    assert launch.env["A"] == "1" and launch.cwd is None


def test_args_alone_replace_the_image_cmd_and_command_replaces_the_entrypoint() -> None:
    rule = ImageRule("tool", entrypoint=("/bin/echo", "from-entrypoint"), cmd=("default",))
    images = ImageMap((rule,))
    assert images.launch(rule, {"args": ["x"]}).argv == ("/bin/echo", "from-entrypoint", "x")
    assert images.launch(rule, {}).argv == ("/bin/echo", "from-entrypoint", "default")
    assert images.launch(rule, {"command": ["sh"], "args": ["-c", "true"]}).argv == ("sh", "-c", "true")
    # the Airflow worker pod: args only, run by the python image's cmd-less entrypoint
    py = ImageMap().rule_for("python")
    assert py is not None
    worker = ImageMap().launch(py, {"args": ["python", "-m", "airflow.sdk.execution_time.execute_workload"]})
    assert worker.argv[0] == sys.executable and worker.argv[1:3] == (
        "-m",
        "airflow.sdk.execution_time.execute_workload",
    )


def test_nothing_to_run_is_an_error_with_the_runtime_message() -> None:
    rule = ImageRule("scratch")
    with pytest.raises(ValueError, match="no command specified"):
        ImageMap((rule,)).launch(rule, {})


def test_pod_env_overrides_image_env_and_working_dir_is_kept(tmp_path: Path) -> None:
    rule = ImageRule("x", cmd=("true",), env=(("MODE", "image"), ("KEEP", "yes")))
    launch = ImageMap((rule,)).launch(
        rule, {"env": [{"name": "MODE", "value": "pod"}], "workingDir": str(tmp_path)}
    )
    assert launch.env["MODE"] == "pod" and launch.env["KEEP"] == "yes" and launch.cwd == str(tmp_path)


def test_load_image_map_from_json_and_refuse_malformed_entries(tmp_path: Path) -> None:
    good = tmp_path / "map.json"
    good.write_text(json.dumps({"rules": [{"pattern": "busybox", "cmd": ["sh"], "env": {"A": "b"}}]}))
    images = load_image_map(good)
    assert images.rules == (ImageRule("busybox", (), ("sh",), (("A", "b"),)),)
    assert images.rule_for("other") is None
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rules": [{"cmd": ["sh"]}]}))
    with pytest.raises(ImageMapError, match=r"rules\[0\] needs a non-empty 'pattern'"):
        load_image_map(bad)
    with pytest.raises(ImageMapError, match="cannot read image map"):
        load_image_map(tmp_path / "missing.json")


def test_downward_api_env_resolves_and_secrets_are_a_config_error() -> None:
    rule = ImageRule("x", cmd=("true",))
    pod = {"metadata": {"name": "p", "namespace": "ns", "labels": {"app": "a"}}, "spec": {"nodeName": "n1"}}
    env = [
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
    ]
    launch = ImageMap((rule,)).launch(rule, {"env": env}, pod)
    assert (launch.env["POD"], launch.env["NODE"], launch.env["APP"]) == ("p", "n1", "a")
    secret = [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
    with pytest.raises(ContainerConfigError, match="secretKeyRef is not supported"):
        ImageMap((rule,)).launch(rule, {"env": secret}, pod)
