"""The local stack under test (devstack.process), plus what benchmarks read off its process."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from devstack import process
from devstack.process import ROOT

__all__ = ["ROOT", "Stack", "start_stack", "stop_stack"]


class Stack(process.StackProcess):
    """A running stack with /proc readings of its process."""

    @property
    def http_ws_management(self) -> str:
        """The @connections endpoint (stage 'dev'), as WS_MANAGEMENT_ENDPOINT names it."""
        return self.management

    def rss_kib(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak RSS) of the stack process, in KiB."""
        found: dict[str, int] = {}
        status = Path(f"/proc/{self.pid}/status").read_text(encoding="ascii")
        for line in status.splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0])
        return found

    def cpu_seconds(self) -> float:
        """User + system CPU time the stack process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1]
        parts = fields.split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def start_stack(tmp: Path) -> Stack:
    base = process.start_stack(tmp)
    return Stack(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})


def stop_stack(stack: Stack) -> None:
    stack.stop()
