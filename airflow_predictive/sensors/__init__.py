"""Sensors of the provider: in-flight shaping of running pods."""
