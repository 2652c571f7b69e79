"""tritonclient.grpc against a running Switchyard: metadata, readiness, raw and typed inputs on every
default model, bidirectional streaming with a bad request in the middle, health checks, and parity
with REST (same outputs bit for bit, same error class for the same bad input)."""
from __future__ import annotations

import queue

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from test_http_client import ALL_TYPES, DEFAULT_MODELS, reference, rows_for


@pytest.fixture
def gclient(server):
    c = grpcclient.InferenceServerClient(server.grpc)
    yield c
    c.close()


@pytest.fixture
def hclient(server):
    c = httpclient.InferenceServerClient(server.http)
    yield c
    c.close()


def test_health_readiness_and_metadata(gclient):
    assert gclient.is_server_live()
    assert gclient.is_server_ready()
    assert gclient.get_server_metadata().name == "switchyard"
    m = gclient.get_model_metadata("breast_cancer")
    assert list(m.versions) == ["1", "2"]
    assert m.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in m.inputs] == [("X", "FP32", [-1, 30])]
    assert [(t.name, t.datatype, list(t.shape)) for t in m.outputs] == [
        ("label", "INT64", [-1]), ("probabilities", "FP32", [-1, 2])]
    assert gclient.is_model_ready("breast_cancer", "1")
    with pytest.raises(InferenceServerException) as e:
        gclient.is_model_ready("no_such_model")
    assert "unknown model" in e.value.message()


def grpc_health(address: str, service: str) -> int:
    """What grpc_health_probe does: grpc.health.v1.Health/Check; 1 means SERVING."""
    with grpc.insecure_channel(address) as ch:
        check = ch.unary_unary("/grpc.health.v1.Health/Check",
                               request_serializer=lambda s: (b"\x0a" + bytes([len(s)]) + s.encode()) if s else b"",
                               response_deserializer=lambda b: b)
        raw = check(service, timeout=5)
    return raw[1] if len(raw) >= 2 and raw[0] == 0x08 else 0


def test_standard_grpc_health_service_reports_serving(server):
    assert grpc_health(server.grpc, "") == 1
    assert grpc_health(server.grpc, "inference.GRPCInferenceService") == 1


@pytest.mark.parametrize("model,version", DEFAULT_MODELS)
def test_infer_raw_inputs_matches_onnxruntime_and_rest(gclient, hclient, model, version):
    x = rows_for(model, version)
    want = reference(model, version, x)
    g_in = grpcclient.InferInput("X", list(x.shape), "FP32")
    g_in.set_data_from_numpy(x)
    g = gclient.infer(model, [g_in], model_version=version, request_id="g-1",
                      outputs=[grpcclient.InferRequestedOutput(n) for n in want])
    h_in = httpclient.InferInput("X", list(x.shape), "FP32")
    h_in.set_data_from_numpy(x)
    h = hclient.infer(model, [h_in], model_version=version)
    assert g.get_response().model_version == version
    assert g.get_response().id == "g-1"
    for name, expected in want.items():
        got = g.as_numpy(name)
        np.testing.assert_array_equal(got, h.as_numpy(name), err_msg=f"{name}: gRPC and REST differ")
        np.testing.assert_allclose(got.astype(np.float64), expected.astype(np.float64), rtol=0, atol=1e-6)


@pytest.mark.parametrize("model,version", DEFAULT_MODELS)
def test_typed_contents_inputs(server, model, version):
    """KServe-style clients send typed `contents`; the answer equals onnxruntime's."""
    x = rows_for(model, version, n=3)
    with grpc.insecure_channel(server.grpc) as ch:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
        req = service_pb2.ModelInferRequest(model_name=model, model_version=version)
        t = req.inputs.add(name="X", datatype="FP32", shape=list(x.shape))
        t.contents.fp32_contents.extend(x.flatten().tolist())
        resp = stub.ModelInfer(req, timeout=10)
    want = reference(model, version, x)
    assert [o.name for o in resp.outputs] == list(want)
    for out, raw in zip(resp.outputs, resp.raw_output_contents):
        expected = want[out.name]
        got = np.frombuffer(raw, dtype=expected.dtype).reshape(list(out.shape))
        np.testing.assert_allclose(got.astype(np.float64), expected.astype(np.float64), rtol=0, atol=1e-6)


def test_every_datatype_round_trips(gclient):
    inputs, outputs = [], []
    for name, arr in ALL_TYPES.items():
        i = grpcclient.InferInput(f"in_{name}", list(arr.shape), np_to_triton_dtype(arr.dtype))
        i.set_data_from_numpy(arr)
        inputs.append(i)
        outputs.append(grpcclient.InferRequestedOutput(f"out_{name}"))
    res = gclient.infer("identity_all_types", inputs, outputs=outputs)
    for name, arr in ALL_TYPES.items():
        np.testing.assert_array_equal(res.as_numpy(f"out_{name}"), arr, err_msg=name)


def test_stream_answers_each_request_in_order_with_errors_in_stream(gclient):
    results: queue.Queue = queue.Queue()
    gclient.start_stream(callback=lambda result, error: results.put((result, error)))
    xs = [rows_for("breast_cancer", "2", n=1 + i, seed=i) for i in range(5)]
    sent = []
    for i, x in enumerate(xs):
        if i == 2:  # a bad request in the middle: 29 features instead of 30
            bad = grpcclient.InferInput("X", [1, 29], "FP32")
            bad.set_data_from_numpy(np.zeros((1, 29), dtype=np.float32))
            gclient.async_stream_infer("breast_cancer", [bad], request_id="bad")
            sent.append(("bad", None))
        inp = grpcclient.InferInput("X", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        gclient.async_stream_infer("breast_cancer", [inp], request_id=f"ok-{i}")
        sent.append((f"ok-{i}", x))
    got = [results.get(timeout=30) for _ in sent]
    gclient.stop_stream()
    for (rid, x), (result, error) in zip(sent, got):
        if x is None:
            assert result is None and error is not None
            assert "dimension 1 must be 30" in error.message()
        else:
            assert error is None, error
            assert result.get_response().id == rid, "responses come back in request order"
            np.testing.assert_allclose(result.as_numpy("probabilities"),
                                       reference("breast_cancer", "2", x)["probabilities"], rtol=0, atol=1e-6)


PARITY = [
    # (description, model, version, input name, shape, dtype, data, REST status, gRPC code)
    ("good", "breast_cancer", "", "X", [2, 30], "FP32", None, None, None),
    ("good v1", "breast_cancer", "1", "X", [1, 30], "FP32", None, None, None),
    ("unknown model", "nope", "", "X", [1, 30], "FP32", None, "404", "StatusCode.NOT_FOUND"),
    ("unknown version", "breast_cancer", "7", "X", [1, 30], "FP32", None, "404", "StatusCode.NOT_FOUND"),
    ("wrong width", "breast_cancer", "", "X", [1, 29], "FP32", None, "400", "StatusCode.INVALID_ARGUMENT"),
    ("wrong rank", "breast_cancer", "", "X", [30], "FP32", None, "400", "StatusCode.INVALID_ARGUMENT"),
    ("wrong datatype", "breast_cancer", "", "X", [1, 30], "FP64", None, "400", "StatusCode.INVALID_ARGUMENT"),
    ("unknown input", "breast_cancer", "", "Z", [1, 30], "FP32", None, "400", "StatusCode.INVALID_ARGUMENT"),
    ("rejected at run time", "gather", "", "idx", [2], "INT64", np.array([1, 99]), "400", "StatusCode.INVALID_ARGUMENT"),
]


@pytest.mark.parametrize("case", PARITY, ids=[c[0] for c in PARITY])
def test_rest_and_grpc_parity(gclient, hclient, case):
    _, model, version, name, shape, dtype, data, http_status, grpc_code = case
    if data is None:
        data = np.random.default_rng(3).random(shape).astype(np.float64 if dtype == "FP64" else np.float32)
    hi = httpclient.InferInput(name, shape, dtype)
    hi.set_data_from_numpy(data)
    gi = grpcclient.InferInput(name, shape, dtype)
    gi.set_data_from_numpy(data)
    h = g = h_err = g_err = None
    try:
        h = hclient.infer(model, [hi], model_version=version)
    except InferenceServerException as e:
        h_err = e
    try:
        g = gclient.infer(model, [gi], model_version=version)
    except InferenceServerException as e:
        g_err = e
    if http_status is None:
        assert h_err is None and g_err is None, (h_err, g_err)
        for out in g.get_response().outputs:
            np.testing.assert_array_equal(g.as_numpy(out.name), h.as_numpy(out.name))
            assert g.as_numpy(out.name).tobytes() == h.as_numpy(out.name).tobytes(), "bit-identical"
    else:
        assert h_err is not None and g_err is not None
        assert h_err.status() == http_status, h_err
        assert g_err.status() == grpc_code, g_err
        assert h_err.message() == g_err.message(), "one core, one message"


def test_repository_index_and_unavailable_load(gclient):
    index = gclient.get_model_repository_index()
    rows = {(m.name, m.version): m.state for m in index.models}
    assert rows[("breast_cancer", "2")] == "READY"
    assert rows[("iris", "1")] == "READY"
    with pytest.raises(InferenceServerException) as e:
        gclient.load_model("iris")
    assert e.value.status() == "StatusCode.FAILED_PRECONDITION"
    assert "model control mode" in e.value.message()
