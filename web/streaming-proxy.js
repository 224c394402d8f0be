// streaming-proxy browser client: one WebSocket, named-action dispatch, ordered
// per-stream assembly (merged messages, snapshots, resume on gaps and stalls, one `end`),
// automatic reconnects. No dependencies.
//
//   import { connect } from "./streaming-proxy.js";
//   const client = connect({ url: "wss://ws.example.com", token: () => fetchToken() });
//   client.on("onLlmMessage", (event, stream) => console.log(event.type, stream.text));
//   client.onStream((stream) => render(stream));   // at most once per animation frame
//   client.onTool("set_theme", ({ theme }) => setTheme(theme));  // answers the model's ui_ call
//   const { messages } = await client.history(threadId);  // a thread's conversation, after a reload
//   connect({ url, token, bfBridge: true });  // a Klai page: BF.processNamedAction gets each message
//
// See docs/web-client.md for the full guide.

const DEFAULTS = {
  reconnect: { baseMs: 250, maxMs: 10_000 },
  requestTimeoutMs: 10_000,
  resumeRetryMs: 1_000,
  stallMs: 15_000,
  keepaliveMs: 300_000,
  stableMs: 2_000,
};

const TERMINAL = new Set(["done", "error", "cancelled"]);
// What a final snapshot that carries no finish_reason most likely ended with.
const FINISH_OF_SNAPSHOT = { done: "stop", failed: "error", cancelled: "cancelled" };
// Replies that belong to one request; `key` picks the request they answer.
const REPLY_KIND = {
  pong: "ping",
  subscribed: "subscribe",
  unsubscribed: "unsubscribe",
  stopped: "stop",
  ack: "llmToolCallResponse",
};

// An action error names its request (`request`: its action and key fields as sent); the key
// each kind of request is matched by. Replies may come in another order than the requests:
// API Gateway hands a connection's messages to concurrent invocations.
const REQUEST_KEY = {
  subscribe: (r) => r.channel,
  unsubscribe: (r) => r.channel,
  stop: (r) => r.streamId,
  resume: (r) => r.streamId,
  ping: (r) => r.id,
  llmToolCallResponse: (r) => r.toolCallId,
  history: (r) => historyKey(r.threadId, r.cursor),
};

// Frontend tool calls this client has taken on, remembered so a replay is not answered twice.
// Ids are unique per call; a long-lived tab forgets the oldest past this many.
const REMEMBERED_TOOL_CALLS = 1_000;
// Published messages (`type: "message"`) seen, so a repeated post is not handled twice.
const REMEMBERED_MESSAGES = 1_000;
// API Gateway closes a connection that sends a frame over 32 KB (1009), and a browser sends each
// message as one frame: a larger message is never sent (it would be sent again after every
// reconnect, closing each new connection); its request is refused with `payload_too_large`.
export const MAX_SEND_BYTES = 32 * 1024;

/** The proxy's error object `{message, code (HTTP status), details, type, fields?}` as an Error;
 * `code` is the stable kind (`conflict`, `forbidden`, ...), `status` the number. */
function refusal(body) {
  const { message, code, details, type, fields } = body ?? {};
  return Object.assign(new Error(message ?? "request failed"), {
    code: type ?? "internal_error",
    type: type ?? "internal_error",
    status: typeof code === "number" ? code : 500,
    details: typeof details === "string" ? details : "",
    fields,
  });
}

const now = () => (globalThis.performance ? performance.now() : Date.now());

/** Bytes of `data` as UTF-8 (encoded only when it might be over `MAX_SEND_BYTES`). */
function oversize(data) {
  if (data.length * 3 <= MAX_SEND_BYTES) return 0;
  const bytes = new TextEncoder().encode(data).length;
  return bytes > MAX_SEND_BYTES ? bytes : 0;
}

/** The refusal of a request too large to send over the WebSocket. */
function tooLarge(kind, bytes) {
  const message = `${kind}: message of ${bytes} bytes is over the WebSocket's ${MAX_SEND_BYTES}-byte frame limit`;
  return refusal({ message, code: 413, details: "", type: "payload_too_large" });
}

/** Connect to the proxy's WebSocket; the returned client reconnects by itself. */
export function connect(options) {
  return new StreamingClient(options);
}

/** Map a snapshot's stream status onto the client's statuses. */
function statusFromSnapshot(status) {
  if (status === "done") return "done";
  if (status === "failed") return "error";
  if (status === "cancelled") return "cancelled";
  return "streaming";
}

/** The first seq a message covers: a merged delta or thinking says so with `firstSeq`. */
function firstSeqOf(message) {
  const first = message.firstSeq;
  return Number.isInteger(first) && first <= message.seq ? first : message.seq;
}

/**
 * The answer a tool handler's result makes: `data` is the result, `message` the result's own
 * `message` when it has a string one (what the model reads first), else "done".
 */
function answerOf(result) {
  try {
    JSON.stringify(result); // checked here: a result that cannot be sent must fail the call
  } catch (error) {
    throw new TypeError(`the tool's result is not JSON: ${error.message}`);
  }
  const message = typeof result?.message === "string" ? result.message : "done";
  return result === undefined ? { success: true, message } : { success: true, message, data: result };
}

/** What the model is told when a tool handler threw or rejected. */
function failureOf(error) {
  const message = typeof error?.message === "string" ? error.message : error == null ? "" : String(error);
  return { success: false, message: message || "the tool failed" };
}

function statusFromFinish(reason, hasError) {
  if (reason === "cancelled") return "cancelled";
  if (reason === "error" || hasError) return "error";
  return "done";
}

function newStream(streamId, actionName, channel) {
  return {
    streamId,
    actionName: actionName ?? null,
    channel: channel ?? null,
    text: "",
    thinking: "",
    status: "streaming",
    finishReason: null,
    usage: null,
    error: null,
    functions: [],
    toolCalls: [],
    threadInfo: null,
    lastSeq: -1,
    messages: 0,
    duplicates: 0,
    resumes: 0,
    seenAt: now(),
    firstTokenAt: null,
    ttftMs: null,
    endedAt: null,
    // Internal bookkeeping (not part of the documented state).
    _buffer: new Map(), // first seq covered -> message that arrived early
    _highestSeq: -1, // the highest seq any message said exists: above lastSeq means a gap
    _ended: false, // an `end` (live or from a final snapshot) went to the handlers
    _resumeTimer: null,
    _resumeInFlight: false,
    _resumeSentAt: 0,
    _parts: new Map(), // "seq/parts" -> (part -> content) of split snapshots being joined
    _heardAt: now(),
    _stallTimer: null,
    _bridged: 0, // characters of text handed to BF.processNamedAction (bfBridge)
  };
}


/** What matches a `history` reply to its request: the thread and the page asked for. */
function historyKey(threadId, cursor) {
  return `${threadId}@${cursor}`;
}

/** A whole `history` reply (its parts joined) as the page `client.history` resolves. */
function historyPage(reply, content) {
  const { type, part, parts, count, content: _, ...about } = reply;
  const messages = content
    .split("\n")
    .filter((line) => line)
    .map((line) => JSON.parse(line));
  return { ...about, messages };
}

/** A fresh id for one tool answer (unguessable enough to tell two tabs apart). */
function newAnswerId() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  return `a${Date.now().toString(36)}${Math.random().toString(36).slice(2)}`;
}
export class StreamingClient {
  constructor({ url, token, onStatus, reconnect, WebSocket: Impl, ...rest } = {}) {
    if (!url) throw new TypeError("connect: url is required");
    this.url = url;
    this._token = token;
    this._onStatus = onStatus ?? null;
    this._options = { ...DEFAULTS, ...rest, reconnect: { ...DEFAULTS.reconnect, ...reconnect } };
    this._WebSocket = Impl ?? globalThis.WebSocket;
    this.status = "connecting";
    this.connectionId = null;
    this.streams = new Map();
    this._actions = new Map(); // actionName | "*" -> Set(handler)
    this._tools = new Map(); // tool name as registered -> {handler, onOutcome}
    this._toolCallsTaken = new Set(); // toolCallIds this client ran a handler for
    this._messagesSeen = new Set(); // ids of published messages already handled
    this._historyParts = new Map(); // "threadId@cursor" -> (part -> content) of a split history reply
    this._streamListeners = new Set();
    this._channels = new Map(); // extra channel -> token
    this._left = new Set(); // channels left with unsubscribe (rejoined by a new token otherwise)
    this._pending = new Set(); // requests waiting for their reply
    this._sent = []; // requests on the wire, in order: error replies answer the oldest
    this._dirty = new Set();
    this._frame = null;
    this._attempt = 0;
    this._socket = null;
    this._closed = false;
    this._timers = new Map(); // name -> timeout id
    this._pingId = 0;
    this._open();
  }

  // ---- public API -------------------------------------------------------------------

  /** Handle every event of streams sent with `actionName` ("*" for all). Returns an unsubscribe. */
  on(actionName, handler) {
    if (!this._actions.has(actionName)) this._actions.set(actionName, new Set());
    this._actions.get(actionName).add(handler);
    return () => this._actions.get(actionName)?.delete(handler);
  }

  /**
   * Run `handler(arguments, event)` for each frontend tool call named `name` (with or without
   * its `ui_` prefix) and answer it: the result (or what its promise resolves to) is sent with
   * `success: true`, a throw or rejection with `success: false` and the error's message. Each
   * call is answered at most once by this client. One handler per name: registering a name again
   * replaces the handler. `onOutcome` hears what became of each answer. Returns an unsubscribe.
   */
  onTool(name, handler, { onOutcome } = {}) {
    const tool = { handler, onOutcome: onOutcome ?? null };
    this._tools.set(name, tool);
    return () => {
      if (this._tools.get(name) === tool) this._tools.delete(name);
    };
  }

  /** Called with each changed stream, batched to at most once per animation frame. */
  onStream(handler) {
    this._streamListeners.add(handler);
    return () => this._streamListeners.delete(handler);
  }

  /** The state of one stream, or undefined. */
  stream(streamId) {
    return this.streams.get(streamId);
  }

  /** Follow a stream known by id (after a page reload, say): fetch its snapshot, then live. */
  resume(streamId, { actionName, channel } = {}) {
    let stream = this.streams.get(streamId);
    if (!stream) {
      stream = newStream(streamId, actionName, channel);
      this.streams.set(streamId, stream);
    }
    this._heard(stream);
    this._askResumeNow(stream);
    return stream;
  }

  /** Stop a stream on one of this connection's channels: resolves {status, streamStatus}. */
  stop(streamId) {
    return this._request({ action: "stop", streamId }, "stop", streamId).then((reply) => ({
      status: reply.type, // "stopped" | "not_found"
      streamStatus: reply.streamStatus ?? null, // its state when the stop arrived
    }));
  }

  /** Join one more channel; it is joined again after every reconnect. */
  subscribe(channel, token) {
    const bytes = oversize(JSON.stringify({ action: "subscribe", channel, token }));
    if (bytes) return Promise.reject(tooLarge("subscribe", bytes)); // not rejoined either
    this._channels.set(channel, token);
    this._left.delete(channel);
    return this._request({ action: "subscribe", channel, token }, "subscribe", channel);
  }

  /** Leave a channel (also one from the connect token) for the life of this client. */
  unsubscribe(channel) {
    this._channels.delete(channel);
    this._left.add(channel);
    return this._request({ action: "unsubscribe", channel }, "unsubscribe", channel);
  }

  /**
   * Answer a frontend (`ui_`) tool call; resolves on the proxy's ack. Extra keys go to the model
   * with the answer. Rejects with `error.code` "conflict" when the call was answered already
   * (by another tab, even with the same answer).
   */
  llmToolCallResponse({ toolCallId, success, message, data, answerId, ...extra }) {
    // answerId stays the same on a resend after a reconnect: the proxy then knows the answer
    // it recorded is this tab's own, while another tab answering the same call learns it lost.
    const body = {
      ...extra,
      action: "llmToolCallResponse",
      toolCallId,
      success: !!success,
      message: message ?? "",
      answerId: answerId ?? newAnswerId(),
    };
    if (data !== undefined) body.data = data;
    return this._request(body, "llmToolCallResponse", toolCallId);
  }

  /**
   * A page of a thread's messages, oldest first (OpenAI's message shape), for a thread that
   * published to one of this connection's channels: resolves {threadId, messages, cursor,
   * nextCursor, createdAt, updatedAt, activeRun}. Rejects with `error.code` "not_found" for any
   * other thread (unknown, another app's, or never on these channels). Ask again with
   * `{cursor: page.nextCursor}` while `nextCursor` is not null.
   */
  history(threadId, { cursor = 0, limit } = {}) {
    const body = { action: "history", threadId, cursor: String(cursor ?? 0) };
    if (limit !== undefined) body.limit = limit;
    return this._request(body, "history", historyKey(threadId, body.cursor));
  }

  /** Round trip to the proxy: resolves {connectionId, rttMs}. */
  ping() {
    const id = `p${++this._pingId}`;
    const started = now();
    return this._request({ action: "ping", id }, "ping", id).then((pong) => ({
      connectionId: pong.connectionId ?? null,
      rttMs: now() - started,
    }));
  }

  /** Close for good: no more reconnects; pending requests are rejected. */
  close() {
    this._closed = true;
    for (const timer of this._timers.values()) clearTimeout(timer);
    this._timers.clear();
    for (const stream of this.streams.values()) this._clearStreamTimers(stream);
    for (const request of [...this._pending]) this._settle(request, new Error("client closed"));
    if (this._socket) this._socket.close(1000, "client closed");
    this._setStatus("closed");
  }

  // ---- connection lifecycle ---------------------------------------------------------

  async _open() {
    if (this._closed) return;
    let token;
    try {
      token = typeof this._token === "function" ? await this._fetchToken() : this._token;
    } catch (error) {
      if (this._closed) return;
      this._setStatus("reconnecting", { error });
      return this._scheduleReconnect();
    }
    if (this._closed) return;
    const sep = this.url.includes("?") ? "&" : "?";
    const url = token ? `${this.url}${sep}token=${encodeURIComponent(token)}` : this.url;
    const socket = new this._WebSocket(url);
    this._socket = socket;
    let openedAt = null;
    socket.onopen = () => {
      openedAt = now();
      this._onOpen();
    };
    socket.onmessage = (event) => this._onRaw(event.data);
    socket.onclose = (event) => {
      if (this._socket !== socket) return;
      this._socket = null;
      this.connectionId = null;
      this._clearTimer("keepalive");
      if (openedAt !== null && now() - openedAt >= this._options.stableMs) this._attempt = 0;
      this._sent = [];
      for (const request of this._pending) request.onWire = false;
      if (this._closed) return;
      this._setStatus("reconnecting", { code: event.code, reason: event.reason });
      this._scheduleReconnect();
    };
  }

  /**
   * The token function's answer, given `requestTimeoutMs`: one that never settles (a token fetch
   * hanging on a dead network) would leave the client connecting forever; it is asked again.
   */
  _fetchToken() {
    const ms = this._options.requestTimeoutMs;
    let timer;
    const late = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`token: no answer within ${ms} ms`)), ms);
    });
    return Promise.race([Promise.resolve().then(() => this._token()), late]).finally(() => clearTimeout(timer));
  }

  _scheduleReconnect() {
    const { baseMs, maxMs } = this._options.reconnect;
    const ceiling = Math.min(maxMs, baseMs * 2 ** this._attempt);
    this._attempt += 1;
    // "Equal jitter": at least half the step, so a crowd of tabs spreads out but never spins.
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this._later("reconnect", delay, () => this._open());
  }

  _onOpen() {
    this._setStatus("open");
    for (const [channel, token] of this._channels) {
      this._send({ action: "subscribe", channel, token }, "subscribe", channel);
    }
    for (const channel of this._left) this._send({ action: "unsubscribe", channel }, "unsubscribe", channel);
    for (const stream of this.streams.values()) {
      if (!this._settled(stream)) {
        stream._resumeInFlight = false;
        this._askResumeNow(stream); // on the new connection
      }
    }
    // Requests made while offline (stop, tool answers, pings) go out now.
    for (const request of this._pending) {
      const rejoined = request.kind === "subscribe" || request.kind === "unsubscribe";
      if (!request.onWire && !rejoined) this._transmit(request);
    }
    this.ping().then(
      ({ connectionId }) => {
        this.connectionId = connectionId;
        this._setStatus("open", { connectionId });
      },
      () => {},
    );
    this._keepalive();
  }

  _keepalive() {
    this._later("keepalive", this._options.keepaliveMs, () => {
      if (this._socket?.readyState === 1) this.ping().catch(() => {});
      this._keepalive();
    });
  }

  _setStatus(status, detail = {}) {
    this.status = status;
    try {
      this._onStatus?.(status, detail);
    } catch (error) {
      // The app's callback: reconnects, rejoins and resumes go on whatever it does.
      console.error("streaming-proxy: onStatus failed", error);
    }
  }

  _later(name, ms, fn) {
    this._clearTimer(name);
    this._timers.set(
      name,
      setTimeout(() => {
        this._timers.delete(name);
        fn();
      }, ms),
    );
  }

  _clearTimer(name) {
    clearTimeout(this._timers.get(name));
    this._timers.delete(name);
  }

  // ---- requests and replies ---------------------------------------------------------

  /** True once on the wire; false while offline, and for a message too large ever to send. */
  _send(body, kind, key) {
    if (this._socket?.readyState !== 1) return false;
    const data = JSON.stringify(body);
    if (oversize(data)) return false; // refused by `_request`; a resume or rejoin is skipped
    this._socket.send(data);
    this._sent.push({ kind, key });
    return true;
  }

  _transmit(request) {
    request.onWire = this._send(request.body, request.kind, request.key);
  }

  _request(body, kind, key) {
    if (this._closed) return Promise.reject(new Error(`${kind}: client closed`));
    const bytes = oversize(JSON.stringify(body));
    if (bytes) return Promise.reject(tooLarge(kind, bytes));
    return new Promise((resolve, reject) => {
      const request = { body, kind, key, resolve, reject, onWire: false, timer: null };
      request.timer = setTimeout(() => {
        // Given up on: it leaves the queue replies are matched against, so an error naming no
        // request (API Gateway's own) is not taken for it.
        const at = request.onWire ? this._sent.findIndex((s) => s.kind === kind && s.key === key) : -1;
        if (at >= 0) this._sent.splice(at, 1);
        this._settle(request, new Error(`${kind}: no reply within ${this._options.requestTimeoutMs} ms`));
      }, this._options.requestTimeoutMs);
      this._pending.add(request);
      this._transmit(request);
    });
  }

  _settle(request, error, reply) {
    if (!this._pending.delete(request)) return;
    clearTimeout(request.timer);
    if (error) request.reject(error);
    else request.resolve(reply);
  }

  /** Resolve (or reject) every waiting request of that kind and key. */
  _answer(kind, key, reply, error) {
    const at = this._sent.findIndex((s) => s.kind === kind && s.key === key);
    if (at >= 0) this._sent.splice(at, 1);
    for (const request of [...this._pending]) {
      if (request.kind === kind && request.key === key) this._settle(request, error, reply);
    }
  }

  _onRaw(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (!message || typeof message !== "object") return;
    if (message.type === "message" && typeof message.streamId === "string") return this._onPublished(message);
    if (typeof message.seq === "number" && message.streamId && message.type !== "snapshot") {
      this._onEnvelope(message);
      return;
    }
    const type = message.type;
    if (type === "snapshot") return this._onSnapshotPart(message);
    if (type === "history") return this._onHistoryPart(message);
    if (type === "not_found") return this._onNotFound(message);
    if (type === "pong") return this._answer("ping", message.id, message);
    if (type === "stopped") return this._answer("stop", message.streamId, message);
    if (type === "ack") return this._answer("llmToolCallResponse", message.toolCallId, message);
    if (REPLY_KIND[type]) return this._answer(REPLY_KIND[type], message.channel, message);
    if (type === "error" || (type === undefined && message.message)) return this._onErrorReply(message);
  }

  _onErrorReply(message) {
    // An error answers the request it names; one naming none (API Gateway's own "Internal
    // server error") answers the oldest request on the wire.
    const named = message.request;
    const keyOf = Object.hasOwn(REQUEST_KEY, named?.action) ? REQUEST_KEY[named.action] : null;
    const at = keyOf ? this._sent.findIndex((s) => s.kind === named.action && s.key === keyOf(named)) : -1;
    // One naming a request this client never makes answers none of its requests.
    const unnamed = named === undefined || named === null;
    const head = at >= 0 ? this._sent.splice(at, 1)[0] : unnamed ? this._sent.shift() : null;
    const body = message.error ?? { message: message.message, code: 500, details: "", type: "internal_error" };
    const error = refusal(body);
    if (!head) return;
    if (head.kind === "resume") {
      const stream = this.streams.get(head.key);
      if (stream) this._failResume(stream, body);
      return;
    }
    for (const request of [...this._pending]) {
      if (request.kind === head.kind && request.key === head.key) return this._settle(request, error);
    }
  }

  /** A `history` reply, or a part of one: the request settles once every part is in. */
  _onHistoryPart(message) {
    const key = historyKey(message.threadId, message.cursor);
    const count = message.parts > 1 ? message.parts : 1;
    let pieces = this._historyParts.get(key);
    if (!pieces || pieces.has(message.part ?? 0)) {
      pieces = new Map(); // a part seen twice: another copy began, start over
      this._historyParts.set(key, pieces);
    }
    pieces.set(message.part ?? 0, message.content ?? "");
    if (pieces.size < count) return;
    this._historyParts.delete(key);
    const content = Array.from({ length: count }, (_, i) => pieces.get(i) ?? "").join("");
    let page;
    try {
      page = historyPage(message, content);
    } catch (error) {
      return this._answer("history", key, null, refusal({ message: `history unreadable: ${error.message}` }));
    }
    this._answer("history", key, page);
  }

  _onNotFound(message) {
    if (message.threadId !== undefined) {
      const at = this._sent.findIndex((s) => s.kind === "history" && s.key.startsWith(`${message.threadId}@`));
      if (at < 0) return;
      const { key } = this._sent[at];
      const gone = { message: `thread ${message.threadId} not found`, code: 404, details: "", type: "not_found" };
      return this._answer("history", key, null, refusal(gone));
    }
    const at = this._sent.findIndex((s) => (s.kind === "stop" || s.kind === "resume") && s.key === message.streamId);
    const head = at >= 0 ? this._sent.splice(at, 1)[0] : null;
    if (head?.kind === "resume") {
      const stream = this.streams.get(message.streamId);
      if (stream) this._failResume(stream, { message: "stream not found", code: 404, details: "", type: "not_found" });
      return;
    }
    for (const request of [...this._pending]) {
      if (request.kind === "stop" && request.key === message.streamId) this._settle(request, null, message);
    }
  }

  // ---- per-stream assembly ----------------------------------------------------------

  _streamFor(message) {
    let stream = this.streams.get(message.streamId);
    if (!stream) {
      stream = newStream(message.streamId, message.actionName, message.channel);
      this.streams.set(message.streamId, stream);
    }
    stream.actionName ??= message.actionName ?? null;
    stream.channel ??= message.channel ?? null;
    return stream;
  }

  _onEnvelope(message) {
    const stream = this._streamFor(message);
    stream.messages += 1;
    this._heard(stream);
    const first = firstSeqOf(message);
    stream._highestSeq = Math.max(stream._highestSeq, message.seq);
    const held = stream._buffer.get(first);
    if (stream._ended || message.seq <= stream.lastSeq || (held && held.seq >= message.seq)) {
      stream.duplicates += 1;
      return;
    }
    if (first === stream.lastSeq + 1) {
      this._apply(stream, message);
      this._drain(stream);
    } else if (first > stream.lastSeq + 1) {
      if (held) stream.duplicates += 1; // a wider copy of the same start replaces the held one
      stream._buffer.set(first, message);
      this._askResume(stream);
    } else {
      // Partly held already (first <= lastSeq < seq): merged text cannot be cut at a seq, so
      // hold nothing; a snapshot reaching `seq` brings the rest (the gap keeps resume asking).
      this._askResume(stream);
    }
    this._touch(stream);
  }

  _drain(stream) {
    for (let next = stream._buffer.get(stream.lastSeq + 1); next; next = stream._buffer.get(stream.lastSeq + 1)) {
      stream._buffer.delete(stream.lastSeq + 1);
      this._apply(stream, next);
    }
    // Anything left starting at or below lastSeq is known already or overlaps it partly; neither
    // can be applied now. A partial overlap leaves `_highestSeq` above lastSeq, so resume goes on.
    for (const first of stream._buffer.keys()) if (first <= stream.lastSeq) stream._buffer.delete(first);
  }

  _apply(stream, message) {
    stream.lastSeq = message.seq;
    this._applyEvent(stream, message);
  }

  /**
   * Fold one event into the stream's state, then hand it to the action handlers. `over`: the
   * stream had ended by then (a final snapshot covers the event), so a tool call is not run.
   */
  _applyEvent(stream, message, { over = false } = {}) {
    switch (message.type) {
      case "delta":
        stream.text += message.content ?? "";
        this._markFirstToken(stream);
        break;
      case "thinking":
        stream.thinking += message.content ?? "";
        break;
      case "threadInfo":
        stream.threadInfo = message.content ?? null;
        break;
      case "function_call":
        stream.functions = message.content?.functions ?? [];
        break;
      case "llmToolCall":
        stream.toolCalls.push({ toolCallId: message.toolCallId, toolName: message.toolName, arguments: message.arguments });
        break;
      case "error":
        stream.error = message.error ?? { message: "stream failed" };
        break;
      case "end":
        this._finish(stream, message.finish_reason ?? null, message.usage ?? null);
        break;
      default:
        break;
    }
    this._dispatch(stream, message);
    if (message.type === "llmToolCall" && !over) this._runTool(stream, message);
  }

  /**
   * A tab that joined while the stream waits for a frontend tool gets the waiting calls with
   * its catch-up snapshot (their seq is below the snapshot's): handlers and `onTool` get them
   * as if live, once each, so this tab can answer too.
   */
  _applyPendingCalls(stream, calls) {
    for (const call of Array.isArray(calls) ? calls : []) {
      if (call?.type !== "llmToolCall" || stream.toolCalls.some((c) => c.toolCallId === call.toolCallId)) continue;
      this._applyEvent(stream, call);
    }
  }

  _markFirstToken(stream) {
    if (stream.firstTokenAt === null && stream.text) {
      stream.firstTokenAt = now();
      stream.ttftMs = stream.firstTokenAt - stream.seenAt;
    }
  }

  _finish(stream, finishReason, usage) {
    stream.finishReason = finishReason;
    stream.usage = usage;
    stream.status = statusFromFinish(finishReason, stream.error !== null);
    stream.endedAt ??= now();
    stream._ended = true;
    stream._buffer.clear();
    stream._parts.clear();
    this._clearStreamTimers(stream);
  }

  /** Ended, or given up on (its resume found no such stream): nothing more is asked for it. */
  _settled(stream) {
    return stream._ended || TERMINAL.has(stream.status);
  }

  _clearStreamTimers(stream) {
    clearTimeout(stream._resumeTimer);
    stream._resumeTimer = null;
    clearTimeout(stream._stallTimer);
    stream._stallTimer = null;
  }

  /**
   * A message a backend published (`POST /message/send`): a stream of one, with no state to
   * keep and no `end` to wait for. Handlers get it once, with `stream` null.
   */
  _onPublished(message) {
    if (this._messagesSeen.has(message.streamId)) return;
    this._messagesSeen.add(message.streamId);
    if (this._messagesSeen.size > REMEMBERED_MESSAGES) {
      this._messagesSeen.delete(this._messagesSeen.values().next().value);
    }
    this._dispatchTo(message.actionName, message, null);
  }

  _dispatch(stream, event) {
    this._dispatchTo(stream.actionName, event, stream);
  }

  _dispatchTo(actionName, event, stream) {
    if (this._options.bfBridge) this._bridge(actionName, event, stream);
    for (const name of [actionName, "*"]) {
      for (const handler of this._actions.get(name) ?? []) {
        try {
          handler(event, stream);
        } catch (error) {
          console.error("streaming-proxy: action handler failed", error);
        }
      }
    }
  }

  /**
   * The Klai runtime bridge (`bfBridge: true`): every message goes to the page's named action,
   * `BF.processNamedAction(actionName, message)`, as Klai's own messaging does, so an existing
   * Klai page runs unchanged. A snapshot becomes the `delta` of the text the page has not had
   * yet (Klai pages append deltas and know no snapshots). Nothing happens while the runtime is
   * absent; it is looked up per message, so it may load after the client.
   */
  _bridge(actionName, event, stream) {
    const runtime = globalThis.BF;
    if (typeof runtime?.processNamedAction !== "function") return;
    let message = event;
    if (stream && event.type === "delta") {
      stream._bridged += (event.content ?? "").length;
    } else if (stream && event.type === "snapshot") {
      const text = event.content ?? "";
      const missing = text.slice(stream._bridged);
      stream._bridged = text.length;
      if (!missing) return;
      const { actionName, channel, streamId, seq } = event;
      message = { actionName, channel, streamId, seq, type: "delta", content: missing, fromSnapshot: true };
    }
    try {
      runtime.processNamedAction(message.actionName ?? actionName, { ...message });
    } catch (error) {
      console.error("streaming-proxy: BF.processNamedAction failed", error);
    }
  }

  // ---- frontend tools -------------------------------------------------------------------

  /** A frontend tool call arrived: run its `onTool` handler, if there is one, and answer once. */
  _runTool(stream, event) {
    const { toolCallId, toolName } = event;
    // No handler: the page answers itself (an `on` handler), or another tab does.
    const tool = this._tools.get(toolName) ?? this._tools.get(`ui_${toolName}`);
    if (!tool || typeof toolCallId !== "string" || this._toolCallsTaken.has(toolCallId)) return;
    this._toolCallsTaken.add(toolCallId);
    if (this._toolCallsTaken.size > REMEMBERED_TOOL_CALLS) {
      this._toolCallsTaken.delete(this._toolCallsTaken.values().next().value);
    }
    const call = { toolCallId, toolName, streamId: stream.streamId };
    // In a microtask: the action handlers have seen the event first, and a handler that calls
    // the client cannot disturb the message being applied.
    Promise.resolve()
      .then(() => tool.handler(event.arguments, event))
      .then(answerOf)
      .catch(failureOf)
      .then((answer) => this._answerTool(call, answer, tool.onOutcome));
  }

  async _answerTool(call, answer, onOutcome, shortened = false) {
    let status = "accepted";
    let error = null;
    try {
      await this.llmToolCallResponse({ toolCallId: call.toolCallId, ...answer });
    } catch (refused) {
      if (refused.type === "payload_too_large" && !shortened) {
        // Nothing was recorded: say so now rather than leave the model waiting for the timeout.
        const tooLarge = { success: false, message: `the tool's result is too large to send: ${refused.message}` };
        return this._answerTool(call, tooLarge, onOutcome, true);
      }
      // "conflict": the call was answered already (another tab, or this one before a reconnect).
      status = refused.type === "conflict" ? "conflict" : "failed";
      error = refused;
    }
    const outcome = { ...call, status, ...answer, error };
    if (!onOutcome) {
      if (status === "failed" && !this._closed) console.warn(`streaming-proxy: tool ${call.toolName} was not answered`, error);
      return;
    }
    try {
      onOutcome(outcome);
    } catch (failure) {
      console.error("streaming-proxy: onOutcome failed", failure);
    }
  }

  // ---- resume -------------------------------------------------------------------------

  _askResume(stream, { stalled = false } = {}) {
    if (stream._resumeTimer || this._settled(stream)) return;
    // A resume whose reply never came does not block the next one forever; after a stall
    // (nothing at all for stallMs) it is taken for lost at once.
    const waiting =
      stream._resumeInFlight && !stalled && now() - stream._resumeSentAt < this._options.requestTimeoutMs;
    if (waiting || this._socket?.readyState !== 1) return; // asked again on open
    if (stream._resumeInFlight) {
      // Forget the lost one, so it does not stand at the head of the queue that matches replies.
      const lost = this._sent.findIndex((s) => s.kind === "resume" && s.key === stream.streamId);
      if (lost >= 0) this._sent.splice(lost, 1);
    }
    stream._resumeInFlight = true;
    stream._resumeSentAt = now();
    stream.resumes += 1;
    this._send({ action: "resume", streamId: stream.streamId, afterSeq: stream.lastSeq }, "resume", stream.streamId);
  }

  /** Ask now, not at a retry already timed (after a failed resume). */
  _askResumeNow(stream) {
    clearTimeout(stream._resumeTimer);
    stream._resumeTimer = null;
    this._askResume(stream);
  }

  /** Ask again after `resumeRetryMs`: while a gap remains, or (`always`) while not settled. */
  _retryResume(stream, { always = false } = {}) {
    clearTimeout(stream._resumeTimer);
    stream._resumeTimer = setTimeout(() => {
      stream._resumeTimer = null;
      if (always || this._hasGap(stream)) this._askResume(stream);
    }, this._options.resumeRetryMs);
  }

  _hasGap(stream) {
    return stream._highestSeq > stream.lastSeq && !this._settled(stream);
  }

  _failResume(stream, error) {
    stream._resumeInFlight = false;
    stream._parts.clear();
    if (stream.lastSeq >= 0 && !this._hasGap(stream)) return; // live messages carry on
    if (error.type !== "not_found") {
      // Unavailable, throttled, an internal error: the stream may well be there, and every
      // action is safe to repeat. Asked again shortly; nothing is given up.
      this._retryResume(stream, { always: stream.lastSeq < 0 });
      return;
    }
    stream.error = error;
    stream.status = "error";
    stream.endedAt ??= now();
    this._clearStreamTimers(stream);
    this._touch(stream);
  }

  // ---- stall watch --------------------------------------------------------------------

  /** Something arrived for the stream: its stall clock starts again. */
  _heard(stream) {
    stream._heardAt = now();
    this._watchStall(stream, this._options.stallMs);
  }

  // One timer per stream, not re-armed per message (there can be hundreds a second): when it
  // fires it looks at how long the stream has been quiet and either asks resume or waits on.
  // Asking recovers an `end` (or anything else) that was lost without leaving a gap to see.
  _watchStall(stream, ms) {
    const { stallMs } = this._options;
    if (stream._stallTimer || !(stallMs > 0) || this._closed || this._settled(stream)) return;
    stream._stallTimer = setTimeout(() => {
      stream._stallTimer = null;
      if (this._closed || this._settled(stream)) return;
      const quiet = now() - stream._heardAt;
      if (quiet >= stallMs) this._askResume(stream, { stalled: true });
      this._watchStall(stream, quiet >= stallMs ? stallMs : stallMs - quiet);
    }, ms);
  }

  // ---- snapshots ----------------------------------------------------------------------

  _onSnapshotPart(message) {
    const stream = this._streamFor(message);
    this._heard(stream);
    const snapshot = this._joinParts(stream, message);
    if (!snapshot) return;
    // A pushed catch-up (this connection joined a channel mid-stream) says so with `catchUp` and
    // answers no request; any other snapshot answers this stream's resume on the wire (whatever
    // requests sent before it are still waiting for their replies) and settles it.
    const at = snapshot.catchUp ? -1 : this._sent.findIndex((s) => s.kind === "resume" && s.key === stream.streamId);
    if (at >= 0) {
      this._sent.splice(at, 1);
      stream._resumeInFlight = false;
    }
    this._applySnapshot(stream, snapshot);
  }

  /** The whole snapshot once all its parts are in, else null. */
  _joinParts(stream, message) {
    if (!(message.parts > 1)) return message;
    const { part, parts } = message;
    if (!Number.isInteger(part) || part < 0 || part >= parts) return null; // no such part
    // A pushed catch-up and a resume reply are two copies: each is joined apart.
    const key = `${message.seq}/${parts}/${message.catchUp ? "pushed" : "asked"}`;
    let pieces = stream._parts.get(key);
    const content = message.content ?? "";
    // The same part again: the same copy repeated (kept as it is), or another copy of this
    // snapshot cut at other places (begun afresh rather than mixed with the first).
    if (!pieces || (pieces.has(part) && pieces.get(part) !== content)) {
      pieces = new Map();
      stream._parts.set(key, pieces);
    }
    pieces.set(part, content);
    if (pieces.size < parts) return null;
    stream._parts.delete(key);
    const { part: _part, parts: _parts, ...whole } = message;
    return { ...whole, content: Array.from({ length: parts }, (_, i) => pieces.get(i)).join("") };
  }

  _applySnapshot(stream, snapshot) {
    const status = statusFromSnapshot(snapshot.status);
    const final = status !== "streaming";
    // Never rewind: a snapshot older than what is held (the stored one lags up to a second), or
    // one after `end`, brings nothing. A final one at exactly the seq held still ends the stream.
    const advances = snapshot.seq > stream.lastSeq || (final && snapshot.seq === stream.lastSeq);
    if (!stream._ended && final && !advances) {
      // A stream lost and ended by the proxy (a dead letter) numbers its `error` and `end`
      // from the seq it had stored, below what this tab held: those came as duplicates and
      // were dropped, and this is how the tab learns the end. Its text stays the longer.
      this._endFromSnapshot(stream, { ...snapshot, seq: stream.lastSeq }, status);
    } else if (!stream._ended && advances) {
      this._applyCovered(stream, snapshot.seq, final);
      stream.text = snapshot.content ?? "";
      stream.lastSeq = snapshot.seq;
      this._markFirstToken(stream);
      this._dispatch(stream, snapshot);
      if (final) this._endFromSnapshot(stream, snapshot, status);
      else this._applyPendingCalls(stream, snapshot.pendingToolCalls);
    }
    if (!stream._ended) {
      this._drain(stream);
      // The stored snapshot is written about once a second: a gap may remain for a moment.
      if (this._hasGap(stream)) this._retryResume(stream);
    }
    this._touch(stream);
  }

  /**
   * Held messages a snapshot up to `seq` covers. Their text is in the snapshot, but what it does
   * not restore (a tool call to run, an error, thinking, function_call) would be lost if they were
   * dropped, so those reach the handlers first, in seq order. A covered `end` is dropped: a
   * snapshot covering it is final and ends the stream itself. Under a final snapshot a tool call
   * is long settled (the stream went on past it), so it is passed on but not run.
   */
  _applyCovered(stream, seq, final) {
    const covered = [...stream._buffer].filter(([, m]) => m.seq <= seq).sort(([a], [b]) => a - b);
    for (const [first, message] of covered) {
      stream._buffer.delete(first);
      if (message.type !== "delta" && message.type !== "end") this._applyEvent(stream, message, { over: final });
    }
  }

  /** A final snapshot ended the stream: handlers get the one `end` they would have had live. */
  _endFromSnapshot(stream, snapshot, status) {
    const finishReason = snapshot.finish_reason ?? FINISH_OF_SNAPSHOT[snapshot.status];
    const usage = snapshot.usage ?? null;
    if (status === "error" && !stream.error) stream.error = { message: "stream failed" };
    this._finish(stream, finishReason, usage);
    stream.status = status;
    this._dispatch(stream, {
      type: "end",
      actionName: snapshot.actionName ?? stream.actionName,
      channel: snapshot.channel ?? stream.channel,
      streamId: stream.streamId,
      seq: snapshot.seq,
      finish_reason: finishReason,
      usage,
      fromSnapshot: true,
    });
  }

  // ---- render batching ----------------------------------------------------------------

  _touch(stream) {
    this._dirty.add(stream);
    if (this._frame !== null) return;
    const flush = () => {
      this._frame = null;
      const changed = [...this._dirty];
      this._dirty.clear();
      for (const s of changed) {
        for (const listener of this._streamListeners) {
          try {
            listener(s);
          } catch (error) {
            console.error("streaming-proxy: stream listener failed", error);
          }
        }
      }
    };
    this._frame = globalThis.requestAnimationFrame ? requestAnimationFrame(flush) : setTimeout(flush, 16);
  }
}
