// A scripted proxy for tests/browser/test_client_protocol.py: the real web/streaming-proxy.js
// runs against a fake WebSocket whose server side the test drives message by message.
import { connect } from "/streaming-proxy.js";

// Every timer the page has pending, so a test can tell that close() leaves none behind. The
// client looks `setTimeout` up when it calls it, so wrapping the globals here is enough.
const pendingTimers = new Set();
const realSetTimeout = window.setTimeout.bind(window);
const realClearTimeout = window.clearTimeout.bind(window);
window.setTimeout = (fn, ms, ...args) => {
  const id = realSetTimeout(() => {
    pendingTimers.delete(id);
    fn(...args);
  }, ms);
  pendingTimers.add(id);
  return id;
};
window.clearTimeout = (id) => {
  pendingTimers.delete(id);
  realClearTimeout(id);
};

// What the client reports on the console, and promises it leaves rejected with nobody
// listening: a quiet outcome (a tool answer that lost to another tab) must leave neither.
const logged = [];
for (const level of ["warn", "error"]) {
  const real = console[level].bind(console);
  console[level] = (...args) => {
    logged.push(`${level}: ${args.map(String).join(" ")}`);
    real(...args);
  };
}
window.addEventListener("unhandledrejection", (event) => logged.push(`unhandled: ${event.reason}`));

const proxy = {
  client: null,
  socket: null,
  connections: 0,
  requests: [], // every message the client sent, parsed, in order
  events: [], // every event the action handlers got, as they got it
  renders: [], // every onStream call: {streamId, text, status}
  handlerText: {}, // streamId -> text a handler builds by the documented rule
  outbox: [], // replies waiting to reach the client
  answer: null, // (request) -> replies, for requests other than ping
  outcomes: [], // what onTool's onOutcome reported, with `error` as its code
  logged, // console warnings and errors, unhandled rejections

  /** A fresh client on an open fake connection; `options` go to connect(). */
  start(options = {}) {
    this.client?.close();
    Object.assign(this, { connections: 0, requests: [], events: [], renders: [], handlerText: {}, outbox: [], answer: null, outcomes: [] });
    logged.length = 0;
    this.client = connect({
      url: "ws://proxy.test",
      token: "token",
      WebSocket: FakeSocket,
      reconnect: { baseMs: 10, maxMs: 20 },
      resumeRetryMs: 50,
      stallMs: 0,
      ...options,
    });
    // A closed client's frame may still be pending: only the current client is recorded.
    const client = this.client;
    client.on("*", (event) => {
      if (this.client !== client) return;
      this.events.push(structuredClone(event));
      this.followAsAHandler(event);
    });
    client.onStream((stream) => {
      if (this.client !== client) return;
      this.renders.push({ streamId: stream.streamId, text: stream.text, status: stream.status });
    });
    this.socket.open();
  },

  /** What docs/web-client.md tells handlers to do: append deltas, replace on a snapshot. */
  followAsAHandler(event) {
    const text = this.handlerText[event.streamId] ?? "";
    if (event.type === "delta") this.handlerText[event.streamId] = text + event.content;
    if (event.type === "snapshot") this.handlerText[event.streamId] = event.content;
  },

  /** The server sends these, one WebSocket message each, then any replies they caused. */
  deliver(...messages) {
    for (const message of messages) {
      this.socket.onmessage({ data: JSON.stringify(message) });
      this.flush();
    }
  },

  queue(...replies) {
    this.outbox.push(...replies);
    queueMicrotask(() => this.flush());
  },

  flush() {
    while (this.outbox.length && this.socket?.readyState === 1) {
      this.socket.onmessage({ data: JSON.stringify(this.outbox.shift()) });
    }
  },

  /** The connection drops (as when the proxy closes it); the client reconnects by itself. */
  drop() {
    this.socket.close(1006, "dropped");
  },

  /** Answer `onTool` calls as `handler` (a function's source) does; outcomes are recorded. */
  onTool(name, handler) {
    return this.client.onTool(name, handler, {
      onOutcome: (outcome) => this.outcomes.push({ ...outcome, error: outcome.error?.code ?? null }),
    });
  },

  sent(action) {
    return this.requests.filter((r) => r.action === action);
  },

  /** The documented part of a stream's state (no `_` bookkeeping). */
  state(streamId) {
    const stream = this.client.stream(streamId);
    return stream && Object.fromEntries(Object.entries(stream).filter(([key]) => !key.startsWith("_")));
  },

  pendingTimers() {
    return pendingTimers.size;
  },

  /**
   * Deliver `arrivals` in order, answering the k-th resume with `resumeAnswers[k]` (the last one
   * again once they run out), and report what the handlers ended up with.
   */
  runScenario({ streamId, arrivals, resumeAnswers }) {
    this.start();
    let resumes = 0;
    this.answer = (request) => {
      if (request.action !== "resume") return [];
      return resumeAnswers[Math.min(resumes++, resumeAnswers.length - 1)];
    };
    this.deliver(...arrivals);
    const stream = this.state(streamId);
    const events = this.events.filter((e) => e.streamId === streamId);
    this.client.close();
    return {
      text: stream.text,
      handlerText: this.handlerText[streamId] ?? "",
      status: stream.status,
      messages: stream.messages,
      resumes: stream.resumes,
      fromSnapshot: events.some((e) => e.type === "end" && e.fromSnapshot === true),
      duplicates: stream.duplicates,
      types: events.map((e) => e.type),
      seqs: events.map((e) => e.seq),
      timersAfterClose: pendingTimers.size,
    };
  },
};

/** The client's WebSocket: what it sends is recorded (and answered), what it gets is scripted. */
class FakeSocket {
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    proxy.socket = this;
    proxy.connections += 1;
    this.connection = proxy.connections;
    queueMicrotask(() => this.open()); // as a real socket, it opens after the caller set its handlers
  }

  open() {
    if (this.readyState !== 0) return;
    this.readyState = 1;
    this.onopen?.({});
    proxy.flush();
  }

  send(data) {
    if (this.readyState !== 1) throw new Error("send on a socket that is not open");
    const request = JSON.parse(data);
    proxy.requests.push({ ...request, connection: this.connection });
    if (request.action === "ping") {
      proxy.queue({ type: "pong", connectionId: `conn-${this.connection}`, id: request.id });
    } else if (proxy.answer) {
      proxy.queue(...proxy.answer(request));
    }
  }

  close(code = 1000, reason = "") {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
}

window.proxy = proxy;
