"""What a browser might send over the WebSocket: action objects with fields of every type
and size, any JSON, text that is not JSON, binary frames; and the edge cases behind the
failures found so far."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import strategies as st

from .hostile import Deep, encode, hostile_strings, hostile_values, json_values

T = TypeVar("T")
# API Gateway closes a connection on a frame over 32 KB (1009) and on any binary frame (1003),
# and so does the emulator; a browser sends each message as one frame.
MAX_FRAME_BYTES = 32 * 1024
ACTIONS = (
    "subscribe",
    "unsubscribe",
    "ping",
    "stop",
    "resume",
    "history",
    "llmToolCallResponse",
)
CHANNEL = "fuzz-ws"
OTHER_CHANNEL = "fuzz-ws-elsewhere"  # not in the connection's token


@dataclass(frozen=True)
class Known:
    """What messages may name: the connection's token and streams (one on a channel the
    connection is not in, one long enough that its snapshot comes in parts, one unknown),
    and tool calls waiting for an answer (one on a channel the connection is not in), so
    answers reach the channel check, the first-answer-wins write and the repeat check."""

    token: str
    streams: list[str]
    tool_calls: list[str]


# Each action's own fields (docs/events.md, section 3).
ACTION_FIELDS: dict[str, tuple[str, ...]] = {
    "subscribe": ("channel", "token"),
    "unsubscribe": ("channel",),
    "ping": ("id",),
    "stop": ("streamId",),
    "resume": ("streamId", "afterSeq"),
    "history": ("threadId", "cursor", "limit"),
    "llmToolCallResponse": ("toolCallId", "success", "message", "data"),
}
NEAR_MISSES = ["", "PING", "Subscribe", "unknown", "$default", "llmToolCall", "snapshot"]


def weighted(
    choices: dict[str, int], strategies: dict[str, st.SearchStrategy[T]]
) -> st.SearchStrategy[T]:
    """One of `strategies`, picked with the given weights (Hypothesis' `one_of` has none)."""
    names = [name for name, weight in choices.items() for _ in range(weight)]

    def strategy(name: str) -> st.SearchStrategy[T]:
        return strategies[name]

    return st.sampled_from(names).flatmap(strategy)


def field_values(known: Known) -> dict[str, st.SearchStrategy[Any]]:
    """Per field: a plausible value (5 in 10), a hostile string (3), any hostile value (2). The
    token is only ever a `token`, so a reply holding it leaks it: no field echoes it back."""
    text = st.text(max_size=30)
    plausible: dict[str, st.SearchStrategy[Any]] = {
        "channel": st.sampled_from([CHANNEL, f"{CHANNEL}-2", OTHER_CHANNEL, "tab|x"]) | text,
        "token": st.sampled_from([known.token, "not-a-token", ""]),
        "id": text | st.integers(),
        "streamId": st.sampled_from(known.streams) | text,
        "afterSeq": st.integers(min_value=-2, max_value=100),
        "threadId": st.sampled_from(["thread_fuzzNobodyHas1", "thread_"]) | text,
        "cursor": st.integers(min_value=-1, max_value=300) | st.sampled_from(["0", "3", "x"]),
        "limit": st.integers(min_value=-1, max_value=300),
        "toolCallId": st.sampled_from([*known.tool_calls, "call_fuzz"]) | text,
        "success": st.booleans(),
        "message": text,
        "data": json_values(),
    }
    return {
        name: weighted(
            {"plausible": 5, "string": 3, "any": 2},
            {"plausible": value, "string": hostile_strings(), "any": hostile_values()},
        )
        for name, value in plausible.items()
    }


def action_messages(known: Known) -> st.SearchStrategy[dict[str, Any]]:
    """Objects naming an action (mostly a real one, else a near miss or a value of any type)
    with that action's fields (each mostly present), now and then an unrelated one."""
    values = field_values(known)

    def with_fields(action: Any) -> st.SearchStrategy[dict[str, Any]]:
        names = ACTION_FIELDS.get(action, ()) if isinstance(action, str) else ()
        own = {name: values[name] for name in names}
        others = {name: values[name] for name in values if name not in own}
        fields = weighted(
            {"all": 8, "some": 1, "more": 1},
            {
                "all": st.fixed_dictionaries(own),
                "some": st.fixed_dictionaries({}, optional=own),
                "more": st.fixed_dictionaries(own, optional=others),
            },
        )
        return st.builds(
            lambda chosen, extra: {**extra, **chosen, "action": action},
            fields,
            st.dictionaries(st.text(max_size=10), json_values(), max_size=1),
        )

    actions = weighted(
        {"real": 7, "near": 2, "any": 1},
        {
            "real": st.sampled_from(ACTIONS),
            "near": st.sampled_from(NEAR_MISSES),
            "any": hostile_values(),
        },
    )
    without_action = st.dictionaries(st.sampled_from(sorted(values)), st.none(), max_size=3)
    return weighted(
        {"action": 9, "none": 1},
        {"action": actions.flatmap(with_fields), "none": without_action},
    )


def frames(known: Known) -> st.SearchStrategy[str | bytes]:
    """What reaches the socket: mostly action objects, then any JSON, text that is not JSON,
    binary frames, JSON cut off after thousands of opening braces, and action objects padded
    to a size at the frame limit (just under, at, just over or a little either side)."""
    return weighted(
        {"action": 6, "json": 1, "text": 1, "binary": 1, "unclosed": 1, "edge": 1},
        {
            "action": action_messages(known).map(encode),
            "json": json_values().map(encode),
            "text": st.text(max_size=300),
            "binary": st.binary(max_size=300),
            "unclosed": st.integers(min_value=1_000, max_value=MAX_FRAME_BYTES + 1).map(
                lambda n: "{" * n
            ),
            "edge": st.builds(padded, action_messages(known), edge_sizes()),
        },
    )


def edge_sizes() -> st.SearchStrategy[int]:
    exact = st.sampled_from([MAX_FRAME_BYTES - 1, MAX_FRAME_BYTES, MAX_FRAME_BYTES + 1])
    near = st.integers(min_value=MAX_FRAME_BYTES - 2_000, max_value=MAX_FRAME_BYTES + 2_000)
    return exact | near


def padded(message: dict[str, Any], size: int) -> str:
    """`message` as JSON of `size` bytes, with a `pad` field the routes ignore (as it is when
    it is already larger)."""
    bare = encode({**message, "pad": ""})
    if len(bare) >= size:
        return encode(message)
    return encode({**message, "pad": "x" * (size - len(bare))})


def refusal(frame: str | bytes) -> int | None:
    """The close code the gateway answers `frame` with, before any route sees it; None when
    it reaches the route."""
    if isinstance(frame, bytes):
        return 1003
    return 1009 if len(frame.encode("utf-8")) > MAX_FRAME_BYTES else None


def valid_message(known: Known, action: str) -> dict[str, Any]:
    """A message of `action` that is answered without an error."""
    fields: dict[str, dict[str, Any]] = {
        "subscribe": {"channel": f"{CHANNEL}-2", "token": known.token},
        "unsubscribe": {"channel": f"{CHANNEL}-2"},
        "ping": {"id": "edge"},
        "stop": {"streamId": known.streams[0]},
        "resume": {"streamId": known.streams[0], "afterSeq": -1},
        "history": {"threadId": "thread_fuzzNobodyHas1", "cursor": 0, "limit": 10},
        "llmToolCallResponse": {
            "toolCallId": "call_edge",
            "success": True,
            "message": "done",
            "data": {"shown": True},
        },
    }
    return {"action": action, **fields[action]}


LONE_SURROGATE = "\ud800"
EDGE_MESSAGES = [
    *(f"{action}.{name}" for action, names in ACTION_FIELDS.items() for name in names),
    "action is a lone surrogate",
    "action is a list",
    "action is an object",
    "a key is a lone surrogate",
    "nested 1000 deep",
]


def edge_frame(known: Known, name: str) -> str:
    action, _, field_name = name.partition(".")
    if field_name:
        return encode({**valid_message(known, action), field_name: LONE_SURROGATE})
    structural: dict[str, Any] = {
        "action is a lone surrogate": {"action": LONE_SURROGATE},
        "action is a list": {"action": []},
        "action is an object": {"action": {}},
        "a key is a lone surrogate": {**valid_message(known, "ping"), LONE_SURROGATE: 1},
        "nested 1000 deep": {**valid_message(known, "ping"), "extra": Deep(1000, "[")},
    }
    return encode(structural[name])
