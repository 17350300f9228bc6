"""Node-pool backend: pool capacity, warm capacity ahead of plans, steering to a fitting pool."""
