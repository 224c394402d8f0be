"""`ChaosProxy`: the fault-injecting proxy as tests use it, in a thread or on their own loop."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from types import TracebackType

from .faults import Action
from .rules import HeaderPattern, Match, Rule, RuleBook, Schedule
from .server import ProxyServer, Target
from .traffic import Exchange, Traffic, TrafficLog

START_TIMEOUT = 5.0


class ChaosProxy:
    """A loopback HTTP/1.1 reverse proxy in front of one target base URL that injects faults.

    Point a client at `base_url` instead of the target (it keeps the target's path, so
    `http://127.0.0.1:P/v1` becomes `http://127.0.0.1:Q/v1`); add rules to misbehave; read
    `traffic()`, `exchanges()` and each rule's `fired` to check what was injected.
    `start()`/`stop()` (or `with`) run it on a thread of its own; `async with` runs it on the
    current loop (then only async clients may use it from that loop).
    """

    def __init__(
        self, target: str, *, seed: int = 0, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._target = Target.parse(target)
        self._seed = seed
        self._host = host
        self._port = port
        self._rules = RuleBook()
        self._log = TrafficLog()
        self._server = ProxyServer(self._target, self._rules, self._log)
        self._rules_added = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def base_url(self) -> str:
        if not self._port:
            raise RuntimeError("ChaosProxy is not started")
        return f"http://{self._host}:{self._port}{self._target.base_path}"

    @property
    def port(self) -> int:
        return self._port

    # --- rules -------------------------------------------------------------------------

    def add_rule(
        self,
        action: Action,
        *,
        method: str | None = None,
        path: str | re.Pattern[str] | None = None,
        headers: Mapping[str, HeaderPattern] | None = None,
        operation: str | None = None,
        times: int | None = None,
        every: int = 1,
        probability: float = 1.0,
        after: int = 0,
        seed: int | None = None,
    ) -> Rule:
        """Inject `action` on matching requests (see `Match.of` and `Schedule`). Without a
        `seed`, rule k uses the proxy's seed + k, so a run is reproducible."""
        match = Match.of(method=method, path=path, headers=headers, operation=operation)
        schedule = Schedule(times=times, every=every, probability=probability, after=after)
        self._rules_added += 1
        rule_seed = seed if seed is not None else self._seed + self._rules_added
        return self._rules.add(Rule(action, match, schedule, rule_seed))

    def remove_rule(self, rule: Rule) -> None:
        self._rules.remove(rule)

    def clear_rules(self) -> None:
        self._rules.clear()

    def rules(self) -> list[Rule]:
        return self._rules.rules()

    # --- what went through -------------------------------------------------------------

    def traffic(self) -> dict[str, Traffic]:
        """Requests seen and forwarded to the target, by key ("Query", "POST /v1/x")."""
        return self._log.counts()

    def seen(self, key: str | None = None) -> int:
        return sum(t.seen for k, t in self.traffic().items() if key is None or k == key)

    def forwarded(self, key: str | None = None) -> int:
        return sum(t.forwarded for k, t in self.traffic().items() if key is None or k == key)

    def exchanges(
        self,
        *,
        method: str | None = None,
        path: str | re.Pattern[str] | None = None,
        headers: Mapping[str, HeaderPattern] | None = None,
        operation: str | None = None,
    ) -> list[Exchange]:
        """Every request read so far that matches, oldest first."""
        match = Match.of(method=method, path=path, headers=headers, operation=operation)
        return self._log.exchanges(match)

    @property
    def connections(self) -> int:
        """Client connections accepted (keep-alive reuse keeps this low)."""
        return self._log.connections

    @property
    def open_connections(self) -> int:
        """Client connections being served now (a hung request keeps its connection open)."""
        return self._server.open_connections

    def clear_traffic(self) -> None:
        self._log.clear()

    # --- on a thread of its own ----------------------------------------------------------

    def start(self) -> ChaosProxy:
        if self._thread is not None or self._loop is not None:
            raise RuntimeError("ChaosProxy is already started")
        ready: Future[int] = Future()
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._run(ready),), name="chaos-proxy", daemon=True
        )
        self._thread.start()
        self._port = ready.result(timeout=START_TIMEOUT)
        return self

    def stop(self) -> None:
        """Close the listener and every connection, hung ones included (about a second at
        most). Rules and traffic stay readable."""
        if self._thread is None or self._loop is None or self._stopping is None:
            return
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=START_TIMEOUT)
        self._thread = None
        self._loop = None

    async def _run(self, ready: Future[int]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            port = await self._server.start(self._host, self._port)
        except Exception as e:  # handed to start(), which raises it in the caller's thread
            ready.set_exception(e)
            return
        ready.set_result(port)
        try:
            await self._stopping.wait()
        finally:
            await self._server.close()

    def __enter__(self) -> ChaosProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- on the caller's loop ----------------------------------------------------------

    async def __aenter__(self) -> ChaosProxy:
        if self._thread is not None:
            raise RuntimeError("ChaosProxy is already started on a thread")
        self._port = await self._server.start(self._host, self._port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._server.close()
