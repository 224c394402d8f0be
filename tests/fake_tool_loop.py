"""The tool-loop scripts of the fake upstreams, and the checks they make on what comes back.

Models (any provider format):

- `fake-tool-loop`: round 1 says "Let me look. " and asks for `ui_get_color`; round 2
  checks that the model's turn and the tool result came back in the provider's exact format
  and answers "The colour is <result message>.".
- `fake-tool-loop-parallel`: the same with two calls in one round (`ui_get_color` and
  `lookup_stock`); round 2 quotes both results.
- `fake-tool-forever`: asks for `ui_get_color` again every round (checking each round's
  result), to exercise a round limit.

Anthropic and Bedrock turns carry a signed thinking block, Gemini calls a thoughtSignature;
each must come back exactly. A request in the wrong format gets `WrongFormat`, which the
fakes answer with the provider's HTTP 400 (Bedrock: a ValidationException).
"""

from __future__ import annotations

from typing import Any

from tests.fake_tool_readers import READERS, Echo, WrongFormat
from tests.fake_wire import FakeCall, FakeThinking, FakeTurn, Wire

__all__ = [
    "COLOR_ARGS",
    "STOCK_ARGS",
    "THINKING",
    "TOOL_LOOP_MODELS",
    "WrongFormat",
    "error_body",
    "next_turn",
]

TOOL_LOOP_MODELS = frozenset({"fake-tool-loop", "fake-tool-loop-parallel", "fake-tool-forever"})
COLOR_ARGS = {"userMessage": "Picking a colour", "shade": "warm"}
STOCK_ARGS = {"sku": "A1"}
ASK_TEXT = "Let me look. "
THINKING = "The page knows the colours — ask it for a warm one."
_ID_PREFIX: dict[Wire, str | None] = {
    "openai": "call",
    "anthropic": "toolu",
    "converse": "tooluse",
    "gemini": None,  # Gemini sends no call ids; the adapter makes its own
}


def next_turn(wire: Wire, model: str, body: dict[str, Any]) -> FakeTurn:
    """What the fake says to this request: round 1 asks for tools; later rounds check the
    last round came back right, then answer (or, for fake-tool-forever, ask again)."""
    echo = READERS[wire](body)
    if echo.rounds:
        check_echo(asked(wire, model, echo.rounds), echo)
        if model != "fake-tool-forever":
            return _answer(echo, echo.rounds + 1)
    return asked(wire, model, echo.rounds + 1)


def asked(wire: Wire, model: str, round_: int) -> FakeTurn:
    """The turn that asks for tools in round `round_` (ids and signatures differ per round)."""
    prefix = _ID_PREFIX[wire]

    def call_id(kind: str) -> str | None:
        return f"{prefix}_{kind}_{round_}" if prefix else None

    color = FakeCall(
        call_id("color"),
        "ui_get_color",
        COLOR_ARGS,
        signature=f"gemini-sig-color-{round_}" if wire == "gemini" else None,
    )
    calls: tuple[FakeCall, ...] = (color,)
    if model == "fake-tool-loop-parallel":
        # Gemini signs only the first call of a parallel set.
        calls += (FakeCall(call_id("stock"), "lookup_stock", STOCK_ARGS),)
    signed = wire in ("anthropic", "converse")
    return FakeTurn(
        text=ASK_TEXT,
        thinking=FakeThinking(THINKING, f"fake-thinking-sig-{round_}") if signed else None,
        calls=calls,
        usage=(20 + 15 * (round_ - 1), 10),
    )


def _answer(echo: Echo, round_: int) -> FakeTurn:
    messages = [result.value["message"] for result in echo.results]
    text = f"The colour is {messages[0]}."
    if len(messages) > 1:
        text += f" The stock is {messages[1]}."
    return FakeTurn(text=text, usage=(20 + 15 * (round_ - 1), 8))


def check_echo(asked: FakeTurn, echo: Echo) -> None:
    """The model's turn came back exactly as it was said, then one result per call, in order."""
    if echo.text != asked.text:
        raise WrongFormat(f"the model's text came back as {echo.text!r}, not {asked.text!r}")
    thinking = [(asked.thinking.text, asked.thinking.signature)] if asked.thinking else []
    if echo.thinking != thinking:
        raise WrongFormat(
            f"the thinking block did not come back with its signature: expected {thinking}, "
            f"got {echo.thinking}"
        )
    if len(echo.calls) != len(asked.calls):
        raise WrongFormat(f"{len(asked.calls)} tool calls were made, {len(echo.calls)} came back")
    for number, (sent, back) in enumerate(zip(asked.calls, echo.calls, strict=True)):
        _check_call(number, sent, back)
    if len(echo.results) != len(asked.calls):
        raise WrongFormat(
            f"expected {len(asked.calls)} tool results right after the model's turn, "
            f"got {len(echo.results)}"
        )
    for number, (call, result) in enumerate(zip(asked.calls, echo.results, strict=True)):
        if call.id is not None and result.call_id != call.id:
            raise WrongFormat(f"tool result {number} answers {result.call_id!r}, not {call.id!r}")
        if result.name is not None and result.name != call.name:
            raise WrongFormat(f"tool result {number} is named {result.name!r}, not {call.name!r}")
        if not isinstance(result.value.get("message"), str):
            raise WrongFormat(f"tool result {number} has no string message: {result.value}")


def _check_call(number: int, sent: FakeCall, back: FakeCall) -> None:
    if back.signature != sent.signature:
        raise WrongFormat(
            f"tool call {number} came back with thoughtSignature {back.signature!r}, "
            f"not {sent.signature!r}"
        )
    if (back.id, back.name, back.arguments) != (sent.id, sent.name, sent.arguments):
        raise WrongFormat(
            f"tool call {number} came back as {back.id!r} {back.name!r} {back.arguments}, "
            f"not {sent.id!r} {sent.name!r} {sent.arguments}"
        )


def error_body(wire: Wire, message: str) -> dict[str, Any]:
    """The provider's own HTTP 400 body for a request it cannot take."""
    text = f"fake-tool-loop: {message}"
    if wire == "anthropic":
        return {"type": "error", "error": {"type": "invalid_request_error", "message": text}}
    if wire == "gemini":
        return {"error": {"code": 400, "message": text, "status": "INVALID_ARGUMENT"}}
    return {"error": {"message": text, "type": "invalid_request_error", "param": None}}
