"""The prose under the numbers, computed from this run's results (so it never goes stale)."""

from __future__ import annotations

import statistics
from typing import Any

from streaming_proxy.config import Settings

from .coalescing import CHUNKS as COALESCING_CHUNKS
from .common import Result
from .sse_overhead import CONCURRENCY, CROWD, CROWDED, DELAY_MS

QUOTA = 10_000  # API Gateway requests/s per account and region (shared by every API)


def _median(runs: list[dict[str, Any]], field: str) -> float:
    return float(statistics.median(r[field] for r in runs))


COLD_GOALS = {"stream": 0.250, "connections": 0.120}
"""Issue 12's cold-import goals, seconds over the interpreter."""


def _against_goals(floor_stream: float, floor_conn: float) -> str:
    """Which goal no code of ours can reach: one below its function's libraries alone."""
    floors = {"stream": floor_stream, "connections": floor_conn}
    below = [name for name, goal in COLD_GOALS.items() if goal < floors[name]]
    if not below:
        return ""
    said = ", ".join(
        f"the {name} function's {COLD_GOALS[name] * 1000:.0f} ms is "
        f"{(floors[name] - COLD_GOALS[name]) * 1000:.0f} ms below its floor"
        for name in below
    )
    return f" Of the cold-start goals, {said}: only the proxy's own part can shrink there."


def _cold(r: Result) -> list[str]:
    d = r.data
    base = d["python"]["median"]
    stream = d["stream"]["median"] - base
    conn = d["connections"]["median"] - base
    text = (
        f"- **Cold start.** Importing the stream function's code costs {stream * 1000:.0f} ms "
        f"over a bare interpreter ({conn * 1000:.0f} ms for the connections function), on "
        "top of the Lambda runtime and Web Adapter start."
    )
    if "openai" in d:
        sdk = d["openai"]["median"] - base
        text += f" `import openai` alone costs {sdk * 1000:.0f} ms"
        if "stream+openai" in d:
            both = d["stream+openai"]["median"] - base
            text += (
                f"; on top of the proxy's own imports it adds {(both - stream) * 1000:.0f} ms "
                f"({(both / stream - 1) * 100:.0f} % more, the shared pydantic/httpx already "
                "loaded)"
            )
        text += ". That is why providers are thin httpx adapters; one SDK per provider would "
        text += "multiply it."
    top = ", ".join(f"{name} ({sec * 1000:.0f} ms)" for name, sec in d["breakdown"][:4])
    text += f" The largest parts of the stream function's import are {top}."
    if "floor_stream" in d and "floor_connections" in d:
        floor_stream = d["floor_stream"]["median"] - base
        floor_conn = d["floor_connections"]["median"] - base
        text += (
            f" The libraries each function needs for its first request (pydantic, "
            f"pydantic-settings, botocore, Powertools; Starlette and httpx for the stream "
            f"function) cost {floor_stream * 1000:.0f} and {floor_conn * 1000:.0f} ms alone: "
            "that is the floor, and the proxy's own modules are the rest "
            f"({(stream - floor_stream) * 1000:.0f} and {(conn - floor_conn) * 1000:.0f} ms)."
        )
        text += _against_goals(floor_stream, floor_conn)
    first = d.get("first_request")
    if first:
        text += (
            f" After the cold import, the stream function's lifespan startup takes "
            f"{first['stream.startup']['median'] * 1000:.0f} ms (settings, clients, service), "
            f"its first POST /llm/query {first['stream.query']['median'] * 1000:.0f} ms "
            f"({first['stream.query_again']['median'] * 1000:.0f} ms for the second), and "
            f"the connections function's first `$connect` "
            f"{first['connections.connect']['median'] * 1000:.0f} ms "
            f"({first['connections.connect_again']['median'] * 1000:.0f} ms warm): it reads "
            "its settings and makes its DynamoDB client then, against a local moto server."
        )
        text += _deployed_first(first)
        text += _families(first)
    return [text]


def _deployed_first(first: dict[str, Any]) -> str:
    """The same first requests from the deployed shape, whose botocore keeps only the data
    of the services the proxy calls (deploy/trim_botocore.py)."""
    keys = ("deployed.stream.startup", "deployed.stream.query", "deployed.connections.connect")
    if not all(key in first for key in keys):
        return ""
    startup, query, connect = (first[key]["median"] * 1000 for key in keys)
    return (
        " From the deployed layer, whose botocore keeps the data of the services the proxy "
        "calls and no other (a client's creation lists every service's folder and reads "
        f"every service's endpoints), the lifespan startup takes {startup:.0f} ms, the "
        f"first POST /llm/query {query:.0f} ms and the first `$connect` {connect:.0f} ms."
    )


# (timing key, what) of the route families the stream function loads on first use.
FAMILIES = [
    ("token", "POST /channels/token"),
    ("v1_chat", "POST /v1/chat/completions"),
    ("assistant_create", "POST /assistants"),
    ("thread_messages", "GET /threads/{id}/messages"),
]


def _families(first: dict[str, Any]) -> str:
    """The first request of each route family no LLM Query uses: it pays that family's
    import (api/app.py, docs/architecture.md decision 40), which the cold start no longer
    does."""
    rows = [(f"stream.{key}", what) for key, what in FAMILIES if f"stream.{key}" in first]
    if not rows:
        return ""
    said = ", ".join(f"{what} {first[key]['median'] * 1000:.0f} ms" for key, what in rows)
    return (
        " Route families an LLM Query does not use load on their first request, so that "
        f"request pays their import: after the queries, the first {said} (the last one "
        "reads a thread that does not exist and answers 404)."
    )


def _ttft(r: Result) -> list[str]:
    d = r.data
    floor = d["health"]["median"]
    sse = d["sse"]["median"]
    return [
        f"- **Time to first token.** With a provider that answers at once, the SSE caller "
        f"sees the first delta {sse * 1000:.1f} ms after sending the request (p95 "
        f"{d['sse']['p95'] * 1000:.1f} ms), against a {floor * 1000:.1f} ms HTTP round trip: "
        f"about {(sse - floor) * 1000:.0f} ms of proxy work (auth, validation, the stream "
        "record written to DynamoDB before the relay starts, channel membership read, first "
        f"envelope). A WebSocket subscriber gets the same delta {d['ws_sse']['median'] * 1000:.1f}"
        f" ms after the request ({(d['ws_sse']['median'] - sse) * 1000:.1f} ms after the SSE "
        f"caller: one PostToConnection hop). The plain-POST ack answers in "
        f"{d['ack']['median'] * 1000:.1f} ms (it waits for the provider's first event so an "
        "early failure is still an HTTP error). Against real provider TTFTs of hundreds of "
        "milliseconds this overhead is small; in AWS, each DynamoDB call adds a few ms more "
        "than moto on loopback."
    ]


# The channels' default coalescing window, in ms.
WINDOW = int(Settings.model_fields["flush_interval_ms"].default)


def _posts(results: dict[str, Result]) -> list[str]:
    lines: list[str] = []
    coal = results.get("coalescing")
    if coal is not None:
        rates = {
            w: _median(runs, "messages") / _median(runs, "wall") for w, runs in coal.data.items()
        }
        windows = sorted(rates)
        saving = rates[windows[0]] / rates[WINDOW] if WINDOW in rates else 0.0
        chunks_per_s = COALESCING_CHUNKS / _median(coal.data[windows[0]], "wall")
        parts = ", ".join(
            f"{w} ms: {rate:.0f} posts/s per subscriber, {QUOTA / rate:,.0f} subscribers"
            for w, rate in rates.items()
        )
        lines.append(
            "- **Coalescing and the 10,000 req/s quota.** Posts are messages x subscribers, "
            "and with a window the message count follows the stream's duration, not its "
            f"token count. A fast stream (~{chunks_per_s:.0f} chunks/s here) watched live "
            "by subscribers "
            f"uses the account's {QUOTA:,} req/s API Gateway quota at this rate (window: "
            f"posts/s per subscriber, subscribers streaming at once that exhaust the quota): "
            f"{parts}. The {WINDOW} ms default cuts posts {saving:.0f}x against no coalescing "
            f"and still updates a UI ~{rates.get(WINDOW, 0):.0f} times a second; when the "
            "connections cannot keep up, the window widens (docs/deploy.md, Big channels). The "
            "quota is per account and region and is shared with the REST API's own requests."
        )
    cost = results.get("post_cost")
    fan = results.get("fanout")
    if cost is not None:
        cpu = cost.data["cpu"]
        per_sub = 25.0
        if coal is not None and WINDOW in coal.data:
            runs = coal.data[WINDOW]
            per_sub = _median(runs, "messages") / _median(runs, "wall")
        text = (
            f"- **Fan-out per invocation.** One PostToConnection costs {cpu * 1000:.2f} ms of "
            "client CPU in the default poster (SigV4 and keep-alive HTTP/1.1 on uvloop; "
            f"boto3's client costs {cost.data['boto3']['cpu'] * 1000:.2f} ms), so one Python "
            f"process (one GIL) tops out near {1 / cpu:,.0f} posts/s. At {per_sub:.0f} posts/s "
            f"per subscriber that is about {1 / cpu / per_sub:.0f} subscribers per stream "
            "before posting takes a whole vCPU; past that the channels' window widens, so a "
            "saturated poster sends fewer, larger messages instead of falling behind."
        )
        if fan is not None:
            text += _fanout(fan)
        text += (
            " Lambda allots CPU in proportion to memory (1,769 MB = 1 vCPU): at 512 MB "
            f"(~0.29 vCPU) the ceiling is ~{0.289 / cpu:,.0f} posts/s, at 1,769 MB "
            f"~{1 / cpu:,.0f}; above that, extra vCPUs barely help one GIL-bound process. "
            "docs/deploy.md (Big channels) works out the quota and the cost of a "
            "1,000-subscriber channel."
        )
        lines.append(text)
    return lines


def _fanout(fan: Result) -> str:
    most, one = max(fan.data), min(fan.data)
    big, small = fan.data[most], fan.data[one]
    return (
        f" The fan-out benchmark shows where that leads: one subscriber gets a token "
        f"{small['p50']:.0f} ms after the upstream sent it (p99 {small['p99']:.0f} ms; the "
        f"{WINDOW} ms window is most of it), {most} subscribers get it {big['p50']:.0f} ms after "
        f"(p99 {big['p99']:.0f} ms). The app process spent {big['app_cpu_per_post'] * 1000:.2f}"
        f" ms of CPU per post there and made about {big['posts'] / big['wall']:,.0f} posts/s "
        "over the stream; lanes that fall behind merge their backlog (a median of "
        f"{big['messages']:g} messages per subscriber instead of {small['messages']:g}), so "
        "nothing is lost but every token waits. The gateway emulator (with moto), in its own "
        "process, "
        f"spent {big['gateway_cpu_per_post'] * 1000:.2f} ms per post on top, which API "
        "Gateway pays in AWS."
    )


def _sse(r: Result) -> list[str]:
    d = r.data
    one, off, v1 = d["klai@1"], d["klai0@1"], d["v1@1"]
    top = max(CONCURRENCY)
    many = d[f"v1@{top}"]
    rate = top * 1000 / DELAY_MS
    text = (
        f"- **SSE overhead.** One Klai SSE caller gets each chunk {one['p50']:.1f} ms (p50) "
        f"after the upstream sent it with the default window, {off['p50']:.1f} ms with "
        f"`flushIntervalMs` 0 and {v1['p50']:.1f} ms through `/v1`: the caller gets every "
        "delta as it arrives, and the window applies only to the channels' copy."
    )
    crowd = d.get(f"{CROWDED.key}@1")
    if crowd is not None:
        text += (
            f" With {CROWD} subscribers on its channel the caller's p50 is "
            f"{crowd['p50']:.1f} ms (p99 {crowd['p99']:.0f} ms): the posts share the "
            "process's CPU but no longer hold the caller's frames."
        )
    load = rate * many["app_cpu_per_chunk"]
    core = (
        "more than the one core a Python process's event loop can use, so every chunk "
        "queues behind the ones before it"
        if load >= 1
        else f"{load:.0%} of the one core a Python process's event loop can use, so chunks "
        "arriving together wait for one another"
    )
    text += (
        f" At {top} streams at once, `/v1` adds {many['p50']:.0f} ms p50 and "
        f"{many['p99']:.0f} ms p99 per chunk ({many['p50_ratio']:.0f}x and "
        f"{many['p99_ratio']:.0f}x the direct path): at {many['app_cpu_per_chunk'] * 1e6:.0f} "
        f"us of app CPU per relayed chunk, {rate:,.0f} chunks/s need {load:.1f} CPU-seconds "
        f"per second, {core}. At one stream a chunk costs more "
        f"({v1['app_cpu_per_chunk'] * 1e6:.0f} us): the stream's own fixed work is only "
        f"{d['fixed_cpu'] * 1000:.0f} ms, but a chunk that arrives alone pays a whole wake-up "
        "of the event loop (upstream read, parse, relay, SSE write), while a busy loop "
        "handles several per wake-up."
    )
    bare = d.get(f"bare@{top}")
    if bare is not None:
        floor = bare["app_cpu_per_chunk"] * 1e6
        own = many["app_cpu_per_chunk"] * 1e6 - floor
        text += (
            f" The bare relay, the same server (uvicorn, uvloop, httptools, ASGI) moving each "
            f"upstream read to the caller untouched, spends {floor:.0f} us per chunk at {top} "
            f"streams: the sockets, the event loop and the ASGI calls every relay pays. The "
            f"proxy's own work per chunk (reading HTTP and SSE, parsing and checking the "
            f"chunk, relaying it, writing a new chunk) is the other {own:.0f} us."
        )
    klai = d.get(f"klai@{top}")
    if klai is not None:
        text += (
            f" The Klai SSE rows at {top} streams add {klai['p50']:.0f} ms p50 for another "
            "reason: each of those streams names a channel, so its answer starts only once its "
            "stream record is written, and here the records, membership reads and snapshot "
            f"writes of {top} streams queue in moto, which answers one request at a time; the "
            "delay is largest on a stream's first tokens and shrinks as the app catches up. "
            "In Lambda each stream has an execution environment of its own and DynamoDB "
            "answers them side by side."
        )
    return [text]


def _memory(r: Result) -> list[str]:
    d = r.data
    mib = 1024
    return [
        f"- **Memory and concurrency.** {d['rss_before'] / mib:.0f} MiB is the app process "
        "at rest; 20 concurrent streams with 40 subscribers "
        f"moved RSS to {d['rss_peak_sampled'] / mib:.0f} MiB at peak, so a stream's own "
        "state is small and memory is set by imports, not by load. In Lambda each execution "
        "environment serves one request at a time (one stream, or one detached relay), so "
        "256-512 MB would hold it; choose the stream function's memory for the CPU its "
        "fan-out needs (above), not for RAM. "
        f"The concurrent run took {d['wall']:.1f} s for streams that take "
        f"{d['solo_wall']:.1f} s alone; the app process used {d['cpu']:.1f} CPU s (the "
        f"emulators' process {d['gateway_cpu']:.1f} more): one "
        "process is CPU-bound (the GIL keeps its Python work to about one core), and acks "
        "wait behind it "
        f"({d['acks']['median'] * 1000:.0f} ms median when 20 requests arrive together, "
        "every DynamoDB call going to moto on loopback). That matters for the local stack "
        "and for any container deployment, not for Lambda's one-request-per-environment "
        "model."
    ]


def _delivery(r: Result) -> list[str]:
    runs = list(r.data.values())
    exact = sum(run["exact"] for run in runs)
    subscribers = sum(run["subscribers"] for run in runs)
    lost = sum(run["dropped"] + run["failures"] for run in runs)

    # Messages are summed over a scenario's streams; each goes to that stream's subscribers.
    def unmerged(run: dict[str, Any]) -> int:
        return int(run["messages"] * run["scenario"]["subscribers"])

    widest = max(runs, key=unmerged)
    return [
        f"- **Delivery under load.** {exact} of {subscribers} subscribers ended with exactly "
        f"the stream's text, contiguous seq and one `end` ({lost} seqs or connections "
        "counted as lost). When a connection's lane falls behind it merges its queued "
        f"deltas instead of queueing more: in '{widest['scenario']['name']}' the lanes made "
        f"{widest['posts']:,} posts where one post per message per subscriber would have "
        f"been {unmerged(widest):,} ({widest['merged']:,} merged away), so the stream ended in "
        f"{widest['wall']:.1f} s with nothing cut off at the drain."
    ]


def _tool_round(r: Result) -> list[str]:
    def median_ms(over: str, key: str) -> float:
        return 1000 * float(statistics.median(run[key] for run in r.data[over]))

    ws, https = median_ms("websocket", "round_trip"), median_ms("https", "round_trip")
    return [
        f"- **Tool rounds.** A frontend tool answered at once costs the stream {ws:.0f} ms "
        "from the page receiving `llmToolCall` to the next round's first delta when the page "
        f"answers over the WebSocket, {https:.0f} ms over `POST /llm/tool-response` into the "
        "process running the stream. The WebSocket answer is handled by the connections "
        "function (another Lambda in AWS), so the stream finds it by polling its record: the "
        "first look comes 0.1 s after the call was published, which is most of that time. "
        "Later looks back off to one a second, so a tool that takes a person's click costs "
        "up to a second more; a 90-second wait costs about 95 reads of a small item."
    ]


def _dynamo_units(r: Result) -> list[str]:
    measured, before = r.data["measured"], r.data["before"]
    one = measured["1"]
    was = before.get("1")
    change = (
        f" (main before the segments: {was['reads']:.1f} and {was['writes']:.0f})" if was else ""
    )
    return [
        f"- **DynamoDB per stream.** A 1,000-token stream costs {one['reads']:.1f} read and "
        f"{one['writes']:.0f} write units{change}, whatever the number of subscribers (they "
        "cost one membership row each in a refresh, well inside its half unit). Every "
        "snapshot and cancel poll now costs the same small amount however long the answer: "
        "the old record's rewrites grew with the text (quadratically over a stream)."
    ]


def reading(results: dict[str, Result]) -> list[str]:
    lines: list[str] = []
    if "cold_import" in results:
        lines += _cold(results["cold_import"])
    if "dynamo_units" in results:
        lines += _dynamo_units(results["dynamo_units"])
    if "ttft" in results:
        lines += _ttft(results["ttft"])
    if "sse_overhead" in results:
        lines += _sse(results["sse_overhead"])
    lines += _posts(results)
    if "concurrency" in results:
        lines += _memory(results["concurrency"])
    if "delivery" in results:
        lines += _delivery(results["delivery"])
    if "tool_round" in results:
        lines += _tool_round(results["tool_round"])
    return lines


def findings(results: dict[str, Result]) -> list[str]:
    """Things this run caught the product doing wrong (checked, not assumed)."""
    out: list[str] = []
    runs = _runs(results["coalescing"]) if "coalescing" in results else []
    short = [
        r for r in runs if r["logged_posts"] is not None and r["logged_posts"] < r["delivered"]
    ]
    if short:
        worst = max(short, key=lambda r: r["delivered"] - r["logged_posts"])
        out.append(
            f"- The 'stream finished' log line undercounts `posts` in {len(short)} of "
            f"{len(runs)} streams (worst: {worst['logged_posts']} logged, "
            f"{worst['delivered']} delivered): `Relay._finish` logs it before `_close_sinks` "
            "lets the publisher's lanes drain (layers/core/streaming_proxy/relay.py). The EMF "
            "metrics, emitted after the relay returns, are not affected."
        )
    zero = [r for r in runs if r["logged_duration_ms"] == 0.0]
    if zero:
        out.append(
            f"- Its `duration_ms` is 0.0 in {len(zero)} of {len(runs)} streams: "
            "`stats.duration_ms` is set in `Relay.run` only after `_finish` has logged."
        )
    return out


def _runs(result: Result) -> list[dict[str, Any]]:
    return [run for series in result.data.values() for run in series]
