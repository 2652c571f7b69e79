#!/usr/bin/env python3
"""Write the benchmark models into a registry folder (default: target/bench-models), never into git.

    python3 -m venv .venv && .venv/bin/pip install -r models/requirements.txt
    .venv/bin/python loadtest/make_models.py [--out DIR]

mlp_small: input "input" FP32 [N,16]  -> Gemm 64 -> Relu -> Gemm 64 -> Relu -> Gemm -> "output" FP32 [N,4]
mlp_mid:   input "input" FP32 [N,256] -> Gemm 1024 -> Relu -> Gemm 1024 -> Relu -> Gemm -> "output" FP32 [N,10]

Weights are seeded (mlp_small seed 0, mlp_mid seed 1) and the graphs are built exactly as the peer
harness builds them (../shared/peers/make_models.py), so Switchyard and the peers serve the same
models. mlp_mid is compute-heavy (about 1.3 M multiply-adds per row), the model to measure batching on.
"""
import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MODELS = {"mlp_small": (16, [64, 64], 4), "mlp_mid": (256, [1024, 1024], 10)}


def build_mlp(name, d_in, hidden, d_out, seed):
    rng = np.random.default_rng(seed)
    dims = [d_in] + hidden + [d_out]
    nodes, inits, cur = [], [], "input"
    for i in range(len(dims) - 1):
        w = (rng.standard_normal((dims[i], dims[i + 1])) / np.sqrt(dims[i])).astype(np.float32)
        b = (0.01 * rng.standard_normal(dims[i + 1])).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"B{i}")]
        last = i == len(dims) - 2
        out = "output" if last else f"h{i}_lin"
        nodes.append(helper.make_node("Gemm", [cur, f"W{i}", f"B{i}"], [out], name=f"gemm{i}"))
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"h{i}"], name=f"relu{i}"))
            cur = f"h{i}"
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", d_in])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", d_out])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="peers-make_models")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    root = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(root / "target" / "bench-models"), help="registry folder (default: %(default)s)")
    args = ap.parse_args()
    for seed, (name, (d_in, hidden, d_out)) in enumerate(MODELS.items()):
        d = Path(args.out) / name / "1"
        d.mkdir(parents=True, exist_ok=True)
        onnx.save(build_mlp(name, d_in, hidden, d_out, seed), str(d / "model.onnx"))
        print("wrote", d / "model.onnx")


if __name__ == "__main__":
    main()
