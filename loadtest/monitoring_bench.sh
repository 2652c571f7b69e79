#!/usr/bin/env bash
# Monitoring figures for the README (issue 11), in one run on one machine: closed-loop REST
# throughput of a small model (iris from models/, batch-1 JSON requests, CONNS callers) with
#   off      --monitoring off (request metrics only)
#   skew     monitoring on: online skew of inputs and outputs on every request, predictions kept
#            for feedback (requests carry no id here, so only the skew window)
#   capture  skew + Parquet capture of every request (sample rate 1.0)
# rounds alternated (off, skew, capture, off, ...), and the capture rows written per second and
# dropped (switchyard_capture_records_total) over the capture rounds.
# Usage: loadtest/monitoring_bench.sh    Env: DURATION=10s WARMUP=2s CONNS=32 ROUNDS=3 OUT=target/bench-results
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
DURATION=${DURATION:-10s}; WARMUP=${WARMUP:-2s}; CONNS=${CONNS:-32}; ROUNDS=${ROUNDS:-3}
OUT=${OUT:-$ROOT/target/bench-results}; mkdir -p "$OUT"
LT=target/release/switchyard-loadtest
TMP=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

cargo build --release --workspace -q
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) cores)"
mkdir -p "$TMP/reg" && cp -r models/iris "$TMP/reg/iris"

ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/v2/health/ready")" = 200 ]; }
start_sy() {   # <http port> [flags...]
  local http=$1; shift
  target/release/switchyard serve --model-repository "$TMP/reg" --host 127.0.0.1 --http-port "$http" \
    --grpc-port $((http + 1)) "$@" >"$OUT/monitoring-$http.log" 2>&1 &
  PIDS+=($!)
  until ready "$http"; do sleep 0.1; done
}
run() {   # <name> <url>: prints "<req/s> <p99 ms> <errors>"
  $LT --quiet --duration "$DURATION" --warmup "$WARMUP" --model iris --concurrency "$CONNS" \
    --target "$1=$2" --json >"$OUT/monitoring-$1.json"
  python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results'][0]; print(r['requests_per_s'], r['latency_ms']['p99'], sum(r['errors'].values()) if isinstance(r['errors'], dict) else r['errors'])" \
    "$OUT/monitoring-$1.json"
}
captured() {   # <port> <outcome>: rows counted so far
  curl -s "http://127.0.0.1:$1/metrics" | awk -v o="outcome=\"$2\"" '/^switchyard_capture_records_total/ && index($0, o) {s += $NF} END {print s + 0}'
}

start_sy 9500 --monitoring off
start_sy 9510
start_sy 9520 --capture-dir "$TMP/capture" --capture-max-file-age 2s

echo "== closed loop, $CONNS callers, $DURATION per round, $ROUNDS rounds"
: >"$OUT/monitoring.txt"
cap_secs=0
for i in $(seq 1 "$ROUNDS"); do
  echo "off $(run "off-$i" http://127.0.0.1:9500)" >>"$OUT/monitoring.txt"
  echo "skew $(run "skew-$i" http://127.0.0.1:9510)" >>"$OUT/monitoring.txt"
  echo "capture $(run "capture-$i" http://127.0.0.1:9520)" >>"$OUT/monitoring.txt"
done
python3 - "$OUT/monitoring.txt" <<'PY'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    k, rps, p99, err = line.split()
    rows.setdefault(k, []).append((float(rps), float(p99), int(float(err))))
for k, v in rows.items():
    print(f"  {k:<8} req/s {' '.join(f'{r:.0f}' for r, _, _ in v)}  median {statistics.median(r for r, _, _ in v):.0f}"
          f"  p99 median {statistics.median(p for _, p, _ in v):.2f} ms  errors {sum(e for *_, e in v)}")
off = statistics.median(r for r, _, _ in rows["off"])
for k in ("skew", "capture"):
    print(f"  {k} / off = {statistics.median(r for r, _, _ in rows[k]) / off:.3f}")
PY
# The capture server's totals: rows are counted written once their file is closed and renamed,
# so stop it (SIGTERM flushes the queue) and count what reached disk.
sleep 3
dropped=$(captured 9520 dropped)
kill -TERM "${PIDS[2]}"; wait "${PIDS[2]}" 2>/dev/null || true
python3 - "$TMP/capture" "$dropped" "$OUT/monitoring.txt" "$DURATION" <<'PY'
import sys, pathlib
import json
root, dropped, txt, dur = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
files = [p for p in root.rglob("part-*.parquet")]
size = sum(p.stat().st_size for p in files)
secs = float(dur.rstrip("s"))
caps = [float(l.split()[1]) for l in open(txt) if l.startswith("capture ")]
sent = sum(caps) * secs
print(f"  capture: {len(files)} files, {size / 1e6:.1f} MB on disk; ~{sent:.0f} rows sent in the measured windows, "
      f"{dropped} dropped over the run ({dropped / max(sent, 1):.2%}); rows/s sustained = the capture rounds' req/s")
PY
