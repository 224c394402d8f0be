// The demo page: one client, every `demoChat` stream on the page's channel rendered live, and
// one frontend tool (`ui_set_theme`) the model can call to switch the page's theme.
import { connect } from "./streaming-proxy.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

// ---- theme (what the frontend tool changes) --------------------------------------------

const THEMES = ["light", "dark"];
const themeKey = "streaming-proxy-demo:theme";

function setTheme(theme) {
  document.documentElement.dataset.theme = theme;
  localStorage.setItem(themeKey, theme);
}

const currentTheme = () => document.documentElement.dataset.theme ?? "light";

// Before anything else awaits: a reload should not flash the light theme first.
if (THEMES.includes(localStorage.getItem(themeKey))) setTheme(localStorage.getItem(themeKey));

async function postJSON(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  return { ok: response.ok && data.success !== false, status: response.status, data };
}

const config = await fetch("/demo/config").then((r) => r.json());
const channel = params.get("channel") || config.channel;
const saved = `streaming-proxy-demo:${channel}`;
// Conversation mode: whether it is on, and the thread this page's questions continue.
const conversationKey = "streaming-proxy-demo:conversation";
const threadKey = `streaming-proxy-demo:${channel}:thread`;

const bubbles = new Map(); // streamId -> elements of its answer bubble
const sentAt = new Map(); // streamId -> performance.now() when Send was pressed
let current = null; // the stream the stats panel shows

// ---- connection ----------------------------------------------------------------------

const client = connect({
  url: config.wsUrl,
  token: async () => {
    const { ok, data } = await postJSON("/demo/token", { channel });
    if (!ok) throw new Error(data.error?.message ?? "could not get a subscribe token");
    return data.token;
  },
  onStatus: (status) => {
    $("connection").dataset.state = status;
    $("connection-text").textContent = status === "open" ? `live on ${channel}` : status;
    const id = client?.connectionId ?? "";
    $("connection-id").textContent = id || "–";
    $("connection-id").dataset.connectionId = id;
  },
});
window.demoClient = client; // handy in the console, and for the browser tests

client.on(config.actionName, (event, stream) => {
  if (!bubbles.has(stream.streamId)) showStream(stream.streamId, { fromOthers: !sentAt.has(stream.streamId) });
});
client.onStream((stream) => {
  if (stream.actionName && stream.actionName !== config.actionName) return;
  if (!bubbles.has(stream.streamId)) showStream(stream.streamId, { fromOthers: true });
  render(stream);
});

// ---- the frontend tool -----------------------------------------------------------------

const SET_THEME_TOOL = {
  type: "function",
  function: {
    name: "ui_set_theme",
    description: "Switch the demo page between its light and dark theme.",
    parameters: {
      type: "object",
      properties: {
        theme: { type: "string", enum: THEMES },
        userMessage: { type: "string", description: "What the page shows while the theme switches" },
      },
      required: ["theme"],
    },
  },
};

/** What the tool demo's mock model does: call the tool, then quote the page's answer. */
function themeScript(theme) {
  const call = { name: "ui_set_theme", arguments: { theme, userMessage: `Switching to ${theme} mode` } };
  return [{ text: "Switching the theme. ", toolCalls: [call] }, { text: "Done: {{message:ui_set_theme}}." }];
}

const toolOutcomes = new Map(); // toolCallId -> what became of this tab's answer

// Every tab on the channel runs the call (each switches its own theme); the first answer to
// reach the proxy is the one the model reads, the others come back as `conflict`.
client.onTool(
  "set_theme",
  ({ theme }) => {
    if (!THEMES.includes(theme)) throw new Error(`unknown theme ${JSON.stringify(theme)}: use light or dark`);
    setTheme(theme);
    return { message: `Theme is now ${theme}`, theme };
  },
  {
    onOutcome: (outcome) => {
      toolOutcomes.set(outcome.toolCallId, outcome);
      if (outcome.status === "failed") notice(`Tool ${outcome.toolName}: ${outcome.error?.message}`, "error");
      const stream = client.stream(outcome.streamId);
      if (stream && bubbles.has(stream.streamId)) render(stream);
    },
  },
);

// ---- transcript ----------------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function append(node) {
  $("empty").hidden = true;
  $("transcript").append(node);
  $("transcript").scrollTop = $("transcript").scrollHeight;
}

function showPrompt(text) {
  const bubble = el("article", "msg user");
  bubble.append(el("div", "avatar", "You"));
  const body = el("div", "body");
  body.append(el("div", "content", text));
  bubble.append(body);
  append(bubble);
}

function showStream(streamId, { fromOthers = false } = {}) {
  if (bubbles.has(streamId)) return bubbles.get(streamId);
  const bubble = el("article", "msg assistant");
  bubble.dataset.streamId = streamId;
  bubble.dataset.testid = "answer-bubble";
  bubble.append(el("div", "avatar", "AI"));
  const body = el("div", "body");
  const meta = el("div", "meta");
  meta.append(el("span", "who", "Assistant"));
  if (fromOthers) meta.append(el("span", "tag", "started elsewhere"));
  const thinking = el("details", "thinking");
  thinking.hidden = true;
  thinking.append(el("summary", "", "Thinking"), el("pre", ""));
  const content = el("div", "content");
  const answer = el("span", "answer");
  answer.dataset.testid = "answer-text";
  content.append(answer, el("span", "caret"));
  const functions = el("div", "functions");
  const error = el("div", "error");
  error.hidden = true;
  body.append(meta, thinking, content, functions, error);
  bubble.append(body);
  append(bubble);
  const parts = { bubble, answer, thinking, functions, error };
  bubbles.set(streamId, parts);
  follow(streamId);
  return parts;
}

/** Point the stats panel (and the #answer id) at a stream. */
function follow(streamId) {
  if (current === streamId) return;
  current = streamId;
  $("answer")?.removeAttribute("id");
  bubbles.get(streamId).answer.id = "answer";
  $("stream-id").textContent = streamId;
  const known = JSON.parse(sessionStorage.getItem(saved) ?? "{}");
  if (known.streamId !== streamId) sessionStorage.setItem(saved, JSON.stringify({ streamId }));
  const stream = client.stream(streamId);
  if (stream) render(stream);
}

function render(stream) {
  const parts = bubbles.get(stream.streamId);
  parts.bubble.dataset.status = stream.status;
  parts.answer.textContent = stream.text;
  if (stream.thinking) {
    parts.thinking.hidden = false;
    parts.thinking.querySelector("pre").textContent = stream.thinking;
  }
  parts.functions.replaceChildren(...stream.functions.map((f) => toolLine(f, stream.status === "streaming")));
  parts.error.hidden = !stream.error;
  parts.error.textContent = stream.error ? `⚠ ${stream.error.message}` : "";
  if (stream.streamId === current) renderStats(stream);
}

/** A tool the model called (from `function_call`): running, then what this tab's answer became. */
function toolLine(call, streaming) {
  const name = call.name.replace(/^ui_/, "");
  const asked = call.userMessage ? ` — ${call.userMessage}` : "";
  const outcome = toolOutcomes.get(call.toolCallId);
  let state = streaming ? "running" : "idle";
  let text = streaming ? `running tool: ${name}${asked}` : `tool: ${name}${asked}`;
  if (outcome?.status === "conflict") {
    [state, text] = ["done", `✓ ${name} — answered in another tab`];
  } else if (outcome?.status === "failed" || outcome?.success === false) {
    [state, text] = ["failed", `✗ ${name} — ${outcome.error?.message ?? outcome.message}`];
  } else if (outcome) {
    [state, text] = ["done", `✓ ${name} — ${outcome.message}`];
  }
  const line = el("span", "chip", text);
  line.dataset.state = state;
  line.dataset.testid = "tool-line";
  return line;
}

function renderStats(stream) {
  const status = $("status");
  status.textContent = stream.status;
  status.dataset.status = stream.status;
  $("finish-reason").textContent = stream.finishReason ?? "–";
  $("message-count").textContent = String(stream.messages);
  $("resumes").textContent = String(stream.resumes);
  $("stop").disabled = stream.status !== "streaming";

  const sent = sentAt.get(stream.streamId);
  const ttft = stream.firstTokenAt === null ? null : sent !== undefined ? stream.firstTokenAt - sent : stream.ttftMs;
  $("ttft").textContent = ttft === null ? "–" : `${Math.round(ttft)} ms`;

  const usage = stream.usage;
  const tokens = usage?.completion_tokens ?? Math.round(stream.text.length / 4);
  const seconds = ((stream.endedAt ?? performance.now()) - (stream.firstTokenAt ?? 0)) / 1000;
  $("tps").textContent = stream.firstTokenAt !== null && seconds > 0.05 ? (tokens / seconds).toFixed(1) : "–";
  $("tokens").textContent = usage
    ? `${usage.prompt_tokens} in · ${usage.completion_tokens} out${usage.estimated ? " (est.)" : ""}`
    : "–";
}

function notice(text, kind = "info") {
  $("notice").textContent = text;
  $("notice").dataset.kind = kind;
}

// ---- conversation mode ---------------------------------------------------------------

const conversationOn = () => $("conversation").checked;

function showThread(threadId) {
  $("thread-id").textContent = threadId ?? "–";
  $("new-conversation").hidden = !threadId;
}

/** A stored message's text (a string, or the text parts of a list). */
function textOf(content) {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return "";
  return content.map((part) => (part?.type === "text" ? part.text : "")).join("");
}

/** An answer from the thread's history: a finished bubble, not a stream. */
function showStoredAnswer(message) {
  const bubble = el("article", "msg assistant");
  bubble.dataset.testid = "history-answer";
  bubble.dataset.status = message.status === "cancelled" ? "cancelled" : message.status ? "error" : "done";
  bubble.append(el("div", "avatar", "AI"));
  const body = el("div", "body");
  const meta = el("div", "meta");
  meta.append(el("span", "who", "Assistant"), el("span", "tag", "from the thread"));
  body.append(meta, el("div", "content", textOf(message.content)));
  bubble.append(body);
  append(bubble);
}

/**
 * After a reload: the thread's conversation again, read with `client.history` (this page's
 * subscribe token is for a channel the thread published to). Returns its page, or null.
 */
async function showHistory(threadId) {
  let page = null;
  let cursor = 0;
  do {
    page = await client.history(threadId, { cursor });
    for (const message of page.messages) {
      const text = textOf(message.content);
      if (message.role === "user") showPrompt(text);
      else if (message.role === "assistant" && text) showStoredAnswer(message);
    }
    cursor = page.nextCursor;
  } while (cursor !== null);
  return page;
}

function newConversation() {
  localStorage.removeItem(threadKey);
  showThread(null);
  notice("The next question starts a new conversation.");
}

// ---- controls ------------------------------------------------------------------------

function setupControls() {
  $("channel").value = channel;
  $("empty-channel").textContent = channel;
  document.title = `streaming-proxy · ${channel}`;
  $("channel-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const next = $("channel").value.trim();
    if (next && next !== channel) location.search = `?channel=${encodeURIComponent(next)}`;
  });

  for (const name of config.providers) $("provider").append(new Option(name, name));
  const providerChanged = () => {
    const mock = $("provider").value === "mock";
    $("delay-field").hidden = !mock;
    $("model-field").hidden = mock;
  };
  $("provider").addEventListener("change", providerChanged);
  providerChanged();

  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("stop").addEventListener("click", stop);
  $("tool-demo").addEventListener("click", toolDemo);
  $("conversation").checked = localStorage.getItem(conversationKey) === "on";
  $("conversation").addEventListener("change", () => {
    localStorage.setItem(conversationKey, conversationOn() ? "on" : "off");
    showThread(conversationOn() ? localStorage.getItem(threadKey) : null);
  });
  $("new-conversation").addEventListener("click", newConversation);
}

const delayMs = () => Number($("delay").value) || 0;

async function send() {
  const prompt = $("prompt").value.trim();
  if (!prompt) return notice("Type a prompt first.", "warn");
  const provider = $("provider").value;
  const body = { prompt, provider };
  if (provider === "mock") body.providerArgs = { delayMs: delayMs() };
  else if ($("model").value.trim()) body.model = $("model").value.trim();
  if (conversationOn()) {
    body.conversation = true;
    body.threadId = localStorage.getItem(threadKey) ?? undefined;
  }
  if (await start(body)) $("prompt").value = "";
}

/** The tool demo: a scripted mock model calls this page's `ui_set_theme`, then quotes its answer. */
function toolDemo() {
  const theme = currentTheme() === "dark" ? "light" : "dark";
  return start({
    prompt: `Switch this page to ${theme} mode.`,
    provider: "mock",
    providerArgs: { delayMs: delayMs(), script: themeScript(theme) },
    tools: [SET_THEME_TOOL],
  });
}

/** Start a stream through the demo backend (it holds the app key); true once it runs. */
async function start(request) {
  const buttons = [$("send"), $("tool-demo")];
  for (const button of buttons) button.disabled = true;
  notice("");
  showPrompt(request.prompt);
  const started = performance.now();
  try {
    const { ok, data } = await postJSON("/demo/start", { channel, actionName: config.actionName, ...request });
    if (!ok) {
      notice(data.error?.message ?? "the proxy refused the request", "error");
      return false;
    }
    sentAt.set(data.streamId, started);
    if (data.threadId) {
      localStorage.setItem(threadKey, data.threadId); // the next question continues it
      showThread(data.threadId);
    }
    // Its first events can arrive before this answer does: it was ours after all.
    bubbles.get(data.streamId)?.bubble.querySelector(".meta .tag")?.remove();
    sessionStorage.setItem(saved, JSON.stringify({ streamId: data.streamId, prompt: request.prompt }));
    showStream(data.streamId);
    follow(data.streamId);
    return true;
  } catch (error) {
    notice(`Could not reach the local stack: ${error.message}`, "error");
    return false;
  } finally {
    for (const button of buttons) button.disabled = false;
  }
}

// A stop that reaches an ended stream changes nothing; the proxy says how it had ended.
const ENDED = new Set(["done", "failed", "cancelled"]);

async function stop() {
  if (!current) return;
  $("stop").disabled = true;
  try {
    const { status, streamStatus } = await client.stop(current);
    if (status === "not_found") notice("That stream is unknown to the proxy.", "warn");
    else if (ENDED.has(streamStatus)) notice(`That stream had already ended (${streamStatus}).`);
  } catch (error) {
    notice(`Stop failed: ${error.message}`, "error");
    $("stop").disabled = false;
  }
}

/**
 * After a reload, show the last stream again: a snapshot, then live messages if it still runs.
 * In conversation mode the thread's history comes first; the last stream is resumed only while
 * its run is still active (a finished one is in the history already).
 */
async function restore() {
  const known = JSON.parse(sessionStorage.getItem(saved) ?? "{}");
  const threadId = localStorage.getItem(threadKey);
  if (conversationOn() && threadId) {
    showThread(threadId);
    try {
      const page = await showHistory(threadId);
      if (page.activeRun === null) return;
    } catch (error) {
      if (error.code === "not_found") newConversation(); // erased, expired, or another channel's
      else notice(`Could not read the conversation: ${error.message}`, "error");
    }
  }
  if (!known.streamId) return;
  if (known.prompt) showPrompt(known.prompt);
  showStream(known.streamId, { fromOthers: !known.prompt });
  client.resume(known.streamId, { actionName: config.actionName, channel });
}

setupControls();
restore();
