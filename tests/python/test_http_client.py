"""tritonclient.http against a running Switchyard: JSON and binary tensors, every default model,
every datatype, errors, compression and concurrency; outputs compared with Python onnxruntime."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from conftest import ROOT

DEFAULT_MODELS = [("breast_cancer", "1"), ("breast_cancer", "2"), ("iris", "1"), ("diabetes", "1")]


def rows_for(model: str, version: str, n: int = 8, seed: int = 7) -> np.ndarray:
    """Rows inside the training range of each feature (from the version's baseline.json)."""
    base = json.loads((ROOT / "models" / model / version / "baseline.json").read_text())
    rng = np.random.default_rng(seed)
    lo = np.array([f["min"] for f in base["features"]], dtype=np.float64)
    hi = np.array([f["max"] for f in base["features"]], dtype=np.float64)
    return (lo + rng.random((n, lo.size)) * (hi - lo)).astype(np.float32)


def reference(model: str, version: str, x: np.ndarray) -> dict[str, np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(str(ROOT / "models" / model / version / "model.onnx"), so,
                             providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(None, {s.get_inputs()[0].name: x})))


@pytest.fixture
def client(server):
    c = httpclient.InferenceServerClient(server.http, concurrency=8)
    yield c
    c.close()


def test_health_and_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "switchyard"
    assert "binary_tensor_data" in meta["extensions"]
    m = client.get_model_metadata("breast_cancer")
    assert m["versions"] == ["1", "2"]
    assert m["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 30]}]
    assert [o["name"] for o in m["outputs"]] == ["label", "probabilities"]
    assert client.is_model_ready("breast_cancer")
    assert client.is_model_ready("breast_cancer", "1")
    assert not client.is_model_ready("no_such_model")


@pytest.mark.parametrize("model,version", DEFAULT_MODELS)
@pytest.mark.parametrize("binary_in", [False, True])
@pytest.mark.parametrize("binary_out", [False, True])
def test_infer_matches_onnxruntime(client, model, version, binary_in, binary_out):
    x = rows_for(model, version)
    inp = httpclient.InferInput("X", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary_in)
    want = reference(model, version, x)
    outputs = [httpclient.InferRequestedOutput(name, binary_data=binary_out) for name in want]
    res = client.infer(model, [inp], model_version=version, outputs=outputs, request_id="r-1")
    assert res.get_response()["model_version"] == version
    assert res.get_response()["id"] == "r-1"
    for name, expected in want.items():
        got = res.as_numpy(name)
        assert got.shape == expected.shape and got.dtype == expected.dtype, name
        if np.issubdtype(expected.dtype, np.integer):
            np.testing.assert_array_equal(got, expected)
        else:
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_default_version_and_all_outputs_as_binary(client):
    x = rows_for("breast_cancer", "2", n=3)
    inp = httpclient.InferInput("X", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    # No outputs listed: tritonclient asks for every output in binary form.
    res = client.infer("breast_cancer", [inp])
    assert res.get_response()["model_version"] == "2"
    want = reference("breast_cancer", "2", x)
    np.testing.assert_allclose(res.as_numpy("probabilities"), want["probabilities"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(res.as_numpy("label"), want["label"])


ALL_TYPES = {
    "bool": np.array([[True, False], [False, True]]),
    "uint8": np.array([[0, 255], [1, 2]], dtype=np.uint8),
    "uint16": np.array([[0, 65535], [1, 2]], dtype=np.uint16),
    "uint32": np.array([[0, 2**32 - 1], [1, 2]], dtype=np.uint32),
    "uint64": np.array([[0, 2**64 - 1], [1, 2]], dtype=np.uint64),
    "int8": np.array([[-128, 127], [0, 1]], dtype=np.int8),
    "int16": np.array([[-32768, 32767], [0, 1]], dtype=np.int16),
    "int32": np.array([[-(2**31), 2**31 - 1], [0, 1]], dtype=np.int32),
    "int64": np.array([[-(2**63), 2**63 - 1], [0, 1]], dtype=np.int64),
    "fp16": np.array([[1.5, -2.0], [0.25, 65504.0]], dtype=np.float16),
    "fp32": np.array([[1.5, -2.25], [3e-5, 1e30]], dtype=np.float32),
    "fp64": np.array([[1.5, -2.25], [1e-300, 1e300]], dtype=np.float64),
    "bytes": np.array([[b"a", "h\u00e9llo".encode()], [b"", b"zz"]], dtype=np.object_),
}


@pytest.mark.parametrize("binary", [False, True])
def test_every_datatype_round_trips(client, binary):
    inputs, outputs = [], []
    for name, arr in ALL_TYPES.items():
        i = httpclient.InferInput(f"in_{name}", list(arr.shape), np_to_triton_dtype(arr.dtype))
        # tritonclient cannot send FP16 as JSON; that datatype always goes binary.
        i.set_data_from_numpy(arr, binary_data=binary or name == "fp16")
        inputs.append(i)
        outputs.append(httpclient.InferRequestedOutput(f"out_{name}", binary_data=binary or name == "fp16"))
    res = client.infer("identity_all_types", inputs, outputs=outputs)
    for name, arr in ALL_TYPES.items():
        got = res.as_numpy(f"out_{name}")
        if name == "bytes":
            got = np.array([v if isinstance(v, bytes) else str(v).encode() for v in got.flat],
                           dtype=np.object_).reshape(arr.shape)
        np.testing.assert_array_equal(got, arr, err_msg=name)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(client, algorithm):
    x = rows_for("iris", "1", n=4)
    inp = httpclient.InferInput("X", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=False)
    res = client.infer("iris", [inp], request_compression_algorithm=algorithm)
    np.testing.assert_allclose(res.as_numpy("probabilities"),
                               reference("iris", "1", x)["probabilities"], rtol=0, atol=1e-6)


def test_errors_carry_status_and_message_and_do_not_harm_the_server(client):
    x = rows_for("breast_cancer", "2", n=2)
    good = httpclient.InferInput("X", list(x.shape), "FP32")
    good.set_data_from_numpy(x)
    cases = [
        ("no_such_model", good, "404", "unknown model 'no_such_model'"),
        ("iris", good, "400", "dimension 1 must be 4"),
    ]
    wrong_type = httpclient.InferInput("X", [2, 30], "INT32")
    wrong_type.set_data_from_numpy(np.zeros((2, 30), dtype=np.int32))
    cases.append(("breast_cancer", wrong_type, "400", "datatype INT32, but the model expects FP32"))
    for model, inp, status, message in cases:
        with pytest.raises(InferenceServerException) as e:
            client.infer(model, [inp])
        assert e.value.status() == status, (model, e.value)
        assert message in e.value.message(), (model, e.value)
        res = client.infer("breast_cancer", [good])
        np.testing.assert_allclose(res.as_numpy("probabilities"),
                                   reference("breast_cancer", "2", x)["probabilities"], rtol=0, atol=1e-6)


def test_concurrent_async_requests_each_get_their_own_rows(client):
    xs = [rows_for("breast_cancer", "2", n=1 + i % 4, seed=i) for i in range(48)]
    pending = []
    for x in xs:
        inp = httpclient.InferInput("X", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        pending.append(client.async_infer("breast_cancer", [inp]))
    for x, p in zip(xs, pending):
        res = p.get_result()
        np.testing.assert_allclose(res.as_numpy("probabilities"),
                                   reference("breast_cancer", "2", x)["probabilities"], rtol=0, atol=1e-6)
