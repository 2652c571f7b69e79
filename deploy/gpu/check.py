"""Compares a GPU server's answers with a CPU server's on the same model and inputs.

Usage: python3 check.py CPU_URL GPU_URL MODEL [ROWS...]
Sends the same batches (varied values, FP32, binary-free V2 JSON) to both and checks that every
output has the same name, datatype and shape, and values within float tolerance
(|gpu - cpu| <= atol + rtol * |cpu|, atol 1e-4, rtol 1e-3: TF32/cuDNN kernels differ from MLAS in the
last bits). Exits 1 on any difference, printing it.
"""
import json
import sys
import urllib.request

import numpy as np

ATOL, RTOL = 1e-4, 1e-3


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


def main():
    cpu, gpu, model = sys.argv[1:4]
    rows_list = [int(r) for r in sys.argv[4:]] or [1, 7, 64, 256]
    meta = json.load(urllib.request.urlopen(f"{cpu}/v2/models/{model}", timeout=30))
    inp = meta["inputs"][0]
    width = int(inp["shape"][-1])
    rng = np.random.default_rng(12)
    failures = 0
    for rows in rows_list:
        x = rng.normal(size=(rows, width)).astype(np.float32)
        body = {"inputs": [{"name": inp["name"], "shape": [rows, width], "datatype": "FP32", "data": x.ravel().tolist()}]}
        a, b = post(f"{cpu}/v2/models/{model}/infer", body), post(f"{gpu}/v2/models/{model}/infer", body)
        for oa, ob in zip(a["outputs"], b["outputs"], strict=True):
            same = (oa["name"], oa["datatype"], oa["shape"]) == (ob["name"], ob["datatype"], ob["shape"])
            va, vb = np.asarray(oa["data"], dtype=np.float64), np.asarray(ob["data"], dtype=np.float64)
            diff = np.abs(va - vb)
            ok = same and va.shape == vb.shape and bool(np.all(diff <= ATOL + RTOL * np.abs(va)))
            failures += not ok
            print(f"rows={rows:<4} output={oa['name']} shape cpu={oa['shape']} gpu={ob['shape']} "
                  f"max|diff|={diff.max() if diff.size else 0:.2e} {'OK' if ok else 'DIFFERENT'}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
