#!/usr/bin/env bash
# Rollout figures for the README (issue 10), in one run on one machine:
#   1. closed-loop throughput with a 50/50 canary vs no rollout (mlp_small, REST JSON, CONNS callers),
#      rounds alternated (off, on, off, on, ...), with the default compare sample (10% of requests also
#      run on the other version) and without it (compare_fraction 0);
#   2. the caller's p99 with shadow at 100% vs no shadow, open loop at half the saturation rate
#      measured in 1 (rounds alternated);
#   3. time to restore: a bad candidate (breast_cancer answering NaN probabilities) rolled out on two
#      replicas sharing one registry under load, failure_limit 1: from the end of the failing interval
#      to each replica serving 100% stable (switchyard_rollback_seconds), and from the start.
# Usage: loadtest/rollout_bench.sh     Env: DURATION=10s WARMUP=2s CONNS=32 ROUNDS=3 OUT=target/bench-results
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
DURATION=${DURATION:-10s}; WARMUP=${WARMUP:-2s}; CONNS=${CONNS:-32}; ROUNDS=${ROUNDS:-3}
OUT=${OUT:-$ROOT/target/bench-results}; mkdir -p "$OUT"
LT=target/release/switchyard-loadtest
REG=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; rm -rf "$REG"; }
trap cleanup EXIT

cargo build --release --workspace -q
if [ ! -f target/bench-models/mlp_small/1/model.onnx ]; then
  python3 -m venv target/tmp/bench-venv
  target/tmp/bench-venv/bin/pip install -q -r models/requirements.txt
  target/tmp/bench-venv/bin/python loadtest/make_models.py
fi
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) cores)"

ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/v2/health/ready")" = 200 ]; }
start_sy() {   # <http port> <registry> [flags...]: starts a server, appends its PID to PIDS
  local http=$1 reg=$2; shift 2
  target/release/switchyard serve --model-repository "$reg" --host 127.0.0.1 --http-port "$http" \
    --grpc-port $((http + 1)) "$@" >"$OUT/rollout-$http.log" 2>&1 &
  PIDS+=($!)
  until ready "$http"; do sleep 0.1; done
}
rollout() {   # <port> <model> <json spec>
  curl -sf -X PUT "http://127.0.0.1:$1/admin/models/$2/rollout" -d "$3" >/dev/null
}
abort() { curl -s -X POST "http://127.0.0.1:$1/admin/models/$2/rollout/abort" >/dev/null || true; }
run() {   # <name> <loadtest args...>: one target; prints "<req/s> <p99 ms> <errors>"
  local name=$1; shift
  $LT --quiet --duration "$DURATION" --warmup "$WARMUP" --model mlp_small "$@" --json >"$OUT/rollout-$name.json"
  python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results'][0]; print(r['requests_per_s'], r['latency_ms']['p99'], sum(r['errors'].values()) if isinstance(r['errors'], dict) else r['errors'])" \
    "$OUT/rollout-$name.json"
}

# mlp_small twice: version 2 is a copy of version 1 (a good candidate: the same answers).
mkdir -p "$REG/one/mlp_small"
cp -r target/bench-models/mlp_small/1 "$REG/one/mlp_small/1"
cp -r target/bench-models/mlp_small/1 "$REG/one/mlp_small/2"
start_sy 9400 "$REG/one" --repository-poll-secs 1
URL=http://127.0.0.1:9400
canary='{"candidate":2,"stable":1,"steps":[50],"interval":"1h"}'
canary0='{"candidate":2,"stable":1,"steps":[50],"interval":"1h","compare_fraction":0}'
shadow='{"candidate":2,"stable":1,"kind":"shadow","shadow_fraction":1.0,"interval":"1h"}'

echo "== 1. closed loop, $CONNS callers, $DURATION per round, $ROUNDS rounds: no rollout vs 50/50 canary"
: >"$OUT/rollout-closed.txt"
for i in $(seq 1 "$ROUNDS"); do
  curl -sf -X POST "$URL/admin/models/mlp_small/promote" -d '{"version":1}' >/dev/null
  echo "off $(run "off-$i" --concurrency "$CONNS" --target off=$URL)" >>"$OUT/rollout-closed.txt"
  rollout 9400 mlp_small "$canary"
  echo "canary $(run "canary-$i" --concurrency "$CONNS" --target canary=$URL)" >>"$OUT/rollout-closed.txt"
  abort 9400 mlp_small
  rollout 9400 mlp_small "$canary0"
  echo "canary0 $(run "canary0-$i" --concurrency "$CONNS" --target canary0=$URL)" >>"$OUT/rollout-closed.txt"
  abort 9400 mlp_small
done
python3 - "$OUT/rollout-closed.txt" <<'PY'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    k, rps, p99, err = line.split()
    rows.setdefault(k, []).append((float(rps), float(p99), int(err)))
for k, v in rows.items():
    print(f"  {k:<8} req/s {' '.join(f'{r:.0f}' for r, _, _ in v)}  median {statistics.median(r for r, _, _ in v):.0f}"
          f"  p99 median {statistics.median(p for _, p, _ in v):.2f} ms  errors {sum(e for *_, e in v)}")
off = statistics.median(r for r, _, _ in rows["off"])
for k in ("canary", "canary0"):
    print(f"  {k} / off = {statistics.median(r for r, _, _ in rows[k]) / off:.3f}")
PY
SAT=$(python3 -c "import statistics; print(int(statistics.median(float(l.split()[1]) for l in open('$OUT/rollout-closed.txt') if l.startswith('off '))))")
RATE=$((SAT / 2))

echo "== 2. open loop at $RATE req/s (half of $SAT): no shadow vs shadow at 100%"
: >"$OUT/rollout-open.txt"
for i in $(seq 1 "$ROUNDS"); do
  curl -sf -X POST "$URL/admin/models/mlp_small/promote" -d '{"version":1}' >/dev/null
  echo "off $(run "open-off-$i" --rate "$RATE" --target off=$URL)" >>"$OUT/rollout-open.txt"
  rollout 9400 mlp_small "$shadow"
  echo "shadow $(run "open-shadow-$i" --rate "$RATE" --target shadow=$URL)" >>"$OUT/rollout-open.txt"
  abort 9400 mlp_small
done
python3 - "$OUT/rollout-open.txt" <<'PY'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    k, rps, p99, err = line.split()
    rows.setdefault(k, []).append((float(rps), float(p99), int(err)))
for k, v in rows.items():
    print(f"  {k:<7} p99 {' '.join(f'{p:.3f}' for _, p, _ in v)} ms  median {statistics.median(p for _, p, _ in v):.3f} ms"
          f"  errors {sum(e for *_, e in v)}")
print(f"  p99 shadow / off = {statistics.median(p for _, p, _ in rows['shadow']) / statistics.median(p for _, p, _ in rows['off']):.3f}")
PY
curl -s "$URL/metrics" | grep -E '^switchyard_shadow_requests_total' | sed 's/^/  /' || true
for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; PIDS=()

echo "== 3. time to restore: a candidate answering NaN, two replicas, under load"
mkdir -p "$REG/two/breast_cancer"
cp -r models/breast_cancer/1 "$REG/two/breast_cancer/1"
mkdir -p "$REG/two/breast_cancer/2"
cp tests/fixtures/models/bc_nan/1/model.onnx "$REG/two/breast_cancer/2/"
start_sy 9410 "$REG/two" --repository-poll-secs 1
start_sy 9420 "$REG/two" --repository-poll-secs 1
$LT --quiet --model breast_cancer --rate 1000 --duration 12s --warmup 0s \
  --target a=http://127.0.0.1:9410 >/dev/null 2>&1 &
LA=$!
$LT --quiet --model breast_cancer --rate 1000 --duration 12s --warmup 0s \
  --target b=http://127.0.0.1:9420 >/dev/null 2>&1 &
LB=$!
sleep 1
rollout 9410 breast_cancer '{"candidate":2,"stable":1,"steps":[50],"interval":"2s","min_requests":200,"compare_fraction":0.2,"failure_limit":1}'
wait "$LA" "$LB"
curl -s http://127.0.0.1:9410/admin/models/breast_cancer/rollout >"$OUT/rollout-restore.json"
python3 - "$OUT/rollout-restore.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["rollout"]
start = r["history"][0]["at_ms"]
print(f"  phase {r['phase']}: {r['reason']}")
for e in r["history"]:
    print(f"  +{(e['at_ms'] - start) / 1000:6.2f} s  {e['decision']:<12} interval {e['interval']}  by {e['by']}")
PY
for port in 9410 9420; do
  curl -s "http://127.0.0.1:$port/metrics" | python3 -c "
import sys
m = {l.split(' ')[0].split('{')[0]: float(l.split(' ')[-1]) for l in sys.stdin if l.startswith('switchyard_rollback_seconds_')}
print(f'  replica :$port: time to restore {m.get(\"switchyard_rollback_seconds_sum\", float(\"nan\")):.3f} s (rollbacks seen: {m.get(\"switchyard_rollback_seconds_count\", 0):.0f})')
"
done
