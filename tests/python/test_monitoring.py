"""Serving-data monitoring against the real binary: online skew on traffic drawn from the training
data (scikit-learn's own datasets, split as models/train.py splits them), a shifted feature, NaN
inputs, the Parquet capture read back with pyarrow and DuckDB after SIGTERM, a full capture queue,
feedback and live accuracy, and the offline `switchyard skew --capture` agreeing with the online
window."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.dataset as ds
import pytest
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from sklearn import datasets
from sklearn.model_selection import train_test_split

from conftest import ROOT, _start, _stop

SEED, TEST_SIZE = 20261126, 0.25  # models/train.py's split
BIN = os.environ.get("SWITCHYARD_BIN") or str(ROOT / "target/debug/switchyard")
# breast_cancer v1 (eight stumps) never looks at this feature, so shifting it moves that
# feature's distribution and nothing the model outputs.
UNUSED_FEATURE = "mean texture"


def breast_cancer_train() -> tuple[np.ndarray, np.ndarray, list[str]]:
    d = datasets.load_breast_cancer()
    x, y = d.data.astype(np.float32), d.target.astype(np.int64)
    x_train, _, y_train, _ = train_test_split(x, y, test_size=TEST_SIZE, random_state=SEED, stratify=y)
    return x_train, y_train, [str(n) for n in d.feature_names]


def iris_train() -> tuple[np.ndarray, np.ndarray]:
    d = datasets.load_iris()
    x, y = d.data.astype(np.float32), d.target.astype(np.int64)
    x_train, _, y_train, _ = train_test_split(x, y, test_size=TEST_SIZE, random_state=SEED, stratify=y)
    return x_train, y_train


def call(method: str, url: str, body=None, token: str | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def infer(http: str, model: str, x: np.ndarray, request_id: str | None = None) -> dict:
    body = {"inputs": [{"name": "X", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.reshape(-1).tolist()}]}
    if request_id is not None:
        body["id"] = request_id
    status, answer = call("POST", f"http://{http}/v2/models/{model}/infer", body)
    assert status == 200, answer
    return answer


def metrics(http: str) -> dict[tuple, float]:
    with urllib.request.urlopen(f"http://{http}/metrics", timeout=30) as r:
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(m: dict, name: str, **labels) -> float | None:
    return m.get((name, tuple(sorted(labels.items()))))


def send_rows(http: str, model: str, x: np.ndarray, batch: int = 25) -> None:
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: infer(http, model, x[i:i + batch]), range(0, len(x), batch)))


@pytest.fixture(scope="module")
def skew_server(tmp_path_factory):
    """breast_cancer v1 under three names, so each gets its own skew window."""
    reg = tmp_path_factory.mktemp("skew-registry")
    for name in ["bc_train", "bc_shift", "bc_nan"]:
        shutil.copytree(ROOT / "models/breast_cancer/1", reg / name / "1")
    s = _start(reg)
    yield s
    _stop(s)


def test_training_traffic_stays_under_every_threshold_and_a_shifted_feature_alerts_alone(skew_server):
    x_train, _, names = breast_cancer_train()
    rng = np.random.default_rng(1)
    sample = x_train[rng.integers(0, len(x_train), 2000)]
    shifted = sample.copy()
    j = names.index(UNUSED_FEATURE)
    shifted[:, j] += np.float32(1.5 * x_train[:, j].std())
    send_rows(skew_server.http, "bc_train", sample)
    send_rows(skew_server.http, "bc_shift", shifted)

    status, ok = call("GET", f"http://{skew_server.http}/admin/models/bc_train/versions/1/skew")
    assert status == 200, ok
    assert ok["rows"] == 2000 and ok["verdict"] == "ok", ok
    assert ok["alerts"] == 0 and not any(f["alert"] for f in ok["features"])
    worst = ok["features"][0]
    assert worst["js_distance"] is None or worst["js_distance"] < 0.1, worst
    # Inputs and the model's outputs are both compared (baseline.json records both).
    kinds = {f["kind"] for f in ok["features"]}
    assert kinds == {"input", "output"}, kinds

    status, bad = call("GET", f"http://{skew_server.http}/admin/models/bc_shift/skew")
    assert status == 200, bad
    assert bad["verdict"] == "skew" and bad["alerts"] == 1, bad
    assert bad["features"][0]["feature"] == UNUSED_FEATURE and bad["features"][0]["alert"]
    assert bad["features"][0]["psi"] > 0.2 or bad["features"][0]["js_distance"] > 0.1

    m = metrics(skew_server.http)
    alerts = {k[1]: v for k, v in m.items() if k[0] == "switchyard_feature_skew_alert"}
    for labels, value in alerts.items():
        lab = dict(labels)
        want = 1.0 if (lab["model"], lab["feature"]) == ("bc_shift", UNUSED_FEATURE) else 0.0
        assert value == want, (lab, value)
    assert metric(m, "switchyard_feature_skew", model="bc_shift", version="1",
                  feature=UNUSED_FEATURE, statistic="psi") > 0.2
    assert metric(m, "switchyard_feature_skew_rows", model="bc_train", version="1") == 2000

    # The CLI prints the same, worst first.
    out = subprocess.run([BIN, "skew", "bc_shift", "--server", f"http://{skew_server.http}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    table = [line for line in out.stdout.splitlines() if UNUSED_FEATURE in line]
    assert table and "ALERT" in table[0], out.stdout
    lines = out.stdout.splitlines()
    first_feature_line = next(i for i, line in enumerate(lines) if any(n in line for n in names))
    assert UNUSED_FEATURE in lines[first_feature_line], out.stdout


def test_nan_inputs_are_counted(skew_server):
    x_train, _, names = breast_cancer_train()
    x = x_train[:40].copy()
    j = names.index("mean smoothness")
    x[:7, j] = np.nan
    client = httpclient.InferenceServerClient(skew_server.http)
    inp = httpclient.InferInput("X", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    client.infer("bc_nan", [inp])
    client.close()
    _, report = call("GET", f"http://{skew_server.http}/admin/models/bc_nan/versions/1/skew")
    by_name = {f["feature"]: f for f in report["features"]}
    assert by_name["mean smoothness"]["non_finite"] == 7, by_name["mean smoothness"]
    assert sum(f["non_finite"] for f in report["features"]) == 7
    m = metrics(skew_server.http)
    assert metric(m, "switchyard_feature_skew", model="bc_nan", version="1",
                  feature="mean smoothness", statistic="non_finite") == 7


def test_skew_errors_name_the_problem(skew_server):
    status, e = call("GET", f"http://{skew_server.http}/admin/models/nope/versions/1/skew")
    assert status == 404 and "nope" in e["error"]
    status, e = call("GET", f"http://{skew_server.http}/admin/models/bc_train/versions/9/skew")
    assert status == 404 and "9" in e["error"], e


def capture_files(root: Path) -> tuple[list[Path], list[Path]]:
    files = [p for p in root.rglob("*") if p.is_file()]
    return ([p for p in files if p.name.endswith(".parquet") and not p.name.startswith(".")],
            [p for p in files if p.name.startswith(".")])


def test_capture_feedback_and_offline_skew(tmp_path):
    reg = tmp_path / "registry"
    shutil.copytree(ROOT / "models/iris", reg / "iris")
    cap = tmp_path / "capture"
    server = _start(reg, ["--capture-dir", str(cap), "--capture-sample-rate", "1"])
    try:
        x_train, y_train = iris_train()
        rng = np.random.default_rng(3)
        picks = [rng.integers(0, len(x_train), int(rng.integers(1, 6))) for _ in range(300)]
        sent, answers = {}, {}
        for i, rows in enumerate(picks):
            rid = f"req-{i}"
            sent[rid] = (x_train[rows], y_train[rows])
            answers[rid] = infer(server.http, "iris", x_train[rows], request_id=rid)
        n_rows = sum(len(r) for r in picks)

        # Feedback: the true labels of every request but the last ten, plus an unknown id and a
        # request whose label count is wrong.
        items = [{"id": rid, "labels": y.tolist()} for rid, (_, y) in list(sent.items())[:-10]]
        items.append({"id": "never-sent", "labels": [1]})
        items.append({"id": "req-299", "labels": [0] * (len(picks[299]) + 1)})
        status, outcome = call("POST", f"http://{server.http}/v2/models/iris/feedback", items)
        assert status == 200, outcome
        joined_rows = sum(len(picks[i]) for i in range(290))
        assert outcome["joined"] == joined_rows and outcome["late"] == 1, outcome
        assert [e["id"] for e in outcome["invalid"]] == ["req-299"], outcome
        correct = sum(int(np.sum(np.array(answers[f"req-{i}"]["outputs"][0]["data"]) == sent[f"req-{i}"][1]))
                      for i in range(290))
        m = metrics(server.http)
        assert metric(m, "switchyard_model_quality", model="iris", version="1",
                      metric="accuracy") == pytest.approx(correct / joined_rows, abs=1e-12)
        assert metric(m, "switchyard_model_quality_labels", model="iris", version="1") == joined_rows
        assert metric(m, "switchyard_model_quality_heldout", model="iris", version="1",
                      metric="accuracy") == pytest.approx(0.921053)
        assert metric(m, "switchyard_model_age_seconds", model="iris", version="1") > 0
        # Feedback counts once: the same labels again are late.
        status, again = call("POST", f"http://{server.http}/v2/models/iris/feedback", items[:1])
        assert status == 200 and again["joined"] == 0 and again["late"] == 1, again
        # Bad bodies are refused with a message naming the problem; unknown models are 404.
        status, e = call("POST", f"http://{server.http}/v2/models/iris/feedback", {"labels": [1]})
        assert status == 400 and "id" in e["error"], e
        status, e = call("POST", f"http://{server.http}/v2/models/nope/feedback", items[:1])
        assert status == 404, e

        _, online = call("GET", f"http://{server.http}/admin/models/iris/versions/1/skew")
        assert online["rows"] == n_rows
    finally:
        _stop(server)

    # After SIGTERM, every accepted row is on disk, in visible files only.
    files, hidden = capture_files(cap)
    assert files and not hidden, (files, hidden)
    assert all("model=iris/version=1/date=" in str(p) and "/hour=" in str(p) for p in files)
    table = ds.dataset(str(cap), format="parquet", partitioning="hive").to_table()
    assert table.num_rows == n_rows
    rows = table.to_pylist()
    by_id: dict[str, list] = {}
    for r in rows:
        by_id.setdefault(r["request_id"], []).append(r)
    assert set(by_id) == set(sent)
    for rid, recs in by_id.items():
        recs.sort(key=lambda r: r["row"])
        x, _ = sent[rid]
        assert [r["row"] for r in recs] == list(range(len(x)))
        assert np.array_equal(np.array([r["inputs"]["X"] for r in recs], dtype=np.float32), x)
        labels = answers[rid]["outputs"][0]
        assert labels["name"] == "label"
        assert [r["outputs"]["label"][0] for r in recs] == labels["data"]
        probs = np.array(answers[rid]["outputs"][1]["data"], dtype=np.float32).reshape(len(x), 3)
        assert np.array_equal(np.array([r["outputs"]["probabilities"] for r in recs], dtype=np.float32), probs)
        assert all(str(r["model"]) == "iris" and int(r["version"]) == 1 for r in recs)
        assert all(r["latency_us"] > 0 and r["variant"] is None for r in recs)

    # DuckDB reads the same folder, partitions included.
    con = duckdb.connect()
    n, models = con.execute(
        f"SELECT count(*), list(DISTINCT model) FROM read_parquet('{cap}/**/*.parquet', hive_partitioning=true)"
    ).fetchone()
    assert n == n_rows and list(map(str, models)) == ["iris"]

    # Offline skew from the capture gives the online window's numbers.
    out = subprocess.run([BIN, "skew", "iris", "--version", "1", "--capture", str(cap), "--baseline",
                          str(ROOT / "models/iris/1/baseline.json"), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    offline = json.loads(out.stdout)
    assert offline["records"] == n_rows and offline["rows"] == online["rows"]
    on = {f["feature"]: f for f in online["features"]}
    off = {f["feature"]: f for f in offline["features"]}
    assert on.keys() == off.keys()
    for name, f in on.items():
        for stat in ["rows", "js_distance", "psi", "linf", "out_of_range", "non_finite", "alert"]:
            a, b = f[stat], off[name][stat]
            if isinstance(a, float):
                assert b == pytest.approx(a, rel=1e-12, abs=1e-12), (name, stat, a, b)
            else:
                assert a == b, (name, stat, a, b)


def test_a_full_capture_queue_drops_and_counts_without_failing_requests(tmp_path):
    reg = tmp_path / "registry"
    shutil.copytree(ROOT / "models/iris", reg / "iris")
    cap = tmp_path / "capture"
    # A queue of two rows: a four-row request never fits, and concurrent callers overflow it.
    server = _start(reg, ["--capture-dir", str(cap), "--capture-queue-rows", "2"])
    try:
        x_train, _ = iris_train()
        infer(server.http, "iris", x_train[:4])
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: infer(server.http, "iris", x_train[i % 100:i % 100 + 1]),
                                    range(400)))
        assert len(answers) == 400 and all(len(a["outputs"]) == 2 for a in answers)
        dropped = metric(metrics(server.http), "switchyard_capture_records_total",
                         model="iris", outcome="dropped") or 0
    finally:
        _stop(server)
    files, hidden = capture_files(cap)
    written = ds.dataset(str(cap), format="parquet", partitioning="hive").count_rows() if files else 0
    assert not hidden
    assert dropped >= 4, dropped
    # Every row is accounted for: on disk, or counted as dropped.
    assert written + dropped == 4 + 400, (written, dropped)
