"""summary.md for loadtest/compare.sh: the machine, the goals of issue 13 as ratios of figures from
this one run (each marked met or missed), the rows they come from and, in a full run, the README table.

Usage: compare_summary.py OUT QUICK CPU DURATION WARMUP ORT_SECONDS
"""
import glob
import json
import os
import re
import sys

out, quick, cpu, duration, warmup, ort_seconds = sys.argv[1:7]
quick = quick == "1"


def results(name):
    """The load generator's results of `$OUT/<name>.json`, by target name ({} when missing)."""
    try:
        with open(os.path.join(out, name + ".json")) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        print(f"(no results in {name}.json)", file=sys.stderr)
        return {}
    return {r["target"]: r for r in doc["results"]}


ORT_LINE = re.compile(
    r"batch=(\d+) threads=(\d+) .*?: ([\d.]+) calls/s, ([\d.]+) rows/s, call p50 ([\d.]+) ms, p99 ([\d.]+) ms"
)


def ort_runs(pattern):
    """ort_throughput's lines in the files matching `pattern`, as dicts, by threads then batch."""
    runs = []
    for path in glob.glob(os.path.join(out, pattern)):
        with open(path) as f:
            m = ORT_LINE.search(f.read())
        if m:
            b, t, calls, rows, p50, p99 = m.groups()
            runs.append(dict(batch=int(b), threads=int(t), calls=float(calls), rows=float(rows),
                             p50=float(p50), p99=float(p99)))
    return sorted(runs, key=lambda r: (r["threads"], r["batch"]))


def counters(name):
    """Sum of each counter in a `/metrics` excerpt, e.g. {"switchyard_executions_total": 123}."""
    sums = {}
    try:
        with open(os.path.join(out, name)) as f:
            for line in f:
                metric, _, value = line.rpartition(" ")
                key = metric.split("{")[0]
                sums[key] = sums.get(key, 0.0) + float(value)
    except (OSError, ValueError):
        pass
    return sums


def rps(r):
    return r["requests_per_s"] if r else None


def errors(r):
    return sum(r["errors"].values()) if r else 0


def cpu_per_request_us(r):
    """Server CPU per answered request: what a server costs even when the load generator, sharing
    the cores, is what limits req/s."""
    if not r or r["server_cpu_s"] is None or not r["ok"]:
        return None
    return r["server_cpu_s"] / r["ok"] * 1e6


def fmt_num(x):
    return "-" if x is None else f"{x:,.0f}".replace(",", " ")


goals = []  # (goal, what, value, target, status)


def ratio_row(goal, what, num, den, minimum):
    if num is None or not den:
        goals.append((goal, what, "n/a", f">= {minimum}", "no data"))
        return
    v = num / den
    goals.append((goal, what, f"{v:.2f} ({fmt_num(num)} / {fmt_num(den)})", f">= {minimum}",
                  "met" if v >= minimum else "missed"))


g1 = results("G1-mlp_small")
g2 = results("G2-mlp_mid")
ort = ort_runs("G3-ort-*.txt")
best = max(ort, key=lambda r: r["rows"]) if ort else None
best_rows = best["rows"] if best else None

print("# Switchyard performance: one run of loadtest/compare.sh" + (" (QUICK=1)" if quick else ""))
print()
print(f"CPU: {cpu}. Each load generator row: {duration} measured after {warmup} of warm-up, closed loop, "
      f"batch-1 requests; ONNX Runtime in process: {ort_seconds} s per row. The load generator shares "
      "the cores with the server: compare figures of this run only.")
print()

for proto, label, minimum in [("rest-json", "REST JSON", 0.4), ("rest-binary", "REST binary", 0.5),
                              ("grpc", "gRPC", 0.5)]:
    ratio_row(1, f"mlp_mid, 64 callers, {label}, batching on / ORT best rows/s",
              rps(g2.get(f"on-{proto}")), best_rows, minimum)
for proto, label in [("rest-json", "REST JSON"), ("rest-binary", "REST binary"), ("grpc", "gRPC")]:
    ratio_row(1, f"mlp_mid, 64 callers, {label}, batching on / off",
              rps(g2.get(f"on-{proto}")), rps(g2.get(f"off-{proto}")), 3)
ratio_row(2, "mlp_small, 32 callers, gRPC / REST JSON req/s", rps(g1.get("grpc")), rps(g1.get("rest-json")), 1.0)
grpc, json_ = g1.get("grpc"), g1.get("rest-json")
if grpc and json_:
    gp, jp = grpc["latency_ms"]["p99"], json_["latency_ms"]["p99"]
    goals.append((2, "mlp_small, 32 callers, p99 gRPC vs REST JSON", f"{gp:.2f} vs {jp:.2f} ms",
                  "gRPC <= REST JSON", "met" if gp <= jp else "missed"))
else:
    goals.append((2, "mlp_small, 32 callers, p99 gRPC vs REST JSON", "n/a", "gRPC <= REST JSON", "no data"))
ratio_row(3, "mlp_small, 32 callers, REST JSON / bare hyper (fixed response)",
          rps(g1.get("rest-json")), rps(g1.get("bare-json")), 0.8)
bin_, bare_bin = rps(g1.get("rest-binary")), rps(g1.get("bare-binary"))
if bin_ is not None and bare_bin:
    goals.append((3, "mlp_small, 32 callers, REST binary / bare hyper binary (fixed response)",
                  f"{bin_ / bare_bin:.2f} ({fmt_num(bin_)} / {fmt_num(bare_bin)})", "(not a goal)", "-"))

print("## Goals of issue 13 (ratios from this run)")
print()
print("| goal | ratio | value | target | |")
print("|---|---|---|---|---|")
for goal, what, value, target, status in goals:
    print(f"| {goal} | {what} | {value} | {target} | **{status}** |" if status in ("met", "missed")
          else f"| {goal} | {what} | {value} | {target} | {status} |")
if best:
    print(f"\n- ORT best: {fmt_num(best_rows)} rows/s (mlp_mid, batch {best['batch']}, "
          f"{best['threads']} thread{'s' if best['threads'] > 1 else ''}).")
before, after = counters("G2-counters-before.txt"), counters("G2-counters-after.txt")
rows_key, exec_key = "switchyard_inference_rows_total", "switchyard_executions_total"
if rows_key in after and exec_key in after:
    d_rows = after[rows_key] - before.get(rows_key, 0.0)
    d_exec = after[exec_key] - before.get(exec_key, 0.0)
    if d_exec > 0:
        print(f"- Average batch with batching on (G2, warm-ups included): {d_rows / d_exec:.1f} rows "
              f"({d_rows:.0f} rows in {d_exec:.0f} executions).")
sy_us, bare_us = cpu_per_request_us(g1.get("rest-json")), cpu_per_request_us(g1.get("bare-json"))
if sy_us and bare_us:
    print(f"- Server CPU per request, mlp_small REST JSON: Switchyard {sy_us:.0f} µs, bare hyper {bare_us:.0f} µs "
          f"({sy_us / bare_us:.1f}×); req/s hide this difference when the shared cores, not the server, "
          "limit the run.")
bad = [f"{name} ({errors(r)})" for doc in (g1, g2) for name, r in doc.items() if errors(r)]
if bad:
    print(f"\nErrors during the goals' rows, which make their ratios suspect: {', '.join(bad)}.")

LABELS = {
    "rest-json": "Switchyard REST JSON", "rest-binary": "Switchyard REST binary", "grpc": "Switchyard gRPC",
    "bare-json": "bare hyper (fixed response), JSON", "bare-binary": "bare hyper (fixed response), binary",
    "on-rest-json": "Switchyard REST JSON, batching on", "off-rest-json": "Switchyard REST JSON, batching off",
    "on-rest-binary": "Switchyard REST binary, batching on",
    "off-rest-binary": "Switchyard REST binary, batching off",
    "on-grpc": "Switchyard gRPC, batching on", "off-grpc": "Switchyard gRPC, batching off",
}


def table(rows):
    print("| model | callers | server / protocol | req/s | p50 ms | p99 ms | server CPU s | server CPU µs / req "
          "| load-gen CPU s | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model, callers, r in rows:
        lat, srv, per = r["latency_ms"], r["server_cpu_s"], cpu_per_request_us(r)
        print(f"| {model} | {callers} | {LABELS.get(r['target'], r['target'])} | {fmt_num(r['requests_per_s'])} "
              f"| {lat['p50']:.2f} | {lat['p99']:.2f} | {'-' if srv is None else f'{srv:.1f}'} "
              f"| {'-' if per is None else f'{per:.0f}'} | {r['client_cpu_s']:.1f} | {errors(r)} |")


print("\n### The rows behind the goals\n")
table([("mlp_small", 32, r) for r in g1.values()] + [("mlp_mid", 64, r) for r in g2.values()])
if ort:
    print("\nONNX Runtime in process, mlp_mid (`examples/ort_throughput MODEL BATCH THREADS SECONDS`):\n")
    print("| batch | threads | calls/s | rows/s | call p50 ms | call p99 ms |")
    print("|---|---|---|---|---|---|")
    for r in ort:
        print(f"| {r['batch']} | {r['threads']} | {fmt_num(r['calls'])} | {fmt_num(r['rows'])} "
              f"| {r['p50']:.3f} | {r['p99']:.3f} |")

if not quick:
    rows = []
    for path in sorted(glob.glob(os.path.join(out, "[AB]-*.json"))):
        name = os.path.basename(path)[: -len(".json")]
        try:
            with open(path) as f:
                model = json.load(f)["model"]
        except (OSError, ValueError, KeyError):
            print(f"(no results in {name}.json)", file=sys.stderr)
            continue
        rows += [(model, r) for r in results(name).values()]
    print("\n## The README table (section A and the peers)\n")
    print("| model | server / protocol | req/s | p50 ms | p99 ms | server CPU s | load-gen CPU s | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for model, r in sorted(rows, key=lambda x: (x[0], -x[1]["requests_per_s"])):
        lat, srv = r["latency_ms"], r["server_cpu_s"]
        print(f"| {model} | {r['target']} | {r['requests_per_s']:.0f} | {lat['p50']:.2f} | {lat['p99']:.2f} | "
              f"{'-' if srv is None else f'{srv:.1f}'} | {r['client_cpu_s']:.1f} | {errors(r)} |")
    for path in sorted(glob.glob(os.path.join(out, "A-ort-*.txt"))):
        with open(path) as f:
            print("\n" + f.read().strip())
