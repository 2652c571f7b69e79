"""The parts of deploy/local/fleet.sh that speak S3, JSON and HTTP: publishing with boto3 (a real S3
client, as a CI pipeline would), traffic, reading what each replica serves and checking that the
replicas agree, and asking Prometheus what it scraped. Standard library plus boto3 (moto's
dependency), so the venv that runs moto runs this too.

Replicas are given as NAME=URL (e.g. A=http://127.0.0.1:8000). Every check prints `ok: ...` or
`FAIL: ...` and a failed check exits 1.
"""

import argparse
import http.client
import json
import os
import random
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

TERMINAL = ("succeeded", "aborted")


# ------------------------------------------------------------------------------------------------
# HTTP


def request(url, method="GET", body=None, headers=None, timeout=5.0):
    """(status, parsed JSON or None); a connection failure is status 0."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


def replicas(pairs):
    out = []
    for p in pairs:
        name, sep, url = p.partition("=")
        if not sep or not url.startswith("http"):
            sys.exit(f"a replica is NAME=URL, not {p!r}")
        out.append((name, url.rstrip("/")))
    return out


# ------------------------------------------------------------------------------------------------
# S3


def s3_client(endpoint):
    import boto3  # moto depends on it; imported here so the other commands need only the stdlib

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
    )


def cmd_bucket(a):
    s3_client(a.endpoint).create_bucket(Bucket=a.bucket)


def cmd_publish(a):
    """Uploads models/<model>/<version>/ (and the model's config.toml, if any) under the prefix.
    model.onnx goes last, as a careful publisher does: its card is there when it appears."""
    s3 = s3_client(a.endpoint)
    model_dir = os.path.join(a.models, a.model)
    version_dir = os.path.join(model_dir, str(a.version))
    if not os.path.isdir(version_dir):
        sys.exit(f"no folder {version_dir} to publish")
    as_version = a.as_version or a.version
    files = [
        (os.path.join(version_dir, f), f"{a.model}/{as_version}/{f}")
        for f in os.listdir(version_dir)
    ]
    config = os.path.join(model_dir, "config.toml")
    if os.path.isfile(config):
        files.append((config, f"{a.model}/config.toml"))
    files.sort(key=lambda f: f[1].endswith("/model.onnx"))
    for path, key in files:
        s3.upload_file(path, a.bucket, f"{a.prefix}/{key}" if a.prefix else key)
    if not a.quiet:
        print(f"   published {a.model}/{as_version} ({len(files)} files) to s3://{a.bucket}/{a.prefix}")


def cmd_remove(a):
    """Deletes every object of <model>/<version>/ under the prefix."""
    s3 = s3_client(a.endpoint)
    prefix = f"{a.prefix}/{a.model}/{a.version}/" if a.prefix else f"{a.model}/{a.version}/"
    listed = s3.list_objects_v2(Bucket=a.bucket, Prefix=prefix).get("Contents", [])
    for obj in listed:
        s3.delete_object(Bucket=a.bucket, Key=obj["Key"])


# ------------------------------------------------------------------------------------------------
# What a replica serves


def view(url, models):
    """A replica's view of each model: ready versions, pin, default version, rollout. None when the
    replica does not answer."""
    status, body = request(f"{url}/admin/models")
    if status != 200 or not isinstance(body, dict):
        return None
    out = {}
    for m in models:
        rows = [r for r in body.get("models", []) if r.get("model") == m]
        ready = sorted(r["version"] for r in rows if r.get("state") == "READY")
        pinned = next((r["version"] for r in rows if r.get("pinned")), None)
        default = next((r["version"] for r in rows if r.get("default")), None)
        out[m] = {
            "ready": ready,
            "pinned": pinned,
            "default": default,
            "rollout": rollout_of(url, m),
        }
    return out


def rollout_of(url, model):
    """The rollout state every replica reads from the bucket (what this replica measured is left
    out: each replica analyses only its own traffic)."""
    status, body = request(f"{url}/admin/models/{urllib.parse.quote(model)}/rollout")
    if status != 200 or not isinstance(body, dict):
        return None
    r = body["rollout"]
    return {
        k: r.get(k)
        for k in (
            "id",
            "kind",
            "stable",
            "candidate",
            "phase",
            "step",
            "steps",
            "weight",
            "failures",
        )
    }


def describe_rollout(r):
    if not r:
        return "-"
    steps = ", ".join(f"{s:g}%" for s in r["steps"])
    at = f"step {r['step'] + 1} of {len(r['steps'])} ({steps})"
    if r["phase"] in TERMINAL:
        return f"{r['kind']} {r['stable']}->{r['candidate']} {r['phase']} at {at}"
    return (
        f"{r['kind']} {r['stable']}->{r['candidate']} {r['phase']}, {at}, "
        f"candidate {r['weight'] * 100:g}%, failures {r['failures']}"
    )


def versions(vs):
    return ",".join(str(v) for v in vs) if vs else "-"


def print_table(views, names, models):
    rows = [("REPLICA", "URL", "MODEL", "READY", "PINNED", "DEFAULT", "ROLLOUT")]
    for name, url in names:
        v = views.get(name)
        if v is None:
            rows.append((name, url, "(no answer)", "", "", "", ""))
            continue
        for i, m in enumerate(models):
            s = v[m]
            rows.append(
                (
                    name if i == 0 else "",
                    url if i == 0 else "",
                    m,
                    versions(s["ready"]),
                    str(s["pinned"] or "-"),
                    str(s["default"] or "-"),
                    describe_rollout(s["rollout"]),
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("   " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])


def expectation_misses(v, expects):
    """Which `model.field=value` expectations a view misses (fields: ready, pinned, default,
    phase, candidate_weight)."""
    misses = []
    for e in expects:
        key, _, want = e.partition("=")
        model, _, field = key.rpartition(".")
        s = v.get(model)
        if s is None:
            misses.append(f"{model}: not listed")
            continue
        r = s["rollout"] or {}
        have = {
            "ready": versions(s["ready"]),
            "pinned": str(s["pinned"] or "-"),
            "default": str(s["default"] or "-"),
            "phase": r.get("phase") or "-",
            "candidate_weight": f"{r['weight'] * 100:g}%" if r else "-",
        }.get(field)
        if have is None:
            sys.exit(f"unknown field {field!r} in --expect {e!r}")
        if have != want:
            misses.append(f"{key} is {have}, not {want}")
    return misses


def cmd_agree(a):
    """Waits (up to --wait seconds) until every replica shows the same view and meets the
    expectations, then prints the table. Replicas converge within a poll interval or two; one
    that never does fails the check."""
    names = replicas(a.replica)
    deadline = time.monotonic() + a.wait
    while True:
        views = {n: view(u, a.model) for n, u in names}
        problems = []
        answered = [v for v in views.values() if v is not None]
        if len(answered) < len(names):
            problems.append(
                "not every replica answers: " + ", ".join(n for n, _ in names if views[n] is None)
            )
        elif any(v != answered[0] for v in answered):
            problems.append("the replicas' views differ")
        for n, v in views.items():
            if v is not None:
                problems += [f"{n}: {m}" for m in expectation_misses(v, a.expect)]
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if problems or not a.quiet:
        print_table(views, names, a.model)
    if problems:
        print(f"FAIL: {a.what}: " + "; ".join(problems) + f" (after {a.wait:g} s)")
        sys.exit(1)
    print(f"ok: {' and '.join(n for n, _ in names)} agree: {a.what}")


# ------------------------------------------------------------------------------------------------
# The rollout, watched on every replica


def sticky_check(names, model, header, keys, row):
    """Sends each key to every replica; returns {key: {replica: version}}."""
    out = {}
    for k in keys:
        out[k] = {}
        for n, u in names:
            status, body = request(
                f"{u}/v2/models/{model}/infer",
                "POST",
                {
                    "inputs": [
                        {"name": "X", "shape": [1, len(row)], "datatype": "FP32", "data": row}
                    ]
                },
                {header: k, "content-type": "application/json"},
            )
            out[k][n] = (
                str(body.get("model_version"))
                if status == 200 and isinstance(body, dict)
                else f"HTTP {status}"
            )
    return out


def cmd_watch_rollout(a):
    """Follows the model's rollout on every replica until it is finished (or at --until-step):
    each state the rollout goes through must be seen by every replica at the same time, and at each
    partial step every sticky key must be answered by the same version on every replica."""
    names = replicas(a.replica)
    row = baseline_rows(a.baseline, 1, 7)[0]
    keys = [f"user-{i}" for i in range(a.keys)]
    deadline = time.monotonic() + a.timeout
    seen = {n: [] for n, _ in names}  # distinct states, in order, per replica
    # States every replica showed together, kept across watches of one rollout (--agreed), so a
    # replica still showing the state the last watch ended on is not taken for one that skipped it.
    agreed, sticky_done = [], set()
    if a.agreed and os.path.exists(a.agreed):
        with open(a.agreed) as f:
            kept = json.load(f)
        agreed, sticky_done = kept["agreed"], set(kept["sticky_checked"])

    def keep():
        if a.agreed:
            with open(a.agreed, "w") as f:
                json.dump({"agreed": agreed, "sticky_checked": sorted(sticky_done)}, f)

    while True:
        states = {n: rollout_of(u, a.model) for n, u in names}
        for n, s in states.items():
            if s is not None and (not seen[n] or seen[n][-1] != s):
                seen[n].append(s)
        first = states[names[0][0]]
        together = first is not None and all(s == first for s in states.values())
        if together and first not in agreed:
            agreed.append(first)
            keep()
            print(
                f"ok: {' and '.join(states)} agree: rollout {first['id']}: {describe_rollout(first)}"
            )
        if (
            together
            and first["phase"] == "running"
            and 0 < first["weight"] < 1
            and first["step"] not in sticky_done
        ):
            answers = sticky_check(names, a.model, a.sticky_header, keys, row)
            after = {n: rollout_of(u, a.model) for n, u in names}
            if all(s == first for s in after.values()):  # no replica moved while the keys were sent
                sticky_done.add(first["step"])
                keep()
                split = [
                    k
                    for k, by in answers.items()
                    if len(set(by.values())) != 1 or any(v.startswith("HTTP") for v in by.values())
                ]
                if split:
                    for k in split:
                        print(
                            f"FAIL: sticky key {k}: "
                            + ", ".join(f"{n} answered {v}" for n, v in answers[k].items())
                        )
                    sys.exit(1)
                counts = {}
                for by in answers.values():
                    v = next(iter(by.values()))
                    counts[v] = counts.get(v, 0) + 1
                spread = ", ".join(f"{c} on version {v}" for v, c in sorted(counts.items()))
                print(
                    f"ok: sticky keys ({a.sticky_header}: user-0..user-{a.keys - 1}) at step {first['step'] + 1}: "
                    f"each answered by the same version on {' and '.join(answers[keys[0]])} ({spread})"
                )
        done = together and (
            first["phase"] in TERMINAL or (a.until_step and first["step"] + 1 >= a.until_step)
        )
        if done:
            break
        if time.monotonic() > deadline:
            print(f"FAIL: the rollout did not finish within {a.timeout:g} s on every replica:")
            for n, s in states.items():
                print(f"   {n}: {describe_rollout(s)}")
            sys.exit(1)
        time.sleep(0.1)
    skipped = [(n, s) for n, ss in seen.items() for s in ss if s not in agreed]
    for n, s in skipped:
        print(f"FAIL: only {n} was seen at: {describe_rollout(s)}")
    if skipped:
        sys.exit(1)
    if first["phase"] == "aborted":
        status, body = request(f"{names[0][1]}/admin/models/{a.model}/rollout")
        reason = (
            (body or {}).get("rollout", {}).get("reason") if status == 200 else f"HTTP {status}"
        )
        print(f"FAIL: the rollout was rolled back (every replica agrees): {reason}")
        sys.exit(1)
    missing = [
        s
        for s in {s["step"] for s in agreed if s["phase"] == "running" and 0 < s["weight"] < 1}
        if s not in sticky_done
    ]
    if missing:
        print(
            f"FAIL: the sticky keys could not be checked at step(s) {[m + 1 for m in missing]}: a replica moved each time"
        )
        sys.exit(1)


# ------------------------------------------------------------------------------------------------
# Traffic


def baseline_rows(path, n, seed):
    """Rows drawn feature by feature from the training histograms in baseline.json."""
    with open(path) as f:
        feats = json.load(f)["features"]
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        row = []
        for ft in feats:
            h = ft["histogram"]
            i = rng.choices(range(len(h["proportions"])), weights=h["proportions"])[0]
            row.append(rng.uniform(h["bin_edges"][i], h["bin_edges"][i + 1]))
        rows.append(row)
    return rows


def cmd_traffic(a):
    """Sends about --rate requests/s to each replica until SIGTERM, then writes a summary. Three in
    four carry a sticky key (a random user), the rest none (they take the random split)."""
    names = replicas(a.replica)
    rows = baseline_rows(a.baseline, 256, 11)
    stop = threading.Event()
    lock = threading.Lock()
    stats = {n: {"ok": 0, "failed": 0, "versions": {}, "errors": []} for n, _ in names}

    def caller(name, url, seed):
        rng = random.Random(seed)
        u = urllib.parse.urlsplit(url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        period = 1.0 / max(a.rate / a.callers, 0.1)
        next_at = time.monotonic()
        while not stop.is_set():
            row = rng.choice(rows)
            body = json.dumps(
                {"inputs": [{"name": "X", "shape": [1, len(row)], "datatype": "FP32", "data": row}]}
            )
            headers = {"content-type": "application/json"}
            if rng.random() < 0.75:
                headers[a.sticky_header] = f"user-{rng.randrange(100000)}"
            try:
                conn.request("POST", f"/v2/models/{a.model}/infer", body, headers)
                r = conn.getresponse()
                raw = r.read()
                status = r.status
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
                status, raw = 0, str(e).encode()
            with lock:
                s = stats[name]
                if status == 200:
                    s["ok"] += 1
                    v = json.loads(raw).get("model_version", "?")
                    s["versions"][v] = s["versions"].get(v, 0) + 1
                else:
                    s["failed"] += 1
                    if len(s["errors"]) < 5:
                        s["errors"].append(f"{status} {raw[:200].decode(errors='replace')}")
            next_at += period
            stop.wait(max(0.0, next_at - time.monotonic()))

    threads = [
        threading.Thread(target=caller, args=(n, u, 1000 * i + c), daemon=True)
        for i, (n, u) in enumerate(names)
        for c in range(a.callers)
    ]
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    for t in threads:
        t.start()
    while not stop.is_set():
        stop.wait(0.5)
    for t in threads:
        t.join(timeout=15)
    with open(a.summary + ".tmp", "w") as f:
        json.dump(stats, f)
    os.replace(a.summary + ".tmp", a.summary)


def cmd_traffic_report(a):
    with open(a.summary) as f:
        stats = json.load(f)
    total_failed = 0
    for n, s in stats.items():
        vs = ", ".join(f"{c} by version {v}" for v, c in sorted(s["versions"].items()))
        print(f"   {n}: {s['ok']} answered ({vs}), {s['failed']} failed")
        for e in s["errors"]:
            print(f"      {e}")
        total_failed += s["failed"]
    total = sum(s["ok"] for s in stats.values())
    if total == 0 or total_failed:
        print(f"FAIL: traffic: {total} answered, {total_failed} failed")
        sys.exit(1)
    print(f"ok: traffic: {total} requests answered, none failed")


# ------------------------------------------------------------------------------------------------
# Prometheus


def prom_query(base, q):
    status, body = request(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": q}))
    if status != 200 or not isinstance(body, dict) or body.get("status") != "success":
        return None
    return body["data"]["result"]


def cmd_prometheus(a):
    """Waits until Prometheus has scraped every replica since the fleet last changed and sees on
    each what the replica itself reports, then prints its view."""
    names = replicas(a.replica)
    by_instance = {urllib.parse.urlsplit(u).netloc: n for n, u in names}
    loaded_q = "sum by (instance) (switchyard_model_versions_loaded)"
    weight_q = f'switchyard_rollout_weight{{model="{a.model}"}}'
    up_q = 'up{job="switchyard"}'

    def own():
        # What each replica reports itself: ready versions over all models.
        out = {}
        for n, u in names:
            status, body = request(f"{u}/admin/models")
            out[n] = (
                sum(1 for r in (body or {}).get("models", []) if r.get("state") == "READY")
                if status == 200
                else None
            )
        return out

    deadline = time.monotonic() + a.wait
    while True:
        up = prom_query(a.url, up_q) or []
        loaded = prom_query(a.url, loaded_q) or []
        weights = prom_query(a.url, weight_q) or []
        mine = own()
        seen = {
            by_instance.get(r["metric"].get("instance"), r["metric"].get("instance")): float(
                r["value"][1]
            )
            for r in loaded
        }
        ups = {by_instance.get(r["metric"].get("instance")): float(r["value"][1]) for r in up}
        wmap = {}
        for r in weights:
            n = by_instance.get(r["metric"].get("instance"), r["metric"].get("instance"))
            wmap.setdefault(n, {})[r["metric"].get("version", "?")] = float(r["value"][1])
        problems = [f"{n} is not up" for n, _ in names if ups.get(n) != 1.0]
        problems += [
            f"{n}: Prometheus has {seen.get(n)} versions loaded, the replica says {mine[n]}"
            for n, _ in names
            if seen.get(n) != (float(mine[n]) if mine[n] is not None else None)
        ]
        if len({json.dumps(wmap.get(n), sort_keys=True) for n, _ in names}) != 1:
            problems.append("the replicas' rollout weights differ")
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    print(f"   {loaded_q}")
    for n, u in names:
        shown = f"{seen[n]:g}" if n in seen else "no data"
        print(f"      {urllib.parse.urlsplit(u).netloc:<22} ({n})  {shown}")
    print(f"   {weight_q}, by version")
    for n, u in names:
        w = wmap.get(n) or {}
        shown = "  ".join(f"version {v}: {x:g}" for v, x in sorted(w.items())) or "no data"
        print(f"      {urllib.parse.urlsplit(u).netloc:<22} ({n})  {shown}")
    status, body = request(f"{a.url}/api/v1/rules")
    groups = (body or {}).get("data", {}).get("groups", []) if status == 200 else []
    rules = [r for g in groups for r in g.get("rules", [])]
    firing = [r["name"] for r in rules if r.get("state") == "firing"]
    print(
        f"   alert rules loaded: {len(rules)} in {len(groups)} groups; firing: {', '.join(firing) or 'none'}"
    )
    if not rules:
        problems.append("no alert rules loaded")
    if problems:
        print(f"FAIL: Prometheus' view: " + "; ".join(problems) + f" (after {a.wait:g} s)")
        sys.exit(1)
    print(f"ok: Prometheus scrapes {' and '.join(n for n, _ in names)} and sees the same on each")


# ------------------------------------------------------------------------------------------------


def cmd_ready(a):
    sys.exit(0 if request(a.url, timeout=2)[0] == 200 else 1)


def cmd_free_port(_):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("free-port")
    s.set_defaults(fn=cmd_free_port)
    s = sub.add_parser("ready", help="exit 0 when URL answers 200")
    s.add_argument("url")
    s.set_defaults(fn=cmd_ready)
    s = sub.add_parser("bucket")
    s.add_argument("--endpoint", required=True)
    s.add_argument("--bucket", required=True)
    s.set_defaults(fn=cmd_bucket)
    s = sub.add_parser("publish")
    s.add_argument("--endpoint", required=True)
    s.add_argument("--bucket", required=True)
    s.add_argument("--prefix", default="")
    s.add_argument("--models", required=True, help="the folder registry to publish from")
    s.add_argument("model")
    s.add_argument("version", type=int)
    s.add_argument("--as-version", type=int, default=0, help="publish it as this version")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=cmd_publish)
    s = sub.add_parser("remove")
    s.add_argument("--endpoint", required=True)
    s.add_argument("--bucket", required=True)
    s.add_argument("--prefix", default="")
    s.add_argument("model")
    s.add_argument("version", type=int)
    s.set_defaults(fn=cmd_remove)
    s = sub.add_parser("agree")
    s.add_argument("--what", required=True, help="what the check shows, for its ok/FAIL line")
    s.add_argument("--model", action="append", required=True)
    s.add_argument("--expect", action="append", default=[], help="model.field=value")
    s.add_argument("--wait", type=float, default=30)
    s.add_argument("--quiet", action="store_true", help="print the table only when the check fails")
    s.add_argument("replica", nargs="+")
    s.set_defaults(fn=cmd_agree)
    s = sub.add_parser("watch-rollout")
    s.add_argument("--model", required=True)
    s.add_argument("--baseline", required=True)
    s.add_argument("--sticky-header", required=True)
    s.add_argument("--keys", type=int, default=16)
    s.add_argument("--until-step", type=int, default=0)
    s.add_argument("--agreed", help="a file keeping the agreed states between watches")
    s.add_argument("--timeout", type=float, default=60)
    s.add_argument("replica", nargs="+")
    s.set_defaults(fn=cmd_watch_rollout)
    s = sub.add_parser("traffic")
    s.add_argument("--model", required=True)
    s.add_argument("--baseline", required=True)
    s.add_argument("--sticky-header", required=True)
    s.add_argument("--rate", type=float, default=100, help="requests/s per replica")
    s.add_argument("--callers", type=int, default=2, help="connections per replica")
    s.add_argument("--summary", required=True)
    s.add_argument("replica", nargs="+")
    s.set_defaults(fn=cmd_traffic)
    s = sub.add_parser("traffic-report")
    s.add_argument("--summary", required=True)
    s.set_defaults(fn=cmd_traffic_report)
    s = sub.add_parser("prometheus")
    s.add_argument("--url", required=True)
    s.add_argument("--model", required=True)
    s.add_argument("--wait", type=float, default=30)
    s.add_argument("replica", nargs="+")
    s.set_defaults(fn=cmd_prometheus)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
