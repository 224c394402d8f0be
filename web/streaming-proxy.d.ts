// Types for streaming-proxy.js, the browser client of the streaming proxy.

export type StreamStatus = "streaming" | "done" | "error" | "cancelled";
export type ConnectionStatus = "connecting" | "open" | "reconnecting" | "closed";
export type FinishReason = "stop" | "length" | "tool_calls" | "content_filter" | "cancelled" | "error";

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** true when the provider sent no counts and the proxy estimated them */
  estimated?: boolean;
}

/** One entry of a `function_call` event: a tool the model asked for (`ui_` name as asked). */
export interface FunctionSummary {
  name: string;
  /** the call's `userMessage` argument, for the page to show while it runs */
  userMessage: string | null;
  arguments?: unknown;
  toolCallId?: string;
}

export interface ToolCallEvent {
  toolCallId: string;
  toolName: string;
  arguments: unknown;
}

/** An `llmToolCall` envelope: the model called frontend tool `ui_<toolName>`. */
export interface LlmToolCallEvent extends StreamEvent {
  type: "llmToolCall";
  /** the same as `type`: Klai page handlers test `event.action` */
  action: "llmToolCall";
  toolCallId: string;
  /** the tool's name without its `ui_` prefix */
  toolName: string;
  /** parsed arguments (the raw string when the model sent no JSON object) */
  arguments: any;
  functions: { name: string; arguments: unknown }[];
}

/**
 * Runs a frontend tool: the result (or what its promise resolves to) is the answer's `data`, and
 * its `message` when it has a string one; a throw or rejection answers `success: false`.
 */
export type ToolHandler<Args = any, Result = unknown> = (args: Args, event: LlmToolCallEvent) => Result | Promise<Result>;

/** What became of an answer `onTool` sent. */
export interface ToolOutcome {
  toolCallId: string;
  toolName: string;
  streamId: string;
  /**
   * accepted: the proxy took this answer; conflict: the call had been answered already (another
   * tab was first); failed: the answer was refused or never acknowledged (see `error`)
   */
  status: "accepted" | "conflict" | "failed";
  /** the answer as sent */
  success: boolean;
  message: string;
  data?: unknown;
  error: Refusal | null;
}

/**
 * The proxy's error object, on HTTP answers, `error` events and action errors: Klai's
 * `message`, numeric `code` (the HTTP status, or the provider's own) and `details`, plus the
 * stable `type` and, for invalid fields, `fields`.
 */
export interface ProxyErrorBody {
  message: string;
  code: number;
  details: string;
  type: string;
  fields?: { field: string; message: string }[];
}

/** A refused request: `code` is the stable kind ("conflict", "forbidden", ...), `status` the number. */
export type Refusal = Error & {
  code: string;
  type: string;
  status: number;
  details: string;
  fields?: { field: string; message: string }[];
};

/** A message a backend published with `POST /message/send`: one message, no `end` follows. */
export interface PublishedMessage {
  actionName: string;
  channel: string;
  /** `msg_...`: the message's own id */
  streamId: string;
  seq: 0;
  type: "message";
  /** the JSON the backend sent, as sent */
  message: unknown;
}

/** A frontend tool's answer (`llmToolCallResponse`); extra keys reach the model too. */
export interface ToolResponse {
  toolCallId: string;
  success: boolean;
  message: string;
  data?: unknown;
  /** The sender's id for this answer (not passed to the model); the client sets one. */
  answerId?: string;
  [extra: string]: unknown;
}

/** One envelope as the proxy sends it (every field but the common ones depends on `type`). */
export interface StreamEvent {
  actionName: string;
  channel: string;
  streamId: string;
  /** the last seq this message covers */
  seq: number;
  /** on a joined `delta` or `thinking` only (a coalescing window, or a backlog): the first seq it covers (`content` holds them all) */
  firstSeq?: number;
  type: "threadInfo" | "delta" | "thinking" | "function_call" | "llmToolCall" | "error" | "end" | string;
  content?: any;
  finish_reason?: FinishReason;
  usage?: Usage;
  error?: ProxyErrorBody;
  /** on `llmToolCall`: "llmToolCall" (Klai page handlers test `action`) */
  action?: string;
  toolCallId?: string;
  toolName?: string;
  arguments?: unknown;
  functions?: { name: string; arguments: unknown }[];
  /** on the one `end` the client makes from a final snapshot (the live `end` was not seen) */
  fromSnapshot?: true;
}

/**
 * All text up to `seq`, after its parts are joined: the answer to a resume (the client's own,
 * or after a reconnect) or pushed when this connection joined a channel mid-stream.
 * A handler REPLACES its text with `content`.
 */
export interface SnapshotEvent {
  type: "snapshot";
  actionName: string;
  channel: string;
  streamId: string;
  seq: number;
  content: string;
  status: "pending" | "streaming" | "done" | "failed" | "cancelled";
  /** pushed unasked when this connection joined a channel mid-stream (not a resume answer) */
  catchUp?: true;
  /** on a catch-up while the stream waits for frontend tools: the waiting `llmToolCall`s */
  pendingToolCalls?: LlmToolCallEvent[];
  finish_reason?: FinishReason;
  usage?: Usage;
  /** the answer passed ~300 KB: `content` is its tail */
  truncated?: boolean;
}

/** The assembled state of one stream. Owned by the client: read it, never write it. */
export interface StreamState {
  readonly streamId: string;
  readonly actionName: string | null;
  readonly channel: string | null;
  /** the answer so far, in order, without duplicates */
  readonly text: string;
  /** reasoning text, when the provider streams it (not restored by a snapshot) */
  readonly thinking: string;
  readonly status: StreamStatus;
  readonly finishReason: FinishReason | null;
  readonly usage: Usage | null;
  readonly error: ProxyErrorBody | null;
  readonly functions: FunctionSummary[];
  readonly toolCalls: ToolCallEvent[];
  readonly threadInfo: Record<string, string> | null;
  /** the last contiguous seq applied */
  readonly lastSeq: number;
  /** envelopes received for this stream (a merged one counts once; snapshots do not count) */
  readonly messages: number;
  /** envelopes dropped because everything they cover was already held (or the stream had ended) */
  readonly duplicates: number;
  /** resume requests sent for this stream */
  readonly resumes: number;
  /** performance.now() when the client first heard of the stream */
  readonly seenAt: number;
  readonly firstTokenAt: number | null;
  /** firstTokenAt - seenAt */
  readonly ttftMs: number | null;
  readonly endedAt: number | null;
}

export interface ConnectOptions {
  /** the WebSocket endpoint, e.g. "wss://abc.execute-api.eu-west-1.amazonaws.com/prod" */
  url: string;
  /**
   * a subscribe token, or a function returning a fresh one (called before every connect; one
   * that throws or has not answered within `requestTimeoutMs` is called again after a delay)
   */
  token: string | (() => string | Promise<string>);
  /** told about every connection change (open, reconnecting, closed; `status` starts as connecting); `detail.connectionId` once known */
  onStatus?: (status: ConnectionStatus, detail: { connectionId?: string; code?: number; reason?: string; error?: unknown }) => void;
  /** jittered exponential backoff between reconnects (default 250 ms .. 10 s) */
  reconnect?: { baseMs?: number; maxMs?: number };
  /** how long a request waits for its reply (default 10 s) */
  requestTimeoutMs?: number;
  /** wait before asking resume again while a gap remains (default 1 s) */
  resumeRetryMs?: number;
  /**
   * a stream that has not ended and received nothing for this long asks resume, and again every
   * `stallMs` while nothing arrives; recovers a lost `end` (default 15 s; 0 turns it off)
   */
  stallMs?: number;
  /** ping interval that keeps an idle connection open (default 5 min) */
  keepaliveMs?: number;
  /**
   * the Klai runtime bridge (default false): every message, in order and once, also goes to
   * `window.BF.processNamedAction(message.actionName, message)` when that function exists, so an
   * existing Klai page's named actions run unchanged. A snapshot reaches it as the `delta` of the
   * text not handed over yet (with `fromSnapshot: true`); an empty one not at all.
   */
  bfBridge?: boolean;
  /** a WebSocket implementation (default: globalThis.WebSocket) */
  WebSocket?: typeof WebSocket;
}

/** What `stop` resolves: the proxy's answer and the stream's state when the stop arrived. */
export interface StopResult {
  status: "stopped" | "not_found";
  /** "pending" | "streaming" | "done" | "failed" | "cancelled"; null with not_found */
  streamStatus: string | null;
}

/** A stored message of a thread, in OpenAI's form. */
export interface ThreadMessage {
  role: "system" | "user" | "assistant" | "tool" | "developer";
  content: string | unknown[] | null;
  tool_calls?: { id: string; type: "function"; function: { name: string; arguments: string } }[];
  tool_call_id?: string;
  /** set on the answer of a run that did not end well */
  status?: "failed" | "cancelled";
  [key: string]: unknown;
}

/** What `history` resolves: one page of a thread's messages, oldest first. */
export interface HistoryPage {
  threadId: string;
  messages: ThreadMessage[];
  /** the page asked for (a message index, as a string) */
  cursor: string;
  /** pass as `cursor` for the next page; null on the last page */
  nextCursor: string | null;
  /** epoch seconds */
  createdAt: number;
  updatedAt: number;
  /** the run in progress on the thread, or null */
  activeRun: string | null;
}

/** `stream` is null for a `message` (published, not part of a stream). */
export type ActionHandler = (
  event: StreamEvent | SnapshotEvent | PublishedMessage,
  stream: StreamState | null,
) => void;

export declare class StreamingClient {
  readonly url: string;
  readonly status: ConnectionStatus;
  /** this connection's id (from the first pong), null while disconnected */
  readonly connectionId: string | null;
  readonly streams: ReadonlyMap<string, StreamState>;
  /**
   * every event of streams sent with `actionName` ("*": all), in seq order, once; `snapshot`
   * events replace the text, and exactly one `end` comes per stream; each published `message`
   * once (with `stream` null); returns an unsubscribe
   */
  on(actionName: string, handler: ActionHandler): () => void;
  /**
   * run `handler` for each frontend tool call named `name` ("set_theme" or "ui_set_theme") and
   * answer it, at most once per call; one handler per name (a new one replaces it); action
   * handlers still get the raw `llmToolCall` events; returns an unsubscribe
   */
  onTool<Args = any, Result = unknown>(
    name: string,
    handler: ToolHandler<Args, Result>,
    options?: { onOutcome?: (outcome: ToolOutcome) => void },
  ): () => void;
  /** a stream's state changed; called at most once per animation frame per stream */
  onStream(handler: (stream: StreamState) => void): () => void;
  stream(streamId: string): StreamState | undefined;
  /** follow a stream known by id (e.g. kept across a page reload) */
  resume(streamId: string, hint?: { actionName?: string; channel?: string }): StreamState;
  stop(streamId: string): Promise<StopResult>;
  /**
   * a page of a thread that published to one of this connection's channels (up to `limit`
   * messages, 200 at most and by default, from message `cursor`); rejects with `code`
   * "not_found" for any other thread
   */
  history(threadId: string, options?: { cursor?: string | number; limit?: number }): Promise<HistoryPage>;
  /**
   * Requests are WebSocket messages of 32 KB at most (`MAX_SEND_BYTES`, API Gateway's frame
   * limit): a larger one is never sent and rejects with `code` "payload_too_large".
   */
  subscribe(channel: string, token: string): Promise<{ type: "subscribed"; channel: string }>;
  unsubscribe(channel: string): Promise<{ type: "unsubscribed"; channel: string }>;
  /** rejects with `code` "conflict" (answered already), "forbidden", "not_found" or "payload_too_large" */
  llmToolCallResponse(response: ToolResponse): Promise<{ type: "ack"; toolCallId: string }>;
  ping(): Promise<{ connectionId: string | null; rttMs: number }>;
  close(): void;
}

export declare function connect(options: ConnectOptions): StreamingClient;
/** The most bytes (UTF-8) one message to the proxy may have: API Gateway's 32 KB frame limit. */
export declare const MAX_SEND_BYTES: number;
