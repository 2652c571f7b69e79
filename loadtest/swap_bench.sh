#!/usr/bin/env bash
# Hot-swap figures for the README:
#   1. p99 latency while versions are swapped in and out vs steady state, in one load generator run
#      (open loop, so a stall cannot hide): phase "steady", then phase "swapping" during which a new
#      breast_cancer version is published every SWAP_EVERY seconds and the previous one removed.
#   2. RSS after 50 load/unload cycles vs after the first (explicit mode, repository API).
#   With REGISTRY=s3 the registry is a bucket of an S3-compatible server (moto's server mode, from the
#   test venv target/tmp/python-venv: `cargo test --test object_store` makes it), and versions are
#   published and removed with an S3 client (deploy/local/fleet.py), as a CI pipeline would.
# Usage: loadtest/swap_bench.sh     Env: RATE=2000 DURATION=20 SWAP_EVERY=2 CYCLES=50 REGISTRY=folder|s3
#        OUT=target/bench-results
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
RATE=${RATE:-2000}; DURATION=${DURATION:-20}; SWAP_EVERY=${SWAP_EVERY:-2}; CYCLES=${CYCLES:-50}
OUT=${OUT:-$ROOT/target/bench-results}; mkdir -p "$OUT"
cargo build --release --workspace -q
REG=$(mktemp -d); PID=""
S3_PID=""
cleanup() { [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null; [ -n "$S3_PID" ] && kill -TERM "$S3_PID" 2>/dev/null; rm -rf "$REG"; }
trap cleanup EXIT
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/v2/health/ready")" = 200 ]; }

REGISTRY=${REGISTRY:-folder}
echo "== 1. p99 during swaps vs steady state ($RATE req/s, ${DURATION}s each, $REGISTRY registry)"
if [ "$REGISTRY" = s3 ]; then
  PY=target/tmp/python-venv/bin/python
  "$PY" -c 'import moto, boto3' || { echo "no moto in $PY: run cargo test --test object_store first"; exit 1; }
  export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
  "$PY" -m moto.server -H 127.0.0.1 -p 9390 >"$OUT/swap-s3.log" 2>&1 &
  S3_PID=$!
  until curl -s -o /dev/null http://127.0.0.1:9390/; do sleep 0.1; done
  S3="--endpoint http://127.0.0.1:9390 --bucket swap-bench --prefix registry"
  fleet() { "$PY" deploy/local/fleet.py "$@"; }
  fleet bucket --endpoint http://127.0.0.1:9390 --bucket swap-bench
  fleet publish $S3 --models models --quiet breast_cancer 1
  SOURCE=s3://swap-bench/registry
  export AWS_ENDPOINT_URL=http://127.0.0.1:9390
else
  mkdir -p "$REG/breast_cancer"
  cp -r models/breast_cancer/1 "$REG/breast_cancer/1"
  SOURCE=$REG
fi
target/release/switchyard serve --model-repository "$SOURCE" --registry-cache-dir "$REG/.cache" \
  --host 127.0.0.1 --http-port 9300 --grpc-port 9301 \
  --model-control-mode poll --repository-poll-secs 0.5 >"$OUT/swap-server.log" 2>&1 &
PID=$!
until ready 9300; do sleep 0.1; done
swapper() {   # publishes version n+1 (alternating the two trained models' files), then removes version n
  local n=1 src
  sleep $((3 + DURATION + 3))          # warm-up and the steady phase, then the swapping phase's warm-up
  local end=$((SECONDS + DURATION))
  while [ $SECONDS -lt $end ]; do
    src=$(( (n % 2) + 1 ))
    if [ "$REGISTRY" = s3 ]; then
      fleet publish $S3 --models models --quiet --as-version $((n + 1)) breast_cancer "$src"
    else
      mkdir -p "$REG/breast_cancer/.staging"
      cp models/breast_cancer/$src/* "$REG/breast_cancer/.staging/"
      mv "$REG/breast_cancer/.staging" "$REG/breast_cancer/$((n + 1))"
    fi
    sleep "$SWAP_EVERY"
    if [ "$REGISTRY" = s3 ]; then
      fleet remove $S3 breast_cancer "$n"
    else
      rm -rf "$REG/breast_cancer/$n"
    fi
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
curl -s http://127.0.0.1:9300/metrics | grep -E '^switchyard_(model_swaps_total|model_load_failures_total|registry_errors_total)' || true
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
