// tenacia chat page: a conversation with the served model, streamed over server-sent events from
// /v1/chat/completions. Plain browser JavaScript, no build step, no dependencies.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, messages: [], controller: null };
const SETTINGS = ["system", "temperature", "max-tokens", "api-key"];

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return `${response.status}: ${body.error ? body.error.message : JSON.stringify(body)}`;
  } catch (e) {
    return `${response.status} ${response.statusText}`;
  }
}

async function loadModel() {
  try {
    const r = await fetch("/v1/models", { headers: headers() });
    if (!r.ok) {
      $("model").textContent = "not connected";
      showError(r.status === 401 ? "This server needs an API key: enter it under Settings." : await errorText(r));
      return;
    }
    const body = await r.json();
    state.model = body.data[0].id;
    $("model").textContent = `${state.model} · context ${body.data[0].max_model_len} tokens`;
    showError("");
  } catch (e) {
    $("model").textContent = "not connected";
    showError("Cannot reach the server: " + e.message);
  }
}

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = `message ${role}`;
  div.dataset.role = role;
  const label = document.createElement("div");
  label.className = "role";
  label.textContent = role === "user" ? "You" : state.model || "assistant";
  const content = document.createElement("div");
  content.className = "content";
  content.textContent = text;
  div.append(label, content);
  $("log").append(div);
  $("log").scrollTop = $("log").scrollHeight;
  return div;
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").hidden = !busy;
}

// Reads an SSE body, calling onEvent(parsed JSON) for each "data:" line until [DONE].
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        onEvent(JSON.parse(data));
      }
    }
  }
}

function formatStats(s) {
  const parts = [`${s.tokens} tokens`];
  if (s.tokensPerSecond !== null) parts.push(`${s.tokensPerSecond.toFixed(1)} tok/s`);
  if (s.ttft !== null) parts.push(`first token ${Math.round(s.ttft)} ms`);
  if (s.finish) parts.push(s.finish === "length" ? "stopped: max tokens" : s.finish === "stop" ? "done" : s.finish);
  return parts.join(" · ");
}

async function send(text) {
  showError("");
  state.messages.push({ role: "user", content: text });
  addMessage("user", text);
  const bubble = addMessage("assistant", "");
  bubble.classList.add("streaming");
  const content = bubble.querySelector(".content");
  const stats = document.createElement("div");
  stats.className = "stats";
  bubble.append(stats);

  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...state.messages);
  const body = {
    model: state.model || undefined,
    messages,
    stream: true,
    stream_options: { include_usage: true },
    temperature: Number($("temperature").value),
    max_tokens: Number($("max-tokens").value),
  };
  const s = { tokens: 0, tokensPerSecond: null, ttft: null, finish: null };
  const start = performance.now();
  let first = null;
  let answer = "";
  state.controller = new AbortController();
  setBusy(true);
  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: state.controller.signal,
    });
    if (!r.ok) throw new Error(await errorText(r));
    await readEvents(r, (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message);
      for (const choice of chunk.choices || []) {
        const piece = (choice.delta && choice.delta.content) || "";
        if (piece) {
          if (first === null) { first = performance.now(); s.ttft = first - start; }
          answer += piece;
          content.textContent = answer;
          s.tokens += 1;  // an estimate until usage arrives
        }
        if (choice.finish_reason) s.finish = choice.finish_reason;
      }
      if (chunk.usage) s.tokens = chunk.usage.completion_tokens;
      const elapsed = (performance.now() - (first ?? start)) / 1000;
      if (first !== null && elapsed > 0 && s.tokens > 1) s.tokensPerSecond = (s.tokens - 1) / elapsed;
      stats.textContent = formatStats(s);
      $("log").scrollTop = $("log").scrollHeight;
    });
  } catch (e) {
    if (e.name === "AbortError") s.finish = "stopped";
    else showError(e.message);
  } finally {
    bubble.classList.remove("streaming");
    bubble.dataset.done = "true";
    stats.textContent = formatStats(s);
    state.messages.push({ role: "assistant", content: answer });
    state.controller = null;
    setBusy(false);
    $("prompt").focus();
  }
}

function init() {
  for (const id of SETTINGS) {
    const saved = localStorage.getItem("tenacia." + id);
    if (saved !== null) $(id).value = saved;
    $(id).addEventListener("change", () => {
      localStorage.setItem("tenacia." + id, $(id).value);
      if (id === "api-key") loadModel();
    });
  }
  $("settings-toggle").addEventListener("click", () => {
    const open = $("settings").hidden;
    $("settings").hidden = !open;
    $("settings-toggle").setAttribute("aria-expanded", String(open));
  });
  $("clear").addEventListener("click", () => {
    if (state.controller) state.controller.abort();
    state.messages = [];
    $("log").replaceChildren();
    showError("");
  });
  $("stop").addEventListener("click", () => state.controller && state.controller.abort());
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("prompt").value.trim();
    if (!text || state.controller) return;
    $("prompt").value = "";
    send(text);
  });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  loadModel();
}

init();
