"""The local stack as a child process on free loopback ports (tests and benchmarks use it)."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .gateway_process import READY_LINE as GATEWAY_READY_LINE

ROOT = Path(__file__).resolve().parent.parent
READY_LINE = "local stack is ready"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process `pid` has used so far (its own threads, not children)."""
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    fields = stat.rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class StackProcess:
    """A running `python -m devstack`: its addresses, its process and its log file."""

    proc: subprocess.Popen[bytes]
    http: str
    ws: str
    management: str
    dynamodb: str
    api_key: str
    app_id: str
    table: str
    log_path: Path

    @property
    def pid(self) -> int:
        """The stack's process: the app, plus moto and the emulator unless they have theirs."""
        return self.proc.pid

    @functools.cached_property
    def gateway_pid(self) -> int | None:
        """The gateway emulator's process when it runs in one (DEV_GATEWAY_PROCESS), else None."""
        for line in self.logs().splitlines():
            if line.startswith(GATEWAY_READY_LINE):
                return int(line.removeprefix(GATEWAY_READY_LINE))
        return None

    def app_cpu_seconds(self) -> float:
        """CPU used so far by the stack's process: the app and moto (and the emulator when it
        runs in the same process)."""
        return cpu_seconds(self.pid)

    def gateway_cpu_seconds(self) -> float | None:
        """CPU used so far by the emulator's own process; None when it has none."""
        pid = self.gateway_pid
        return None if pid is None else cpu_seconds(pid)

    def token(self, *channels: str, ttl: int = 600, api_key: str | None = None) -> str:
        """A subscribe token minted through the public `POST /channels/token` (with the dev
        app's key, or `api_key` for another app)."""
        r = httpx.post(
            f"{self.http}/channels/token",
            json={"channels": list(channels), "ttl": ttl},
            headers={"x-api-key": api_key or self.api_key},
            timeout=10,
        )
        r.raise_for_status()
        return str(r.json()["token"])

    def dynamodb_client(self) -> Any:
        """A boto3 DynamoDB client on the stack's embedded table (tests read rows with it)."""
        import boto3

        return boto3.client(
            "dynamodb",
            endpoint_url=self.dynamodb,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_records(self) -> Iterator[dict[str, Any]]:
        """Every structured (JSON) log line written so far."""
        for line in self.logs().splitlines():
            if not line.startswith("{"):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record

    def finished_record(self, stream_id: str) -> dict[str, Any] | None:
        """The relay's 'stream finished' log record of one stream, if written yet."""
        for record in self.log_records():
            if record.get("message") == "stream finished" and record.get("stream_id") == stream_id:
                return record
        return None

    async def finished(self, stream_id: str, within: float = 30.0) -> dict[str, Any]:
        """The 'stream finished' record of one stream, waited for (it is written once the
        stream's lanes drained); AssertionError if none came `within` seconds."""
        deadline = time.monotonic() + within
        while (record := self.finished_record(stream_id)) is None:
            assert time.monotonic() < deadline, f"no 'stream finished' record for {stream_id}"
            await asyncio.sleep(0.05)
        return record

    def stop(self) -> None:
        """SIGTERM (the stack shuts down cleanly), SIGKILL if it does not exit in time."""
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def start_stack(
    log_dir: Path, extra_env: dict[str, str] | None = None, *, timeout: float = 60.0
) -> StackProcess:
    """Start the stack with INFO logs and no provider keys from the caller's shell; ports are
    free ones unless `extra_env` names them (DEV_HTTP_PORT, DEV_WS_PORT, DEV_DYNAMODB_PORT)."""
    extra = extra_env or {}
    ports = {
        "http": int(extra.get("DEV_HTTP_PORT") or free_port()),
        "ws": int(extra.get("DEV_WS_PORT") or free_port()),
        "db": int(extra.get("DEV_DYNAMODB_PORT") or free_port()),
    }
    env = {
        **os.environ,
        "DEV_HTTP_PORT": str(ports["http"]),
        "DEV_WS_PORT": str(ports["ws"]),
        "DEV_DYNAMODB_PORT": str(ports["db"]),
        "DEV_LOG_LEVEL": "INFO",
        "OPENAI_API_KEY": "",
        "ANTHROPIC_API_KEY": "",
        "GEMINI_API_KEY": "",
        **extra,
    }
    log_path = log_dir / "devstack.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devstack"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    stack = StackProcess(
        proc=proc,
        http=f"http://127.0.0.1:{ports['http']}",
        ws=f"ws://127.0.0.1:{ports['ws']}",
        management=f"http://127.0.0.1:{ports['ws']}/dev",
        dynamodb=f"http://127.0.0.1:{ports['db']}",
        api_key=env.get("DEV_API_KEY", "dev-key"),
        app_id=env.get("DEV_APP_ID", "dev"),
        table=env.get("DEV_TABLE_NAME", "streaming-proxy-dev"),
        log_path=log_path,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"devstack exited early:\n{stack.logs()[-4000:]}")
        if READY_LINE in stack.logs():
            return stack
        time.sleep(0.1)
    stack.stop()
    raise RuntimeError(f"devstack did not become ready:\n{stack.logs()[-4000:]}")
