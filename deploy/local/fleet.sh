#!/usr/bin/env bash
# A local fleet in one command: an S3-compatible server (moto), two Switchyard replicas sharing one
# bucket as their registry, and Prometheus scraping both with deploy/prometheus/alerts.yml. It
# publishes breast_cancer 2, rolls it out (sticky A/B, in steps) through replica A while traffic
# flows to both, and checks that replica B follows the same rollout read from the bucket, that a
# sticky key gets the same version from either replica, and that both end on the same pinned
# version. Exits 0 only if the replicas agree at every check.
#
# Usage: deploy/local/fleet.sh [--keep]     --keep: leave the fleet running (URLs printed) until Ctrl-C
#
# Env (defaults in brackets; a port 0 means any free one):
#   FLEET_S3_PORT [0]  FLEET_A_PORT [0]  FLEET_B_PORT [0]  FLEET_PROMETHEUS_PORT [0]
#   FLEET_POLL_SECS [0.5]   how often each replica reads the bucket (--repository-poll-secs)
#   FLEET_INTERVAL [3s]     the rollout's analysis interval; FLEET_STEPS [20,50] its steps (percent)
#   FLEET_RATE [100]        requests/s sent to each replica during the rollout
#   FLEET_PROMOTE [analysis] analysis: the last passed step pins the candidate; operator: after the
#                           first step, `switchyard rollout promote` on replica B ends it
#   FLEET_TIMEOUT [30]      seconds any one convergence may take; FLEET_ROLLOUT_TIMEOUT [60]
#   FLEET_DIR [a new temp dir] logs, caches, Prometheus data (a given one is kept)
#   SWITCHYARD_BIN [target/{release,debug}/switchyard, else cargo build --release]
#   PROMETHEUS_BIN [prometheus on PATH, else /usr/bin/prometheus; without it that part is skipped]
#   FLEET_VENV [target/tmp/python-venv when up to date, else target/tmp/fleet-venv, made here]
#   FLEET_PYTHON [python3]  the interpreter a new venv is made with
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
KEEP=0
for arg in "$@"; do
    case "$arg" in
        --keep) KEEP=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "fleet.sh: unknown argument '$arg' (only --keep)" >&2; exit 2 ;;
    esac
done

S3_PORT=${FLEET_S3_PORT:-0}
A_PORT=${FLEET_A_PORT:-0}
B_PORT=${FLEET_B_PORT:-0}
PROM_PORT=${FLEET_PROMETHEUS_PORT:-0}
POLL=${FLEET_POLL_SECS:-0.5}
INTERVAL=${FLEET_INTERVAL:-3s}
STEPS=${FLEET_STEPS:-20,50}
RATE=${FLEET_RATE:-100}
PROMOTE=${FLEET_PROMOTE:-analysis}
TIMEOUT=${FLEET_TIMEOUT:-30}
ROLLOUT_TIMEOUT=${FLEET_ROLLOUT_TIMEOUT:-60}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BUCKET=switchyard-fleet
PREFIX=registry
MODEL=breast_cancer
MODELS=(breast_cancer diabetes iris)
STICKY=x-user
case "$PROMOTE" in analysis | operator) ;; *) echo "FLEET_PROMOTE is analysis or operator, not '$PROMOTE'" >&2; exit 2 ;; esac

if [ -n "${FLEET_DIR:-}" ]; then
    DIR=$FLEET_DIR; OWN_DIR=0; mkdir -p "$DIR"
else
    DIR=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-fleet.XXXXXX"); OWN_DIR=1
fi

PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # Children in reverse order of starting (traffic, Prometheus, replicas, then the store).
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -TERM "${PIDS[i]}" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "$rc" -ne 0 ]; then
        echo "fleet: FAILED (exit $rc); logs kept in $DIR" >&2
    elif [ "$OWN_DIR" = 1 ]; then
        rm -rf "$DIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*"; exit 1; }
# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
    local secs=$1; shift
    local until=$((SECONDS + ${secs%.*}))
    until "$@"; do
        [ "$SECONDS" -lt "$until" ] || return 1
        sleep 0.1
    done
}
alive() { kill -0 "$1" 2>/dev/null; }
log_tail() { echo "--- last lines of $1:"; tail -n 20 "$1"; }

# ----------------------------------------------------------------------------------------------
# What the fleet runs on: the binary, Prometheus, a Python venv with moto and boto3.

if [ -n "${SWITCHYARD_BIN:-}" ]; then
    BIN=$SWITCHYARD_BIN
else
    BIN=
    for b in "$TARGET/release/switchyard" "$TARGET/debug/switchyard"; do
        if [ -x "$b" ] && "$b" serve --help 2>/dev/null | grep -q -- --registry-option; then BIN=$b; break; fi
    done
    if [ -z "$BIN" ]; then
        echo "fleet: building the release binary (no up-to-date one in $TARGET; a few minutes)"
        cargo build --release --bin switchyard
        BIN=$TARGET/release/switchyard
    fi
fi
"$BIN" serve --help 2>/dev/null | grep -q -- --registry-option ||
    fail "$BIN has no object-store registry (--registry-option): rebuild it (cargo build --release)"

PROM_BIN=${PROMETHEUS_BIN:-$(command -v prometheus || echo /usr/bin/prometheus)}
[ -x "$PROM_BIN" ] || PROM_BIN=

REQS=tests/python/requirements.txt
if [ -n "${FLEET_VENV:-}" ]; then
    VENV=$FLEET_VENV
elif cmp -s "$TARGET/tmp/python-venv/requirements.installed" "$REQS"; then
    VENV=$TARGET/tmp/python-venv   # the test venv, when it is up to date
else
    VENV=$TARGET/tmp/fleet-venv
    MOTO=$(grep -E '^moto\[server\]==' "$REQS") || fail "no pinned moto[server] in $REQS"
    if [ "$(cat "$VENV/installed" 2>/dev/null)" != "$MOTO" ]; then
        echo "fleet: installing $MOTO into $VENV"
        rm -rf "$VENV"
        "${FLEET_PYTHON:-python3}" -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "$MOTO"
        echo "$MOTO" >"$VENV/installed"
    fi
fi
PY=$VENV/bin/python
"$PY" -c 'import moto, boto3' 2>/dev/null || fail "$VENV has no moto[server] (pip install -r $REQS)"
fleet() { "$PY" "$ROOT/deploy/local/fleet.py" "$@"; }
port() { if [ "$1" = 0 ]; then fleet free-port; else echo "$1"; fi; }

# A private S3 world: moto accepts any credentials; nothing from the caller's AWS setup leaks in.
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_CONFIG_FILE AWS_SHARED_CREDENTIALS_FILE
export AWS_ACCESS_KEY_ID=fleet AWS_SECRET_ACCESS_KEY=fleet AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1 AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null

echo "fleet: binary $BIN; work dir $DIR"

# ----------------------------------------------------------------------------------------------
step "1. S3 (moto's server mode), bucket $BUCKET, the default registry's models published"
"$PY" -m moto.server -H 127.0.0.1 -p "$S3_PORT" >"$DIR/s3.log" 2>&1 &
S3_PID=$!; PIDS+=("$S3_PID")
s3_url() { grep -o 'Running on http://[0-9.:]*' "$DIR/s3.log" | head -n 1 | sed 's/Running on //'; }
s3_started() { grep -qs 'Running on http://' "$DIR/s3.log" || ! alive "$S3_PID"; }
wait_for 20 s3_started || true
S3=$(s3_url)
if [ -z "$S3" ] || ! alive "$S3_PID"; then log_tail "$DIR/s3.log"; fail "moto did not start"; fi
fleet bucket --endpoint "$S3" --bucket "$BUCKET"
echo "   $S3, bucket $BUCKET (created)"
for m in "${MODELS[@]}"; do
    fleet publish --endpoint "$S3" --bucket "$BUCKET" --prefix "$PREFIX" --models models "$m" 1
done

# ----------------------------------------------------------------------------------------------
step "2. two replicas sharing s3://$BUCKET/$PREFIX, and Prometheus scraping both"
# <name> <port>: starts a replica; sets <name>_URL and <name>_GRPC once its models are loaded.
start_replica() {
    local name=$1 port=$2 log=$DIR/replica-${1,,}.log pid
    "$BIN" --log-format json serve --host 127.0.0.1 --http-port "$port" --grpc-port 0 \
        --model-repository "s3://$BUCKET/$PREFIX" --registry-cache-dir "$DIR/cache-${name,,}" \
        --registry-option "aws_endpoint=$S3" --registry-option aws_allow_http=true \
        --model-control-mode poll --repository-poll-secs "$POLL" \
        --instances 1 --shutdown-timeout-secs 2 >"$log" 2>&1 &
    pid=$!; PIDS+=("$pid")
    loaded() { grep -qs '"initial model load finished"' "$log" || ! alive "$pid"; }
    if ! wait_for 60 loaded || ! alive "$pid"; then
        log_tail "$log"; fail "replica $name did not start"
    fi
    local http grpc
    http=$(grep '"listening","protocol":"http"' "$log" | grep -o '"addr":"[^"]*"' | head -n 1 | cut -d'"' -f4)
    grpc=$(grep '"listening","protocol":"grpc"' "$log" | grep -o '"addr":"[^"]*"' | head -n 1 | cut -d'"' -f4)
    printf -v "${name}_URL" 'http://%s' "$http"
    printf -v "${name}_GRPC" '%s' "$grpc"
    echo "   replica $name: http://$http (gRPC $grpc), cache $DIR/cache-${name,,}, log $log"
}
start_replica A "$A_PORT"
start_replica B "$B_PORT"
REPLICAS=("A=$A_URL" "B=$B_URL")

PROM_URL=
if [ -z "$PROM_BIN" ]; then
    echo "   note: no Prometheus (PATH, /usr/bin/prometheus; Debian: apt-get install prometheus):"
    echo "         the Prometheus part is skipped"
else
    mkdir -p "$DIR/prometheus"
    cat >"$DIR/prometheus/prometheus.yml" <<EOF
global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}
rule_files: ["$ROOT/deploy/prometheus/alerts.yml"]
scrape_configs:
  - job_name: switchyard
    static_configs:
      - targets: ["${A_URL#http://}", "${B_URL#http://}"]
EOF
    prom_up() { fleet ready "http://127.0.0.1:$1/-/ready"; }
    prom_started() { ! alive "$PROM_PID" || prom_up "$p"; }
    for _ in 1 2 3; do
        p=$(port "$PROM_PORT")
        "$PROM_BIN" --config.file="$DIR/prometheus/prometheus.yml" --storage.tsdb.path="$DIR/prometheus/data" \
            --web.listen-address="127.0.0.1:$p" >"$DIR/prometheus.log" 2>&1 &
        PROM_PID=$!; PIDS+=("$PROM_PID")
        wait_for 30 prom_started || true
        if alive "$PROM_PID" && prom_up "$p"; then PROM_URL=http://127.0.0.1:$p; break; fi
        grep -q 'address already in use' "$DIR/prometheus.log" && [ "$PROM_PORT" = 0 ] && continue
        log_tail "$DIR/prometheus.log"; fail "Prometheus did not start"
    done
    [ -n "$PROM_URL" ] || fail "Prometheus found no free port"
    echo "   Prometheus: $PROM_URL, scraping A and B every second, rules deploy/prometheus/alerts.yml"
fi

agree() { # <what> [--expect model.field=value]...
    local what=$1; shift
    local models=(); for m in "${MODELS[@]}"; do models+=(--model "$m"); done
    fleet agree --what "$what" --wait "$TIMEOUT" "${models[@]}" "$@" "${REPLICAS[@]}"
}
agree "both serve version 1 of each model, read from the bucket" \
    --expect "$MODEL.ready=1" --expect "$MODEL.default=1" --expect diabetes.ready=1 --expect iris.ready=1

# ----------------------------------------------------------------------------------------------
step "3. pin $MODEL 1 through replica A (the pin is written to the bucket, conditionally)"
"$BIN" promote "$MODEL" 1 --server "$A_URL" | sed "s/^/   /"
agree "$MODEL pinned to 1 on both" --expect "$MODEL.pinned=1"

step "4. publish $MODEL 2"
fleet publish --endpoint "$S3" --bucket "$BUCKET" --prefix "$PREFIX" --models models "$MODEL" 2
agree "both have $MODEL 2 ready, and still serve the pinned 1" \
    --expect "$MODEL.ready=1,2" --expect "$MODEL.pinned=1" --expect "$MODEL.default=1"

# ----------------------------------------------------------------------------------------------
step "5. roll out $MODEL 2 through replica A, with traffic to both"
"$PY" deploy/local/fleet.py traffic --model "$MODEL" --baseline "models/$MODEL/1/baseline.json" --sticky-header "$STICKY" \
    --rate "$RATE" --summary "$DIR/traffic.json" "${REPLICAS[@]}" &
TRAFFIC_PID=$!; PIDS+=("$TRAFFIC_PID")
echo "   traffic: about $RATE requests/s to each replica, three in four with a random $STICKY key"
# A/B kind: a key's variant is a hash of the rollout id and the key, so replicas agree on it.
# The analysis checks errors, latency and NaN outputs. Disagreement is off (--compare-fraction 0):
# the traffic is synthetic rows, drawn feature by feature from the training histograms, on which
# the retrained version answers differently on about a quarter of rows (on the real test rows, 8%).
# Latency thresholds are loose: two replicas, S3, Prometheus and the traffic share a few cores.
"$BIN" rollout start "$MODEL" --candidate 2 --kind ab --sticky-header "$STICKY" --steps "$STEPS" \
    --interval "$INTERVAL" --min-requests 20 --compare-fraction 0 --max-p99-ratio 3 \
    --p99-slack-ms 50 --failure-limit 3 --server "$A_URL" | awk 'NF == 0 { done = 1 } !done { print "   " $0 }'
rm -f "$DIR/rollout-agreed.json"
watch() { fleet watch-rollout --model "$MODEL" --baseline "models/$MODEL/1/baseline.json" \
    --sticky-header "$STICKY" --timeout "$ROLLOUT_TIMEOUT" --agreed "$DIR/rollout-agreed.json" \
    "$@" "${REPLICAS[@]}"; }
if [ "$PROMOTE" = operator ]; then
    watch --until-step 1
    echo "   switchyard rollout promote $MODEL --server $B_URL   (replica B this time)"
    "$BIN" rollout promote "$MODEL" --server "$B_URL" | grep -E '^(phase|reason):' | sed 's/^/   /'
fi
watch
agree "the rollout succeeded; both pin $MODEL 2" --quiet \
    --expect "$MODEL.phase=succeeded" --expect "$MODEL.pinned=2" --expect "$MODEL.default=2"
kill -TERM "$TRAFFIC_PID"
wait "$TRAFFIC_PID" || true
fleet traffic-report --summary "$DIR/traffic.json"

# ----------------------------------------------------------------------------------------------
step "6. what each replica serves"
agree "every model, version, pin and rollout state is the same on A and B"
if [ -n "$PROM_URL" ]; then
    step "7. Prometheus' view ($PROM_URL)"
    fleet prometheus --url "$PROM_URL" --model "$MODEL" --wait "$TIMEOUT" "${REPLICAS[@]}"
else
    step "7. Prometheus' view: skipped (no Prometheus)"
fi

echo
echo "fleet: the replicas agreed at every check ($SECONDS s)"
if [ "$KEEP" = 1 ]; then
    step "the fleet keeps running until Ctrl-C"
    echo "   replica A    $A_URL  (gRPC $A_GRPC)"
    echo "   replica B    $B_URL  (gRPC $B_GRPC)"
    [ -z "$PROM_URL" ] || echo "   Prometheus   $PROM_URL/graph?g0.expr=sum%20by%20(instance)%20(switchyard_model_versions_loaded)"
    echo "   S3 (moto)    $S3  bucket $BUCKET, prefix $PREFIX (AWS_ACCESS_KEY_ID=fleet AWS_SECRET_ACCESS_KEY=fleet)"
    echo "   try          $BIN models --server $B_URL"
    echo "   logs         $DIR"
    trap 'exit 0' INT TERM
    while :; do sleep 1; done
fi
