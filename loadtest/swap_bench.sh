#!/usr/bin/env bash
# Hot-swap figures for the README:
#   1. p99 latency while versions are swapped in and out vs steady state, in one load generator run
#      (open loop, so a stall cannot hide): phase "steady", then phase "swapping" during which a new
#      breast_cancer version is published every SWAP_EVERY seconds and the previous one removed.
#   2. RSS after 50 load/unload cycles vs after the first (explicit mode, repository API).
# Usage: loadtest/swap_bench.sh     Env: RATE=2000 DURATION=20 SWAP_EVERY=2 CYCLES=50 OUT=target/bench-results
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
RATE=${RATE:-2000}; DURATION=${DURATION:-20}; SWAP_EVERY=${SWAP_EVERY:-2}; CYCLES=${CYCLES:-50}
OUT=${OUT:-$ROOT/target/bench-results}; mkdir -p "$OUT"
cargo build --release --workspace -q
REG=$(mktemp -d); PID=""
cleanup() { [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null; rm -rf "$REG"; }
trap cleanup EXIT
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/v2/health/ready")" = 200 ]; }

echo "== 1. p99 during swaps vs steady state ($RATE req/s, ${DURATION}s each)"
mkdir -p "$REG/breast_cancer"
cp -r models/breast_cancer/1 "$REG/breast_cancer/1"
target/release/switchyard serve --model-repository "$REG" --host 127.0.0.1 --http-port 9300 --grpc-port 9301 \
  --model-control-mode poll --repository-poll-secs 0.5 >"$OUT/swap-server.log" 2>&1 &
PID=$!
until ready 9300; do sleep 0.1; done
swapper() {   # publishes version n+1 (alternating the two trained models' files), then removes version n
  local n=1 src
  sleep $((3 + DURATION + 3))          # warm-up and the steady phase, then the swapping phase's warm-up
  local end=$((SECONDS + DURATION))
  while [ $SECONDS -lt $end ]; do
    src=$(( (n % 2) + 1 ))
    mkdir -p "$REG/breast_cancer/.staging"
    cp models/breast_cancer/$src/* "$REG/breast_cancer/.staging/"
    mv "$REG/breast_cancer/.staging" "$REG/breast_cancer/$((n + 1))"
    sleep "$SWAP_EVERY"
    rm -rf "$REG/breast_cancer/$n"
    n=$((n + 1))
  done
  echo "$n" >"$OUT/swap-count.txt"
}
swapper &
SWAPPER=$!
target/release/switchyard-loadtest --quiet --model breast_cancer --rate "$RATE" --duration "${DURATION}s" --warmup 3s \
  --target steady=http://127.0.0.1:9300 --target swapping=http://127.0.0.1:9300 \
  --plot "$OUT/swap.svg" --json >"$OUT/swap.json"
wait "$SWAPPER"
python3 - "$OUT/swap.json" "$(cat "$OUT/swap-count.txt")" <<'PY'
import json, sys
r = {x["target"]: x for x in json.load(open(sys.argv[1]))["results"]}
s, w = r["steady"], r["swapping"]
for x in (s, w):
    l = x["latency_ms"]
    print(f'  {x["target"]:<9} sent {x["sent"]}, ok {x["ok"]}, errors {x["errors"]}, p50 {l["p50"]:.3f} ms, p99 {l["p99"]:.3f} ms, p99.9 {l["p999"]:.3f} ms, max {l["max"]:.2f} ms')
print(f'  versions published during the swapping phase: {int(sys.argv[2]) - 1}')
print(f'  p99 swapping / steady = {w["latency_ms"]["p99"] / s["latency_ms"]["p99"]:.2f}')
PY
curl -s http://127.0.0.1:9300/metrics | grep -E '^switchyard_model_(swaps_total|load_failures_total)' || true
kill -TERM "$PID"; wait "$PID" || true; PID=""

echo "== 2. RSS over $CYCLES load/unload cycles (explicit mode)"
target/release/switchyard serve --host 127.0.0.1 --http-port 9310 --grpc-port 9311 \
  --model-control-mode explicit --load-model iris >"$OUT/rss-server.log" 2>&1 &
PID=$!
until ready 9310; do sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }
body=$(python3 -c "import json; print(json.dumps({'inputs': [{'name': 'X', 'shape': [4, 30], 'datatype': 'FP32', 'data': [0.5] * 120}]}))")
echo "  before: $(rss) kB"
for i in $(seq 1 "$CYCLES"); do
  curl -sf -X POST "http://127.0.0.1:9310/v2/repository/models/breast_cancer/load" >/dev/null
  for _ in 1 2 3 4 5; do curl -sf "http://127.0.0.1:9310/v2/models/breast_cancer/infer" -d "$body" >/dev/null; done
  curl -sf -X POST "http://127.0.0.1:9310/v2/repository/models/breast_cancer/unload" >/dev/null
  [ "$i" = 1 ] && first=$(rss) && echo "  after cycle 1: $first kB"
done
last=$(rss)
echo "  after cycle $CYCLES: $last kB"
python3 -c "print(f'  RSS after $CYCLES cycles / after 1 = {$last / $first:.3f}')"
