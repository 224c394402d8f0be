"""What importing our own code does not do (docs/architecture.md decision 31), and that the
cheaper forms answer exactly as the ones they replaced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.cold_import import STREAM
from streaming_proxy.tokens import estimate_text_tokens, wide_characters

ROOT = Path(__file__).resolve().parents[2]

# The process records every signature pydantic has to parse from text, then imports the
# stream function as uvicorn does.
RECORDING_STREAM = (
    "import inspect; PARSED = []; _parse = inspect._signature_fromstr\n"
    "def _recorded(cls, obj, s, *a, **k):\n"
    "    PARSED.append(s); return _parse(cls, obj, s, *a, **k)\n"
    "inspect._signature_fromstr = _recorded\n"
    f"{STREAM}"
)
WIDE_RANGES = [(0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7AF)]


def run_after_import(code: str) -> object:
    """The JSON `code` prints after a fresh process imported the stream function."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'layers/core'}{os.pathsep}{ROOT}"}
    done = subprocess.run(
        [sys.executable, "-c", f"{RECORDING_STREAM}\n{code}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_code_point_counts_as_wide_exactly_when_it_is_in_the_ranges() -> None:
    # Lone surrogates included: text from a provider may carry them until it is checked.
    expected = [any(lo <= c <= hi for lo, hi in WIDE_RANGES) for c in range(0x110000)]
    counted = [wide_characters(chr(c)) == 1 for c in range(0x110000)]
    assert [c for c in range(0x110000) if counted[c] != expected[c]] == []


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("hello world, this is plain ASCII", 8),
        ("日本語のテキスト", 10),
        ("한국어 문장", 8),
        ("mixed 漢字 and ﾃｽﾄ café \ud800", 10),
    ],
)
def test_estimates_count_wide_characters_one_token_each(text: str, tokens: int) -> None:
    assert estimate_text_tokens(text) == tokens


# Route families no LLM Query uses: loaded by their own first request (api/app.py `later`,
# decision 40), with what only they need.
LOADED_LATER = [
    "streaming_proxy.api.assistants",
    "streaming_proxy.api.messages",
    "streaming_proxy.api.openai_compat",
    "streaming_proxy.api.threads",
    "streaming_proxy.api.tokens",
    "streaming_proxy.api.tool_response",
    "streaming_proxy.assistants",
    "streaming_proxy.messaging",
    "streaming_proxy.providers.imagefetch",
    "streaming_proxy.providers.images",
    "streaming_proxy.runs",
    "streaming_proxy.threadpages",
    "streaming_proxy.threads",
    "streaming_proxy.toolcalls",
    "streaming_proxy.tools.answers",
    "streaming_proxy.tools.frontend",
    "streaming_proxy.tools.loop",
    "streaming_proxy.tools.webhook",
    # Subscribe tokens (auth.py): only requests that carry or mint one.
    "jwt",
]


def test_the_stream_function_imports_no_route_family_an_llm_query_does_not_use() -> None:
    imported = run_after_import(
        f"import json, sys\nprint(json.dumps([m for m in {LOADED_LATER!r} if m in sys.modules]))"
    )
    assert imported == []


def test_the_stream_function_builds_its_models_without_searching_for_pydantic_plugins() -> None:
    """pydantic reads every distribution's entry points at its first model build unless
    PYDANTIC_DISABLE_PLUGINS says no (coldstart.py); the search leaves `_plugins` set."""
    searched = run_after_import(
        "import json\nfrom pydantic.plugin import _loader\n"
        "print(json.dumps(_loader._plugins is not None))"
    )
    assert searched is False


def test_models_no_llm_query_needs_are_built_on_first_use_and_the_rest_at_import() -> None:
    """Importing a route family later (as its first request does) builds its models only
    when that request validates a body; the LLM Query's are built by the import."""
    built = run_after_import(
        "import importlib, json, sys\n"
        "names = {'streaming_proxy.contract': ['StreamRequest', 'StopRequest', 'AssistantBody',\n"
        "                                      'RunStopRequest', 'TokenRequest'],\n"
        "         'streaming_proxy.openai_format': ['ChatCompletionRequest'],\n"
        "         'streaming_proxy.jobs': ['StreamJob'],\n"
        "         'streaming_proxy.config': ['Settings'],\n"
        "         'streaming_proxy.api.tool_response': ['ToolResponseRequest'],\n"
        "         'streaming_proxy.api.messages': ['MessageSendRequest']}\n"
        "print(json.dumps({name: getattr(importlib.import_module(module), name)\n"
        "                  .__pydantic_complete__\n"
        "                  for module, models in names.items() for name in models}))"
    )
    assert built == {
        "StreamRequest": True,
        "StopRequest": True,
        "StreamJob": True,
        "Settings": True,
        "AssistantBody": False,
        "RunStopRequest": False,
        "TokenRequest": False,
        "ChatCompletionRequest": False,
        "ToolResponseRequest": False,
        "MessageSendRequest": False,
    }


def test_a_deferred_model_validates_on_its_first_use() -> None:
    from streaming_proxy.api.tool_response import ToolResponseRequest
    from streaming_proxy.contract import RunStopRequest

    answer = ToolResponseRequest.model_validate(
        {"toolCallId": "tc_1", "success": True, "message": "done", "token": "t"}
    )
    assert answer.answer() == {"toolCallId": "tc_1", "success": True, "message": "done"}
    ids = {"threadId": "thread_" + "a" * 24, "runId": "run_" + "b" * 24}
    assert RunStopRequest.model_validate(ids).run_id == ids["runId"]


def test_no_module_parses_builtin_signatures_at_import() -> None:
    """pydantic inspects each `default_factory`; `list`'s signature is parsed from text
    (the first parse ~2 ms), a lambda's is not. Modules imported on a first request (the
    providers) count too, or the cost would only move there."""
    parsed = run_after_import(
        "import json, pkgutil, importlib, streaming_proxy\n"
        "for m in pkgutil.walk_packages(streaming_proxy.__path__, 'streaming_proxy.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(json.dumps(PARSED))"
    )
    assert parsed == []
