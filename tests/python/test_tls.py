"""tritonclient over TLS: `tritonclient.http` with ssl=True and `tritonclient.grpc` with ssl=True and
root certificates, against the real binary serving --tls-cert/--tls-key. Test certificates are made
here with the openssl command line; a plain-text client against the TLS ports fails fast."""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import gevent.ssl
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import _start, _stop


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not found: cannot make test certificates (Debian: apt-get install openssl)")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=switchyard test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=d)
    (d / "ext.cnf").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
        "basicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    return d


@pytest.fixture(scope="module")
def tls_server(registry, pki):
    s = _start(registry, ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")])
    yield s
    _stop(s)


def _local(addr: str) -> str:
    return "localhost:" + addr.rsplit(":", 1)[1]


def _rows():
    return np.linspace(0, 5, 2 * 4, dtype=np.float32).reshape(2, 4)


def test_http_client_over_tls(tls_server, pki):
    c = httpclient.InferenceServerClient(
        _local(tls_server.http), ssl=True, ssl_options={"ca_certs": str(pki / "ca.pem")},
        ssl_context_factory=gevent.ssl.create_default_context)
    try:
        assert c.is_server_live() and c.is_server_ready()
        inp = httpclient.InferInput("X", [2, 4], "FP32")
        inp.set_data_from_numpy(_rows(), binary_data=True)
        r = c.infer("iris", [inp])
        assert r.as_numpy(r.get_response()["outputs"][0]["name"]).shape[0] == 2
    finally:
        c.close()


def test_grpc_client_over_tls(tls_server, pki):
    c = grpcclient.InferenceServerClient(
        _local(tls_server.grpc), ssl=True, root_certificates=str(pki / "ca.pem"))
    try:
        assert c.is_server_live() and c.is_server_ready()
        inp = grpcclient.InferInput("X", [2, 4], "FP32")
        inp.set_data_from_numpy(_rows())
        r = c.infer("iris", [inp])
        assert r.as_numpy(r.get_response().outputs[0].name).shape[0] == 2
    finally:
        c.close()


def test_plain_text_clients_fail_fast(tls_server):
    started = time.monotonic()
    with pytest.raises(Exception):
        c = httpclient.InferenceServerClient(tls_server.http, network_timeout=20, connection_timeout=20)
        c.is_server_live()
    assert time.monotonic() - started < 15, "plain HTTP against the TLS port should fail, not hang"
    started = time.monotonic()
    c = grpcclient.InferenceServerClient(tls_server.grpc)
    with pytest.raises(InferenceServerException):
        c.is_server_live(client_timeout=20)
    assert time.monotonic() - started < 15, "plain gRPC against the TLS port should fail, not hang"
