"""Pure core domain: standard library and numpy only. No Airflow, SQLAlchemy, Kubernetes or TensorFlow."""

from __future__ import annotations
