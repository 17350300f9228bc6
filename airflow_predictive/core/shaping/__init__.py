"""Dynamic shaping: the pure policy (``policy``), the loop as a ``tick()`` (``controller``) and the
decisions it records (``events``)."""
