#!/usr/bin/env bash
# What the control-plane hardening costs, measured in one run on one machine: mlp_small, batch-1
# REST JSON (and gRPC), closed loop, CONNS callers, against three servers started side by side:
#   plain  - no tokens, no TLS (the default);
#   auth   - --infer-token-file and --admin-token-file, every request carries a bearer token;
#   tls    - --tls-cert/--tls-key (no tokens), one TLS connection per caller.
# Rounds alternate the servers (plain, auth, tls, plain, auth, tls, ...) so drift on a shared machine
# hits each alike; the summary gives each round and the median ratio against plain.
#   before - optional: BASELINE_BIN=path/to/an/older/switchyard (plain), to see what the hardening
#            costs on the unauthenticated path itself.
# Usage: loadtest/security_bench.sh   Env: DURATION=10s WARMUP=2s CONNS=32 ROUNDS=3 OUT=target/bench-results
# Needs: python3 with venv (benchmark models), openssl, curl.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
DURATION=${DURATION:-10s}; WARMUP=${WARMUP:-2s}; CONNS=${CONNS:-32}; ROUNDS=${ROUNDS:-3}
OUT=${OUT:-$ROOT/target/bench-results}; mkdir -p "$OUT"
LT=target/release/switchyard-loadtest
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

cargo build --release --workspace -q
if [ ! -f target/bench-models/mlp_small/1/model.onnx ]; then
  python3 -m venv target/tmp/bench-venv
  target/tmp/bench-venv/bin/pip install -q -r models/requirements.txt
  target/tmp/bench-venv/bin/python loadtest/make_models.py
fi

SEC="$OUT/security"; mkdir -p "$SEC"
printf 'bench-admin-token-0123456789abcdef\n' >"$SEC/admin-tokens"
printf 'bench-infer-token-0123456789abcdef\n' >"$SEC/infer-tokens"
( cd "$SEC"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem \
    -days 2 -subj "/CN=bench CA" -addext basicConstraints=critical,CA:TRUE 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key -out server.csr \
    -subj "/CN=localhost" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >ext.cnf
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 \
    -extfile ext.cnf 2>/dev/null )

start_sy() {   # <http port> <grpc port> <scheme> [flags...]; prints the PID
  local http=$1 grpc=$2 scheme=$3; shift 3
  ${BIN:-target/release/switchyard} serve --model-repository target/bench-models --host 127.0.0.1 \
    --http-port "$http" --grpc-port "$grpc" "$@" >"$SEC/switchyard-$http.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do
    [ "$(curl -s --cacert "$SEC/ca.pem" -H "Authorization: Bearer bench-infer-token-0123456789abcdef" \
      -o /dev/null -w '%{http_code}' "$scheme://localhost:$http/v2/health/ready")" = 200 ] && break
    sleep 0.1
  done
  echo "$pid"
}
PLAIN=$(start_sy 9200 9201 http); PIDS+=("$PLAIN")
AUTH=$(start_sy 9300 9301 http --admin-token-file "$SEC/admin-tokens" --infer-token-file "$SEC/infer-tokens"); PIDS+=("$AUTH")
TLS=$(start_sy 9400 9401 https --tls-cert "$SEC/server.pem" --tls-key "$SEC/server.key"); PIDS+=("$TLS")
KINDS="plain auth tls"
if [ -n "${BASELINE_BIN:-}" ]; then
  BEFORE=$(BIN=$BASELINE_BIN start_sy 9500 9501 http); PIDS+=("$BEFORE"); KINDS="before $KINDS"
fi

run() {   # <name> <args...>
  local name=$1; shift
  $LT --quiet --model mlp_small --concurrency "$CONNS" --duration "$DURATION" --warmup "$WARMUP" "$@" \
    --json >"$SEC/$name.json" 2>"$SEC/$name.err" || cat "$SEC/$name.err" >&2
}
for r in $(seq 1 "$ROUNDS"); do
  if [ -n "${BASELINE_BIN:-}" ]; then
    run "r$r-before-rest" --target before=http://127.0.0.1:9500 --server-pid "before=$BEFORE" --target before-grpc=grpc://127.0.0.1:9501 --server-pid "before-grpc=$BEFORE"
  fi
  run "r$r-plain-rest" --target plain=http://127.0.0.1:9200 --server-pid "plain=$PLAIN" --target plain-grpc=grpc://127.0.0.1:9201 --server-pid "plain-grpc=$PLAIN"
  run "r$r-auth-rest" --token-file "$SEC/infer-tokens" --target auth=http://127.0.0.1:9300 --server-pid "auth=$AUTH" --target auth-grpc=grpc://127.0.0.1:9301 --server-pid "auth-grpc=$AUTH"
  run "r$r-tls-rest" --ca-cert "$SEC/ca.pem" --target tls=https://localhost:9400 --server-pid "tls=$TLS" --target tls-grpc=grpcs://localhost:9401 --server-pid "tls-grpc=$TLS"
done

python3 - "$SEC" "$ROUNDS" "$KINDS" <<'PY' | tee "$OUT/security-summary.md"
import json, os, statistics, subprocess, sys
sec, rounds, kinds = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
cpu = next((l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
            if l.startswith("Model name")), "unknown CPU")
rows = {}
for r in range(1, rounds + 1):
    for kind in kinds:
        f = os.path.join(sec, f"r{r}-{kind}-rest.json")
        try:
            doc = json.load(open(f))
        except (OSError, ValueError):
            continue
        for res in doc["results"]:
            proto = "grpc" if res["target"].endswith("grpc") else "rest"
            rows.setdefault((kind, proto), []).append(res)
print(f"mlp_small, batch-1, {os.environ.get('CONNS', '32')} callers, closed loop; CPU: {cpu}\n")
print("| server | protocol | req/s per round | median req/s | vs plain | median p99 ms | errors |")
print("|---|---|---|---|---|---|---|")
for proto in ["rest", "grpc"]:
    base = statistics.median(x["requests_per_s"] for x in rows.get(("plain", proto), [{"requests_per_s": float("nan")}]))
    for kind in kinds:
        rs = rows.get((kind, proto), [])
        if not rs:
            continue
        rps = [x["requests_per_s"] for x in rs]
        med = statistics.median(rps)
        p99 = statistics.median(x["latency_ms"]["p99"] for x in rs)
        errs = sum(sum(x["errors"].values()) for x in rs)
        print(f"| {kind} | {proto} | {' / '.join(f'{v:.0f}' for v in rps)} | {med:.0f} | {med / base:.3f} | {p99:.2f} | {errs} |")
PY
