"""The demo page and web/streaming-proxy.js in a real Chromium against the running local stack."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ARTIFACTS
from tests.conftest import Stack

pytestmark = pytest.mark.browser

LONG_TEXT = " ".join(
    f"word{i}{'.' if i % 9 == 8 else ''}" for i in range(90)
)  # 90 distinct words: any duplicate or gap shows

# Longer than the client's request timeout (10 s): a history request is answered by then,
# with its reply or an error the page shows.
HISTORY_WAIT_MS = 15_000


def open_demo(page: Page, stack: Stack, channel: str) -> Page:
    page.goto(f"{stack.http}/?channel={channel}")
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    expect(page.locator("#connection-id")).not_to_have_text("")
    expect(page.locator("#connection-id")).not_to_have_text("—")
    return page


def start_elsewhere(stack: Stack, channel: str, text: str, delay_ms: int) -> str:
    """A backend starts a stream on the channel (the page did not ask for it)."""
    r = httpx.post(
        f"{stack.http}/demo/start",
        json={
            "channel": channel,
            "prompt": "x",
            "providerArgs": {"text": text, "delayMs": delay_ms},
        },
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["streamId"])


def wait_for_text(page: Page, predicate: Callable[[str], bool], within: float = 15) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        answer = page.locator("#answer")
        if answer.count():
            text = answer.inner_text()
            if predicate(text):
                return text
        page.wait_for_timeout(50)
    raise AssertionError("the page never showed the expected text")


def test_demo_page_streams_a_mock_answer_exactly(
    stack: Stack, new_page: Callable[[], Page]
) -> None:
    page = open_demo(new_page(), stack, "browser-basic")
    prompt = "Stream this sentence back to me, word by word — with ünïcödé accents too."
    page.fill("#prompt", prompt)
    page.fill("#delay", "20")
    page.click("#send")
    expect(page.locator("#status")).to_have_text("done")
    assert page.locator("#answer").inner_text() == prompt
    expect(page.locator("#finish-reason")).to_have_text("stop")
    assert page.locator("[data-testid=answer-bubble] .tag").count() == 0  # started here
    assert page.locator("#message-count").inner_text().strip() not in ("", "0", "—")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo.png"))


def test_reload_mid_stream_then_resume_ends_with_the_full_text(
    stack: Stack, new_page: Callable[[], Page]
) -> None:
    page = open_demo(new_page(), stack, "browser-reload")
    start_elsewhere(stack, "browser-reload", LONG_TEXT, 40)
    wait_for_text(page, lambda t: len(t.split()) >= 10)
    page.reload()
    open_demo(page, stack, "browser-reload")
    expect(page.locator("#status")).to_have_text("done", timeout=20_000)
    assert page.locator("#answer").inner_text() == LONG_TEXT


def test_two_pages_on_a_channel_both_get_it_and_another_channel_gets_nothing(
    stack: Stack, new_page: Callable[[], Page]
) -> None:
    first = open_demo(new_page(), stack, "browser-shared")
    second = open_demo(new_page(), stack, "browser-shared")
    other = open_demo(new_page(), stack, "browser-elsewhere")
    text = "Both tabs on the shared channel see every word of this answer, and nobody else does."
    start_elsewhere(stack, "browser-shared", text, 15)
    for page in (first, second):
        expect(page.locator("#status")).to_have_text("done")
        assert page.locator("#answer").inner_text() == text
    other.wait_for_timeout(500)
    assert other.locator("[data-testid=answer-bubble]").count() == 0


def test_stop_in_the_page_ends_the_stream_cancelled(
    stack: Stack, new_page: Callable[[], Page]
) -> None:
    page = open_demo(new_page(), stack, "browser-stop")
    page.fill("#prompt", LONG_TEXT)
    page.fill("#delay", "100")
    page.click("#send")
    wait_for_text(page, lambda t: len(t.split()) >= 3)
    clicked = time.monotonic()
    page.click("#stop")
    expect(page.locator("#status")).to_have_text("cancelled", timeout=5_000)
    took = time.monotonic() - clicked
    assert took < 3, f"cancelled after {took:.2f}s"
    words = page.locator("#answer").inner_text().split()
    assert 3 <= len(words) < 90
    assert words == LONG_TEXT.split()[: len(words)]


def test_a_dropped_connection_reconnects_resumes_and_ends_with_the_full_text(
    stack: Stack, new_page: Callable[[], Page]
) -> None:
    page = open_demo(new_page(), stack, "browser-drop")
    start_elsewhere(stack, "browser-drop", LONG_TEXT, 40)
    wait_for_text(page, lambda t: len(t.split()) >= 10)
    connection_id = page.locator("#connection-id").inner_text().strip()
    dropped = httpx.delete(f"{stack.management}/@connections/{connection_id}", timeout=10)
    assert dropped.status_code == 204
    expect(page.locator("#status")).to_have_text("done", timeout=30_000)
    assert page.locator("#answer").inner_text() == LONG_TEXT
    assert page.locator("#connection-id").inner_text().strip() != connection_id
    assert int(page.locator("#resumes").inner_text()) >= 1


def client_page(page: Page, stack: Stack, channel: str, setup: str) -> Page:
    """A page running web/streaming-proxy.js alone (same origin as the stack, no demo page):
    `setup` (JavaScript, with `client` in scope) runs, then the client connects to `channel`."""
    page.goto(f"{stack.http}/web/streaming-proxy.d.ts")
    script = f"""
    async ([wsUrl, token]) => {{
      const {{ connect }} = await import("/web/streaming-proxy.js");
      const client = connect({{ url: wsUrl, token }});
      {setup}
      await new Promise((resolve) => {{
        const ready = () => client.status === "open" && client.connectionId;
        const wait = () => (ready() ? resolve() : setTimeout(wait, 20));
        wait();
      }});
    }}
    """
    page.evaluate(script, [stack.ws, stack.token(channel)])
    return page


RENDER_PROBE = """
  const probe = { renders: 0, frames: 0, messages: 0, text: "", done: false };
  const countFrames = () => {
    probe.frames += 1;
    if (!probe.done) requestAnimationFrame(countFrames);
  };
  requestAnimationFrame(countFrames);
  client.on("*", () => { probe.messages += 1; });
  client.onStream((stream) => {
    probe.renders += 1;
    probe.text = stream.text;
    if (stream.status !== "streaming") probe.done = true;
  });
  window.__probe = probe;
"""


def test_renders_are_batched_to_animation_frames(
    stack: Stack, new_page: Callable[[], Page]
) -> None:
    page = client_page(new_page(), stack, "browser-frames", RENDER_PROBE)
    text = " ".join(f"t{i}" for i in range(600))
    r = httpx.post(
        f"{stack.http}/demo/start",
        json={
            "channel": "browser-frames",
            "prompt": "x",
            "flushIntervalMs": 0,
            "providerArgs": {"text": text, "delayMs": 2},
        },
        timeout=30,
    )
    assert r.status_code == 200, r.text
    page.wait_for_function("window.__probe.done", timeout=20_000)
    probe = page.evaluate("window.__probe")
    assert probe["text"] == text
    # However many messages the lane made of it (it merges a backlog), renders never
    # outnumber frames. Bursts of many messages per frame: test_client_protocol.py.
    assert probe["renders"] <= probe["frames"] + 1
    assert probe["renders"] <= probe["messages"]


# ---- frontend tools ----------------------------------------------------------------------

DARK_BACKGROUND = "rgb(15, 18, 34)"  # --bg of demo.css's dark theme


def test_the_tool_demo_switches_the_theme_and_the_model_quotes_the_answer(
    stack: Stack, new_page: Callable[[], Page]
) -> None:
    page = open_demo(new_page(), stack, "browser-tool")
    body = page.locator("body")
    light_background = body.evaluate("b => getComputedStyle(b).backgroundColor")
    assert light_background != DARK_BACKGROUND
    page.fill("#delay", "5")
    page.click("[data-testid=tool-demo]")

    expect(page.locator("#status")).to_have_text("done")
    expect(page.locator("#answer")).to_have_text("Switching the theme. Done: Theme is now dark.")
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    expect(body).to_have_css("background-color", DARK_BACKGROUND)
    tool = page.locator("[data-testid=tool-line]")
    expect(tool).to_have_text("✓ set_theme — Theme is now dark")
    expect(tool).to_have_attribute("data-state", "done")
    expect(page.locator("#finish-reason")).to_have_text("stop")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo-tool.png"))

    page.click("[data-testid=tool-demo]")  # and back: the demo asks for the other theme
    expect(page.locator("#answer")).to_have_text("Switching the theme. Done: Theme is now light.")
    expect(body).to_have_css("background-color", light_background)
    assert page.locator("[data-testid=notice]").inner_text() == ""


def test_every_tab_runs_the_tool_and_the_one_that_lost_the_race_stays_quiet(
    stack: Stack, new_page: Callable[[], Page]
) -> None:
    pages = [open_demo(new_page(), stack, "browser-tool-tabs") for _ in range(2)]
    pages[0].fill("#delay", "5")
    pages[0].click("[data-testid=tool-demo]")

    lines = []
    for page in pages:
        expect(page.locator("#answer")).to_have_text(
            "Switching the theme. Done: Theme is now dark."
        )
        expect(page.locator("html")).to_have_attribute("data-theme", "dark")
        tool = page.locator("[data-testid=tool-line]")
        expect(tool).to_have_attribute("data-state", "done")
        lines.append(tool.inner_text())
        assert page.locator("[data-testid=notice]").inner_text() == ""
    # Both answered; the proxy took the first and told the other `conflict`, which is no error.
    assert sorted(lines) == [
        "✓ set_theme — Theme is now dark",
        "✓ set_theme — answered in another tab",
    ]


TOOL_PAGE = """
  const seen = { raw: [], outcomes: [], text: "", status: null };
  // A Klai-style handler sees the raw event; onTool answers it.
  client.on("*", (event) => { if (event.action === "llmToolCall") seen.raw.push(event); });
  client.onTool(
    "ui_pick_colour",
    async ({ shade }) => {
      await new Promise((resolve) => setTimeout(resolve, 20));
      return { message: `${shade} red`, hex: "#c0392b" };
    },
    { onOutcome: (outcome) => seen.outcomes.push(outcome.status) },
  );
  client.onStream((stream) => { seen.text = stream.text; seen.status = stream.status; });
  window.__seen = seen;
"""


def test_a_page_answers_a_tool_with_on_tool_and_the_model_quotes_it(
    stack: Stack, new_page: Callable[[], Page]
) -> None:
    page = client_page(new_page(), stack, "browser-on-tool", TOOL_PAGE)
    script = [
        {
            "text": "Let me pick. ",
            "toolCalls": [{"name": "ui_pick_colour", "arguments": {"shade": "warm"}}],
        },
        {"text": "You got {{message:ui_pick_colour}}; the answer: {{result:ui_pick_colour}}"},
    ]
    r = httpx.post(
        f"{stack.http}/llm/query",
        headers={"x-api-key": stack.api_key},
        json={
            "channels": ["browser-on-tool"],
            "actionName": "onTools",
            "options": {"toolTimeoutSeconds": 10},
            "payload": {
                "provider": "mock",
                "messages": [{"role": "user", "content": "Pick a colour"}],
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "ui_pick_colour", "parameters": {"type": "object"}},
                    }
                ],
                "providerArgs": {"delayMs": 2, "script": script},
            },
        },
        timeout=30,
    )
    assert r.status_code == 200, r.text
    page.wait_for_function("window.__seen.status === 'done'", timeout=10_000)
    seen = page.evaluate("window.__seen")

    prefix = "Let me pick. You got warm red; the answer: "
    assert seen["text"].startswith(prefix), seen["text"]
    assert json.loads(seen["text"].removeprefix(prefix)) == {
        "success": True,
        "message": "warm red",
        "data": {"message": "warm red", "hex": "#c0392b"},
    }
    assert seen["outcomes"] == ["accepted"]
    [raw] = seen["raw"]
    assert (raw["type"], raw["toolName"], raw["arguments"]) == (
        "llmToolCall",
        "pick_colour",
        {"shade": "warm"},
    )


# ---- conversation mode -------------------------------------------------------------------


def ask(page: Page, question: str) -> None:
    page.fill("#prompt", question)
    page.click("#send")
    expect(page.locator("#answer")).to_have_text(question)  # the mock echoes the question
    expect(page.locator("#status")).to_have_text("done")


def test_conversation_mode_keeps_a_thread_across_questions_and_a_reload(
    stack: Stack, new_page: Callable[[], Page]
) -> None:
    page = open_demo(new_page(), stack, "browser-conversation")
    page.check("#conversation")
    page.fill("#delay", "5")
    ask(page, "first question")
    thread = page.locator("#thread-id").inner_text().strip()
    assert thread.startswith("thread_")
    first_prompt = int(page.locator("#tokens").inner_text().split()[0])

    ask(page, "second question")
    expect(page.locator("#thread-id")).to_have_text(thread)  # the same thread, continued
    # The mock counts the prompt it got: the second one held the first turn too.
    assert int(page.locator("#tokens").inner_text().split()[0]) > first_prompt + 4

    page.reload()
    open_demo(page, stack, "browser-conversation")
    expect(page.locator("#conversation")).to_be_checked()
    expect(page.locator("#thread-id")).to_have_text(thread)
    answers = page.locator("[data-testid=history-answer] .content")
    expect(answers).to_have_text(["first question", "second question"], timeout=HISTORY_WAIT_MS)
    prompts = page.locator(".msg.user .content")
    expect(prompts).to_have_text(["first question", "second question"])
    assert page.locator("[data-testid=answer-bubble]").count() == 0  # nothing resumed twice
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo-conversation.png"))

    # It goes on after the reload, and "New" starts another thread.
    ask(page, "third question")
    expect(page.locator("#thread-id")).to_have_text(thread)
    page.click("#new-conversation")
    ask(page, "fresh start")
    fresh = page.locator("#thread-id").inner_text().strip()
    assert fresh.startswith("thread_") and fresh != thread


def test_a_thread_the_page_cannot_read_starts_a_new_conversation(
    stack: Stack, new_page: Callable[[], Page]
) -> None:
    page = open_demo(new_page(), stack, "browser-conversation-gone")
    key = "streaming-proxy-demo:browser-conversation-gone:thread"
    page.evaluate(
        """([key]) => {
          localStorage.setItem("streaming-proxy-demo:conversation", "on");
          localStorage.setItem(key, "thread_nobodyHasThisOne");
        }""",
        [key],
    )
    page.reload()
    open_demo(page, stack, "browser-conversation-gone")
    # At the end of a full run the local stack's one-at-a-time moto can take seconds.
    expect(page.locator("[data-testid=notice]")).to_have_text(
        "The next question starts a new conversation.", timeout=HISTORY_WAIT_MS
    )
    expect(page.locator("#thread-id")).not_to_have_text("thread_nobodyHasThisOne")
    assert page.evaluate("key => localStorage.getItem(key)", key) is None
