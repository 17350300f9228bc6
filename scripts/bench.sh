#!/usr/bin/env bash
# `make bench`: every benchmark, on the real traces in $1 (default ../shared/data). Results land in
# docs/benchmarks/*.md. Parts whose inputs are missing say so and are skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data}"
PY=.venv/bin/python
mkdir -p docs/benchmarks
rc=0
run() { echo; echo "== $*"; "$@" || { echo "!! failed: $*"; rc=1; }; }
run $PY bench/sampler_overhead.py
run $PY bench/recording_bench.py
run $PY bench/backends_bench.py
run $PY bench/kube_process_bench.py
run $PY bench/nodes_warm_bench.py --delay 20 --runs 3
run $PY bench/nodes_warm_bench.py --runs 0 --consolidation --out docs/benchmarks/nodes-consolidation.md
run $PY bench/nodes_warm_bench.py --executor --delay 20 --runs 3
run $PY bench/nodes_wiring_bench.py --tasks 64 --beats 200
run $PY bench/shaping_bench.py
run $PY bench/ui_bench.py
run $PY bench/scheduler_bench.py --pg-url "${AIRFLOW_PREDICTIVE_TEST_PG_URL:-$(bash scripts/pg.sh url 2>/dev/null)}"
export AIRFLOW_PREDICTIVE_TEST_PG_URL="${AIRFLOW_PREDICTIVE_TEST_PG_URL:-$(bash scripts/pg.sh url 2>/dev/null)}"
run $PY bench/oom_record_bench.py
run $PY bench/profiler_memstat.py
run $PY bench/shadow_lookup_bench.py
run $PY bench/training_fanout.py
run $PY bench/training_fanout.py --tasks 50 --shard-size 13 --lstm --out docs/benchmarks/training_fanout_lstm.md
if [ -d "$DATA" ]; then
  run $PY bench/profiler_bench.py --data "$DATA"
  run $PY bench/estimators_bench.py --data "$DATA/kseg-eager" --out docs/benchmarks/estimators.md
  run $PY bench/serving_bench.py --data "$DATA"
  run $PY bench/profiler_first_runs.py --data "$DATA"
  run $PY bench/profiler_prefix.py --data "$DATA"
  run $PY bench/shadow_bench.py --data "$DATA"
  run $PY bench/profiler_heldout.py --data "$DATA"
  run $PY bench/profiler_queue.py --data "$DATA"
  run $PY bench/profiler_scaling.py --data "$DATA" --lstm
  run $PY bench/profiler_online.py --data "$DATA"
  run $PY bench/cluster_bench.py --data "$DATA"
  run $PY bench/warm_capacity_bench.py --data "$DATA"
else
  echo "== profiler benchmark skipped: no trace folder at $DATA (pass SHARED_DATA=...)"
fi
exit $rc
