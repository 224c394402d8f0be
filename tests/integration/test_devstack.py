"""The local stack's front door: it fails fast on a taken port, never logs a token, and can run
the gateway emulator in a process of its own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from devstack.process import ROOT, free_port, start_stack
from tests.delivery import assert_complete
from tests.wsclient import Subscriber


def test_a_taken_port_fails_fast_naming_the_port_and_its_variable() -> None:
    ports = {"DEV_HTTP_PORT": free_port(), "DEV_WS_PORT": free_port(), "DEV_DYNAMODB_PORT": 0}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports["DEV_DYNAMODB_PORT"] = taken.getsockname()[1]
        env = {**os.environ, **{name: str(port) for name, port in ports.items()}}
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "devstack"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert time.monotonic() - started < 30
    assert f"port {ports['DEV_DYNAMODB_PORT']}" in done.stderr
    assert "DEV_DYNAMODB_PORT" in done.stderr and "Traceback" not in done.stderr


async def test_subscribe_tokens_never_reach_the_local_stacks_log(tmp_path: Path) -> None:
    stack = start_stack(tmp_path, {"DEV_LOG_LEVEL": "DEBUG"})
    try:
        token = stack.token("log-check")
        sub = await Subscriber.open(stack.ws, token)
        await sub.connection_id()
        await sub.close()
        refused = await _refused_connect(stack.ws, token[:-4] + "AAAA")
        assert refused
    finally:
        stack.stop()
    logs = stack.logs()
    assert "WebSocket" in logs  # the handshake lines are there, minus the token
    assert token not in logs and token.split(".")[2] not in logs


async def _refused_connect(ws_url: str, token: str) -> bool:
    try:
        sub = await Subscriber.open(ws_url, token)
    except Exception:
        return True
    await sub.close()
    return False


def test_the_local_stack_lists_its_mock_model_for_openai_clients(tmp_path: Path) -> None:
    stack = start_stack(tmp_path, {})
    try:
        listed = httpx.get(
            f"{stack.http}/v1/models", headers={"Authorization": f"Bearer {stack.api_key}"}
        )
        missing = httpx.get(f"{stack.http}/v1/models")
    finally:
        stack.stop()
    assert listed.status_code == 200
    assert [m["id"] for m in listed.json()["data"]] == ["mock/echo"]
    # The hint names every way to send the key, and no redaction mangles it.
    assert missing.json()["error"]["message"] == (
        "missing app key: send it as apiKey, as a bearer token or in x-api-key"
    )


async def test_the_gateway_emulator_runs_in_its_own_process_when_asked(tmp_path: Path) -> None:
    stack = start_stack(tmp_path, {"DEV_GATEWAY_PROCESS": "true"})
    try:
        emulator = stack.gateway_pid
        assert emulator is not None and emulator != stack.pid
        assert _parent_of(emulator) == stack.pid  # a child of the stack
        emulator_cpu = stack.gateway_cpu_seconds()
        # A subscriber connects through it ($connect writes its rows over HTTP to the
        # stack's DynamoDB) and gets a whole stream the app posts to it.
        sub = await Subscriber.open(stack.ws, stack.token("own-process"))
        text = "posted across two processes, every word of it"
        body = {
            "channels": ["own-process"],
            "actionName": "onOwn",
            "payload": {
                "provider": "mock",
                "messages": [{"role": "user", "content": "hi"}],
                "providerArgs": {"text": text, "delayMs": 1},
            },
        }
        async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
            answer = await client.post(
                "/llm/query", json=body, headers={"x-api-key": stack.api_key}
            )
        answer.raise_for_status()
        assert_complete(await sub.stream(answer.json()["streamId"]), text)
        await sub.close()
        used = stack.gateway_cpu_seconds()
        assert emulator_cpu is not None and used is not None and used > emulator_cpu
    finally:
        stack.stop()
    assert not _running(emulator)  # stopped with the stack
    # Both processes write to the one log.
    assert f"Finished server process [{emulator}]" in stack.logs()
    assert f"Finished server process [{stack.pid}]" in stack.logs()


def test_the_gateway_emulator_shares_the_stacks_process_by_default(tmp_path: Path) -> None:
    stack = start_stack(tmp_path, {})
    try:
        assert stack.gateway_pid is None and stack.gateway_cpu_seconds() is None
        assert stack.app_cpu_seconds() > 0
        assert "Gateway emulator + DynamoDB: this process" in stack.logs()
    finally:
        stack.stop()


def _running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    return int(stat.rsplit(")", 1)[1].split()[1])
