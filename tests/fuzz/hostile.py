"""Hostile JSON for the fuzzers: values a well-behaved client never sends, and their encoding.

Lone surrogates, strings of ~100 KB, nesting far deeper than a JSON library writes, integers and
floats at the edge of what JSON parsers accept, long lists. `encode` writes any of them as JSON
text a server must be ready to read (lone surrogates as `\\udXXX` escapes, NaN as `NaN`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from hypothesis import strategies as st

# The longest string the fuzzers send: large, yet under API Gateway's 128 KB WebSocket frame.
HUGE = 100_000


@dataclass(frozen=True)
class Deep:
    """An array or object nested `depth` levels: deeper than `json.dumps` can write."""

    depth: int
    kind: Literal["[", "{"]

    def text(self) -> str:
        if self.kind == "[":
            return "[" * self.depth + "]" * self.depth
        return '{"a":' * self.depth + "null" + "}" * self.depth


_PLACEHOLDER = "\x00deep-{}\x00"


def encode(value: Any) -> str:
    """`value` as JSON text: ASCII only (lone surrogates escaped), NaN/Infinity allowed, and
    every `Deep` spliced in as literal text."""
    deep: list[Deep] = []

    def swap(node: Any) -> Any:
        if isinstance(node, Deep):
            deep.append(node)
            return _PLACEHOLDER.format(len(deep) - 1)
        if isinstance(node, dict):
            return {key: swap(item) for key, item in node.items()}
        if isinstance(node, list):
            return [swap(item) for item in node]
        return node

    text = json.dumps(swap(value), ensure_ascii=True, allow_nan=True)
    for index, nested in enumerate(deep):
        text = text.replace(json.dumps(_PLACEHOLDER.format(index)), nested.text(), 1)
    return text


def lone_surrogates() -> st.SearchStrategy[str]:
    """Short strings holding at least one lone UTF-16 surrogate (not encodable as UTF-8)."""
    return st.builds(
        lambda head, surrogate, tail: head + surrogate + tail,
        st.text(max_size=4),
        st.characters(categories=["Cs"]),
        st.text(max_size=4),
    )


def huge_strings() -> st.SearchStrategy[str]:
    """Strings of 1 KB to ~100 KB, ASCII or not."""
    return st.builds(
        lambda size, char: char * size,
        st.integers(min_value=1_000, max_value=HUGE),
        st.sampled_from(["x", "é", "日", "😀", " "]),
    )


def hostile_strings() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=40),
        lone_surrogates(),
        huge_strings(),
        st.sampled_from(["", " ", "\x00", "null", "NaN", "\u202e", "tab|x", "a" * 257]),
    )


def hostile_numbers() -> st.SearchStrategy[int | float]:
    return st.one_of(
        st.integers(),
        st.sampled_from([-1, 0, 2**31, 2**53 + 1, 2**63, 2**64, -(2**63) - 1, 10**300]),
        st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308]),
        st.floats(),
    )


def many_strings() -> st.SearchStrategy[list[str]]:
    """101 to 300 distinct short names: past the 100-channel token limit, yet few enough that
    a stack accepting them stays responsive for the examples after (huge lists have a test of
    their own)."""
    return st.integers(min_value=101, max_value=300).map(lambda n: [f"c{i}" for i in range(n)])


def hostile_values() -> st.SearchStrategy[Any]:
    """One hostile JSON value of any type."""
    scalars = st.one_of(st.none(), st.booleans(), hostile_numbers(), hostile_strings())
    nested = st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=8,
    )
    return st.one_of(
        scalars,
        nested,
        st.builds(Deep, st.integers(min_value=64, max_value=50_000), st.sampled_from(["[", "{"])),
        many_strings(),
        st.integers(min_value=100, max_value=2_000).map(lambda n: list(range(n))),
    )


def json_values() -> st.SearchStrategy[Any]:
    """Arbitrary JSON values, ordinary and hostile."""
    ordinary = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
        ),
        max_leaves=12,
    )
    return ordinary | hostile_values()
