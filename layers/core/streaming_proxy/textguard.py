"""TextGuard: every secret the process knows, kept out of a stream's text as it streams.

`redact.scrub` cleans whole strings (errors, logs). Streamed text comes in pieces, and a key
that a provider, a gateway in front of it or the prompt itself makes the model repeat can be
cut anywhere between two pieces. So a guard, one per stream and kind of text, replaces each
secret once it is whole, and holds back the end of a piece while that end could be the
start of one (at least `HOLD_FROM` characters of it): the held characters go out with the
next piece, or at the next event that is not text. Shorter openings go out at once, so
ordinary text is never held for one letter; if a secret follows them, the guard still sees
it whole (it keeps the last characters it released) and replaces the rest of it. At most
`HOLD_FROM - 1` characters of a secret ever leave: a known prefix such as `sk-`, or a few
characters of a random key.

A tool call's arguments stream in pieces too, to the OpenAI face's caller: `CallGuards`
keeps a guard per call. Where they reach nobody piece by piece (the tool loop, which runs
calls whole), `without_secrets` cleans them whole.

Secrets are the ones `redact` knows for the whole process (server and endpoint keys, token
and webhook secrets) plus the stream's own `payload.apiKey`, in every form `redact` writes
them (as they are, JSON-escaped, URL-encoded); credential shapes are not, since a model's
answer may hold example keys on purpose.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache

from pydantic import SecretStr

from .events import ToolCallDelta
from .redact import MIN_SECRET_CHARS, REDACTED, SECRETS, forms

# Held back only from this many characters of a secret on; fewer leave at once.
HOLD_FROM = 4


# (any secret, longest first; HOLD_FROM or more characters of one, but not all, at the end)
_Patterns = tuple[re.Pattern[str], re.Pattern[str]]


@lru_cache(maxsize=64)
def _compiled(secrets: frozenset[str]) -> _Patterns:
    ordered = sorted(secrets, key=len, reverse=True)
    whole = re.compile("|".join(re.escape(s) for s in ordered))
    return whole, re.compile("(?:" + "|".join(map(_opening, ordered)) + r")\Z")


def _opening(secret: str) -> str:
    """A pattern for `secret[:n]`, HOLD_FROM <= n < len(secret)."""
    rest = ""
    for char in reversed(secret[HOLD_FROM:-1]):
        rest = f"(?:{re.escape(char)}{rest})?"
    return re.escape(secret[:HOLD_FROM]) + rest


class TextGuard:
    """One stream's text of one kind (answer or reasoning): `release` each piece in order,
    `rest` at a break (another event, the end)."""

    __slots__ = ("_held", "_patterns", "_tail")

    def __init__(self, patterns: Sequence[_Patterns]) -> None:
        self._patterns = patterns
        self._held = ""
        # The last characters released: a secret may have begun in them.
        self._tail = ""

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def release(self, text: str) -> str:
        """What may go out of `text` now (with what was held before it), secrets replaced;
        an end that could open a secret is held."""
        tail, held = self._tail, self._held
        window = tail + held + text  # what went out last, then what may go out now
        same = not held
        for whole, _ in self._patterns:
            if whole.search(window) is not None:
                window = tail + self._replaced(window, len(tail))
                same = False
                break
        hold = end = len(window)
        for _, openings in self._patterns:
            opening = openings.search(window)
            if opening is not None and opening.start() < hold:
                hold = opening.start()
        hold = max(hold, len(tail))  # what went out already cannot be held
        self._held = window[hold:]
        self._tail = window[max(hold - HOLD_FROM + 1, 0) : hold]
        if same and hold == end:
            return text  # the usual case: the piece as it came
        return window[len(tail) : hold]

    def rest(self) -> str:
        """What is held, now that no more text joins it: as it is when it is too short to be
        a secret on its own, else replaced (the start of a key, cut off)."""
        held, self._held = self._held, ""
        out = REDACTED if len(held) >= MIN_SECRET_CHARS else held
        self._tail = (self._tail + out)[1 - HOLD_FROM :]
        return out

    def _replaced(self, window: str, start: int) -> str:
        """`window[start:]` with every secret in `window` replaced (a secret that began
        before `start` has its part from `start` on replaced)."""
        spans = sorted(m.span() for whole, _ in self._patterns for m in whole.finditer(window))
        pieces: list[str] = []
        done = start
        for begin, end in spans:
            if end <= done:  # released before, or inside one replaced already
                continue
            if begin >= done:
                pieces += (window[done:begin], REDACTED)
            elif not pieces:  # it began before `start`: its rest is replaced
                pieces.append(REDACTED)
            # else it overlaps the one replaced just before, which covers it
            done = end
        pieces.append(window[done:])
        return "".join(pieces)


def _patterns_for(own_key: str | SecretStr | None) -> list[_Patterns]:
    return [_compiled(s) for s in (SECRETS.permanent(), frozenset(forms([own_key]))) if s]


def guard(own_key: str | SecretStr | None) -> TextGuard | None:
    """A guard for one stream's text (None when the process knows no secret at all)."""
    patterns = _patterns_for(own_key)
    return TextGuard(patterns) if patterns else None


def guards(own_key: str | SecretStr | None) -> tuple[TextGuard, TextGuard] | None:
    """A stream's guards, for its answer and its reasoning (None when the process knows no
    secret at all)."""
    patterns = _patterns_for(own_key)
    return (TextGuard(patterns), TextGuard(patterns)) if patterns else None


class CallGuards:
    """One stream's tool calls: each call's argument fragments `release`d through a guard
    of its own (a secret may be cut between two fragments); `rest` gives what the calls
    hold, as fragments of their own, at a break (another event, the end). A call is the
    one at its index until a fragment there names another id (as `TurnState` counts them:
    a compatible server may stream each call whole at index 0)."""

    __slots__ = ("_guards", "_patterns", "held")

    def __init__(self, patterns: Sequence[_Patterns]) -> None:
        self._patterns = patterns
        # The provider's index -> its latest call's id (None: the call came without one)
        # and guard.
        self._guards: dict[int, tuple[str | None, TextGuard]] = {}
        # Set once a call holds an end of its arguments; cleared by `rest` (it may stay set
        # after that end went out with the call's next fragment: `rest` then finds none).
        self.held = False

    def release(self, call: ToolCallDelta) -> list[ToolCallDelta]:
        """What goes out for the fragment: the end the index's previous call held (when
        this one begins another call there), then the fragment with what may go out of its
        arguments now (none when nothing of it may: no arguments yet, no id, name or
        signature either)."""
        out: list[ToolCallDelta] = []
        latest = self._guards.get(call.index)
        if latest is None or call.begins_another(latest[0]):
            if latest is not None and latest[1].holding:
                out.append(ToolCallDelta(call.index, arguments=latest[1].rest()))
            latest = self._guards[call.index] = (call.id, TextGuard(self._patterns))
        guard = latest[1]
        arguments = guard.release(call.arguments)
        self.held = self.held or guard.holding
        if arguments is call.arguments:
            out.append(call)
        elif arguments or call.id or call.name or call.signature:
            out.append(replace(call, arguments=arguments))
        return out

    def rest(self) -> list[ToolCallDelta]:
        """The ends the calls hold, now that no more joins them."""
        rests = [
            ToolCallDelta(index, arguments=guard.rest())
            for index, (_, guard) in sorted(self._guards.items())
            if guard.holding
        ]
        self.held = False
        return rests


def call_guards(own_key: str | SecretStr | None) -> CallGuards | None:
    """A stream's tool-call guards (None when the process knows no secret at all)."""
    patterns = _patterns_for(own_key)
    return CallGuards(patterns) if patterns else None


def without_secrets(text: str, own_key: str | SecretStr | None) -> str:
    """`text`, whole, with every secret a guard knows replaced (and, as a guard, no
    credential shapes: a tool's arguments may hold an example key on purpose)."""
    for whole, _ in _patterns_for(own_key):
        text = whole.sub(REDACTED, text)
    return text


def secret_spans(text: str, own_key: str | SecretStr | None) -> list[tuple[int, int]]:
    """Where in `text` a secret a guard knows stands, as (start, end) spans in order, those
    that overlap merged."""
    found = sorted(m.span() for whole, _ in _patterns_for(own_key) for m in whole.finditer(text))
    spans: list[tuple[int, int]] = []
    for start, end in found:
        if spans and start < spans[-1][1]:
            spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
        else:
            spans.append((start, end))
    return spans
