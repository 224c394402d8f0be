"""Shared fixtures: the real local stack (`python -m devstack`) on free loopback ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.fake_llm import FakeLlm

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    http: str
    ws: str
    management: str
    dynamodb: str
    api_key: str
    app_id: str
    table: str
    env: dict[str, str]
    log_path: Path

    def token(self, *channels: str, ttl: int = 600) -> str:
        r = httpx.post(
            f"{self.http}/channels/token",
            json={"channels": list(channels), "ttl": ttl},
            headers={"x-api-key": self.api_key},
        )
        r.raise_for_status()
        return str(r.json()["token"])

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def start_stack(
    tmp: Path, extra_env: dict[str, str] | None = None
) -> tuple[Stack, subprocess.Popen[bytes]]:
    ports = {"http": free_port(), "ws": free_port(), "db": free_port()}
    env = {
        **os.environ,
        "DEV_HTTP_PORT": str(ports["http"]),
        "DEV_WS_PORT": str(ports["ws"]),
        "DEV_DYNAMODB_PORT": str(ports["db"]),
        "DEV_LOG_LEVEL": "INFO",
        "OPENAI_API_KEY": "",
        "ANTHROPIC_API_KEY": "",
        "GEMINI_API_KEY": "",
        **(extra_env or {}),
    }
    log_path = tmp / "devstack.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    stack = Stack(
        http=f"http://127.0.0.1:{ports['http']}",
        ws=f"ws://127.0.0.1:{ports['ws']}",
        management=f"http://127.0.0.1:{ports['ws']}/dev",
        dynamodb=f"http://127.0.0.1:{ports['db']}",
        api_key=env.get("DEV_API_KEY", "dev-key"),
        app_id="dev",
        table="streaming-proxy-dev",
        env=env,
        log_path=log_path,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"devstack exited early:\n{stack.logs()}")
        if "local stack is ready" in stack.logs():
            return stack, proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"devstack did not become ready:\n{stack.logs()}")


def stop_stack(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


# Fake provider keys the stack holds; tests check they never reach the logs.
FAKE_OPENAI_KEY = "sk-fake-openai-server-key-0123456789"
FAKE_ANTHROPIC_KEY = "sk-ant-fake-server-key-0123456789"


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeLlm]:
    """A fake OpenAI/Anthropic-format upstream on loopback."""
    server = FakeLlm()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, fake_llm: FakeLlm) -> Iterator[Stack]:
    """One running local stack for the session (real HTTP, real WebSocket, moto DynamoDB),
    with the openai and anthropic providers pointed at the fake upstream."""
    running, proc = start_stack(
        tmp_path_factory.mktemp("stack"),
        {
            "OPENAI_BASE_URL": fake_llm.base_url,
            "OPENAI_API_KEY": FAKE_OPENAI_KEY,
            "ANTHROPIC_BASE_URL": fake_llm.base_url,
            "ANTHROPIC_API_KEY": FAKE_ANTHROPIC_KEY,
        },
    )
    try:
        yield running
    finally:
        stop_stack(proc)
