// gptkit playground: the page `gptkit serve` shows at /. Everything it does goes through the server's public API
// (/v1/..., /health), exactly as any OpenAI client would; it loads nothing from anywhere else.
"use strict";

const $ = (id) => document.getElementById(id);
const STORE = "gptkit.playground.";
const SETTINGS = ["temperature", "top_p", "top_k", "max_tokens", "stop", "seed", "presence_penalty", "frequency_penalty"];
const ACTIVE = new Set(["validating_files", "queued", "running", "paused"]);
const POLL_MS = 1000;

// -- what survives a reload --------------------------------------------------------------------------

function saved(name, fallback) {
  try {
    const value = localStorage.getItem(STORE + name);
    return value === null ? fallback : JSON.parse(value);
  } catch {
    return fallback;
  }
}

function save(name, value) {
  try {
    if (value === undefined || value === null) localStorage.removeItem(STORE + name);
    else localStorage.setItem(STORE + name, JSON.stringify(value));
  } catch {
    /* storage full or disabled: the page still works, it only forgets */
  }
}

// -- the API -------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, param, code) {
    super(message);
    this.status = status;
    this.param = param;
    this.code = code;
  }
  describe() {
    const where = this.param ? ` (${this.param})` : "";
    return this.status ? `${this.status}${where}: ${this.message}` : this.message;
  }
}

function headers(json) {
  const h = {};
  const key = $("api-key").value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function send(path, { method = "GET", body, form, signal } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: headers(body !== undefined),
      body: form || (body === undefined ? undefined : JSON.stringify(body)),
      signal,
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, `cannot reach the server at ${location.origin}: ${err.message}`);
  }
  return response;
}

async function failure(response) {
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    /* not JSON: say what the status says */
  }
  const error = payload && payload.error;
  if (error && error.message) return new ApiError(response.status, error.message, error.param, error.code);
  return new ApiError(response.status, response.statusText || "request failed");
}

async function api(path, options) {
  const response = await send(path, options);
  if (!response.ok) throw await failure(response);
  return response.json();
}

// Server-sent events of a streamed completion: calls onData with each JSON frame until [DONE].
async function stream(path, body, onData, signal) {
  const response = await send(path, { method: "POST", body, signal });
  if (!response.ok) throw await failure(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of frame.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        const parsed = JSON.parse(data);
        if (parsed.error) throw new ApiError(0, parsed.error.message, parsed.error.param, parsed.error.code);
        onData(parsed);
      }
    }
  }
}

function showError(id, err) {
  const box = $(id);
  if (!err) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.textContent = err instanceof ApiError ? err.describe() : String(err.message || err);
  box.hidden = false;
}

// -- pages -------------------------------------------------------------------------------------------

const TABS = ["complete", "chat", "tokenize", "finetune"];

function openTab(name, focus) {
  if (!TABS.includes(name)) name = "complete";
  for (const tab of TABS) {
    const selected = tab === name;
    const button = $(`tab-${tab}`);
    button.setAttribute("aria-selected", String(selected));
    button.tabIndex = selected ? 0 : -1;
    $(`page-${tab}`).hidden = !selected;
  }
  $("settings").hidden = !(name === "complete" || name === "chat");
  if (focus) $(`tab-${name}`).focus();
  save("tab", name);
  if (name === "finetune") refreshLists();
  if (name === "tokenize") tokenizeSoon();
}

function setUpTabs() {
  for (const tab of TABS) $(`tab-${tab}`).addEventListener("click", () => openTab(tab));
  $("tabs").addEventListener("keydown", (event) => {
    const at = TABS.findIndex((t) => $(`tab-${t}`) === document.activeElement);
    if (at < 0) return;
    const moves = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: TABS.length - 1 };
    if (!(event.key in moves)) return;
    event.preventDefault();
    openTab(TABS[(moves[event.key] + TABS.length) % TABS.length], true);
  });
}

// -- models ------------------------------------------------------------------------------------------

let models = [];

async function loadModels() {
  try {
    models = (await api("/v1/models")).data;
  } catch (err) {
    $("server-status").textContent = err instanceof ApiError ? err.describe() : String(err);
    return;
  }
  const remembered = saved("models", {});
  for (const select of document.querySelectorAll(".model-select")) {
    fillSelect(select, models.map((m) => m.id), select.value || remembered[select.id]);
  }
  const bases = models.filter((m) => !m.id.startsWith("ft:")).map((m) => m.id);
  fillSelect($("job-model"), bases, $("job-model").value);
  renderModels();
  $("server-status").textContent = `Connected: ${models.length} model${models.length === 1 ? "" : "s"}.`;
}

function fillSelect(select, values, wanted, blank) {
  select.replaceChildren();
  if (blank) select.append(new Option(blank, ""));
  for (const value of values) select.append(new Option(value, value));
  if (wanted && values.includes(wanted)) select.value = wanted;
}

function rememberModel(event) {
  const remembered = saved("models", {});
  remembered[event.target.id] = event.target.value;
  save("models", remembered);
}

function useModel(id, tab) {
  const select = $(`${tab}-model`);
  if (![...select.options].some((o) => o.value === id)) select.append(new Option(id, id));
  select.value = id;
  rememberModel({ target: select });
  openTab(tab, true);
}

// -- sampling settings -------------------------------------------------------------------------------

function setUpSettings() {
  const values = saved("settings", {});
  for (const name of SETTINGS) {
    const input = $(name);
    if (values[name] !== undefined) input.value = values[name];
    const range = $(`${name}-range`);
    if (range) {
      range.value = input.value;
      range.addEventListener("input", () => {
        input.value = range.value;
        saveSettings();
      });
      input.addEventListener("input", () => {
        range.value = input.value;
      });
    }
    input.addEventListener("input", saveSettings);
  }
}

function saveSettings() {
  save("settings", Object.fromEntries(SETTINGS.map((name) => [name, $(name).value])));
  renderCode();
}

function number(name) {
  const text = $(name).value.trim();
  return text === "" ? null : Number(text);
}

// The sampling fields of a request, as OpenAI names them (top_k as vLLM's extra); defaults are left out.
function sampling() {
  const body = { max_tokens: number("max_tokens") || 16 };
  const fields = { temperature: 1, top_p: 1, top_k: 0, presence_penalty: 0, frequency_penalty: 0 };
  for (const [name, neutral] of Object.entries(fields)) {
    const value = number(name);
    if (value !== null && value !== neutral) body[name] = value;
  }
  const stops = $("stop").value.split("\n").filter((s) => s !== "");
  if (stops.length) body.stop = stops.slice(0, 4);
  const seed = number("seed");
  if (seed !== null) body.seed = seed;
  return body;
}

// -- Complete ----------------------------------------------------------------------------------------

let completing = null;
let tokens = []; // [{text, logprob, top: {text: logprob}}] of the completion shown

function completionRequest() {
  const body = { model: $("complete-model").value, prompt: $("prompt").value, ...sampling() };
  if ($("show-probs").checked) body.logprobs = 5;
  return body;
}

async function complete() {
  if (completing) return;
  const body = { ...completionRequest(), stream: true, stream_options: { include_usage: true } };
  showError("complete-error", null);
  hideTip();
  const out = $("completion");
  out.replaceChildren(Object.assign(document.createElement("span"), { className: "prompt-text", textContent: body.prompt }));
  tokens = [];
  $("complete-usage").textContent = "";
  completing = new AbortController();
  setBusy("complete", true);
  const started = performance.now();
  let firstAt = null;
  let finish = null;
  let usage = null;
  try {
    await stream("/v1/completions", body, (chunk) => {
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices || []) {
        if (firstAt === null && choice.text) firstAt = performance.now();
        appendTokens(out, choice);
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }, completing.signal);
  } catch (err) {
    if (err.name !== "AbortError") {
      showError("complete-error", err);
      return;
    }
    finish = "stopped";
  } finally {
    completing = null;
    setBusy("complete", false);
  }
  const seconds = (performance.now() - started) / 1000;
  const parts = [];
  if (usage) parts.push(`${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens`);
  parts.push(`${seconds.toFixed(2)} s`);
  if (usage && seconds > 0) parts.push(`${(usage.completion_tokens / seconds).toFixed(1)} tokens/s`);
  if (firstAt !== null) parts.push(`first token after ${((firstAt - started) / 1000).toFixed(2)} s`);
  if (finish) parts.push(`finish: ${finish}`);
  $("complete-usage").textContent = parts.join(" · ");
}

// One chunk's text, as one span per token when the chunk has logprobs (a token holding part of a character is
// shown with the character it completes), else as plain text.
function appendTokens(out, choice) {
  const lp = choice.logprobs;
  if (!lp || !lp.tokens || !lp.tokens.length) {
    if (choice.text) out.append(document.createTextNode(choice.text));
    return;
  }
  const whole = lp.tokens.every((t) => !t.startsWith("bytes:")) && lp.tokens.join("") === choice.text;
  const groups = whole ? lp.tokens.map((t, i) => [t, i]) : [[choice.text, 0]];
  for (const [text, i] of groups) {
    const token = { text, logprob: lp.token_logprobs[i], top: (lp.top_logprobs && lp.top_logprobs[i]) || {} };
    const span = document.createElement("span");
    span.className = "tok prob";
    span.textContent = text;
    span.tabIndex = 0;
    span.dataset.index = String(tokens.length);
    span.setAttribute("aria-describedby", "token-tip");
    span.style.backgroundColor = probabilityColour(Math.exp(token.logprob));
    tokens.push(token);
    out.append(span);
  }
}

function probabilityColour(p) {
  return `hsl(${Math.round(120 * p)}, 75%, ${Math.round(88 - 10 * p)}%)`;
}

// A probability as a percentage: two decimals, or two significant digits below 1%.
function percent(logprob) {
  const p = 100 * Math.exp(logprob);
  return `${p >= 1 ? p.toFixed(2) : p.toPrecision(2)}%`;
}

function showTip(span) {
  const token = tokens[Number(span.dataset.index)];
  if (!token) return;
  const tip = $("token-tip");
  const rows = Object.entries(token.top).sort((a, b) => b[1] - a[1]);
  if (!rows.some(([text]) => text === token.text)) rows.push([token.text, token.logprob]);
  const table = document.createElement("table");
  for (const [text, logprob] of rows) {
    const row = table.insertRow();
    if (text === token.text) row.className = "chosen";
    const code = document.createElement("code");
    code.textContent = JSON.stringify(text);
    row.insertCell().append(code);
    row.insertCell().textContent = percent(logprob);
  }
  const head = document.createElement("div");
  head.textContent = `${percent(token.logprob)} · logprob ${token.logprob.toFixed(3)}`;
  tip.replaceChildren(head, table);
  const box = span.getBoundingClientRect();
  tip.hidden = false;
  const left = Math.min(box.left + window.scrollX, window.scrollX + document.documentElement.clientWidth - tip.offsetWidth - 8);
  tip.style.left = `${Math.max(8, left)}px`;
  tip.style.top = `${box.bottom + window.scrollY + 4}px`;
}

function hideTip() {
  $("token-tip").hidden = true;
}

function setUpComplete() {
  const prompt = $("prompt");
  prompt.value = saved("prompt", "");
  prompt.addEventListener("input", () => {
    save("prompt", prompt.value);
    renderCode();
  });
  $("show-probs").checked = saved("probs", false);
  $("show-probs").addEventListener("change", () => {
    save("probs", $("show-probs").checked);
    renderCode();
  });
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      complete();
    }
  });
  $("complete-submit").addEventListener("click", complete);
  $("complete-stop").addEventListener("click", () => completing && completing.abort());
  const out = $("completion");
  for (const kind of ["mouseover", "focusin"]) {
    out.addEventListener(kind, (event) => event.target.classList.contains("tok") && showTip(event.target));
  }
  for (const kind of ["mouseout", "focusout"]) {
    out.addEventListener(kind, (event) => event.target.classList.contains("tok") && hideTip());
  }
  $("complete-model").addEventListener("change", renderCode);
  $("complete-code").addEventListener("toggle", renderCode);
  for (const button of document.querySelectorAll("[data-copy]")) {
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText($(button.dataset.copy).textContent);
        button.textContent = "Copied";
      } catch {
        button.textContent = "Select and copy";
      }
      setTimeout(() => (button.textContent = "Copy"), 1500);
    });
  }
}

// The request as curl and as Python (openai SDK), ready to copy.
function renderCode() {
  if (!$("complete-code").open) return;
  const body = completionRequest();
  const base = `${location.origin}/v1`;
  const json = JSON.stringify(body, null, 2).replace(/'/g, "'\\''");
  $("code-curl").textContent =
    `curl ${base}/completions \\\n  -H "Content-Type: application/json" \\\n  -H "Authorization: Bearer $OPENAI_API_KEY" \\\n  -d '${json}'`;
  const { top_k, ...standard } = body;
  const args = Object.entries(standard).map(([k, v]) => `    ${k}=${python(v)},`);
  if (top_k !== undefined) args.push(`    extra_body={"top_k": ${top_k}},`);
  $("code-python").textContent = [
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url="${base}")  # the key: $OPENAI_API_KEY`,
    "response = client.completions.create(",
    ...args,
    ")",
    "print(response.choices[0].text)",
  ].join("\n");
}

function python(value) {
  if (value === null) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (Array.isArray(value)) return `[${value.map(python).join(", ")}]`;
  return JSON.stringify(value);
}

function setBusy(page, busy) {
  $(`${page}-stop`).disabled = !busy;
  $(page === "complete" ? "complete-submit" : "chat-send").disabled = busy;
  if (page === "chat") $("chat-regenerate").disabled = busy;
}

// -- Chat --------------------------------------------------------------------------------------------

let conversation = []; // [{role, content}] without the system message
let chatting = null;

function renderMessages() {
  const list = $("messages");
  list.replaceChildren(...conversation.map(messageItem));
  save("chat", conversation);
}

function messageItem(message) {
  const item = document.createElement("li");
  item.className = message.role;
  const role = document.createElement("span");
  role.className = "role";
  role.textContent = message.role === "user" ? "You" : "Assistant";
  const text = document.createElement("span");
  text.className = "content";
  text.textContent = message.content;
  item.append(role, text);
  return item;
}

async function reply() {
  if (chatting) return;
  showError("chat-error", null);
  const system = $("system").value.trim();
  const messages = [...(system ? [{ role: "system", content: system }] : []), ...conversation];
  const body = { model: $("chat-model").value, messages, ...sampling(), stream: true };
  const answer = { role: "assistant", content: "" };
  conversation.push(answer);
  const item = messageItem(answer);
  $("messages").append(item);
  const content = item.querySelector(".content");
  chatting = new AbortController();
  setBusy("chat", true);
  try {
    await stream("/v1/chat/completions", body, (chunk) => {
      for (const choice of chunk.choices || []) {
        if (choice.delta && choice.delta.content) {
          answer.content += choice.delta.content;
          content.textContent = answer.content;
        }
      }
    }, chatting.signal);
  } catch (err) {
    if (err.name !== "AbortError") {
      showError("chat-error", err);
      if (!answer.content) conversation.pop();
    }
  } finally {
    chatting = null;
    setBusy("chat", false);
    renderMessages();
  }
}

function sendMessage() {
  const input = $("chat-input");
  const text = input.value.trim();
  if (!text || chatting) return;
  conversation.push({ role: "user", content: text });
  input.value = "";
  save("chat-input", "");
  renderMessages();
  reply();
}

function regenerate() {
  if (chatting) return;
  while (conversation.length && conversation[conversation.length - 1].role === "assistant") conversation.pop();
  if (!conversation.length) return;
  renderMessages();
  reply();
}

function setUpChat() {
  conversation = saved("chat", []);
  renderMessages();
  $("system").value = saved("system", "");
  $("system").addEventListener("input", () => save("system", $("system").value));
  const input = $("chat-input");
  input.value = saved("chat-input", "");
  input.addEventListener("input", () => save("chat-input", input.value));
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      sendMessage();
    }
  });
  $("chat-send").addEventListener("click", sendMessage);
  $("chat-stop").addEventListener("click", () => chatting && chatting.abort());
  $("chat-regenerate").addEventListener("click", regenerate);
  $("chat-clear").addEventListener("click", () => {
    if (chatting) chatting.abort();
    conversation = [];
    renderMessages();
    showError("chat-error", null);
    input.focus();
  });
}

// -- Tokenize ----------------------------------------------------------------------------------------

let tokenizeTimer = null;
let tokenizeSeq = 0;

function tokenizeSoon() {
  clearTimeout(tokenizeTimer);
  tokenizeTimer = setTimeout(tokenize, 150);
}

async function tokenize() {
  const text = $("tokenize-text").value;
  const model = $("tokenize-model").value;
  save("tokenize-text", text);
  const seq = ++tokenizeSeq;
  if (!model) return;
  try {
    const result = await api("/v1/tokenize", { method: "POST", body: { model, prompt: text } });
    if (seq !== tokenizeSeq) return; // a newer text is on its way
    showError("tokenize-error", null);
    const chips = result.tokens.map((token, i) => {
      const chip = document.createElement("span");
      chip.className = `chip c${i % 5}`;
      chip.title = `id ${token.id}, bytes ${token.bytes.join(" ")}`;
      const shown = document.createElement("span");
      shown.className = "text";
      shown.textContent = token.text.startsWith("bytes:") ? token.text.slice(6) : token.text.replace(/\n/g, "\u21b5");
      const id = document.createElement("span");
      id.className = "id";
      id.textContent = String(token.id);
      chip.append(shown, id);
      return chip;
    });
    $("chips").replaceChildren(...chips);
    const chars = [...text].length;
    $("tokenize-count").textContent =
      `${result.count} token${result.count === 1 ? "" : "s"} · ${chars} character${chars === 1 ? "" : "s"} · context ${result.max_model_len}`;
    $("token-ids").value = result.tokens.map((t) => t.id).join(", ");
  } catch (err) {
    if (seq === tokenizeSeq) showError("tokenize-error", err);
  }
}

function setUpTokenize() {
  $("tokenize-text").value = saved("tokenize-text", "");
  $("tokenize-text").addEventListener("input", tokenizeSoon);
  $("tokenize-model").addEventListener("change", tokenizeSoon);
}

// -- Fine-tune ---------------------------------------------------------------------------------------

let currentJob = null;
let jobTimer = null;
let jobEvents = []; // newest first

const when = (seconds) => (seconds ? new Date(seconds * 1000).toLocaleString() : "");

function button(label, onClick, primary) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (primary) b.className = "primary";
  b.addEventListener("click", onClick);
  return b;
}

function cell(row, content) {
  const td = row.insertCell();
  if (content instanceof Node) td.append(content);
  else td.textContent = content === null || content === undefined ? "" : String(content);
  return td;
}

function code(text) {
  const c = document.createElement("code");
  c.textContent = text || "";
  return c;
}

function rows(table, items, render) {
  const body = $(table).tBodies[0];
  body.replaceChildren();
  for (const item of items) render(body.insertRow(), item);
  if (!items.length) cell(body.insertRow(), "none yet").colSpan = $(table).tHead.rows[0].cells.length;
}

async function refreshLists() {
  try {
    const [files, jobs] = await Promise.all([api("/v1/files?limit=100"), api("/v1/fine_tuning/jobs?limit=50")]);
    $("finetune-off").hidden = true;
    renderFiles(files.data);
    renderJobs(jobs.data);
    $("lists-status").textContent = `Updated ${new Date().toLocaleTimeString()}.`;
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      showError("finetune-off", new ApiError(0, "This server has no fine-tuning: start it with gptkit serve --data-dir DIR."));
    } else {
      $("lists-status").textContent = err instanceof ApiError ? err.describe() : String(err);
    }
  }
  await loadModels();
}

function renderFiles(files) {
  const training = files.filter((f) => f.purpose === "fine-tune");
  const ids = training.map((f) => f.id);
  fillSelect($("job-training"), ids, $("job-training").value);
  fillSelect($("job-validation"), ids, $("job-validation").value, "none");
  rows("files-table", files, (row, f) => {
    cell(row, code(f.id));
    cell(row, f.filename);
    cell(row, f.bytes.toLocaleString());
    cell(row, f.purpose);
    cell(row, when(f.created_at));
    cell(row, button(`Delete`, () => remove(`/v1/files/${f.id}`, `file ${f.filename}`)));
  });
}

function renderJobs(jobs) {
  rows("jobs-table", jobs, (row, job) => {
    if (currentJob && job.id === currentJob) row.className = "current";
    cell(row, code(job.id));
    cell(row, job.model);
    cell(row, job.status);
    cell(row, code(job.fine_tuned_model));
    cell(row, when(job.created_at));
    cell(row, button("Open", () => openJob(job.id, true)));
  });
}

function renderModels() {
  rows("models-table", models, (row, model) => {
    cell(row, code(model.id));
    cell(row, model.owned_by);
    cell(row, when(model.created));
    const actions = cell(row, button("Complete", () => useModel(model.id, "complete")));
    actions.append(" ", button("Chat", () => useModel(model.id, "chat")));
    if (model.id.startsWith("ft:")) actions.append(" ", button("Delete", () => remove(`/v1/models/${model.id}`, `model ${model.id}`)));
  });
}

async function remove(path, what) {
  if (!confirm(`Delete ${what}?`)) return;
  try {
    await api(path, { method: "DELETE" });
  } catch (err) {
    $("lists-status").textContent = err instanceof ApiError ? err.describe() : String(err);
  }
  refreshLists();
}

async function upload(event) {
  event.preventDefault();
  const file = $("upload-file").files[0];
  const report = $("upload-report");
  report.className = "";
  if (!file) {
    report.textContent = "Choose a JSONL file first.";
    return;
  }
  report.textContent = `Checking ${file.name}...`;
  const form = new FormData();
  form.append("purpose", "fine-tune");
  form.append("file", file, file.name);
  try {
    const made = await api("/v1/files", { method: "POST", form });
    await refreshLists();
    $("job-training").value = made.id;
    const lines = (await file.text()).split("\n").filter((l) => l.trim()).length;
    report.textContent = `${file.name}: ${lines} example${lines === 1 ? "" : "s"}, valid; uploaded as ${made.id}.`;
  } catch (err) {
    report.className = "error";
    report.textContent = `${file.name} was not uploaded: ${err instanceof ApiError ? err.message : err}`;
  }
}

function hyperparameter(id, parse) {
  const text = $(id).value.trim();
  if (text === "" || text === "auto") return undefined;
  const value = parse(text);
  if (!Number.isFinite(value)) throw new ApiError(0, `${$(id).labels[0].textContent} must be a number or auto, got ${text}`);
  return value;
}

async function startJob(event) {
  event.preventDefault();
  showError("job-error", null);
  try {
    const hyperparameters = {
      n_epochs: hyperparameter("job-epochs", Number),
      batch_size: hyperparameter("job-batch", Number),
      learning_rate_multiplier: hyperparameter("job-lr", Number),
    };
    const body = {
      model: $("job-model").value,
      training_file: $("job-training").value,
      method: { type: "supervised", supervised: { hyperparameters } },
    };
    if ($("job-validation").value) body.validation_file = $("job-validation").value;
    if ($("job-suffix").value.trim()) body.suffix = $("job-suffix").value.trim();
    const seed = hyperparameter("job-seed", Number);
    if (seed !== undefined) body.seed = seed;
    if (!body.training_file) throw new ApiError(0, "Upload a training file first (step 1).");
    const job = await api("/v1/fine_tuning/jobs", { method: "POST", body });
    await openJob(job.id, true);
    refreshLists();
  } catch (err) {
    showError("job-error", err);
  }
}

async function openJob(id, scroll) {
  if (currentJob !== id) {
    currentJob = id;
    jobEvents = [];
    save("job", id);
  }
  $("job-id").textContent = id;
  $("job-view").hidden = false;
  await pollJob();
  if (scroll) $("job-view").scrollIntoView({ block: "start" });
}

async function pollJob() {
  clearTimeout(jobTimer);
  const id = currentJob;
  if (!id) return;
  let job;
  try {
    job = await api(`/v1/fine_tuning/jobs/${id}`);
    await newEvents(id);
    const checkpoints = await api(`/v1/fine_tuning/jobs/${id}/checkpoints?limit=100`);
    if (id !== currentJob) return;
    showError("job-view-error", null);
    renderJob(job, checkpoints.data);
  } catch (err) {
    showError("job-view-error", err);
    if (err instanceof ApiError && err.status === 404) {
      save("job", null);
      return;
    }
  }
  if (!job || ACTIVE.has(job.status)) jobTimer = setTimeout(pollJob, POLL_MS);
  else refreshLists();
}

// The events not seen yet: pages of the newest first, until one already seen.
async function newEvents(id) {
  const known = new Set(jobEvents.map((e) => e.id));
  const fresh = [];
  let after = null;
  for (;;) {
    const page = await api(`/v1/fine_tuning/jobs/${id}/events?limit=100${after ? `&after=${after}` : ""}`);
    const unseen = page.data.filter((e) => !known.has(e.id));
    fresh.push(...unseen);
    if (!page.has_more || unseen.length < page.data.length || !page.data.length) break;
    after = page.data[page.data.length - 1].id;
  }
  if (id === currentJob) jobEvents = [...fresh, ...jobEvents];
}

function renderJob(job, checkpoints) {
  $("job-id").textContent = job.id;
  const badge = $("job-status");
  badge.textContent = job.status;
  badge.className = `badge ${job.status}`;
  const bits = [`base ${job.model}`];
  if (job.trained_tokens) bits.push(`${job.trained_tokens.toLocaleString()} tokens trained`);
  if (job.fine_tuned_model) bits.push(`model ${job.fine_tuned_model}`);
  if (job.estimated_finish && ACTIVE.has(job.status)) bits.push(`estimated finish ${when(job.estimated_finish)}`);
  if (job.error && job.error.message) bits.push(`error: ${job.error.message}`);
  $("job-summary").textContent = bits.join(" · ");
  $("job-cancel").disabled = !ACTIVE.has(job.status);
  $("job-pause").disabled = !["queued", "running"].includes(job.status);
  $("job-resume").disabled = job.status !== "paused";
  const done = job.status === "succeeded" && job.fine_tuned_model;
  $("job-try-complete").hidden = $("job-try-chat").hidden = !done;
  $("job-try-complete").dataset.model = $("job-try-chat").dataset.model = job.fine_tuned_model || "";
  const log = $("job-events");
  log.replaceChildren(...jobEvents.map((e) => {
    const item = document.createElement("li");
    item.textContent = `${new Date(e.created_at * 1000).toLocaleTimeString()}  ${e.message}`;
    if (e.level === "error") item.className = "error";
    return item;
  }));
  drawChart(jobEvents.filter((e) => e.type === "metrics" && e.data).map((e) => e.data).reverse());
  rows("checkpoints-table", checkpoints, (row, c) => {
    cell(row, c.step_number);
    cell(row, code(c.fine_tuned_model_checkpoint));
    cell(row, fixed(c.metrics.train_loss));
    cell(row, fixed(c.metrics.valid_loss));
    const actions = cell(row, button("Complete", () => useModel(c.fine_tuned_model_checkpoint, "complete")));
    actions.append(" ", button("Chat", () => useModel(c.fine_tuned_model_checkpoint, "chat")));
  });
}

const fixed = (x) => (typeof x === "number" ? x.toFixed(4) : "");

async function control(action) {
  if (!currentJob) return;
  try {
    await api(`/v1/fine_tuning/jobs/${currentJob}/${action}`, { method: "POST" });
  } catch (err) {
    showError("job-view-error", err);
  }
  pollJob();
}

// The loss curves: training loss at every step, validation loss where it was measured.
function drawChart(points) {
  const svg = $("loss-chart");
  const W = 640, H = 240, left = 48, right = 12, top = 12, bottom = 28;
  const make = (tag, attrs) => {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    return el;
  };
  const children = [];
  const train = points.filter((p) => typeof p.train_loss === "number");
  const valid = points.filter((p) => typeof p.valid_loss === "number");
  const losses = [...train.map((p) => p.train_loss), ...valid.map((p) => p.valid_loss)];
  svg.dataset.points = String(train.length);
  svg.dataset.validPoints = String(valid.length);
  if (!losses.length) {
    const empty = make("text", { x: W / 2, y: H / 2, "text-anchor": "middle" });
    empty.textContent = "no steps yet";
    svg.replaceChildren(empty);
    return;
  }
  const steps = points.map((p) => p.step);
  const x0 = Math.min(...steps), x1 = Math.max(x0 + 1, ...steps);
  let y0 = Math.min(...losses), y1 = Math.max(...losses);
  if (y1 - y0 < 1e-6) { y0 -= 0.5; y1 += 0.5; }
  const x = (s) => left + ((s - x0) / (x1 - x0)) * (W - left - right);
  const y = (v) => top + (1 - (v - y0) / (y1 - y0)) * (H - top - bottom);
  children.push(make("line", { x1: left, y1: H - bottom, x2: W - right, y2: H - bottom, class: "axis" }));
  children.push(make("line", { x1: left, y1: top, x2: left, y2: H - bottom, class: "axis" }));
  for (let i = 0; i <= 4; i++) {
    const v = y0 + ((y1 - y0) * i) / 4;
    const label = make("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" });
    label.textContent = v.toFixed(2);
    children.push(label, make("line", { x1: left - 3, y1: y(v), x2: left, y2: y(v), class: "axis" }));
  }
  const ticks = [...new Set([x0, Math.round((x0 + x1) / 2), x1])];
  for (const [i, s] of ticks.entries()) {
    const anchor = i === 0 ? "start" : i === ticks.length - 1 ? "end" : "middle";
    const label = make("text", { x: x(s), y: H - 8, "text-anchor": anchor });
    label.textContent = `step ${s}`;
    children.push(label);
  }
  const line = (list, key, cls) => make("polyline", { class: cls, points: list.map((p) => `${x(p.step)},${y(p[key])}`).join(" ") });
  if (train.length) children.push(line(train, "train_loss", "train"));
  if (valid.length) {
    children.push(line(valid, "valid_loss", "valid"));
    for (const p of valid) children.push(make("circle", { cx: x(p.step), cy: y(p.valid_loss), r: 3, class: "valid" }));
  }
  const last = train[train.length - 1];
  const title = make("title", {});
  title.textContent = last ? `step ${last.step}: training loss ${last.train_loss.toFixed(4)}` : "";
  svg.replaceChildren(title, ...children);
}

function setUpFinetune() {
  $("upload-form").addEventListener("submit", upload);
  $("job-form").addEventListener("submit", startJob);
  $("job-cancel").addEventListener("click", () => control("cancel"));
  $("job-pause").addEventListener("click", () => control("pause"));
  $("job-resume").addEventListener("click", () => control("resume"));
  $("job-try-complete").addEventListener("click", (e) => useModel(e.target.dataset.model, "complete"));
  $("job-try-chat").addEventListener("click", (e) => useModel(e.target.dataset.model, "chat"));
  const job = saved("job", null);
  if (job) openJob(job, false);
}

// -- the key, and start --------------------------------------------------------------------------------

function setUpKey() {
  const key = $("api-key");
  const remember = $("remember-key");
  const stored = saved("key", null);
  key.value = stored || "";
  remember.checked = stored !== null;
  const keep = () => save("key", remember.checked ? key.value : null);
  key.addEventListener("input", keep);
  key.addEventListener("change", loadModels);
  remember.addEventListener("change", keep);
}

async function checkHealth() {
  try {
    const response = await send("/health");
    if (!response.ok) $("server-status").textContent = `The server is unhealthy (${response.status}).`;
  } catch (err) {
    $("server-status").textContent = err.message;
  }
}

function start() {
  setUpKey();
  setUpTabs();
  setUpSettings();
  setUpComplete();
  setUpChat();
  setUpTokenize();
  setUpFinetune();
  for (const select of document.querySelectorAll(".model-select")) select.addEventListener("change", rememberModel);
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    hideTip();
    if (completing) completing.abort();
    if (chatting) chatting.abort();
  });
  openTab(location.hash.slice(1) || saved("tab", "complete"));
  checkHealth();
  loadModels().then(() => {
    performance.mark("usable"); // the prompt box and its model list are ready (benchmarks/bench_playground.py)
    if (!$("page-tokenize").hidden) tokenizeSoon();
  });
  document.body.dataset.ready = "true";
}

start();
