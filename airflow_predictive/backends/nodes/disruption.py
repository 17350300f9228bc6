"""Keep node autoscalers from consolidating away the pods the shaper resizes.

While the shaper owns a pod it carries ``karpenter.sh/do-not-disrupt: "true"`` (Karpenter) and
``cluster-autoscaler.kubernetes.io/safe-to-evict: "false"`` (cluster autoscaler); both go when
shaping ends. Consolidation would otherwise evict exactly the pods being resized (their usage
drops under the requests, the node looks underused). A JSON merge patch on the pod's metadata:
``null`` removes a key. Never raises: a failed patch is logged and reported as False.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow_predictive.backends.nodes.karpenter import DO_NOT_DISRUPT, SAFE_TO_EVICT

log = logging.getLogger(__name__)
MERGE_PATCH = "application/merge-patch+json"
PROTECT = {DO_NOT_DISRUPT: "true", SAFE_TO_EVICT: "false"}


def patch_body(on: bool) -> dict[str, Any]:
    return {"metadata": {"annotations": {k: (v if on else None) for k, v in PROTECT.items()}}}


def set_protected(core: Any, namespace: str, name: str, *, on: bool, timeout_s: float = 10.0) -> bool:
    """Add (``on``) or remove the do-not-disrupt annotations of pod ``name`` through a
    ``kubernetes.client.CoreV1Api``; True when the API accepted it (or the pod is gone)."""
    from kubernetes.client.exceptions import ApiException

    try:
        core.patch_namespaced_pod(
            name,
            namespace,
            patch_body(on),
            _content_type=MERGE_PATCH,
            _preload_content=False,
            _request_timeout=timeout_s,
        )
        return True
    except ApiException as exc:
        if exc.status == 404:
            return True
        log.warning("pod %s/%s: do-not-disrupt %s failed: %s %s", namespace, name, on, exc.status, exc.reason)
    except Exception as exc:
        log.warning("pod %s/%s: do-not-disrupt %s failed: %s", namespace, name, on, exc)
    return False
