"""Coalescer: holds a channel's text messages over a window and releases them joined (pure).

Every message of a stream is numbered as the provider said it (one `seq` per delta), and
the caller's SSE answer gets each at once. Posting each to every browser would spend the
account's PostToConnection quota on tokens, not on time, so the channels' copy is held
here: adjacent `delta` (or `thinking`) messages go out joined as one message covering
`firstSeq..seq` once the window has passed. Anything else (a tool call, an error, `end`)
first releases what is held, so order is kept. The first answer text goes out at once:
coalescing must never delay time to first token.

The window adapts to the fan-out: when the connections are still busy with earlier
messages as the next batch falls due, the poster cannot keep up at this rate, so the
window widens (fewer, larger messages) up to its ceiling; once they keep up it narrows
back to the requested width. Times are arguments, so tests need no sleeping.
"""

from __future__ import annotations

from collections import deque

from .lane import Outgoing, take_next

# How the window moves: wider by half when the fan-out is behind, narrower by a fifth when
# it keeps up (never below the requested width, never above the ceiling).
WIDEN = 1.5
NARROW = 0.8


class Coalescer:
    def __init__(self, window_seconds: float, max_window_seconds: float | None = None) -> None:
        self.base = window_seconds
        self.window = window_seconds
        self.max_window = max(window_seconds, max_window_seconds or window_seconds)
        self._held: deque[Outgoing] = deque()
        self._first_text_sent = False
        self.flush_at: float | None = None  # when the held text is due (None: nothing held)

    def push(self, message: Outgoing, now: float) -> list[Outgoing]:
        """Hold `message` if it can wait; return what must go out now, in order."""
        if not message.mergeable:
            return [*self.drain(), message]
        self._held.append(message)
        first = message.envelope.get("type") == "delta" and not self._first_text_sent
        if self.window == 0 or first:
            return self.drain()
        if self.flush_at is None:
            self.flush_at = now + self.window
        return []

    def due(self, now: float) -> list[Outgoing]:
        """What is held, if its window has passed."""
        if self.flush_at is not None and now >= self.flush_at:
            return self.drain()
        return []

    def drain(self) -> list[Outgoing]:
        """Everything held, each run of one kind joined (split only to fit one message)."""
        self.flush_at = None
        out: list[Outgoing] = []
        while self._held:
            message, _ = take_next(self._held)
            out.append(message)
            if message.envelope.get("type") == "delta":
                self._first_text_sent = True
        return out

    def adapt(self, behind: bool) -> None:
        """Widen the window when the fan-out is behind, narrow it back when it keeps up."""
        if self.base == 0:
            return  # coalescing is off: the caller asked for every piece as it comes
        if behind:
            self.window = min(self.max_window, self.window * WIDEN)
        else:
            self.window = max(self.base, self.window * NARROW)
