"""Shadow runs: when to run one and its budget (``policy``), the real try's re-forecast from its
observed prefix (``reforecast``), and serving that re-forecast to the real try (``serving``)."""
