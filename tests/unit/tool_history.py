"""The conversation a tool loop sends back after one round, in the proxy's OpenAI-style
format with its two extension fields (`reasoning_blocks`, `thought_signature`).

[system, user, assistant (reasoning, text, two parallel calls), tool, tool]: the first
result succeeded (a JSON string), the second failed (`"success": false`, as a list of text
parts), so every adapter's error marking and both content shapes are exercised.
"""

from __future__ import annotations

import json
from typing import Any

SYSTEM = "You pick colours."
QUESTION = "Pick a warm colour and check stock of A1 — merci."
TEXT = "Let me check."
SIGNED = {
    "type": "thinking",
    "thinking": "Two lookups: the page's colour, then stock — 在庫.",
    "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgx+/sig==",
}
REDACTED = {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4="}
COLOR_ARGS = {"userMessage": "Picking a colour", "shade": "warm"}
STOCK_ARGS = {"sku": "A1"}
GEMINI_SIGNATURE = "CiQBjz1rX2dlbWluaS1zaWduYXR1cmU="
COLOR_RESULT = {"success": True, "message": "red"}
STOCK_RESULT = {"success": False, "message": "stock service down"}


def tool_call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


def conversation(*, signed_call: int | None = 0) -> list[dict[str, Any]]:
    """The conversation; `signed_call` is the call carrying Gemini's signature (None: none)."""
    calls = [
        tool_call("toolu_01", "ui_get_color", COLOR_ARGS),
        tool_call("toolu_02", "lookup_stock", STOCK_ARGS),
    ]
    if signed_call is not None:
        calls[signed_call]["thought_signature"] = GEMINI_SIGNATURE
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": QUESTION},
        {
            "role": "assistant",
            "content": TEXT,
            "reasoning_blocks": [SIGNED, REDACTED],
            "tool_calls": calls,
        },
        {"role": "tool", "tool_call_id": "toolu_01", "content": json.dumps(COLOR_RESULT)},
        {
            "role": "tool",
            "tool_call_id": "toolu_02",
            "content": [{"type": "text", "text": json.dumps(STOCK_RESULT)}],
        },
    ]
