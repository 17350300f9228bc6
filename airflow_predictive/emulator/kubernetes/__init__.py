"""A Kubernetes 1.35 API emulator: a real HTTP server that the official clients and kubectl reach.

It implements what the provider's Kubernetes backend uses, with Kubernetes' own semantics (pods,
in-place resize through ``/resize``, a simulated kubelet or one that runs containers as local
processes under cgroups, logs, events, metrics.k8s.io, watch, discovery, fault injection). It must never pretend to be more: unsupported paths answer 404 with a Status body.
Start one with ``airflow predictive kube-emulator`` or ``Emulator(...).start()``.
"""

from __future__ import annotations
