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
_WIDE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")

# Per-message framing tokens added by chat templates (role markers, separators).
MESSAGE_OVERHEAD = 4


def estimate_text_tokens(text: str) -> int:
    """Estimated tokens of a piece of text (0 for empty text)."""
    if not text:
        return 0
    wide = len(_WIDE.findall(text))
    narrow = len(text) - wide
    words = len(_WORD.findall(text))
    return max(math.ceil(narrow / 4), math.ceil(words * 4 / 3)) + wide


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
