"""Servers a benchmark runs in processes of its own (`python -m benchmarks.<module> PORT ...`)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time

import httpx

from devstack.process import ROOT

START_TIMEOUT_SECONDS = 20.0


def spawn_server(module: str, port: int, *args: str, probe: str) -> subprocess.Popen[bytes]:
    """`python -m <module> <port> <args>`, returned once GET `probe` answers on the port
    (any status); stopped, and RuntimeError, when it does not within START_TIMEOUT_SECONDS."""
    command = [sys.executable, "-m", module, str(port), *args]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}{probe}", timeout=1)
            return proc
        time.sleep(0.05)
    stop_server(proc)
    raise RuntimeError(f"{module} did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
