"""RelayStops: what stops a relay before its provider's end (a mixin of `Relay`).

A cancel (this process's stop, or the record's cancel flag), an end the record got from
elsewhere (a dead letter), a deadline (idle, total; the snapshot cadence rides on the same
timer). Each stops the reading (`_stop`): at once while the reader waits for the provider,
else once the event it handles was handled. The per-event path arms nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import ProxyError, StreamLost
from .observability import get_logger

if TYPE_CHECKING:
    from .config import Settings
    from .outcome import StreamOutcome
    from .recorder import StreamRecorder
    from .relayclock import RelayClock


class RelayStops:
    """Cancel, the record's watch and the deadline timer, on a Relay's state."""

    if TYPE_CHECKING:  # the Relay's (relay.py)
        _settings: Settings
        _recorder: StreamRecorder | None
        _clock: RelayClock
        _outcome: StreamOutcome
        _reader: asyncio.Task[None] | None
        _deadline_timer: asyncio.TimerHandle | None
        _progress: Callable[[], tuple[str, int]]
        _between_events: bool
        _stopping: bool
        _cancel_requested: bool
        _timer_due: bool
        _silent: bool
        _superseded: bool
        _log_extra: dict[str, str]

        def _fail(self, error: ProxyError) -> None: ...

    def cancel(self) -> None:
        """Stop the stream at once (it ends with `finish_reason: cancelled`)."""
        if not self._stopping:
            self._cancel_requested = True
            self._stop()

    def _stop(self) -> None:
        """End the reading: at once when the reader waits for the provider, else once the
        event it handles was handled."""
        self._stopping = True
        if self._between_events and self._reader is not None:
            self._reader.cancel()

    def _stopped(self) -> None:
        self._stopping = True
        if self._cancel_requested and self._outcome.error is None:
            self._outcome.finish_reason = "cancelled"
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()

    async def _watch_record(self) -> None:
        """Poll the record for a stop, and for an end this relay did not write."""
        assert self._recorder is not None
        while True:
            await asyncio.sleep(self._settings.cancel_poll_seconds)
            try:
                poll = await self._recorder.poll()
            except Exception:
                get_logger().warning("cancel poll failed", extra=self._log_extra, exc_info=True)
                continue
            if poll.cancel:  # first: a stop (the ack's too) ends the stream `cancelled`
                self.cancel()
                return
            if poll.ended:
                return self._ended_elsewhere()

    def _ended_elsewhere(self) -> None:
        """The record went final without this relay: a dead letter took the stream for lost
        (its heartbeat stale) and told its pages `error` and `end`. Nothing more goes out
        after that `end`; the stream stops here, and leaves the record as the dead letter
        wrote it (its own `failed` would pass for a retry of that write and replace it)."""
        if self._stopping:
            return
        get_logger().error(
            "stream ended by a dead letter while its relay ran; the relay stops silently",
            extra=self._log_extra,
        )
        self._silent = self._superseded = True
        self._fail(StreamLost("the stream was taken for lost while it ran"))
        self._stop()

    # -- deadlines ------------------------------------------------------------------------

    def _arm_deadlines(self) -> None:
        """One timer at the nearest deadline. It acts between two events: a deadline is
        only ever judged after the event that arrived before it was handled."""
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        self._deadline_timer = asyncio.get_running_loop().call_at(
            self._clock.next_deadline(), self._on_timer
        )

    def _on_timer(self) -> None:
        """The timer: acts now between two events, else once the event being handled was."""
        self._deadline_timer = None
        if self._between_events:
            self._deadlines_due()
        else:
            self._timer_due = True

    def _deadlines_due(self) -> None:
        self._timer_due = False
        if self._stopping:
            return
        now = asyncio.get_running_loop().time()
        expired = self._clock.expired(now)
        if expired is not None:
            self._fail(expired)
            return self._stop()
        if self._clock.snapshot_due(now) and self._recorder is not None:
            # Only text already sent counts: a snapshot's text must match its seq.
            self._recorder.snapshot_soon(*self._progress())
        self._arm_deadlines()
