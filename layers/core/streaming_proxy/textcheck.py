"""Text and JSON from outside the process: valid Unicode, bounded nesting.

JSON may carry a lone surrogate (`"\\ud800"`): Python decodes it, but no UTF-8 encoder
takes it, so it would fail far from where it came in (a DynamoDB write, a post, a log
line). Requests, browser messages and webhook answers with one are refused at the edge;
text and JSON a model produces are repaired instead (a lone surrogate becomes U+FFFD).

Python's parser also takes `NaN`, `Infinity` and numbers past the float range (`1e999`),
none of them JSON: every JSON writer after it (a response, a post to a browser, httpx's
request to a provider) refuses them or writes text no browser parses. Both parsers here
refuse them.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn

from .errors import BadRequest

# Deeper JSON is refused before anything walks it recursively (pydantic, json.dumps).
MAX_JSON_DEPTH = 64

SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """`text` as valid Unicode: every lone surrogate replaced by U+FFFD."""
    return SURROGATE.sub("\ufffd", text) if SURROGATE.search(text) else text


def check_json(data: Any, what: str = "request body") -> None:
    """BadRequest for nesting over MAX_JSON_DEPTH or a lone surrogate in any string or key."""
    stack: list[tuple[Any, int, str]] = [(data, 1, "")]
    while stack:
        value, depth, path = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise too_deep(what)
        if isinstance(value, dict):
            for key, item in value.items():
                _check_text(key, f"{path}.{key}" if path else "(a key)")
                stack.append((item, depth + 1, f"{path}.{key}" if path else str(key)))
        elif isinstance(value, list):
            stack.extend((item, depth + 1, f"{path}.{i}") for i, item in enumerate(value))
        elif isinstance(value, str):
            _check_text(value, path or "(body)")


class NotJsonNumber(ValueError):
    """`NaN`, `Infinity` or a number no float holds: Python reads them, JSON has none."""


def _refuse_constant(name: str) -> NoReturn:
    raise NotJsonNumber(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotJsonNumber(f"{text[:40]} is out of range")
    return value


def _loads(raw: str | bytes) -> Any:
    return json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite)


def parse_json(raw: str | bytes, what: str = "request body") -> Any:
    """JSON from outside, parsed and checked: BadRequest when it is not JSON (`NaN`,
    `Infinity` and numbers past the float range are not), nests deeper than MAX_JSON_DEPTH
    or holds a lone surrogate (see `check_json`)."""
    try:
        data = _loads(raw)
    except RecursionError as e:  # far deeper than the limit: the parser gave up first
        raise too_deep(what) from e
    except NotJsonNumber as e:
        raise BadRequest(f"{what} is not valid JSON: {e}") from e
    except ValueError as e:
        raise BadRequest(f"{what} is not valid JSON") from e
    check_json(data, what)
    return data


def model_json(text: str) -> Any:
    """JSON a model wrote (tool call arguments), repaired like its text: every lone
    surrogate, escaped ones too and in keys as well, becomes U+FFFD. ValueError when it is
    not JSON (`NaN` and the like are not) or nests deeper than MAX_JSON_DEPTH (the caller
    treats it as unparsable)."""
    try:
        data = _loads(text)
    except RecursionError as e:
        raise ValueError(f"nests deeper than {MAX_JSON_DEPTH} levels") from e
    return _repaired(data, 1)


def _repaired(value: Any, depth: int) -> Any:
    if depth > MAX_JSON_DEPTH:  # checked before going deeper: the recursion stays bounded
        raise ValueError(f"nests deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, list):
        return [_repaired(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {valid_text(k): _repaired(v, depth + 1) for k, v in value.items()}
    return value


def too_deep(what: str = "request body") -> BadRequest:
    return BadRequest(f"{what} nests deeper than {MAX_JSON_DEPTH} levels")


def _check_text(text: str, path: str) -> None:
    if SURROGATE.search(text):
        # The path is built from the body's keys, which may hold the surrogate themselves.
        where = valid_text(path)[:200]
        raise BadRequest(
            f"{where}: text is not valid Unicode (a lone surrogate such as \\ud800)",
            fields=[{"field": where, "message": "lone surrogate"}],
        )
