"""Domain values shared by every part of the product (frozen dataclasses and enums)."""

from __future__ import annotations
