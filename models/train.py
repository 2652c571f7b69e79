#!/usr/bin/env python3
"""Train the models of Switchyard's default registry (this folder) and write them in registry layout.

    python3 -m venv .venv && .venv/bin/pip install -r models/requirements.txt
    PYTHONHASHSEED=0 .venv/bin/python models/train.py    # rewrites models/<model>/<version>/...
    .venv/bin/python models/train.py --baseline-only     # rewrites only baseline.json

Every model is trained on a dataset that ships with scikit-learn (no download), with a fixed seed and a
fixed train/test split, so a rerun with the pinned versions in requirements.txt gives the same held-out
metrics and, for the tree models, byte-identical model.onnx files. Two limits: skl2onnx orders the
model's opset imports by Python's string hashing, so PYTHONHASHSEED=0 is needed for identical bytes; and
the MLP (iris) differs in the last bits of its weights between CPUs (OpenBLAS picks kernels per CPU).
`trained_at` in metadata.json is the current time; set SOURCE_DATE_EPOCH to pin it.

--baseline-only keeps every model.onnx and metadata.json as they are and rewrites baseline.json from
them (the output statistics come from running the model.onnx already in the folder), for when the
baseline format grows but the served models must not change.

Each version folder gets:
  model.onnx     the model (skl2onnx, ONNX opset 17, ai.onnx.ml opset 3, zipmap off)
  metadata.json  model card: sha256 of model.onnx, digest of the training data, hyper-parameters,
                 held-out metrics, library versions, training date
  baseline.json  the reference for skew detection, over the training rows: per input feature
                 (a column of input X) count, mean, std, min, max and a histogram (bin edges and
                 proportions); under "outputs", the same for the exported model's own predictions on
                 those rows, so prediction drift is measured against what the model said in training:
                 classifiers get "label" (categorical: every class index as a string, with its share)
                 and "probabilities[k]" (numeric, column k of "probabilities"); the regressor gets
                 "variable" (numeric). Each output feature names its tensor ("output") and column
                 ("index").
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import sklearn
import skl2onnx
from skl2onnx import to_onnx
from sklearn import datasets
from sklearn.ensemble import GradientBoostingClassifier, RandomForestRegressor
from sklearn.metrics import accuracy_score, log_loss, mean_absolute_error, r2_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

SEED = 20261126
TEST_SIZE = 0.25
HIST_BINS = 20
HERE = Path(__file__).resolve().parent
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
# Set by --baseline-only: write_version then leaves model.onnx and metadata.json alone.
BASELINE_ONLY = False


def data_digest(x: np.ndarray, y: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in (x, y):
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return "sha256:" + h.hexdigest()


def numeric_stats(col: np.ndarray) -> dict:
    """Count, moments, range and a HIST_BINS-bin histogram (numpy's bins: the last one is closed)."""
    col = col.astype(np.float64)
    counts, edges = np.histogram(col, bins=HIST_BINS)
    return {
        "count": int(col.size),
        "mean": float(col.mean()),
        "std": float(col.std()),
        "min": float(col.min()),
        "max": float(col.max()),
        "histogram": {
            "bin_edges": [float(e) for e in edges],
            "proportions": [float(c) / col.size for c in counts],
        },
    }


def baseline(x: np.ndarray, names: list[str]) -> dict:
    feats = [{"name": name, "index": i, "type": "numeric", **numeric_stats(x[:, i])}
             for i, name in enumerate(names)]
    return {"input": None, "rows": int(x.shape[0]), "features": feats}


def output_baseline(out: dict[str, np.ndarray], n_classes: int | None) -> list[dict]:
    """The distribution of the model's predictions (as exported, run by onnxruntime) on the training rows.

    A classifier (n_classes given) has a "label" tensor of class indices and a "probabilities" tensor
    [rows, n_classes]; a regressor has "variable" [rows, 1].
    """
    if n_classes is None:
        return [{"name": "variable", "output": "variable", "index": 0, "type": "numeric",
                 **numeric_stats(out["variable"][:, 0])}]
    label = out["label"].reshape(-1)
    # Every class is listed, even one never predicted, so serving predictions of it are measured
    # against a known training share of 0 instead of landing in the "unseen" bucket.
    counts = np.bincount(label, minlength=n_classes)
    assert counts.size == n_classes, (counts, n_classes)
    feats = [{"name": "label", "output": "label", "index": 0, "type": "categorical",
              "count": int(label.size), "values": [str(c) for c in range(n_classes)],
              "proportions": [float(c) / label.size for c in counts]}]
    proba = out["probabilities"]
    assert proba.shape[1] == n_classes, (proba.shape, n_classes)
    feats += [{"name": f"probabilities[{k}]", "output": "probabilities", "index": k, "type": "numeric",
               **numeric_stats(proba[:, k])} for k in range(n_classes)]
    return feats


def export(model, x_train: np.ndarray, name: str) -> bytes:
    onx = to_onnx(
        model,
        x_train[:1].astype(np.float32),
        options={id(model): {"zipmap": False}} if hasattr(model, "predict_proba") else None,
        target_opset=TARGET_OPSET,
    )
    onx.graph.name = name
    # A symbolic batch dimension reads better in metadata than skl2onnx's unnamed one.
    for vi in list(onx.graph.input) + list(onx.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if len(dims) > 0 and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "N"
    onnx.checker.check_model(onx)
    return onx.SerializeToString()


def write_version(model_name, version, onnx_bytes, card, base, input_name, x_train, n_classes):
    out = HERE / model_name / str(version)
    if BASELINE_ONLY:
        # The output statistics must describe the model that is served, not this run's retrained one.
        onnx_bytes = (out / "model.onnx").read_bytes()
    else:
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.onnx").write_bytes(onnx_bytes)
        card = {"model": model_name, "version": version,
                "sha256": hashlib.sha256(onnx_bytes).hexdigest(), **card}
        (out / "metadata.json").write_text(json.dumps(card, indent=2) + "\n")
    base["input"] = input_name
    base["outputs"] = output_baseline(onnx_predict(onnx_bytes, x_train), n_classes)
    (out / "baseline.json").write_text(json.dumps(base, indent=2) + "\n")


def onnx_predict(onnx_bytes: bytes, x: np.ndarray) -> dict[str, np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(None, {s.get_inputs()[0].name: x.astype(np.float32)})))


def trained_at() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    t = dt.datetime.fromtimestamp(int(epoch), dt.timezone.utc) if epoch else dt.datetime.now(dt.timezone.utc)
    return t.replace(microsecond=0).isoformat()


def common_card(dataset, x, y, x_train, x_test, algo, params):
    return {
        "framework": {"scikit-learn": sklearn.__version__, "skl2onnx": skl2onnx.__version__,
                      "onnx": onnx.__version__, "numpy": np.__version__},
        "dataset": {"name": dataset, "source": f"sklearn.datasets.load_{dataset}",
                    "rows": int(x.shape[0]), "features": int(x.shape[1]),
                    "digest": data_digest(x, y),
                    "split": {"test_size": TEST_SIZE, "random_state": SEED,
                              "train_rows": int(x_train.shape[0]), "test_rows": int(x_test.shape[0])}},
        "algorithm": algo,
        "hyperparameters": params,
        "seed": SEED,
        "trained_at": trained_at(),
        "training_script": "models/train.py",
    }


def train_breast_cancer():
    ds = datasets.load_breast_cancer()
    x, y = ds.data.astype(np.float32), ds.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=SEED, stratify=y)
    names = [str(n) for n in ds.feature_names]
    # Version 1 is deliberately weak (stumps, few rounds); version 2 is the tuned one. Later
    # features (hot swap, canaries, decay) use the pair, so v2 must beat v1 on held-out data.
    versions = {
        1: {"n_estimators": 8, "max_depth": 1, "learning_rate": 0.1, "subsample": 1.0},
        2: {"n_estimators": 100, "max_depth": 3, "learning_rate": 0.1, "subsample": 0.8},
    }
    results = {}
    for version, params in versions.items():
        clf = GradientBoostingClassifier(random_state=SEED, **params).fit(x_train, y_train)
        onnx_bytes = export(clf, x_train, f"breast_cancer_v{version}")
        out = onnx_predict(onnx_bytes, x_test)
        proba = out["probabilities"]
        metrics = {"accuracy": accuracy_score(y_test, out["label"]),
                   "roc_auc": roc_auc_score(y_test, proba[:, 1]),
                   "log_loss": log_loss(y_test, proba)}
        agree = float(np.max(np.abs(proba - clf.predict_proba(x_test))))
        card = common_card("breast_cancer", x, y, x_train, x_test,
                           "sklearn.ensemble.GradientBoostingClassifier", params)
        card.update({"task": "binary_classification",
                     "classes": [str(c) for c in ds.target_names],
                     "inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 30], "features": names}],
                     "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]},
                                 {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}],
                     "heldout_metrics": {k: round(float(v), 6) for k, v in metrics.items()},
                     "onnx_vs_sklearn_max_abs_diff": agree})
        write_version("breast_cancer", version, onnx_bytes, card, baseline(x_train, names), "X",
                      x_train, len(ds.target_names))
        results[version] = metrics
    assert results[2]["roc_auc"] > results[1]["roc_auc"] and results[2]["log_loss"] < results[1]["log_loss"], results
    return results


def train_iris():
    ds = datasets.load_iris()
    x, y = ds.data.astype(np.float32), ds.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=SEED, stratify=y)
    names = [str(n) for n in ds.feature_names]
    params = {"hidden_layer_sizes": [16], "activation": "relu", "max_iter": 2000, "alpha": 1e-3}
    clf = make_pipeline(StandardScaler(), MLPClassifier(random_state=SEED, **{
        **params, "hidden_layer_sizes": tuple(params["hidden_layer_sizes"])})).fit(x_train, y_train)
    onx = to_onnx(clf, x_train[:1], options={id(clf.steps[-1][1]): {"zipmap": False}},
                  target_opset=TARGET_OPSET)
    onx.graph.name = "iris_v1"
    for vi in list(onx.graph.input) + list(onx.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if len(dims) > 0 and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "N"
    onnx.checker.check_model(onx)
    onnx_bytes = onx.SerializeToString()
    out = onnx_predict(onnx_bytes, x_test)
    metrics = {"accuracy": accuracy_score(y_test, out["label"]),
               "log_loss": log_loss(y_test, out["probabilities"])}
    card = common_card("iris", x, y, x_train, x_test,
                       "sklearn.pipeline(StandardScaler, MLPClassifier)", params)
    card.update({"task": "multiclass_classification",
                 "classes": [str(c) for c in ds.target_names],
                 "inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 4], "features": names}],
                 "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]},
                             {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}],
                 "heldout_metrics": {k: round(float(v), 6) for k, v in metrics.items()}})
    write_version("iris", 1, onnx_bytes, card, baseline(x_train, names), "X",
                  x_train, len(ds.target_names))
    return {1: metrics}


def train_diabetes():
    ds = datasets.load_diabetes()
    x, y = ds.data.astype(np.float32), ds.target.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=TEST_SIZE, random_state=SEED)
    names = [str(n) for n in ds.feature_names]
    params = {"n_estimators": 40, "max_depth": 6, "min_samples_leaf": 3}
    reg = RandomForestRegressor(random_state=SEED, **params).fit(x_train, y_train)
    onnx_bytes = export(reg, x_train, "diabetes_v1")
    out = onnx_predict(onnx_bytes, x_test)
    pred = out["variable"][:, 0]
    metrics = {"r2": r2_score(y_test, pred), "mae": mean_absolute_error(y_test, pred)}
    card = common_card("diabetes", x, y, x_train, x_test,
                       "sklearn.ensemble.RandomForestRegressor", params)
    card.update({"task": "regression",
                 "inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 10], "features": names}],
                 "outputs": [{"name": "variable", "datatype": "FP32", "shape": [-1, 1]}],
                 "heldout_metrics": {k: round(float(v), 6) for k, v in metrics.items()}})
    write_version("diabetes", 1, onnx_bytes, card, baseline(x_train, names), "X", x_train, None)
    return {1: metrics}


def main() -> int:
    global BASELINE_ONLY
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline-only", action="store_true",
                    help="rewrite only baseline.json, from the model.onnx files already here")
    BASELINE_ONLY = ap.parse_args().baseline_only
    for name, fn in [("breast_cancer", train_breast_cancer), ("iris", train_iris), ("diabetes", train_diabetes)]:
        for version, m in fn().items():
            print(f"{name} v{version}: " + ", ".join(f"{k}={v:.4f}" for k, v in m.items()))
    total = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file())
    print(f"models/ total size: {total / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
