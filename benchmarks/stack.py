"""The local stack under test (devstack.process), plus what benchmarks read off its processes.

The benchmark stack runs the gateway emulator and moto DynamoDB in a process of their own
(DEV_GATEWAY_PROCESS), so the app's CPU is read apart from the emulators', and reaches the
stamped upstream (benchmarks/upstream.py, its own process too) as the OpenAI-compatible
provider `bench`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path

from devstack import process
from devstack.process import ROOT

from .upstream import UpstreamProcess

__all__ = ["ROOT", "UPSTREAM_PROVIDER", "Stack", "start_stack", "stop_stack"]

UPSTREAM_PROVIDER = "bench"
# Quiet = at most 2 clock ticks of CPU over 0.25 s in the app and emulator together.
QUIET_WINDOW_SECONDS = 0.25
QUIET_CPU_SECONDS = 0.02
QUIET_WAIT_SECONDS = 15.0


@dataclasses.dataclass
class Stack(process.StackProcess):
    """A running stack with /proc readings of its processes, and its stamped upstream."""

    upstream: UpstreamProcess

    @property
    def http_ws_management(self) -> str:
        """The @connections endpoint (stage 'dev'), as WS_MANAGEMENT_ENDPOINT names it."""
        return self.management

    def rss_kib(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak RSS) of the stack process (the app), in KiB."""
        found: dict[str, int] = {}
        status = Path(f"/proc/{self.pid}/status").read_text(encoding="ascii")
        for line in status.splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0])
        return found

    def cpu(self) -> tuple[float, float]:
        """(app process, emulators' process: gateway and DynamoDB) CPU seconds used so far."""
        return self.app_cpu_seconds(), self.gateway_cpu_seconds() or 0.0

    async def quiet(self, within: float = QUIET_WAIT_SECONDS) -> None:
        """Wait until the app and the emulator are idle (closed connections' `$disconnect`
        writes, a detached relay's last records), so a measurement starts on quiet processes
        and its CPU readings are its own. Gives up after `within` seconds."""
        deadline = time.monotonic() + within
        before = sum(self.cpu())
        while time.monotonic() < deadline:
            await asyncio.sleep(QUIET_WINDOW_SECONDS)
            now = sum(self.cpu())
            if now - before <= QUIET_CPU_SECONDS:
                return
            before = now


def start_stack(tmp: Path) -> Stack:
    upstream = UpstreamProcess.start()
    env = {
        "DEV_GATEWAY_PROCESS": "true",
        "COMPAT_ENDPOINTS": json.dumps({UPSTREAM_PROVIDER: {"baseUrl": upstream.base_url}}),
    }
    try:
        base = process.start_stack(tmp, env)
    except BaseException:
        upstream.stop()
        raise
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    return Stack(**fields, upstream=upstream)


def stop_stack(stack: Stack) -> None:
    try:
        stack.stop()
    finally:
        stack.upstream.stop()
