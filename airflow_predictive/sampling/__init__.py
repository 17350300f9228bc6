"""Resource sampling of running tasks: usage sources, the sampler, and its sidecar process.

The sidecar (``python -m airflow_predictive.sampling.sidecar``) runs beside a task as a separate,
detached process: it survives the task being killed and never competes for the task's GIL.
Nothing here imports Airflow, and a failure here must never fail or slow the user's task.
"""

from __future__ import annotations
