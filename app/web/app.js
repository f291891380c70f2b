// lecture-qa web page: plain JavaScript, no framework, nothing loaded from elsewhere.
"use strict";

const KEY_STORAGE = "lecture-qa.api-key";
const state = {
  key: sessionStorage.getItem(KEY_STORAGE) || "",
  history: [],
  canWrite: true,
  turns: 0,
};

const $ = (selector) => document.querySelector(selector);

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function authHeaders(extra = {}) {
  const headers = { ...extra };
  if (state.key) headers.Authorization = `Bearer ${state.key}`;
  return headers;
}

async function errorFrom(response) {
  let message = response.statusText || "request failed";
  try {
    const body = await response.json();
    if (body && body.error) message = body.error;
  } catch (_) { /* not JSON */ }
  return new ApiError(response.status, message);
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: authHeaders(options.headers || {}) });
  if (!response.ok) throw await errorFrom(response);
  return response.json();
}

function explain(error) {
  const status = error.status;
  if (status === 401) {
    $("#key-panel").hidden = false;
    return "This service needs a valid API key: enter it in the API key box above.";
  }
  if (status === 403) return "This API key may not change documents.";
  if (status === 413) return `The file is too large. ${error.message}`;
  if (status === 415) return `That file type is not supported. ${error.message}`;
  if (status === 429) return "Too many requests right now: wait a moment and try again.";
  if (status === 503) return "The service is still starting: try again in a few seconds.";
  return error.message || "Something went wrong.";
}

function showStatus(message, kind = "error") {
  const box = $("#status");
  box.textContent = message;
  box.className = `status ${kind === "info" ? "info" : ""}`;
  box.hidden = !message;
}

function locationLabel(location) {
  if (!location) return "";
  if (location.slide !== undefined) return `slide ${location.slide}`;
  if (location.page !== undefined) return `page ${location.page}`;
  return location.section ? `section: ${location.section}` : "";
}

// ---------- asking ----------

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function highlight(container, text, quotes) {
  // Wrap each cited sentence of the passage in <mark>; tolerant of line breaks and spacing differences.
  const ranges = [];
  for (const quote of quotes) {
    for (const sentence of quote.split(/(?<=[.!?])\s+/)) {
      const words = sentence.trim().replace(/[.!?:]+$/, "").split(/\s+/).filter(Boolean);
      if (words.length < 3) continue;
      const match = new RegExp(words.map(escapeRegExp).join("[\\s*_•-]+")).exec(text);
      if (match) ranges.push([match.index, match.index + match[0].length]);
    }
  }
  ranges.sort((a, b) => a[0] - b[0]);
  let at = 0;
  for (const [start, end] of ranges) {
    if (start < at) continue;
    container.append(document.createTextNode(text.slice(at, start)));
    const mark = document.createElement("mark");
    mark.textContent = text.slice(start, end);
    container.append(mark);
    at = end;
  }
  container.append(document.createTextNode(text.slice(at)));
}

function renderAnswer(node, text, turnId, sourceCount) {
  node.textContent = "";
  const parts = text.split(/(\[\d+\])/);
  for (const part of parts) {
    const m = /^\[(\d+)\]$/.exec(part);
    const n = m ? Number(m[1]) : 0;
    if (m && n >= 1 && n <= sourceCount) {
      const link = document.createElement("a");
      link.href = `#src-${turnId}-${n}`;
      link.className = "cite";
      link.textContent = part;
      link.setAttribute("aria-label", `source ${n}`);
      node.append(link);
    } else {
      node.append(document.createTextNode(part));
    }
  }
}

function renderSources(list, sources, citations, turnId) {
  list.textContent = "";
  sources.forEach((source, i) => {
    const n = i + 1;
    const item = document.createElement("li");
    item.id = `src-${turnId}-${n}`;
    item.tabIndex = -1;
    const where = document.createElement("div");
    where.className = "source-where";
    where.textContent = `${source.document.name || source.document.title}, ${locationLabel(source.location)}`;
    const passage = document.createElement("div");
    passage.className = "source-text";
    const quotes = citations.filter((c) => c.n === n).map((c) => c.quote);
    highlight(passage, source.text, quotes);
    item.append(where, passage);
    if (source.also_at && source.also_at.length) {
      const also = document.createElement("div");
      also.className = "also";
      const places = source.also_at.map((a) => `${a.document.name}, ${locationLabel(a.location)}`);
      also.textContent = `Also at: ${places.join("; ")}`;
      item.append(also);
    }
    list.append(item);
  });
}

function parseEvents(buffer, onEvent) {
  // Server-sent events arrive as "event: name\ndata: json\n\n"; returns the unparsed remainder.
  let index;
  while ((index = buffer.indexOf("\n\n")) >= 0) {
    const block = buffer.slice(0, index);
    buffer = buffer.slice(index + 2);
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).trim());
    }
    if (data.length) onEvent(event, JSON.parse(data.join("\n")));
  }
  return buffer;
}

async function ask(question) {
  const turnId = ++state.turns;
  const turn = $("#turn-template").content.firstElementChild.cloneNode(true);
  turn.querySelector(".turn-question").textContent = question;
  const answer = turn.querySelector(".answer");
  $("#conversation").prepend(turn);
  const body = { question, stream: true };
  if (state.history.length) body.history = state.history.slice(-3);
  let streamed = "";
  const response = await fetch("/api/v1/ask", {
    method: "POST",
    headers: authHeaders({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    turn.remove();
    throw await errorFrom(response);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let final = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer = parseEvents(buffer + decoder.decode(value, { stream: true }), (event, data) => {
      if (event === "delta") {
        streamed += data.text;
        answer.textContent = streamed;
      } else if (event === "done") {
        final = data;
      } else if (event === "error") {
        throw new ApiError(500, data.error);
      }
    });
  }
  if (!final) throw new ApiError(500, "the answer stream ended early");
  answer.setAttribute("aria-busy", "false");
  if (final.grounded) {
    renderAnswer(answer, final.answer, turnId, final.sources.length);
  } else {
    answer.hidden = true;
    turn.querySelector(".not-covered").hidden = false;
    turn.querySelector(".sources-title").textContent = "Closest passages";
  }
  renderSources(turn.querySelector(".sources"), final.sources, final.citations, turnId);
  const t = final.timings_ms || {};
  const note = final.llm_error ? ` ${final.llm_error}.` : "";
  turn.querySelector(".timing").textContent =
    `Answered by ${final.answered_by} in ${Math.round(t.total || 0)} ms.${note}`;
  turn.classList.add(final.grounded ? "grounded" : "not-grounded");
  state.history.push(question);
  $("#turns").textContent = `${state.history.length} question${state.history.length > 1 ? "s" : ""} in this conversation`;
}

// ---------- documents ----------

async function loadDocuments() {
  const body = await api("/api/v1/documents");
  const tbody = $("#documents tbody");
  tbody.textContent = "";
  for (const doc of body.documents) {
    const row = document.createElement("tr");
    const label = doc.units === 1 ? doc.unit_label.replace(/s$/, "") : doc.unit_label;
    const cells = [doc.name, doc.type, `${doc.units} ${label}`, String(doc.chunks),
      new Date(doc.ingested_at).toLocaleDateString()];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (i === 0) td.className = "name";
      row.append(td);
    });
    const actions = document.createElement("td");
    if (state.canWrite) {
      const del = document.createElement("button");
      del.type = "button";
      del.className = "danger";
      del.textContent = "Delete";
      del.setAttribute("aria-label", `Delete ${doc.name}`);
      del.addEventListener("click", () => removeDocument(doc));
      actions.append(del);
    }
    row.append(actions);
    tbody.append(row);
  }
}

async function removeDocument(doc) {
  if (!window.confirm(`Delete "${doc.name}" and all its passages from the index?`)) return;
  try {
    await api(`/api/v1/documents/${encodeURIComponent(doc.id)}`, { method: "DELETE" });
    showStatus(`Deleted ${doc.name}.`, "info");
    await loadDocuments();
  } catch (error) {
    showStatus(explain(error));
  }
}

function uploadOne(file) {
  const item = document.createElement("li");
  const name = document.createElement("span");
  name.textContent = `${file.name} `;
  const bar = document.createElement("progress");
  bar.max = 100;
  bar.value = 0;
  bar.setAttribute("aria-label", `Uploading ${file.name}`);
  const result = document.createElement("span");
  item.append(name, bar, result);
  $("#uploads").prepend(item);
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/v1/documents");
    if (state.key) xhr.setRequestHeader("Authorization", `Bearer ${state.key}`);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = (100 * e.loaded) / e.total; };
    xhr.onload = () => {
      bar.value = 100;
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if (xhr.status === 200) {
        const f = body.files[0];
        result.textContent = f.status === "skipped" ? ` skipped: ${f.reason}` : ` ${f.status}`;
        result.className = f.status === "skipped" ? "skip" : "ok";
      } else {
        const detail = body.detail && body.detail.files ? body.detail.files[0].reason : body.error;
        const message = xhr.status === 422 ? `skipped: ${detail}` : explain(new ApiError(xhr.status, body.error));
        result.textContent = ` ${message}`;
        result.className = "skip";
      }
      item.dataset.status = result.textContent.trim().split(":")[0];
      resolve();
    };
    xhr.onerror = () => {
      result.textContent = " failed: the service could not be reached";
      result.className = "skip";
      resolve();
    };
    const form = new FormData();
    form.append("files", file, file.name);
    xhr.send(form);
  });
}

async function uploadFiles(files) {
  await Promise.all(Array.from(files).map(uploadOne));
  try { await loadDocuments(); } catch (error) { showStatus(explain(error)); }
}

// ---------- start ----------

async function refreshAccess() {
  try {
    const who = await api("/api/v1/whoami");
    state.canWrite = who.can_write;
    $("#key-panel").hidden = !who.auth_required;
    $("#upload-area").hidden = !who.can_write;
    $("#read-only-note").hidden = who.can_write;
    showStatus("");
    await loadDocuments();
  } catch (error) {
    showStatus(explain(error));
  }
}

function wire() {
  $("#api-key").value = state.key;
  $("#key-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    state.key = $("#api-key").value.trim();
    sessionStorage.setItem(KEY_STORAGE, state.key);
    await refreshAccess();
  });
  $("#forget-key").addEventListener("click", async () => {
    state.key = "";
    sessionStorage.removeItem(KEY_STORAGE);
    $("#api-key").value = "";
    await refreshAccess();
  });
  $("#ask-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const question = $("#question").value.trim();
    if (!question) return;
    const button = $("#ask-button");
    button.disabled = true;
    try {
      await ask(question);
      $("#question").value = "";
      showStatus("");
    } catch (error) {
      showStatus(explain(error));
    } finally {
      button.disabled = false;
      $("#question").focus();
    }
  });
  $("#question").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      $("#ask-form").requestSubmit();
    }
  });
  $("#new-conversation").addEventListener("click", () => {
    state.history = [];
    $("#conversation").textContent = "";
    $("#turns").textContent = "";
    $("#question").focus();
  });
  const zone = $("#drop-zone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    uploadFiles(e.dataTransfer.files);
  });
  zone.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("#file-input").click(); }
  });
  $("#file-input").addEventListener("change", (e) => {
    uploadFiles(e.target.files);
    e.target.value = "";
  });
}

wire();
refreshAccess();
