#!/usr/bin/env bash
# The README's performance section, measured in one run on one machine:
#   A. Switchyard over REST JSON, REST binary and gRPC, and ONNX Runtime in process (the limit);
#   B. the peers of ../shared/peers (Triton python backend with and without dynamic batching, MLServer,
#      KServe, FastAPI), each started alone and driven by the same load generator settings;
#   C. the load generator against wrk on the same target (is the load generator the bottleneck?);
#   D. dynamic batching on vs off on the compute-heavy mlp_mid (64 callers), and Switchyard vs Triton
#      with dynamic batching under the peer harness's own wrk command.
# Usage: loadtest/compare.sh            (PEERS_DIR=../shared/peers by default; PEERS=0 skips B and D's Triton)
# Env:   DURATION=15s WARMUP=3s CONNS=32 OUT=target/bench-results
# Needs: python3 with venv (benchmark models), wrk (apt install wrk), and for B/D the peer harness set up
#        (bash $PEERS_DIR/setup.sh).  Results: $OUT/*.json, $OUT/*.txt and $OUT/summary.md.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
DURATION=${DURATION:-15s}; WARMUP=${WARMUP:-3s}; CONNS=${CONNS:-32}
OUT=${OUT:-$ROOT/target/bench-results}; mkdir -p "$OUT"
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/peers}; PEERS=${PEERS:-1}
[ -d "$PEERS_DIR" ] || PEERS=0
LT=target/release/switchyard-loadtest
SY_PIDS=()
cleanup() { for p in "${SY_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

echo "== build"
cargo build --release --workspace --examples -q
if [ ! -f target/bench-models/mlp_mid/1/model.onnx ]; then
  python3 -m venv target/tmp/bench-venv
  target/tmp/bench-venv/bin/pip install -q -r models/requirements.txt
  target/tmp/bench-venv/bin/python loadtest/make_models.py
fi

# The request the peer harness's wrk script sends (batch 1), for servers whose metadata lists no inputs.
for m in mlp_small:16 mlp_mid:256; do
  python3 -c "import json,sys; f=int(sys.argv[1]); print(json.dumps({'inputs': [{'name': 'input', 'shape': [1, f],
    'datatype': 'FP32', 'data': [(i % f) / (2 * f) for i in range(f)]}]}))" "${m#*:}" >"$OUT/request-${m%:*}.json"
done

start_sy() {   # <http port> <grpc port> [flags...]; prints the PID
  local http=$1 grpc=$2; shift 2
  target/release/switchyard serve --model-repository target/bench-models --host 127.0.0.1 \
    --http-port "$http" --grpc-port "$grpc" "$@" >"$OUT/switchyard-$http.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http/v2/health/ready")" = 200 ] && break
    sleep 0.1
  done
  echo "$pid"
}
loadtest() {   # <name> <args...>: JSON to $OUT/<name>.json, table to stdout
  local name=$1; shift
  $LT --quiet --duration "$DURATION" --warmup "$WARMUP" "$@" --json >"$OUT/$name.json"
  python3 - "$OUT/$name.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    l = r["latency_ms"]
    print(f'  {r["target"]:<22} {r["requests_per_s"]:>9.0f} req/s  p50 {l["p50"]:.2f}  p99 {l["p99"]:.2f} ms  '
          f'cli {r["client_cpu_s"]:.1f}s srv {r["server_cpu_s"] if r["server_cpu_s"] is None else round(r["server_cpu_s"],1)}s  err {r["errors"]}')
PY
}

echo "== A. Switchyard protocols and the in-process limit"
SY=$(start_sy 9000 9001); SY_PIDS+=("$SY")
for m in mlp_small mlp_mid; do
  loadtest "A-$m" --model "$m" --concurrency "$CONNS" \
    --target "rest-json=http://127.0.0.1:9000" --target "rest-binary=binary+http://127.0.0.1:9000" \
    --target "grpc=grpc://127.0.0.1:9001" \
    --server-pid "rest-json=$SY" --server-pid "rest-binary=$SY" --server-pid "grpc=$SY"
  for b in 1 64; do
    target/release/examples/ort_throughput "target/bench-models/$m/1/model.onnx" "$b" 2 10 | tee "$OUT/A-ort-$m-b$b.txt"
  done
done

echo "== C. load generator vs wrk, same target (mlp_small, $CONNS connections, REST JSON)"
loadtest C-loadtest --model mlp_small --concurrency "$CONNS" --target "switchyard=http://127.0.0.1:9000"
( cd "$PEERS_DIR" 2>/dev/null || cd "$ROOT"
  WRK_FEATURES=16 WRK_BATCH=1 /usr/bin/time -f "wrk cpu %U user %S sys" wrk -t2 -c"$CONNS" -d"$DURATION" --latency \
    -s "$PEERS_DIR/wrk_v2_infer.lua" http://127.0.0.1:9000/v2/models/mlp_small/infer ) >"$OUT/C-wrk.txt" 2>&1 || true
grep -E "Requests/sec|50%|99%|wrk cpu" "$OUT/C-wrk.txt" || echo "  (wrk not available)"

echo "== D. dynamic batching on vs off (mlp_mid, 64 callers)"
OFF=$(start_sy 9100 9101 --max-batch-size 0); SY_PIDS+=("$OFF")
loadtest D-batching --model mlp_mid --concurrency 64 \
  --target "batching-on=http://127.0.0.1:9000" --target "batching-off=http://127.0.0.1:9100" \
  --server-pid "batching-on=$SY" --server-pid "batching-off=$OFF"
kill -TERM "$OFF"
curl -s http://127.0.0.1:9000/metrics | grep -E '^switchyard_(inference_rows|executions)_total\{model="mlp_mid"' \
  | tee "$OUT/D-batch-counters.txt"

if [ "$PEERS" = 1 ]; then
  echo "== B. peers (each alone), same load generator settings"
  . "$PEERS_DIR/env.sh"
  peer_run() {   # <label> <peer> [env...]
    local label=$1 peer=$2; shift 2
    env "$@" bash "$PEERS_DIR/start_$peer.sh" --background >/dev/null
    local port; case $peer in triton) port=8000;; mlserver) port=8080;; kserve) port=8090;; fastapi) port=8100;; esac
    for _ in $(seq 1 240); do
      [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/health/ready")" = 200 ] && break
      sleep 0.5
    done
    sleep 2
    local pid; pid=$(cat "$PEERS_RUN/$peer.pid")
    for m in mlp_small mlp_mid; do
      loadtest "B-$label-$m" --model "$m" --concurrency "$CONNS" --target "$label=http://127.0.0.1:$port" \
        --server-pid "$label=$pid" --request-file "$OUT/request-$m.json" || true
    done
    if [ "$label" = triton_py_dynbatch ]; then   # D: the harness's own wrk command on mlp_mid
      WRK_FEATURES=256 WRK_BATCH=1 wrk -t2 -c32 -d15s --latency -s "$PEERS_DIR/wrk_v2_infer.lua" \
        "http://127.0.0.1:$port/v2/models/mlp_mid/infer" >"$OUT/D-wrk-triton-dynbatch.txt" 2>&1 || true
    fi
    bash "$PEERS_DIR/stop_peer.sh" "$peer" >/dev/null
  }
  peer_run triton_py triton TRITON_REPO=triton_py_repo
  peer_run triton_py_dynbatch triton TRITON_REPO=triton_py_repo_dynbatch
  peer_run mlserver mlserver BATCH=off
  peer_run kserve kserve
  peer_run fastapi fastapi
  WRK_FEATURES=256 WRK_BATCH=1 wrk -t2 -c32 -d15s --latency -s "$PEERS_DIR/wrk_v2_infer.lua" \
    "http://127.0.0.1:9000/v2/models/mlp_mid/infer" >"$OUT/D-wrk-switchyard.txt" 2>&1 || true
  echo "  wrk mlp_mid: switchyard vs triton_py_dynbatch"
  grep -H -E "Requests/sec|  99%" "$OUT"/D-wrk-*.txt || true
fi

python3 - "$OUT" <<'PY' | tee "$OUT/summary.md"
import glob, json, os, sys
out = sys.argv[1]
rows = []
for f in sorted(glob.glob(os.path.join(out, "[AB]-*.json"))):
    try:
        doc = json.load(open(f))
    except ValueError:
        print(f"(no results in {os.path.basename(f)})", file=sys.stderr)
        continue
    for r in doc["results"]:
        rows.append((doc["model"], r))
print("| model | server / protocol | req/s | p50 ms | p99 ms | server CPU s | load-gen CPU s | errors |")
print("|---|---|---|---|---|---|---|---|")
for model, r in sorted(rows, key=lambda x: (x[0], -x[1]["requests_per_s"])):
    l = r["latency_ms"]; srv = r["server_cpu_s"]
    print(f'| {model} | {r["target"]} | {r["requests_per_s"]:.0f} | {l["p50"]:.2f} | {l["p99"]:.2f} | '
          f'{"-" if srv is None else f"{srv:.1f}"} | {r["client_cpu_s"]:.1f} | {sum(r["errors"].values())} |')
for f in sorted(glob.glob(os.path.join(out, "A-ort-*.txt"))):
    print("\n" + open(f).read().strip())
PY
