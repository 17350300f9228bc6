"""TypedDicts for the Kubernetes payloads the backend reads and writes (kopf's ``bodies`` style).

Only the fields the backend uses are declared; everything is ``total=False`` because the server
omits empty fields. These are plain JSON shapes: no client model object is ever built.
"""

from __future__ import annotations

from typing import TypedDict


class ObjectMeta(TypedDict, total=False):
    name: str
    namespace: str
    uid: str
    resourceVersion: str
    generation: int
    labels: dict[str, str]
    annotations: dict[str, str]
    deletionTimestamp: str


class ResourceRequirements(TypedDict, total=False):
    requests: dict[str, str]
    limits: dict[str, str]


class ResizePolicy(TypedDict):
    resourceName: str
    restartPolicy: str


class EnvVar(TypedDict):
    name: str
    value: str


class Container(TypedDict, total=False):
    name: str
    image: str
    command: list[str]
    env: list[EnvVar]
    resources: ResourceRequirements
    resizePolicy: list[ResizePolicy]


class PodSpec(TypedDict, total=False):
    containers: list[Container]
    restartPolicy: str
    nodeName: str
    serviceAccountName: str
    activeDeadlineSeconds: int


class Condition(TypedDict, total=False):
    type: str
    status: str
    reason: str
    message: str
    observedGeneration: int


class Terminated(TypedDict, total=False):
    exitCode: int
    reason: str
    message: str


class ContainerState(TypedDict, total=False):
    running: dict[str, str]
    waiting: dict[str, str]
    terminated: Terminated


class ContainerStatus(TypedDict, total=False):
    name: str
    restartCount: int
    state: ContainerState
    lastState: ContainerState
    allocatedResources: dict[str, str]
    resources: ResourceRequirements


class PodStatus(TypedDict, total=False):
    phase: str
    observedGeneration: int
    conditions: list[Condition]
    containerStatuses: list[ContainerStatus]
    qosClass: str
    reason: str
    message: str


class Pod(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: PodSpec
    status: PodStatus


class ContainerMetrics(TypedDict):
    name: str
    usage: dict[str, str]


class PodMetrics(TypedDict, total=False):
    metadata: ObjectMeta
    timestamp: str
    window: str
    containers: list[ContainerMetrics]


class PodStatsNetwork(TypedDict, total=False):
    rxBytes: int
    txBytes: int


class PodStatsVolume(TypedDict, total=False):
    usedBytes: int


PodStats = TypedDict(
    "PodStats",
    {"podRef": dict[str, str], "network": PodStatsNetwork, "ephemeral-storage": PodStatsVolume},
    total=False,
)


class Status(TypedDict, total=False):
    """The API server's error body."""

    kind: str
    code: int
    reason: str
    message: str


class PersistentVolumeClaimSpec(TypedDict, total=False):
    storageClassName: str
    resources: ResourceRequirements
    accessModes: list[str]


class PersistentVolumeClaimStatus(TypedDict, total=False):
    phase: str
    capacity: dict[str, str]
    conditions: list[Condition]


class PersistentVolumeClaim(TypedDict, total=False):
    metadata: ObjectMeta
    spec: PersistentVolumeClaimSpec
    status: PersistentVolumeClaimStatus
