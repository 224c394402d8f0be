"""Coalescer: adjacent pieces of one kind joined over the window; no clock, no sleeping."""

from __future__ import annotations

from streaming_proxy.coalescer import Coalescer


def test_the_first_answer_text_goes_out_at_once_then_pieces_wait_for_the_window() -> None:
    c = Coalescer(0.04)
    assert c.push("delta", "Hel", now=0.0) == [("delta", "Hel")]
    assert c.push("delta", "lo ", now=0.01) == []
    assert c.push("delta", "world", now=0.02) == []
    assert c.flush_at == 0.05
    assert c.due(now=0.049) == []
    assert c.due(now=0.05) == [("delta", "lo world")]
    assert c.flush_at is None and c.drain() == []


def test_a_piece_of_the_other_kind_sends_what_is_held_first() -> None:
    c = Coalescer(0.04)
    assert c.push("thinking", "hm ", now=0.0) == []  # thinking is not the first answer text
    assert c.push("thinking", "ok", now=0.01) == []
    assert c.push("delta", "Yes", now=0.02) == [("thinking", "hm ok"), ("delta", "Yes")]
    assert c.push("thinking", " more", now=0.03) == []
    assert c.push("delta", " and", now=0.031) == [("thinking", " more")]
    assert c.drain() == [("delta", " and")]


def test_no_window_sends_every_piece_and_empty_text_is_nothing() -> None:
    c = Coalescer(0)
    assert c.push("delta", "", now=0) == []
    assert [c.push("delta", t, now=0) for t in ("a", "b")] == [[("delta", "a")], [("delta", "b")]]
