"""Kubernetes backends: pods resized in place (``pods/resize``) and PVCs expanded, through the
official clients (``kubernetes`` for synchronous callers, ``kubernetes_asyncio`` for the triggerer).

Kubernetes client objects never leave this package: payloads are TypedDicts (``payloads``) and
everything handed to the core is a ``ResourceVector`` or a core value.
"""

from __future__ import annotations
