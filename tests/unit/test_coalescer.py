"""Coalescer: the channels' copy of a stream's text, joined over an adaptive window; no clock."""

from __future__ import annotations

from typing import Any

from streaming_proxy.channels.coalescer import Coalescer
from streaming_proxy.channels.lane import Outgoing
from streaming_proxy.envelopes import MAX_CONTENT_BYTES


def msg(seq: int, type_: str = "delta", content: str | None = None) -> Outgoing:
    envelope: dict[str, Any] = {"actionName": "a", "streamId": "st", "seq": seq, "type": type_}
    if type_ in ("delta", "thinking"):
        envelope["content"] = f"<{seq}>" if content is None else content
    return Outgoing(envelope)


def shape(out: list[Outgoing]) -> list[tuple[str, int, int, str]]:
    """(type, firstSeq, seq, content) of each released message."""
    return [
        (m.envelope["type"], m.first_seq, m.seq, str(m.envelope.get("content", ""))) for m in out
    ]


def test_the_first_answer_text_goes_out_at_once_then_pieces_wait_for_the_window() -> None:
    c = Coalescer(0.04)
    assert shape(c.push(msg(0, content="Hel"), now=0.0)) == [("delta", 0, 0, "Hel")]
    assert c.push(msg(1, content="lo "), now=0.01) == []
    assert c.push(msg(2, content="world"), now=0.02) == []
    assert c.flush_at == 0.05
    assert c.due(now=0.049) == []
    assert shape(c.due(now=0.05)) == [("delta", 1, 2, "lo world")]
    assert c.flush_at is None and c.drain() == []


def test_a_joined_message_says_which_seqs_it_covers() -> None:
    c = Coalescer(0.04)
    c.push(msg(0), now=0)
    for seq in (1, 2, 3):
        c.push(msg(seq), now=0.001 * seq)
    (joined,) = c.due(now=1)
    data = joined.encoded("ch")
    assert b'"seq":3' in data and b'"firstSeq":1' in data and b'"content":"<1><2><3>"' in data


def test_anything_that_is_not_text_releases_what_is_held_first() -> None:
    c = Coalescer(0.04)
    c.push(msg(0), now=0)
    c.push(msg(1), now=0.001)
    c.push(msg(2, "thinking", "hm"), now=0.002)
    out = c.push(msg(3, "function_call"), now=0.003)
    assert shape(out) == [
        ("delta", 1, 1, "<1>"),
        ("thinking", 2, 2, "hm"),
        ("function_call", 3, 3, ""),
    ]
    assert c.flush_at is None


def test_delta_and_thinking_are_never_joined_and_keep_their_order() -> None:
    c = Coalescer(0.04)
    released = []
    for seq, kind in enumerate(["thinking", "thinking", "delta", "delta", "thinking"]):
        out = shape(c.push(msg(seq, kind), now=0.001 * seq))
        released.append([m[:3] for m in out])
    # The first delta is the first answer text: it releases the thinking held before it.
    assert released == [[], [], [("thinking", 0, 1), ("delta", 2, 2)], [], []]
    assert [m[:3] for m in shape(c.drain())] == [("delta", 3, 3), ("thinking", 4, 4)]


def test_no_window_sends_every_piece_as_it_comes() -> None:
    c = Coalescer(0)
    assert [shape(c.push(msg(s), now=0)) for s in (0, 1)] == [
        [("delta", 0, 0, "<0>")],
        [("delta", 1, 1, "<1>")],
    ]


def test_a_joined_message_never_passes_the_websocket_limit() -> None:
    c = Coalescer(0.04)
    c.push(msg(0), now=0)
    big = "x" * (MAX_CONTENT_BYTES // 2 + 10)
    for seq in (1, 2, 3):
        c.push(msg(seq, content=big), now=0)
    out = c.drain()
    assert [(m.first_seq, m.seq) for m in out] == [(1, 1), (2, 2), (3, 3)]


def test_the_window_widens_while_the_fan_out_is_behind_and_narrows_back() -> None:
    c = Coalescer(0.02, max_window_seconds=0.1)
    widths = []
    for _ in range(6):
        c.adapt(behind=True)
        widths.append(round(c.window, 4))
    assert widths == sorted(widths) and widths[-1] == 0.1
    for _ in range(20):
        c.adapt(behind=False)
    assert c.window == 0.02
    c.push(msg(0), now=0)
    c.push(msg(1), now=1.0)
    assert c.flush_at == 1.02


def test_an_explicit_zero_window_never_widens() -> None:
    c = Coalescer(0, max_window_seconds=1)
    c.adapt(behind=True)
    assert c.window == 0
