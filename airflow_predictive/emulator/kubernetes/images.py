"""How a container image runs on this machine when the emulator's kubelet runs real processes.

Why it exists: no image is ever pulled here. An ``ImageMap`` says, per image reference, whether
the image "is present" and which entrypoint / cmd it stands for; the process then runs in the
host's environment (its file system, its PATH) with the pod's ``env`` on top. ``python`` /
``python3`` (as a program name) always resolve to the interpreter running the emulator, and that
interpreter's ``bin`` folder goes first on PATH, so Airflow's own worker command
(``python -m airflow.sdk.execution_time.execute_workload ...``) runs a real task.

Rules match the image's repository (``python``, ``library/python``, ``docker.io/library/python``
and any tag or digest are the same image) by exact name or a trailing ``*`` prefix. An image no
rule matches is not present: the container waits with ``ErrImagePull`` like a failed pull. The
default map ends with a ``*`` rule (everything runs on the host); a map loaded from JSON may
leave it out to make unknown images fail.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ImageMapError(ValueError):
    """A malformed image map file (the message names the entry)."""


class ContainerConfigError(ValueError):
    """The container's configuration cannot be resolved (Kubernetes: CreateContainerConfigError)."""


@dataclass(frozen=True, slots=True)
class ImageRule:
    """One image pattern and what it stands for.

    entrypoint / cmd: the image's ENTRYPOINT and CMD (Kubernetes: ``command`` replaces the
    entrypoint, ``args`` replaces cmd).
    env: environment the image would set (under the pod's own ``env``).
    """

    pattern: str
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    def matches(self, repository: str) -> bool:
        if self.pattern.endswith("*"):
            return repository.startswith(_repository(self.pattern[:-1]) if self.pattern != "*" else "")
        return repository == _repository(self.pattern)


def _repository(image: str) -> str:
    """``docker.io/library/python:3.11@sha256:..`` -> ``python``; ``ghcr.io/a/b:1`` -> ``ghcr.io/a/b``."""
    name = image.strip().split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    for prefix in ("docker.io/library/", "docker.io/", "index.docker.io/library/", "library/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return name


PYTHON_NAMES = ("python", "python3")


@dataclass(frozen=True, slots=True)
class Launch:
    """A resolved process: argv, environment and working directory."""

    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str | None


@dataclass(frozen=True)
class ImageMap:
    """Ordered rules; the first that matches wins."""

    rules: tuple[ImageRule, ...] = field(default_factory=lambda: DEFAULT_RULES)

    def rule_for(self, image: str) -> ImageRule | None:
        repo = _repository(image)
        return next((r for r in self.rules if r.matches(repo)), None)

    def launch(self, rule: ImageRule, container: dict[str, Any], pod: dict[str, Any] | None = None) -> Launch:
        """argv / env / cwd of ``container`` (a pod spec container of ``pod``) under ``rule``.

        Raises ``ValueError`` with the runtime's message when there is nothing to run, and
        ``ContainerConfigError`` for an ``env`` entry it cannot resolve (only ``value`` and the
        downward API ``fieldRef`` are supported: there are no Secrets or ConfigMaps here).
        """
        command = [str(x) for x in (container.get("command") or [])]
        args = [str(x) for x in (container.get("args") or [])]
        if command:
            argv = command + args
        else:
            argv = list(rule.entrypoint) + (args or list(rule.cmd))
        if not argv:
            raise ValueError("no command specified")
        if argv[0] in PYTHON_NAMES:
            argv[0] = sys.executable
        env = dict(os.environ)
        bindir = os.path.dirname(sys.executable)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", os.defpath)
        env.update(dict(rule.env))
        for item in container.get("env") or []:
            if isinstance(item, dict) and item.get("name"):
                env[str(item["name"])] = _env_value(item, pod or {})
        cwd = container.get("workingDir")
        return Launch(tuple(argv), env, str(cwd) if cwd else None)


def _env_value(item: dict[str, Any], pod: dict[str, Any]) -> str:
    source = item.get("valueFrom")
    if not source:
        return str(item.get("value") or "")
    field = (source.get("fieldRef") or {}).get("fieldPath") if isinstance(source, dict) else None
    if field is None:
        kind = next(iter(source), "valueFrom") if isinstance(source, dict) else "valueFrom"
        raise ContainerConfigError(f"env {item['name']}: {kind} is not supported by the emulator")
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    values = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": status.get("podIP", "127.0.0.1"),
        "status.hostIP": status.get("hostIP", "127.0.0.1"),
    }
    if field.startswith("metadata.labels['") or field.startswith("metadata.annotations['"):
        kind, _, key = field.partition("['")
        return str((meta.get(kind.split(".")[1]) or {}).get(key.rstrip("']"), ""))
    if field not in values:
        raise ContainerConfigError(f"env {item['name']}: unsupported fieldPath {field!r}")
    return str(values[field] or "")


DEFAULT_RULES: tuple[ImageRule, ...] = (
    ImageRule("python", cmd=("python3",)),
    ImageRule("apache/airflow*", cmd=("bash",)),
    ImageRule("registry.k8s.io/pause", entrypoint=("sleep", "infinity")),  # placeholder pods
    ImageRule("*", cmd=("sh",)),
)


def load_image_map(path: str | Path) -> ImageMap:
    """An image map from JSON: ``{"rules": [{"pattern": "...", "entrypoint": [...], "cmd": [...],
    "env": {"K": "V"}}, ...]}``; order matters, leave out ``"*"`` to refuse unknown images."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ImageMapError(f"cannot read image map {path}: {exc}") from exc
    rules = doc.get("rules") if isinstance(doc, dict) else None
    if not isinstance(rules, list):
        raise ImageMapError(f"{path}: expected an object with a 'rules' list")
    out: list[ImageRule] = []
    for i, item in enumerate(rules):
        if not isinstance(item, dict) or not isinstance(item.get("pattern"), str) or not item["pattern"]:
            raise ImageMapError(f"{path}: rules[{i}] needs a non-empty 'pattern' string")
        env = item.get("env") or {}
        ep, cmd = item.get("entrypoint") or [], item.get("cmd") or []
        if not isinstance(env, dict) or not isinstance(ep, list) or not isinstance(cmd, list):
            raise ImageMapError(f"{path}: rules[{i}]: entrypoint/cmd are lists, env an object")
        out.append(
            ImageRule(
                item["pattern"],
                tuple(str(x) for x in ep),
                tuple(str(x) for x in cmd),
                tuple((str(k), str(v)) for k, v in env.items()),
            )
        )
    return ImageMap(tuple(out))
