"""Coalescer: joins adjacent text pieces of one kind over a short window (pure: no clock).

Every delta of a model is a token or two; posting each to every browser would spend the
account's PostToConnection quota on tokens, not on time. Pieces of one kind (`delta` or
`thinking`) are held for the window and go out joined; a piece of the other kind, or the
window's end, sends what is held. The first answer text goes out at once: coalescing must
never delay time to first token. Times are arguments, so tests need no sleeping.
"""

from __future__ import annotations

Piece = tuple[str, str]  # (kind, text)


class Coalescer:
    def __init__(self, window_seconds: float) -> None:
        self._window = window_seconds
        self._kind: str | None = None
        self._held: list[str] = []
        self._first_text_sent = False
        self.flush_at: float | None = None  # when the held text is due (None: nothing held)

    def push(self, kind: str, text: str, now: float) -> list[Piece]:
        """Hold `text`; return what must go out now (possibly nothing)."""
        if not text:
            return []
        out = self.drain() if self._kind not in (None, kind) else []
        self._kind = kind
        self._held.append(text)
        first = kind == "delta" and not self._first_text_sent
        if self._window == 0 or first:
            return out + self.drain()
        if self.flush_at is None:
            self.flush_at = now + self._window
        return out

    def due(self, now: float) -> list[Piece]:
        """What is held, if its window has passed."""
        if self.flush_at is not None and now >= self.flush_at:
            return self.drain()
        return []

    def drain(self) -> list[Piece]:
        """Everything held, joined (at most one piece)."""
        self.flush_at = None
        if not self._held or self._kind is None:
            return []
        piece = (self._kind, "".join(self._held))
        if self._kind == "delta":
            self._first_text_sent = True
        self._held, self._kind = [], None
        return [piece]
