"""Token estimation for providers that report no usage (or streams cut before they do).

The estimate is deliberately simple and documented (docs/architecture.md): about four
characters per token for Latin text, but never fewer than 4/3 tokens per word, and one
token per non-ASCII character of CJK scripts. It is marked `estimated: true` wherever
it is reported; real counts from the provider always replace it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

_WORD = re.compile(r"\S+")
# One match per character of U+3040-U+30FF, U+3400-U+4DBF, U+4E00-U+9FFF and U+AC00-U+D7AF
# (kana, CJK ideographs, Hangul), matched on the text's UTF-8 bytes by each character's first
# two or three bytes. The same class over `str` costs ~4 ms to compile (re fills a 64K table
# in Python), this one well under 1 ms (docs/architecture.md decision 31); a unit test checks
# every code point against the ranges.
_WIDE_UTF8 = re.compile(
    rb"\xe3[\x81-\x83\x90-\xbf]|\xe4[\x80-\xb6\xb8-\xbf]|[\xe5-\xe9\xeb\xec]"
    rb"|\xea[\xb0-\xbf]|\xed(?:[\x80-\x9d]|\x9e[\x80-\xaf])"
)

# Per-message framing tokens added by chat templates (role markers, separators).
MESSAGE_OVERHEAD = 4


def estimate_text_tokens(text: str) -> int:
    """Estimated tokens of a piece of text (0 for empty text)."""
    if not text:
        return 0
    wide = 0 if text.isascii() else wide_characters(text)
    narrow = len(text) - wide
    words = len(_WORD.findall(text))
    return max(math.ceil(narrow / 4), math.ceil(words * 4 / 3)) + wide


def wide_characters(text: str) -> int:
    """How many characters of `text` are kana, CJK ideographs or Hangul (one token each)."""
    return len(_WIDE_UTF8.findall(text.encode("utf-8", "surrogatepass")))


def message_text(content: Any) -> str:
    """The text of an OpenAI-style message content (string or list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def estimate_prompt_tokens(messages: Iterable[dict[str, Any]], tools: Any = None) -> int:
    """Estimated prompt tokens of a message list (plus tool definitions, if any)."""
    import json

    total = 0
    for message in messages:
        total += MESSAGE_OVERHEAD + estimate_text_tokens(message_text(message.get("content")))
        if message.get("tool_calls"):
            total += estimate_text_tokens(json.dumps(message["tool_calls"]))
    if tools:
        total += estimate_text_tokens(json.dumps(tools))
    return total
