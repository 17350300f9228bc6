"""The provider's UI: a FastAPI app (JSON API + pages) that the Airflow API server mounts.

Read-only over the provider's stores; built through ``runtime`` (never reads configuration).
Never imports TensorFlow: the API server loads it with every plugin.
"""

from __future__ import annotations
