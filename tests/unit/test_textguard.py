"""TextGuard: a known secret never leaves in streamed text, however the text is cut, and
ordinary text goes out as it comes (nothing lost, nothing reordered, almost nothing held)."""

from __future__ import annotations

import itertools
import json
import re
from urllib.parse import quote

from hypothesis import example, given, settings
from hypothesis import strategies as st

from streaming_proxy import redact
from streaming_proxy.redact import REDACTED
from streaming_proxy.textguard import HOLD_FROM, TextGuard, guard

# Upper case and digits only: the texts around it are lower case, so any of its characters
# in the output is a leak, wherever it sits.
KEY = "QZ7" + "X4K9" * 6 + "W2"


def key_guard(key: str = KEY) -> TextGuard:
    made = guard(key)
    assert made is not None
    return made


def run(pieces: list[str], key: str = KEY) -> list[str]:
    """What a stream made of `pieces` sends: each piece's release, then the rest."""
    text_guard = key_guard(key)
    out = [text_guard.release(piece) for piece in pieces]
    return [*out, text_guard.rest()]


def cut(text: str, points: list[int]) -> list[str]:
    edges = sorted({0, len(text), *(p % (len(text) + 1) for p in points)})
    return [text[a:b] for a, b in itertools.pairwise(edges)]


lower = st.text(alphabet="abcdefghij .,-", max_size=40)


@settings(max_examples=300, deadline=None)
@given(before=lower, after=lower, points=st.lists(st.integers(0, 200), max_size=12))
@example(before="", after="", points=[1])  # cut after the key's first character
@example(before="abc", after="", points=[3 + HOLD_FROM - 1])
def test_a_key_cut_anywhere_never_leaves_more_than_its_first_characters(
    before: str, after: str, points: list[int]
) -> None:
    text = before + KEY + after
    joined = "".join(run(cut(text, points)))
    match = re.fullmatch(rf"{re.escape(before)}([A-Z0-9]*){re.escape(REDACTED + after)}", joined)
    assert match is not None, joined
    leaked = match.group(1)
    assert len(leaked) < HOLD_FROM and KEY.startswith(leaked)


@settings(max_examples=200, deadline=None)
@given(text=lower, points=st.lists(st.integers(0, 60), max_size=10))
def test_text_without_a_secret_goes_out_whole_and_in_order(text: str, points: list[int]) -> None:
    pieces = cut(text, points)
    assert "".join(run(pieces)) == text


def test_ordinary_text_is_not_held_for_a_few_letters_that_open_a_key() -> None:
    text_guard = key_guard()
    assert text_guard.release("see QZ") == "see QZ"  # fewer than HOLD_FROM: out at once
    assert not text_guard.holding
    assert text_guard.release("7X4K9X4K9X4K9X4K9X4K9X4K9W2 ok") == REDACTED + " ok"


def test_an_opening_of_hold_from_characters_waits_for_the_next_piece() -> None:
    text_guard = key_guard()
    assert text_guard.release("say " + KEY[:HOLD_FROM]) == "say "
    assert text_guard.holding
    assert text_guard.release("nope") == KEY[:HOLD_FROM] + "nope"  # not the key after all


def test_a_held_opening_at_the_end_goes_out_unless_it_is_long_enough_to_be_a_secret() -> None:
    short = key_guard()
    assert short.release(KEY[:HOLD_FROM]) == ""
    assert short.rest() == KEY[:HOLD_FROM]
    long = key_guard()
    assert long.release("x" + KEY[:-1]) == "x"
    assert long.rest() == REDACTED


def test_the_key_whole_in_one_piece_twice_and_back_to_back() -> None:
    assert "".join(run([f"a {KEY} b {KEY}{KEY}."])) == f"a {REDACTED} b {REDACTED}{REDACTED}."


def test_escaped_and_url_encoded_forms_are_replaced_as_they_stream() -> None:
    key = 'abc/def+ghi\\jkl"mno'
    escaped = json.dumps(key)[1:-1]
    for form in (key, escaped, escaped.replace("/", "\\/"), quote(key, safe="")):
        pieces = cut(f"echo: {form} end", [10, 14, 20])
        assert "".join(run(pieces, key)) == f"echo: {REDACTED} end", form


def test_process_secrets_are_guarded_without_a_stream_key() -> None:
    server_key = "srv-" + "Q7W2" * 8
    redact.remember(server_key)
    text_guard = guard(None)
    assert text_guard is not None
    out = [text_guard.release(p) for p in cut(f"x {server_key} y", [6, 11, 30])]
    assert "".join([*out, text_guard.rest()]) == f"x {REDACTED} y"


def test_nothing_changes_the_piece_object_when_there_is_nothing_to_do() -> None:
    text_guard = key_guard()
    piece = "plain words, nothing else"
    assert text_guard.release(piece) is piece


def test_two_secrets_that_overlap_are_one_replacement() -> None:
    redact.remember("LMNOPQRSTU")
    assert "".join(run(["xx LMNOPQRS", "TUVWXYZ yy"], key="QRSTUVWXYZ")) == f"xx {REDACTED} yy"
