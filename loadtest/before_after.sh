#!/usr/bin/env bash
# An older build against this one, side by side in one run (goal 4 of issue 13: no p99 worse than
# before): the Switchyard rows of the README table, mlp_small and mlp_mid with 32 callers over REST
# JSON, REST binary and gRPC, and mlp_mid with 64 callers with dynamic batching on and off. Each load
# generator call alternates the two builds' targets, so drift on a shared machine hits both alike;
# the summary gives the median of ROUNDS rounds.
# Usage: BEFORE_BIN=path/to/an/older/switchyard loadtest/before_after.sh
# Env:   DURATION=8s WARMUP=2s ROUNDS=2 OUT=target/bench-results   Needs: python3 with venv, curl.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
: "${BEFORE_BIN:?set BEFORE_BIN to the older switchyard binary}"
DURATION=${DURATION:-8s}; WARMUP=${WARMUP:-2s}; ROUNDS=${ROUNDS:-2}
OUT=${OUT:-$ROOT/target/bench-results}/before-after; mkdir -p "$OUT"; rm -f "$OUT"/*.json
LT=target/release/switchyard-loadtest; AFTER_BIN=target/release/switchyard
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

cargo build --release --workspace --bins -q
if [ ! -f target/bench-models/mlp_mid/1/model.onnx ]; then
  python3 -m venv target/tmp/bench-venv
  target/tmp/bench-venv/bin/pip install -q -r models/requirements.txt
  target/tmp/bench-venv/bin/python loadtest/make_models.py
fi

start() {   # <binary> <http port> [flags...]: the PID once ready
  local bin=$1 port=$2; shift 2
  "$bin" serve --model-repository target/bench-models --host 127.0.0.1 --http-port "$port" \
    --grpc-port $((port + 1)) "$@" >"$OUT/server-$port.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/health/ready")" = 200 ] && break
    sleep 0.1
  done
  echo "$pid"
}
B=$(start "$BEFORE_BIN" 9500); PIDS+=("$B")
A=$(start "$AFTER_BIN" 9510); PIDS+=("$A")
B0=$(start "$BEFORE_BIN" 9520 --max-batch-size 0); PIDS+=("$B0")
A0=$(start "$AFTER_BIN" 9530 --max-batch-size 0); PIDS+=("$A0")
run() {   # <file> <model> <callers> <target args...>
  local file=$1 model=$2 callers=$3; shift 3
  $LT --quiet --duration "$DURATION" --warmup "$WARMUP" --model "$model" --concurrency "$callers" --json "$@" \
    >"$OUT/$file.json"
}
for r in $(seq 1 "$ROUNDS"); do
  echo "== round $r"
  for m in mlp_small mlp_mid; do
    run "$m-32-r$r" "$m" 32 \
      --target before-json=http://127.0.0.1:9500 --target after-json=http://127.0.0.1:9510 \
      --target before-binary=binary+http://127.0.0.1:9500 --target after-binary=binary+http://127.0.0.1:9510 \
      --target before-grpc=grpc://127.0.0.1:9501 --target after-grpc=grpc://127.0.0.1:9511 \
      --server-pid before-json="$B" --server-pid after-json="$A" --server-pid before-binary="$B" \
      --server-pid after-binary="$A" --server-pid before-grpc="$B" --server-pid after-grpc="$A"
  done
  run "mlp_mid-64-r$r" mlp_mid 64 \
    --target before-on=http://127.0.0.1:9500 --target after-on=http://127.0.0.1:9510 \
    --target before-off=http://127.0.0.1:9520 --target after-off=http://127.0.0.1:9530 \
    --server-pid before-on="$B" --server-pid after-on="$A" --server-pid before-off="$B0" --server-pid after-off="$A0"
done

python3 - "$OUT" <<'PY' | tee "$OUT/summary.md"
import collections, glob, json, os, statistics, subprocess, sys
out = sys.argv[1]
cpu = next((l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True)
            .stdout.splitlines() if l.startswith("Model name")), "unknown")
rows = collections.defaultdict(lambda: collections.defaultdict(list))
for f in sorted(glob.glob(os.path.join(out, "*-r*.json"))):
    key = os.path.basename(f)[:-5].rsplit("-r", 1)[0]
    for r in json.load(open(f))["results"]:
        side, what = r["target"].split("-", 1)
        rows[(key, what)][side].append((r["requests_per_s"], r["latency_ms"]["p99"], sum(r["errors"].values())))
print(f"CPU: {cpu}. Medians over rounds; each row's two builds alternate within one load generator call.\n")
print("| model-callers | protocol | before req/s | after req/s | after / before | before p99 ms | after p99 ms | p99 no worse | errors |")
print("|---|---|---|---|---|---|---|---|---|")
for (key, what), sides in sorted(rows.items()):
    med = lambda side, i: statistics.median(x[i] for x in sides[side])
    br, ar, bp, ap = med("before", 0), med("after", 0), med("before", 1), med("after", 1)
    errs = sum(x[2] for s in sides.values() for x in s)
    print(f"| {key} | {what} | {br:,.0f} | {ar:,.0f} | {ar / br:.2f} | {bp:.2f} | {ap:.2f} | "
          f"{'yes' if ap <= bp else '**no**'} | {errs} |")
PY
