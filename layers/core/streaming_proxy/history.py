"""A thread's messages as table items, and the history a run sends, trimmed to a budget.

Messages are stored as JSON Lines (one message a line, ASCII-escaped so a character is a
byte) cut into items of at most ITEM_CHARS: a long message spans items, and no item comes
near DynamoDB's 400 KB limit. Each run starts a new item, so one run's messages are the
items it wrote, whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .tokens import estimate_prompt_tokens

# Well under 400 KB with the keys and attributes beside it.
ITEM_CHARS = 64_000

Messages = list[dict[str, Any]]


def json_lines(messages: Sequence[dict[str, Any]]) -> str:
    """One message a line, ASCII-escaped (a character is a byte, so a cut anywhere is safe)."""
    return "".join(json.dumps(m, ensure_ascii=True, separators=(",", ":")) + "\n" for m in messages)


def pack(messages: Sequence[dict[str, Any]], item_chars: int = ITEM_CHARS) -> list[str]:
    """The `data` of the items that hold `messages`, in order."""
    text = json_lines(messages)
    return [text[start : start + item_chars] for start in range(0, len(text), item_chars)]


def unpack(datas: Iterable[str]) -> Messages:
    """The messages of items read in order (the inverse of `pack`, over any runs)."""
    text = "".join(datas)
    return [json.loads(line) for line in text.split("\n") if line]


@dataclass(frozen=True)
class Trimmed:
    """The history a run sends, and what trimming dropped (for the run's log record)."""

    messages: Messages
    dropped: int
    tokens: int


def turns(history: Sequence[dict[str, Any]]) -> list[Messages]:
    """The history cut before each user message: a turn keeps an assistant's tool calls
    with their results, so dropping whole turns never splits a call from its result."""
    cut: list[Messages] = []
    for message in history:
        if message.get("role") == "user" or not cut:
            cut.append([])
        cut[-1].append(message)
    return cut


def trim(
    instructions: Sequence[dict[str, Any]],
    history: Sequence[dict[str, Any]],
    new: Sequence[dict[str, Any]],
    budget: int,
) -> Trimmed:
    """`instructions` + the newest whole turns of `history` that fit `budget` tokens
    (estimated) + `new`. Instructions and new messages are always kept, over budget or not."""
    fixed = estimate_prompt_tokens([*instructions, *new])
    kept: list[Messages] = []
    tokens = fixed
    for turn in reversed(turns(history)):
        cost = estimate_prompt_tokens(turn)
        if tokens + cost > budget:
            break
        kept.append(turn)
        tokens += cost
    messages = [m for turn in reversed(kept) for m in turn]
    return Trimmed(
        [*instructions, *messages, *new], dropped=len(history) - len(messages), tokens=tokens
    )


def shortfall(
    instructions: Sequence[dict[str, Any]],
    recent: Sequence[dict[str, Any]],
    new: Sequence[dict[str, Any]],
    budget: int,
) -> int:
    """How many more tokens of older history `trim` could still keep, given only the newest
    messages `recent` of a history (cut where a run began): 0 once no older message can change
    what it keeps, so a reader newest first may stop (threadreads.py).

    Why 0 is safe: the turns of `recent` are the history's newest turns, except that its first
    may lack the start of its turn (when it does not begin with a user message). `trim` walks
    the turns newest first and stops at the first that does not fit. If that turn is a whole
    one of `recent`, the history stops there too. If it is the cut first turn, the whole turn
    costs at least as much (the estimate adds up per message), so it does not fit either.
    Either way what is kept is the same, and older messages are never reached."""
    trimmed = trim(instructions, recent, new, budget)
    return 0 if trimmed.dropped else max(1, budget - trimmed.tokens)
