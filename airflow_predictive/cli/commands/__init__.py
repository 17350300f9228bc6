"""One module per command; each exposes ``run(args)`` and is imported lazily when invoked."""

from __future__ import annotations
