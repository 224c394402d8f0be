"""Channel names: what a valid name is, the reserved private prefix, the per-request cap."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated

from pydantic import AfterValidator, StrictStr

from ..errors import Forbidden, ValidationFailed

# Every connection is alone in `tab|<connectionId>`; no token or subscribe may name one.
PRIVATE_PREFIX = "tab|"
MAX_CHARS = 256
# Reverse membership rows carry the name in their sort key (1,024 bytes at most).
MAX_BYTES = 512
# Whitespace, control characters and lone surrogates: invisible, or not valid UTF-8.
_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f-\x9f\ud800-\udfff]")

RULE = (
    f"1-{MAX_CHARS} characters (at most {MAX_BYTES} bytes of UTF-8), "
    "no whitespace or control characters"
)


def private_channel(connection_id: str) -> str:
    """Every connection is alone in its own channel (Klai behaviour)."""
    return PRIVATE_PREFIX + connection_id


def is_private(channel: str) -> bool:
    return channel.startswith(PRIVATE_PREFIX)


def name_problem(channel: object) -> str | None:
    """Why `channel` is not a valid channel name, or None when it is."""
    if not isinstance(channel, str):
        return "must be a string"
    if not channel or len(channel) > MAX_CHARS:
        return f"must be {RULE}"
    if _FORBIDDEN.search(channel) or len(channel.encode("utf-8")) > MAX_BYTES:
        return f"must be {RULE}"
    return None


def valid_name(channel: str) -> str:
    """A pydantic after-validator: the name itself, or ValueError saying the rule."""
    problem = name_problem(channel)
    if problem is not None:
        raise ValueError(f"channel {problem}")
    return channel


ChannelName = Annotated[StrictStr, AfterValidator(valid_name)]
"""A channel name in a JSON body or message: a string (never coerced) following `RULE`."""


def check_targets(channels: Sequence[str], cap: int, field: str = "channels") -> list[str]:
    """The channels a request publishes to, de-duplicated in order; 422 past `cap` entries
    (duplicates count: the rule is the list's length, as the OpenAPI document says).

    Private `tab|<id>` names are allowed here: a backend targets one tab of its own app
    this way (channels are scoped by app, so another app's tabs are out of reach).
    """
    if len(channels) > cap:
        raise ValidationFailed(
            f"{field}: at most {cap} channels per request (got {len(channels)})",
            fields=[{"field": field, "message": f"at most {cap} channels"}],
        )
    unique = list(dict.fromkeys(channels))
    for index, channel in enumerate(unique):
        problem = name_problem(channel)
        if problem is not None:
            raise ValidationFailed(
                f"{field}[{index}]: channel {problem}",
                fields=[{"field": f"{field}.{index}", "message": f"channel {problem}"}],
            )
    return unique


def check_grantable(channels: Sequence[str]) -> None:
    """Tokens and subscribes may never name a private channel (another tab's messages)."""
    private = [channel for channel in channels if is_private(channel)]
    if private:
        raise Forbidden(
            f"'{PRIVATE_PREFIX}' channels are private to their connection and cannot be granted"
        )
