"""Forecasters behind one small contract (see ``base``). Heavy libraries stay in their own module."""

from __future__ import annotations
