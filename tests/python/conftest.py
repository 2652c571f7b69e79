"""Starts the real `switchyard` binary for the Python client tests.

The binary comes from SWITCHYARD_BIN (set by tests/python_clients.rs, which `cargo test` runs);
it serves a temporary registry holding models/ plus tests/fixtures/models/, on ephemeral ports
read back from its JSON log.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


class Server:
    def __init__(self, proc: subprocess.Popen, http: str, grpc: str | None, registry: Path):
        self.proc, self.http, self.grpc, self.registry = proc, http, grpc, registry


def _start(registry: Path, extra: list[str] | None = None, env: dict[str, str] | None = None) -> Server:
    binary = os.environ.get("SWITCHYARD_BIN") or str(ROOT / "target/debug/switchyard")
    cmd = [binary, "--log-format", "json", "serve", "--host", "127.0.0.1", "--http-port", "0",
           "--grpc-port", "0", "--model-repository", str(registry), *(extra or [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    addrs: dict[str, str] = {}
    loaded = False
    seen: list[str] = []
    deadline = time.time() + 60
    while not loaded or "http" not in addrs:
        line = lines.get(timeout=max(0.1, deadline - time.time()))
        if line is None:
            last = "".join(seen[-5:])
            raise RuntimeError(f"switchyard exited with {proc.wait()}; its last log lines:\n{last}")
        seen.append(line)
        rec = json.loads(line)
        if rec.get("message") == "listening":
            addrs[rec["protocol"]] = rec["addr"]
        if rec.get("message") == "initial model load finished":
            loaded = True
    # Keep draining the log so the server never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in iter(lines.get, None)], daemon=True).start()
    return Server(proc, addrs["http"], addrs.get("grpc"), registry)


def _stop(server: Server) -> None:
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0


@pytest.fixture(scope="session")
def registry(tmp_path_factory) -> Path:
    reg = tmp_path_factory.mktemp("registry")
    for src in [ROOT / "models", ROOT / "tests/fixtures/models"]:
        for model in src.iterdir():
            if model.is_dir():
                shutil.copytree(model, reg / model.name)
    return reg


@pytest.fixture(scope="session")
def server(registry) -> Server:
    s = _start(registry)
    yield s
    _stop(s)
