"""Trace-driven cluster simulation: every sizing policy replays the same task executions.

Why: the product's claim is system-level (capacity freed, OOM kills avoided against what users
would use instead). This package replays recorded task executions, each with its true usage
curve, on a pool of nodes, under one policy at a time (declared, VPA-style, Autopilot-style,
reactive, oracle, and the product's own planner + shaping controller), and measures slack,
waste, OOM kills, throttling and queueing. It never re-implements the product's planner or
shaping policy: the predictive policies call them.

Layout: ``workload`` (runs on a regular grid), ``execution`` (one try against its allocation,
vectorised), ``cluster`` (the discrete-event pool: queue, placement, retries), ``policies/``,
``metrics``, ``forecasting`` (the profiler's held-out forecasts), ``bench`` (one call that runs
the comparison for the CLI and ``make bench``). Node level (issue 15): ``nodes`` (pods on nodes
an autoscaler makes after a provisioning delay, reactive or with warm-capacity placeholders) and
``warm_capacity`` (runs -> pods: requests and predicted starts).
"""
