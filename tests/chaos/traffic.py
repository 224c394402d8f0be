"""What went through the proxy: one `Exchange` per request, counted by a simple key."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from .rules import Match, Rule
from .wire import Request

# Path parts that name one resource; collapsed so that a key counts all of them together.
_ID_SEGMENTS = [(re.compile(r"(/@connections/)[^/]+"), r"\1{id}")]


def traffic_key(request: Request) -> str:
    """The DynamoDB operation ("Query") for `X-Amz-Target` requests, else method and path
    ("POST /dev/@connections/{id}", "POST /v1/chat/completions")."""
    target = request.head.header("x-amz-target")
    if target:
        return target.rsplit(".", 1)[-1]
    path = request.path
    for pattern, replacement in _ID_SEGMENTS:
        path = pattern.sub(replacement, path)
    return f"{request.method} {path}"


@dataclass
class Exchange:
    """One request the proxy read. `status` is what the client got, None while the answer
    is pending or when it got none (hang, reset, upstream gone)."""

    key: str
    request: Request
    rule: Rule | None
    forwarded: bool
    status: int | None = None

    @property
    def fault(self) -> str | None:
        return self.rule.name if self.rule else None


@dataclass(frozen=True)
class Traffic:
    seen: int = 0
    forwarded: int = 0


class TrafficLog:
    """Every exchange, appended on the proxy's loop and read from test threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._exchanges: list[Exchange] = []
        self._connections = 0

    def connection(self) -> None:
        with self._lock:
            self._connections += 1

    def record(self, request: Request, rule: Rule | None) -> Exchange:
        forwarded = rule is None or rule.action.forwards
        exchange = Exchange(traffic_key(request), request, rule, forwarded)
        with self._lock:
            self._exchanges.append(exchange)
        return exchange

    @property
    def connections(self) -> int:
        return self._connections

    def exchanges(self, match: Match | None = None) -> list[Exchange]:
        with self._lock:
            found = list(self._exchanges)
        return [e for e in found if match is None or match(e.request)]

    def counts(self) -> dict[str, Traffic]:
        totals: dict[str, Traffic] = {}
        for e in self.exchanges():
            so_far = totals.get(e.key, Traffic())
            totals[e.key] = Traffic(so_far.seen + 1, so_far.forwarded + int(e.forwarded))
        return totals

    def clear(self) -> None:
        with self._lock:
            self._exchanges = []
            self._connections = 0
