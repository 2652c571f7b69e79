#!/usr/bin/env bash
# The README's performance section and the goals of issue 13, measured in one run on one machine:
#   A. Switchyard over REST JSON, REST binary and gRPC, and ONNX Runtime in process (the limit);
#   B. the peers of ../shared/peers (Triton python backend with and without dynamic batching, MLServer,
#      KServe, FastAPI), each started alone and driven by the same load generator settings;
#   C. the load generator against wrk on the same target (is the load generator the bottleneck?);
#   G. the goals, each a ratio of two figures from this run:
#      G1. mlp_small, 32 callers: Switchyard REST JSON, REST binary and gRPC against a bare hyper server
#          that answers with a fixed response (examples/bare_hyper.rs, the transport's own limit);
#      G2. mlp_mid, 64 batch-1 callers, REST JSON, REST binary and gRPC, dynamic batching on vs off
#          (a second server with --max-batch-size 0), and the average batch formed;
#      G3. ONNX Runtime in process on mlp_mid, batches 1, 8, 16, 32, 64 with 1 and 2 threads ("ORT best"
#          is the highest rows/s of those);
#   D. (with the peers) Switchyard vs Triton with dynamic batching under the peer harness's own wrk command.
# Usage: loadtest/compare.sh            everything (PEERS_DIR=../shared/peers by default; PEERS=0 skips B, D)
#        QUICK=1 loadtest/compare.sh    G alone with shorter durations, no peers (about 3 minutes)
# Env:   DURATION=15s WARMUP=3s ORT_SECONDS=10 (QUICK: 6s 2s 3) CONNS=32 (A, C) OUT=target/bench-results
#        PORT_BASE=9000 (Switchyard on +0/+1, batching off on +100/+101, bare hyper on +200)
# Needs: python3 with venv (benchmark models), wrk (apt install wrk), and for B/D the peer harness set up
#        (bash $PEERS_DIR/setup.sh).  Results: $OUT/*.json, $OUT/*.txt and $OUT/summary.md.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  DURATION=${DURATION:-6s}; WARMUP=${WARMUP:-2s}; ORT_SECONDS=${ORT_SECONDS:-3}; PEERS=0
else
  DURATION=${DURATION:-15s}; WARMUP=${WARMUP:-3s}; ORT_SECONDS=${ORT_SECONDS:-10}
fi
CONNS=${CONNS:-32}
OUT=${OUT:-$ROOT/target/bench-results}; mkdir -p "$OUT"
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/peers}; PEERS=${PEERS:-1}
[ -d "$PEERS_DIR" ] || PEERS=0
PORT_BASE=${PORT_BASE:-9000}
P_SY=$PORT_BASE; P_OFF=$((PORT_BASE + 100)); P_BARE=$((PORT_BASE + 200))
LT=target/release/switchyard-loadtest
SY_PIDS=()
cleanup() { for p in "${SY_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
# Results of an earlier run must not mix into this run's summary.
if [ "$QUICK" = 1 ]; then rm -f "$OUT"/G*-*; else rm -f "$OUT"/[ABCDG]*-*; fi

echo "== build"
cargo build --release --workspace --bins --examples -q   # --examples alone builds no binaries
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

ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/v2/health/ready")" = 200 ]; }
wait_ready() {   # <port> <pid> <what>: fails if the server exits or is not ready within 20 s
  for _ in $(seq 1 200); do
    ready "$1" && return 0
    kill -0 "$2" 2>/dev/null || { echo "$3 exited before it was ready (see $OUT/*-$1.log)" >&2; return 1; }
    sleep 0.1
  done
  echo "$3 is not ready on port $1 after 20 s" >&2; return 1
}
port_free() {   # another server on the port would be measured instead of ours
  if ready "$1"; then echo "port $1 already serves something: stop it or set PORT_BASE" >&2; return 1; fi
}
# Called as $(start_sy ...): a subshell does not inherit `set -e`, hence the explicit returns.
start_sy() {   # <http port> <grpc port> [flags...]; prints the PID
  local http=$1 grpc=$2; shift 2
  port_free "$http" || return 1
  target/release/switchyard serve --model-repository target/bench-models --host 127.0.0.1 \
    --http-port "$http" --grpc-port "$grpc" "$@" >"$OUT/switchyard-$http.log" 2>&1 &
  local pid=$!
  wait_ready "$http" "$pid" switchyard || { kill -TERM "$pid" 2>/dev/null; return 1; }
  echo "$pid"
}
start_bare() {   # <port>; prints the PID
  port_free "$1" || return 1
  target/release/examples/bare_hyper --port "$1" >"$OUT/bare_hyper-$1.log" 2>&1 &
  local pid=$!
  wait_ready "$1" "$pid" bare_hyper || { kill -TERM "$pid" 2>/dev/null; return 1; }
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

SY=$(start_sy "$P_SY" $((P_SY + 1))); SY_PIDS+=("$SY")
SY_HTTP=http://127.0.0.1:$P_SY SY_GRPC=grpc://127.0.0.1:$((P_SY + 1))

if [ "$QUICK" != 1 ]; then
echo "== A. Switchyard protocols and the in-process limit"
for m in mlp_small mlp_mid; do
  loadtest "A-$m" --model "$m" --concurrency "$CONNS" \
    --target "rest-json=$SY_HTTP" --target "rest-binary=binary+${SY_HTTP}" --target "grpc=$SY_GRPC" \
    --server-pid "rest-json=$SY" --server-pid "rest-binary=$SY" --server-pid "grpc=$SY"
  for b in 1 64; do
    target/release/examples/ort_throughput "target/bench-models/$m/1/model.onnx" "$b" 2 "$ORT_SECONDS" | tee "$OUT/A-ort-$m-b$b.txt"
  done
done

echo "== C. load generator vs wrk, same target (mlp_small, $CONNS connections, REST JSON)"
loadtest C-loadtest --model mlp_small --concurrency "$CONNS" --target "switchyard=$SY_HTTP"
( cd "$PEERS_DIR" 2>/dev/null || cd "$ROOT"
  WRK_FEATURES=16 WRK_BATCH=1 /usr/bin/time -f "wrk cpu %U user %S sys" wrk -t2 -c"$CONNS" -d"$DURATION" --latency \
    -s "$PEERS_DIR/wrk_v2_infer.lua" "$SY_HTTP/v2/models/mlp_small/infer" ) >"$OUT/C-wrk.txt" 2>&1 || true
grep -E "Requests/sec|50%|99%|wrk cpu" "$OUT/C-wrk.txt" || echo "  (wrk not available)"
fi

echo "== G1. goals 2 and 3: mlp_small, 32 callers, Switchyard vs a bare hyper server (fixed response)"
BARE=$(start_bare "$P_BARE"); SY_PIDS+=("$BARE")
BARE_HTTP=http://127.0.0.1:$P_BARE
# Switchyard and bare hyper alternate, so a slow spell of this shared machine hits both alike.
loadtest G1-mlp_small --model mlp_small --concurrency 32 \
  --target "rest-json=$SY_HTTP" --target "bare-json=$BARE_HTTP" \
  --target "rest-binary=binary+$SY_HTTP" --target "bare-binary=binary+$BARE_HTTP" --target "grpc=$SY_GRPC" \
  --server-pid "rest-json=$SY" --server-pid "bare-json=$BARE" --server-pid "rest-binary=$SY" \
  --server-pid "bare-binary=$BARE" --server-pid "grpc=$SY"
kill -TERM "$BARE"

echo "== G2. goal 1: mlp_mid, 64 batch-1 callers, dynamic batching on vs off"
OFF=$(start_sy "$P_OFF" $((P_OFF + 1)) --max-batch-size 0); SY_PIDS+=("$OFF")
OFF_HTTP=http://127.0.0.1:$P_OFF OFF_GRPC=grpc://127.0.0.1:$((P_OFF + 1))
counters() { curl -s "$SY_HTTP/metrics" | grep -E '^switchyard_(inference_rows|executions)_total\{model="mlp_mid"' || true; }
counters >"$OUT/G2-counters-before.txt"
loadtest G2-mlp_mid --model mlp_mid --concurrency 64 \
  --target "on-rest-json=$SY_HTTP" --target "off-rest-json=$OFF_HTTP" \
  --target "on-rest-binary=binary+$SY_HTTP" --target "off-rest-binary=binary+$OFF_HTTP" \
  --target "on-grpc=$SY_GRPC" --target "off-grpc=$OFF_GRPC" \
  --server-pid "on-rest-json=$SY" --server-pid "off-rest-json=$OFF" --server-pid "on-rest-binary=$SY" \
  --server-pid "off-rest-binary=$OFF" --server-pid "on-grpc=$SY" --server-pid "off-grpc=$OFF"
counters >"$OUT/G2-counters-after.txt"
kill -TERM "$OFF"

echo "== G3. ONNX Runtime in process, mlp_mid (${ORT_SECONDS}s each)"
for t in 1 2; do
  for b in 1 8 16 32 64; do
    target/release/examples/ort_throughput target/bench-models/mlp_mid/1/model.onnx "$b" "$t" "$ORT_SECONDS" \
      | tee "$OUT/G3-ort-b$b-t$t.txt"
  done
done

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
    "$SY_HTTP/v2/models/mlp_mid/infer" >"$OUT/D-wrk-switchyard.txt" 2>&1 || true
  echo "  wrk mlp_mid: switchyard vs triton_py_dynbatch"
  grep -H -E "Requests/sec|  99%" "$OUT"/D-wrk-*.txt || true
fi

CPU_MODEL=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
python3 loadtest/compare_summary.py "$OUT" "$QUICK" "${CPU_MODEL:-unknown} ($(nproc) CPUs)" \
  "$DURATION" "$WARMUP" "$ORT_SECONDS" | tee "$OUT/summary.md"
