"""``enroll serve`` as a user runs it, for the tests: a subprocess on a free local port, ready when
/readyz says so, stopped (with its workers) at the end. Its log is kept beside the home.

The session fixtures (registered in conftest.py) share one server among the API and web page tests:
``api_home`` (an untrained tiny production model), ``api_tokens`` (a token per scope, made with
``enroll token create``) and ``api`` (the running server); each test uses people of its own.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
THRESHOLD = 0.05


def model_home(home: Path) -> Path:
    """A home whose production model (version 1) is the tiny network untrained, at 32 px: the API's
    tests check what it answers and stores, not accuracy (an enrolled photo is its own nearest face
    at distance 0 whatever the weights), and need no training run."""
    from enroll.home import store_version, write_production
    from trainer.models import build_model

    meta = {"model_name": "tiny", "image_size": 32, "embedding_dim": 128, "threshold": THRESHOLD,
            "threshold_method": "far", "far_target": 1e-3, "source_run": str(home / "no-run"), "created": "now"}
    write_production(home, store_version(home, build_model("tiny", 128, 32), meta))
    (home / "enroll.yaml").write_text("far_target: 0.001\n")
    return home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ApiServer:
    base: str
    process: subprocess.Popen
    log: Path

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def wait_ready(server: ApiServer, timeout: float) -> None:
    import httpx  # the [api] extra: imported here, since conftest.py imports this module for everyone

    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        assert server.process.poll() is None, f"enroll serve exited: {server.log_tail()}"
        try:
            answer = httpx.get(f"{server.base}/readyz", timeout=5)
            if answer.status_code == 200:
                return
            last = answer.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise AssertionError(f"enroll serve not ready within {timeout:.0f} s ({last}): {server.log_tail()}")


@contextmanager
def running_api(home: Path, *flags: str, env: dict | None = None, ready_timeout: float = 240, name: str = "api"):
    """``enroll serve --home HOME --port <free> FLAGS``; yields the ApiServer once ready."""
    port = free_port()
    log_path = Path(home).parent / f"{name}-{port}.log"
    log = open(log_path, "w")
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    process = subprocess.Popen([sys.executable, "-m", "enroll.cli", "serve", "--home", str(home), "--port", str(port),
                                *flags], cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)  # its own group: uvicorn's workers go with it
    server = ApiServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        wait_ready(server, ready_timeout)
        yield server
    finally:
        stop(server)
        log.close()


def raw_request(api, head: str, body_chunks=()) -> tuple[int, dict]:
    """Send a request by hand (a declared length it never sends, or a chunked body) and read the answer."""
    import json
    from urllib.parse import urlsplit

    url = urlsplit(api.base)
    with socket.create_connection((url.hostname, url.port), timeout=60) as sock:
        sock.sendall(head.encode())
        try:
            for chunk in body_chunks:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the whole body arrived: what we want
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < 20:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    head_part, _, body = answer.partition(b"\r\n\r\n")
    return int(head_part.split()[1]), json.loads(body[body.index(b"{"):body.rindex(b"}") + 1])


def stop(server: ApiServer) -> None:
    if server.process.poll() is not None:
        return
    os.killpg(server.process.pid, signal.SIGTERM)
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()


def _token(home: Path, scope: str) -> str:
    import contextlib
    import io
    import json

    from enroll import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["token", "create", "--scope", scope, "--name", f"test {scope}", "--json",
                         "--home", str(home)]) == 0
    return json.loads(out.getvalue())["token"]


@pytest.fixture(scope="session")
def api_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("api") / "home"
    home.mkdir()
    return model_home(home)


@pytest.fixture(scope="session")
def api_tokens(api_home) -> dict[str, str]:
    """A token per scope, plus one holding identify and enrol (the web page's)."""
    return {scope: _token(api_home, scope) for scope in ("identify", "enrol", "admin", "identify,enrol")}


@pytest.fixture(scope="session")
def api(api_home, api_tokens):
    with running_api(api_home) as server:
        yield server
