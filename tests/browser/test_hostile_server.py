"""The browser client against a server that fails it: a resume answered with a retryable
error, a dead letter's end numbered below what the tab holds, split snapshots interleaved or
out of range, a tool whose failure is too large to send, an app callback that throws, and
requests made after `close()` or given up on. Each case once left a stream without its
`end`, a tab without its text, or a request answered by the wrong reply."""

from __future__ import annotations

from tests.browser.test_client_protocol import (
    ACK,
    STREAM,
    Proxy,
    delta,
    end,
    envelope,
    harness_page,
    on_tool,
    proxy,
    snapshot,
    split,
    thread_info,
)

__all__ = ["harness_page", "proxy"]  # the module's page and client fixtures, shared

UNAVAILABLE = {
    "type": "error",
    "error": {
        "message": "table busy",
        "code": 503,
        "details": "",
        "type": "dependency_unavailable",
    },
    "request": {"action": "resume", "streamId": STREAM},
}
# API Gateway's own answer to a route that failed: it names no request.
GATEWAY_ERROR = {"message": "Internal server error", "connectionId": "c", "requestId": "r"}


def answer_resumes(proxy: Proxy, *replies: object) -> None:
    """The fake proxy answers the n-th resume with `replies[n]` (the last one from then on);
    a snapshot reply is given the resume's stream id."""
    proxy.page.evaluate(
        """(replies) => {
          let n = 0;
          proxy.answer = (r) => {
            if (r.action !== "resume") return [];
            const reply = replies[Math.min(n++, replies.length - 1)];
            return [reply.type === "snapshot" ? { ...reply, streamId: r.streamId } : reply];
          };
        }""",
        list(replies),
    )


def test_a_resume_answered_unavailable_is_asked_again_and_the_stream_ends(proxy: Proxy) -> None:
    """events.md: `dependency_unavailable` means send it again shortly. The tab gave the
    stream up instead (status error), and never asked again: no `end`, ever."""
    proxy.start(stallMs=0, resumeRetryMs=50)
    answer_resumes(proxy, UNAVAILABLE, snapshot(3, "abc"))
    proxy.deliver(thread_info(), delta(1, "a"), delta(3, "c"))  # seq 2 is lost: a gap
    proxy.deliver(delta(4, "d"), end(5))
    proxy.wait("proxy.client.streams.get('st_protocol').status === 'done'")
    assert len(proxy.sent("resume")) >= 2
    state = proxy.state()
    assert (state["text"], state["status"], state["error"]) == ("abcd", "done", None)
    assert [k for k in proxy.kinds() if k[0] == "end"] == [("end", 5)]


def test_a_missing_piece_arriving_after_a_failed_resume_still_ends_the_stream_done(
    proxy: Proxy,
) -> None:
    proxy.start(stallMs=0, resumeRetryMs=60_000)
    answer_resumes(proxy, UNAVAILABLE)
    proxy.deliver(thread_info(), delta(1, "a"), delta(3, "c"))
    proxy.deliver(delta(2, "b"), end(4))
    state = proxy.state()
    assert (state["text"], state["status"], state["error"]) == ("abc", "done", None)


def test_a_reloaded_tabs_resume_answered_by_the_gateways_error_is_asked_again(
    proxy: Proxy,
) -> None:
    """A reloaded tab follows a stream it kept the id of with `client.resume(id)`; the
    gateway's own error (no request named) froze it blank while the stream went on."""
    proxy.start(stallMs=0, resumeRetryMs=50)
    answer_resumes(proxy, GATEWAY_ERROR, snapshot(6, "hello"))
    proxy.page.evaluate("id => { proxy.client.resume(id); }", STREAM)
    proxy.wait("proxy.client.streams.get('st_protocol').lastSeq === 6")
    proxy.deliver(delta(7, " world"), end(8))
    assert proxy.state()["text"] == "hello world"
    assert ("end", 8) in proxy.kinds()


def test_after_a_failed_resume_the_app_and_a_reconnect_may_resume_again(proxy: Proxy) -> None:
    proxy.start(stallMs=0, resumeRetryMs=60_000)
    answer_resumes(proxy, UNAVAILABLE)
    proxy.deliver(thread_info(), delta(1, "a"), delta(3, "c"))
    asked = len(proxy.sent("resume"))
    proxy.page.evaluate("id => { proxy.client.resume(id); }", STREAM)
    assert len(proxy.sent("resume")) == asked + 1
    proxy.page.evaluate("() => { proxy.answer = null; proxy.drop(); }")
    proxy.wait("proxy.connections === 2 && proxy.sent('resume').some((r) => r.connection === 2)")


def test_a_resume_answered_not_found_still_gives_the_stream_up(proxy: Proxy) -> None:
    not_found = {"type": "not_found", "streamId": STREAM}
    proxy.start(stallMs=0, resumeRetryMs=50)
    answer_resumes(proxy, not_found)
    proxy.deliver(thread_info(), delta(1, "a"), delta(3, "c"))
    proxy.wait("proxy.client.streams.get('st_protocol').status === 'error'")
    proxy.page.wait_for_timeout(200)  # several retry intervals: nothing is asked again
    assert len(proxy.sent("resume")) == 1


def test_a_dead_letters_end_below_the_seq_held_is_learned_from_resume(proxy: Proxy) -> None:
    """The dead letter numbers `error` and `end` on from the stored snapshot (seq 2 here),
    below the tab's seq 5: they come as duplicates and are dropped, and events.md says the
    tab learns the end from `resume`. It ignored that final snapshot, as older than its
    text, and asked again forever."""
    proxy.start(stallMs=100, resumeRetryMs=50)
    final = snapshot(4, "ab", "failed", finish_reason="error")
    answer_resumes(proxy, final)
    proxy.deliver(thread_info(), *(delta(n, c) for n, c in enumerate("abcde", start=1)))
    lost = {
        "message": "the stream was lost",
        "code": 503,
        "details": "",
        "type": "dependency_unavailable",
    }
    proxy.deliver(envelope(3, "error", error=lost), end(4, "error"))
    proxy.wait("proxy.client.streams.get('st_protocol').status === 'error'")
    state = proxy.state()
    assert state["text"] == "abcde"  # the longer text stays
    assert state["finishReason"] == "error"
    assert [k for k in proxy.kinds() if k[0] == "end"] == [("end", 5)]
    asked = len(proxy.sent("resume"))
    proxy.page.wait_for_timeout(300)
    assert len(proxy.sent("resume")) == asked


def test_two_copies_of_a_split_snapshot_interleaved_are_applied_once(proxy: Proxy) -> None:
    """After a reconnect the pushed catch-up and the resume's reply can arrive interleaved;
    each part seen twice restarted the join, so neither copy was ever whole."""
    proxy.start(stallMs=0, resumeRetryMs=60_000)
    proxy.page.evaluate("id => { proxy.client.resume(id); }", STREAM)
    pushed = split(snapshot(5, "0123456789abcdef", catchUp=True), 3)
    asked = split(snapshot(5, "0123456789abcdef"), 3)
    proxy.deliver(pushed[0], asked[0], pushed[1], asked[1], pushed[2], asked[2])
    assert proxy.state()["text"] == "0123456789abcdef"
    assert [k for k in proxy.kinds() if k[0] == "snapshot"] == [("snapshot", 5)]


def test_a_snapshot_part_out_of_range_is_ignored(proxy: Proxy) -> None:
    proxy.start(stallMs=0)
    parts = split(snapshot(5, "0123456789abcdef", catchUp=True), 2)
    proxy.deliver(parts[0], {**parts[1], "part": 7})
    assert proxy.state()["lastSeq"] < 5  # not applied with a hole
    proxy.deliver(parts[1])
    assert (proxy.state()["text"], proxy.state()["lastSeq"]) == ("0123456789abcdef", 5)


def test_a_tool_failure_too_large_to_send_is_answered_short(proxy: Proxy) -> None:
    """A handler that throws with a 40 KB message: nothing was sent, and the model waited
    the whole tool timeout."""
    on_tool(proxy, "boom", "() => { throw new Error('é'.repeat(20000)); }", replies=ACK)
    call = envelope(
        1, "llmToolCall", action="llmToolCall", toolCallId="tc_boom", toolName="boom", arguments={}
    )
    proxy.deliver(thread_info(), call)
    proxy.wait("proxy.outcomes.length === 1")
    (sent,) = proxy.sent("llmToolCallResponse")
    assert sent["success"] is False
    assert sent["message"].startswith("the tool's result is too large to send")
    assert proxy.page.evaluate("proxy.outcomes[0].status") == "accepted"


def test_an_on_status_callback_that_throws_stops_no_reconnect_and_no_resume(
    proxy: Proxy,
) -> None:
    result = proxy.page.evaluate(
        """async () => {
          let tokens = 0;
          proxy.start({
            token: () => { tokens++; if (tokens === 1) throw new Error("token down"); return "t"; },
            onStatus: () => { throw new Error("the app's bug"); },
          });
          await new Promise((resolve) => {
            const wait = () => (proxy.connections === 1 ? resolve() : setTimeout(wait, 20));
            wait();
          });
          proxy.deliver({ actionName: "onLlmMessage", channel: "user-1", streamId: "st_protocol",
                          seq: 0, type: "threadInfo", content: {} });
          proxy.drop();
          await new Promise((resolve) => {
            const wait = () => (proxy.sent("resume").length ? resolve() : setTimeout(wait, 20));
            wait();
          });
          return { tokens, connections: proxy.connections };
        }"""
    )
    assert result == {"tokens": 3, "connections": 2}


def test_a_request_after_close_is_refused_at_once(proxy: Proxy) -> None:
    proxy.start(requestTimeoutMs=600_000)
    refused = proxy.page.evaluate(
        """async () => {
          proxy.client.close();
          return await proxy.client.ping().then(() => "answered", (e) => e.message);
        }"""
    )
    assert refused == "ping: client closed"


def test_a_request_given_up_on_is_not_answered_by_a_later_unnamed_error(proxy: Proxy) -> None:
    """A stop that timed out stayed first in the queue replies are matched against: the
    gateway's next error, meant for the subscribe sent after it, was taken for the stop's."""
    got = proxy.page.evaluate(
        """async (gatewayError) => {
          proxy.start({ requestTimeoutMs: 200 });
          proxy.answer = () => [];
          await proxy.client.stop("st_x").catch(() => {});
          const subscribed = proxy.client.subscribe("team-1", "t");
          proxy.deliver(gatewayError);
          return await subscribed.then(() => "answered", (e) => e.code);
        }""",
        GATEWAY_ERROR,
    )
    assert got == "internal_error"


def test_an_error_naming_a_request_never_made_answers_none(proxy: Proxy) -> None:
    got = proxy.page.evaluate(
        """async () => {
          proxy.start({ requestTimeoutMs: 300 });
          proxy.answer = () => [];
          const subscribed = proxy.client.subscribe("team-1", "t");
          const error = { message: "unknown action", code: 400, details: "", type: "bad_request" };
          proxy.deliver({ type: "error", request: { action: "frobnicate" }, error });
          return await subscribed.then(() => "answered", (e) => e.message);
        }"""
    )
    assert got == "subscribe: no reply within 300 ms"
