"""RelayStart: what stands before a relay's first event goes out (a mixin of `Relay`).

The sinks started (channel membership read meanwhile), the stream record's write landed
(it runs beside the provider request; when it fails, nothing is released, and the 503
is the stream's error), then the gate opened and `threadInfo` sent (gate.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from .errors import DependencyUnavailable, ProxyError
from .jobs import thread_info
from .observability import get_logger

if TYPE_CHECKING:
    from .gate import StartGate
    from .jobs import StreamJob
    from .observability import StreamStats
    from .outcome import Sink, StreamOutcome
    from .recorder import StreamRecorder
    from .relayclock import RelayClock


class RelayStart:
    """The sinks' start, the record's write and the first event's side effects, on a
    Relay's state."""

    if TYPE_CHECKING:  # the Relay's (relay.py)
        job: StreamJob
        gate: StartGate
        stats: StreamStats
        _sinks: list[Sink]
        _sinks_started: asyncio.Event
        _recorder: StreamRecorder | None
        _clock: RelayClock
        _outcome: StreamOutcome
        _record_write: asyncio.Future[None] | None
        _registration: Awaitable[None] | None
        _stopping: bool
        _unregistered: bool
        _log_extra: dict[str, str]

        async def _emit(self, type_: str, **fields: Any) -> None: ...
        def _fail(self, error: ProxyError) -> None: ...

    async def _start_sinks(self) -> None:
        try:
            await asyncio.gather(*(sink.start() for sink in self._sinks))
        except ProxyError as e:
            self._fail(e)
        except Exception:
            get_logger().error("could not start delivery", extra=self._log_extra, exc_info=True)
            self._fail(DependencyUnavailable("could not read the channels' subscribers"))

    async def _first(self, arrived: float) -> bool:
        """Before the first event (arrived at loop time `arrived`): the sinks started, the
        stream record written (False when that failed, or when a stop came meanwhile)."""
        await self._sinks_started.wait()
        if self._stopping or not await self._registered():
            return False
        await self._on_first_event(arrived - self._clock.started)
        return True

    async def record_written(self) -> None:
        """Return once the stream record's write ended, landed or failed (at once when there
        is none): a caller waiting for the first byte starts its clock from there, so a slow
        write that then fails is still its answer (a 503), not a silent stream."""
        if self._record_write is not None:
            await asyncio.wait({self._record_write})

    async def _registered(self) -> bool:
        """Wait for the stream record's write (once); False when it failed, and then that
        failure (a 503) is the stream's error."""
        registration, self._registration = self._registration, None
        if registration is not None:
            try:
                await registration
            except ProxyError as e:  # the store's own 503 (service.store)
                self._unregistered = True
                self._fail(e)
            except Exception:
                get_logger().warning("stream record not written", extra=self._log_extra)
                self._unregistered = True
                self._fail(DependencyUnavailable("the stream store (DynamoDB) is unavailable"))
        return not self._unregistered

    async def _on_first_event(self, elapsed: float) -> None:
        self._outcome.started = True
        self.stats.time_to_first_token_ms = elapsed * 1000
        await self.gate.opened()
        if self._recorder is not None:
            self._recorder.started()
        await self._thread_info()

    async def _thread_info(self) -> None:
        if self.job.kind == "chat":
            return
        await self._emit("threadInfo", content=thread_info(self.job.stream_id, self.job.thread))
