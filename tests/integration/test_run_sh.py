"""functions/stream/run.sh, the Lambda Web Adapter's entry, started as Lambda starts it:
uvicorn serves the app on AWS_LWA_PORT with uvloop and httptools loaded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.process import free_port

ROOT = Path(__file__).resolve().parents[2]
FUNCTION = ROOT / "functions" / "stream"
START_TIMEOUT_SECONDS = 30.0


@pytest.fixture
def run_sh() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    env = {
        **os.environ,
        # What Lambda sets; the layer's /opt/python is layers/core here.
        "LAMBDA_TASK_ROOT": str(FUNCTION),
        "PYTHONPATH": str(ROOT / "layers" / "core"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "AWS_LWA_PORT": str(port),
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "TABLE_NAME": "streaming-proxy-run-sh",
        "WS_MANAGEMENT_ENDPOINT": "http://127.0.0.1:9/dev",
        "APPS": "{}",
    }
    proc = subprocess.Popen(
        ["bash", "run.sh"],
        cwd=FUNCTION,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        yield proc, port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def _health(proc: subprocess.Popen[bytes], port: int) -> httpx.Response:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2.0)
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"run.sh did not answer on port {port} within {START_TIMEOUT_SECONDS} s")


def test_run_sh_serves_the_app_on_uvloop_and_httptools(
    run_sh: tuple[subprocess.Popen[bytes], int],
) -> None:
    proc, port = run_sh
    answer = _health(proc, port)
    assert answer.status_code == 200 and answer.json()["status"] == "ok"
    # `exec` keeps the pid: the server is the process bash started.
    maps = Path(f"/proc/{proc.pid}/maps").read_text(encoding="utf-8")
    libraries = {Path(line.split()[-1]).parent.name for line in maps.splitlines()}
    assert "uvloop" in libraries, "uvicorn runs on uvloop's event loop"
    assert "parser" in libraries and "httptools/parser/" in maps, "httptools parses HTTP"
