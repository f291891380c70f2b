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
  const ocr = location.ocr ? " (OCR)" : "";
  if (location.slide !== undefined) return `slide ${location.slide}${ocr}`;
  if (location.page !== undefined) return `page ${location.page}${ocr}`;
  return location.section ? `section: ${location.section}` : "";
}

// ---------- asking ----------

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function matchQuotes(text, quotes) {
  // [start, end) of each cited sentence in the text; tolerant of line breaks, spacing and Markdown marks.
  const ranges = [];
  for (const quote of quotes) {
    for (const sentence of quote.split(/(?<=[.!?])\s+/)) {
      const words = sentence.trim().replace(/[.!?:]+$/, "").split(/\s+/).filter(Boolean);
      if (words.length < 3) continue;
      const match = new RegExp(words.map(escapeRegExp).join("[\\s*_•-]+")).exec(text);
      if (match) ranges.push([match.index, match.index + match[0].length]);
    }
  }
  return ranges;
}

function highlight(container, text, quotes) {
  // Plain-text fallback: wrap each cited sentence of the passage in <mark>.
  const ranges = matchQuotes(text, quotes);
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

// ---------- rendering: Markdown and math ----------
//
// markdown-it (vendor/markdown-it.min.js) with `html: false` escapes every HTML tag in a document, which then
// shows as text: nothing from a document reaches the DOM as markup, which is why there is no separate
// sanitizer (DOMPurify) here: one library fewer. Links are kept only for http(s), mailto and #fragments, and
// images are turned off (an image would be fetched from wherever the document points). Math is cut out before
// Markdown sees it (the rules below run at `$` ahead of emphasis), so `$W_h$` never turns into emphasis, and is
// rendered by KaTeX (vendor/katex.min.js; trust off, so no \href or \includegraphics). Without the vendored
// scripts the page falls back to plain text.

const md = window.markdownit ? makeMarkdown(window.markdownit) : null;
// Plain-text documents (.txt) are hard-wrapped at a fixed width: their single line breaks are soft (a wrapped
// line joins its paragraph), blank lines part paragraphs. Markdown, slides and pages keep each line break.
const mdText = window.markdownit ? makeMarkdown(window.markdownit, false) : null;

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function tex(source, display) {
  if (window.katex) {
    try {
      return window.katex.renderToString(source, {
        displayMode: display, throwOnError: false, output: "htmlAndMathml", trust: false, strict: "ignore",
        maxExpand: 500,
      });
    } catch (_) { /* falls back to the source */ }
  }
  const fence = display ? "$$" : "$";
  return `<code class="math-source">${escapeHtml(fence + source + fence)}</code>`;
}

function mathInline(state, silent) {
  // $...$ (Pandoc's rule: no space just inside the dollars, no digit right after the closing one, so "$5 and
  // $10" stays text) and $$...$$ inside a line, e.g. "given by: $$h_t = ...$$." in an answer.
  const src = state.src;
  const start = state.pos;
  if (src.charCodeAt(start) !== 0x24) return false;
  const display = src.charCodeAt(start + 1) === 0x24;
  const width = display ? 2 : 1;
  let end;
  if (display) {
    end = src.indexOf("$$", start + 2);
    if (end < 0) return false;
  } else {
    if (!src[start + 1] || /\s/.test(src[start + 1])) return false;
    end = start + 1;
    do {
      end = src.indexOf("$", end + 1);
    } while (end > 0 && src[end - 1] === "\\");
    if (end < 0 || /\s/.test(src[end - 1]) || /\d/.test(src[end + 1] || "")) return false;
  }
  let content = src.slice(start + width, end);
  if (!content.trim()) return false;
  let after = end + width;
  if (display && /[.,;]/.test(src[after] || "")) {
    content += `\\,${src[after]}`; // "... $$x = y$$." keeps its full stop with the equation, not on the next line
    after += 1;
  }
  if (!silent) {
    const token = state.push(display ? "math_display" : "math_inline", "math", 0);
    token.content = content;
    token.markup = display ? "$$" : "$";
  }
  state.pos = after;
  return true;
}

function mathBracket(state, silent) {
  // LaTeX's own delimiters: \(...\) inline and \[...\] display inside a line (lecture notes and PDFs written
  // from LaTeX use them; "$" was the only inline form before, so "\(h_{t-1}\)" showed raw). Runs before
  // markdown-it's backslash escapes, which would otherwise eat the "\(".
  const src = state.src;
  const start = state.pos;
  if (src.charCodeAt(start) !== 0x5c) return false;
  const open = src[start + 1];
  if (open !== "(" && open !== "[") return false;
  const close = open === "(" ? "\\)" : "\\]";
  const end = src.indexOf(close, start + 2);
  if (end < 0) return false;
  const content = src.slice(start + 2, end);
  if (!content.trim()) return false;
  if (!silent) {
    const display = open === "[";
    const token = state.push(display ? "math_display" : "math_inline", "math", 0);
    token.content = content;
    token.markup = display ? "\\[" : "\\(";
  }
  state.pos = end + 2;
  return true;
}

function mathBlock(state, startLine, endLine, silent) {
  // A line that starts with $$ (or \[): up to the line that ends with $$ (or \]), the same line for "$$ x $$".
  if (state.sCount[startLine] - state.blkIndent >= 4) return false;
  let pos = state.bMarks[startLine] + state.tShift[startLine];
  let max = state.eMarks[startLine];
  const opener = state.src.slice(pos, pos + 2);
  if (opener !== "$$" && opener !== "\\[") return false;
  const closer = opener === "$$" ? "$$" : "\\]";
  const first = state.src.slice(pos + 2, max).trim();
  let content = "";
  let last = startLine;
  if (first.length > 2 && first.endsWith(closer)) {
    content = first.slice(0, -2);
    if (content.includes(closer)) return false; // "$$a$$ and $$b$$": inline
  } else if (first.includes(closer)) {
    return false; // "$$a$$ and more text": inline math in a paragraph
  } else {
    const lines = [first];
    let found = false;
    for (last = startLine + 1; last < endLine; last++) {
      pos = state.bMarks[last] + state.tShift[last];
      max = state.eMarks[last];
      if (pos < max && state.sCount[last] < state.blkIndent) break;
      const line = state.src.slice(pos, max).trim();
      if (line.endsWith(closer)) {
        lines.push(line.slice(0, -2));
        found = true;
        break;
      }
      lines.push(line);
    }
    if (!found) return false;
    content = lines.join("\n");
  }
  if (!content.trim()) return false;
  if (silent) return true;
  state.line = last + 1;
  const token = state.push("math_block", "math", 0);
  token.block = true;
  token.content = content;
  token.markup = opener;
  token.map = [startLine, state.line];
  return true;
}

function citeMarker(state, silent) {
  // An answer's [n] becomes a link to its numbered source (env: turnId, sourceCount).
  const env = state.env || {};
  if (!env.turnId || state.src.charCodeAt(state.pos) !== 0x5b) return false;
  const m = /^\[(\d{1,3})\]/.exec(state.src.slice(state.pos, state.pos + 6));
  if (!m) return false;
  const n = Number(m[1]);
  if (n < 1 || n > env.sourceCount) return false;
  if (!silent) state.push("cite", "a", 0).meta = { n };
  state.pos += m[0].length;
  return true;
}

function makeMarkdown(markdownit, breaks = true) {
  const parser = markdownit({ html: false, linkify: false, typographer: false, breaks });
  parser.disable(["image"]);
  parser.validateLink = (url) => /^(https?:|mailto:|#)/i.test(url.trim());
  parser.inline.ruler.before("escape", "math_inline", mathInline);
  parser.inline.ruler.before("escape", "math_bracket", mathBracket);
  parser.inline.ruler.before("link", "cite", citeMarker);
  parser.block.ruler.before("fence", "math_block", mathBlock,
    { alt: ["paragraph", "reference", "blockquote", "list"] });
  const rules = parser.renderer.rules;
  rules.math_inline = (tokens, i) => tex(tokens[i].content, false);
  rules.math_display = (tokens, i) => tex(tokens[i].content, true);
  rules.math_block = (tokens, i) => `<div class="math-block">${tex(tokens[i].content, true)}</div>\n`;
  rules.cite = (tokens, i, _options, env) => {
    const n = tokens[i].meta.n;
    return `<a href="#src-${env.turnId}-${n}" class="cite" aria-label="source ${n}">[${n}]</a>`;
  };
  rules.link_open = (tokens, i, options, _env, self) => {
    tokens[i].attrSet("rel", "noopener noreferrer nofollow");
    tokens[i].attrSet("target", "_blank");
    return self.renderToken(tokens, i, options);
  };
  return parser;
}

function renderMarkdown(node, text, env = {}, parser = md) {
  node.classList.remove("plain");
  node.innerHTML = parser.render(text, env); // markdown-it output: document HTML escaped (see above)
}

function isPlainText(source) {
  return /\.txt$/i.test((source.document && source.document.name) || "");
}

function renderAnswer(node, text, turnId, sourceCount) {
  node.textContent = "";
  node.classList.remove("streaming");
  if (md) {
    renderMarkdown(node, text, { turnId, sourceCount });
    return;
  }
  node.classList.add("plain");
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

const BLOCKS = new Set(["P", "LI", "DIV", "H1", "H2", "H3", "H4", "H5", "H6", "TR", "TD", "TH", "PRE",
  "BLOCKQUOTE", "UL", "OL", "TABLE"]);

function highlightRendered(container, quotes) {
  // Marks the cited sentences in a rendered passage: the passage's text nodes are read as one string (a line
  // break for each <br> and block, each formula as its TeX source), the sentences matched in it, and the
  // matching parts of the text nodes wrapped in <mark>.
  const pieces = [];
  let flat = "";
  const walk = (parent) => {
    for (const child of parent.childNodes) {
      if (child.nodeType === Node.TEXT_NODE) {
        pieces.push({ node: child, start: flat.length });
        flat += child.data;
      } else if (child.nodeType === Node.ELEMENT_NODE) {
        if (child.classList.contains("katex-display") || child.classList.contains("katex")) {
          const annotation = child.querySelector("annotation");
          const fence = child.classList.contains("katex-display") ? "$$" : "$";
          flat += annotation ? fence + annotation.textContent + fence : " ";
        } else if (child.tagName === "BR") {
          flat += "\n";
        } else {
          const block = BLOCKS.has(child.tagName);
          if (block) flat += "\n";
          walk(child);
          if (block) flat += "\n";
        }
      }
    }
  };
  walk(container);
  const ranges = matchQuotes(flat, quotes).sort((a, b) => a[0] - b[0]);
  const merged = [];
  for (const range of ranges) {
    const last = merged[merged.length - 1];
    if (last && range[0] <= last[1]) last[1] = Math.max(last[1], range[1]);
    else merged.push([...range]);
  }
  const segments = [];
  for (const [from, to] of merged) {
    for (const { node, start } of pieces) {
      const a = Math.max(from, start) - start;
      const b = Math.min(to, start + node.data.length) - start;
      if (a < b && node.data.slice(a, b).trim()) segments.push({ node, a, b });
    }
  }
  segments.sort((x, y) => y.a - x.a); // later parts of a text node first: earlier offsets stay valid
  for (const { node, a, b } of segments) {
    const range = document.createRange();
    range.setStart(node, a);
    range.setEnd(node, b);
    range.surroundContents(document.createElement("mark"));
  }
}

// A passage's last line that is only "Source:" or "Image source:" (nothing after it but perhaps a URL): the
// slide's credit line, cut off by chunking. Shown without it; retrieval keeps the text as it is.
const DANGLING_SOURCE = /(?:^|\n|(?<=[.!?:;)])[ \t]+)[ \t]*(?:[-*][ \t]+)?(?:image[ \t]+)?source[ \t]*:[ \t]*(?:<?(?:https?:\/\/|www\.)\S*>?)?[ \t]*$/i;

function trimDangling(text) {
  let out = text.trimEnd();
  for (;;) {
    const next = out.replace(DANGLING_SOURCE, "").trimEnd();
    if (next === out) return out;
    out = next;
  }
}

function sameLocation(a, b) {
  return a.document.id === b.document.id && JSON.stringify(a.location) === JSON.stringify(b.location);
}

function dedupeSources(sources) {
  // "Closest passages" lists each text once; a copy elsewhere joins the first one's "Also at".
  const kept = new Map();
  for (const source of sources) {
    const key = trimDangling(source.text).replace(/\s+/g, " ").trim().toLowerCase();
    const first = kept.get(key);
    if (!first) {
      kept.set(key, { ...source, also_at: [...(source.also_at || [])] });
      continue;
    }
    for (const place of [{ document: source.document, location: source.location }, ...(source.also_at || [])]) {
      if (!sameLocation(place, first) && !first.also_at.some((a) => sameLocation(a, place))) first.also_at.push(place);
    }
  }
  return [...kept.values()];
}

// ---------- slide and page previews ----------

const previews = new Map(); // key + URL -> Promise of a blob: URL or null
const PREVIEW_WAIT_MS = 120_000;

function pageNumber(location) {
  const n = location ? (location.slide ?? location.page) : undefined;
  return Number.isInteger(n) && n >= 1 ? n : null;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function fetchPreview(url) {
  // The image needs the API key, which an <img src> cannot send: fetched here, shown from a blob: URL.
  // 404 (no pages in this format, or no such page) or anything else unexpected: no preview, quietly.
  // 503 (not rendered yet): asked again after Retry-After, for at most PREVIEW_WAIT_MS.
  const deadline = Date.now() + PREVIEW_WAIT_MS;
  for (;;) {
    let response;
    try {
      response = await fetch(url, { headers: authHeaders() });
    } catch (_) {
      return null;
    }
    if (response.status === 503 && Date.now() < deadline) {
      const after = Number(response.headers.get("Retry-After"));
      await sleep(1000 * Math.min(Math.max(Number.isFinite(after) ? after : 2, 1), 10));
      continue;
    }
    const type = response.headers.get("Content-Type") || "";
    if (!response.ok || !type.startsWith("image/")) return null;
    return URL.createObjectURL(await response.blob());
  }
}

function preview(doc, n, size) {
  const url = `/api/v1/documents/${encodeURIComponent(doc.id)}/pages/${n}?size=${size}`;
  const key = `${state.key}\n${url}`;
  if (!previews.has(key)) {
    const promise = fetchPreview(url);
    previews.set(key, promise);
    promise.then((blobUrl) => { if (!blobUrl) previews.delete(key); });
  }
  return previews.get(key);
}

function placeLabel(place) {
  const doc = place.document;
  return `${doc.name || doc.title}, ${locationLabel(place.location)}`;
}

function addThumbnail(container, place, extraClass = "") {
  // A button holding the slide's or page's image, added only once the image has loaded (no broken-image
  // icon); its alt text names the document and location; Enter or a click shows it large.
  const n = pageNumber(place.location);
  if (!n) return;
  const label = placeLabel(place);
  const button = document.createElement("button");
  button.type = "button";
  button.className = `thumb ${extraClass}`.trim();
  button.hidden = true;
  button.setAttribute("aria-haspopup", "dialog");
  const img = document.createElement("img");
  img.alt = label;
  const hint = document.createElement("span");
  hint.className = "sr-only";
  hint.textContent = " (enlarge)";
  button.append(img, hint);
  container.append(button);
  preview(place.document, n, "thumb").then(async (blobUrl) => {
    if (!blobUrl) { button.remove(); return; }
    img.src = blobUrl;
    try {
      await img.decode();
    } catch (_) {
      button.remove();
      return;
    }
    button.hidden = false;
    button.addEventListener("click", () => enlarge(place, blobUrl, button));
  });
}

async function enlarge(place, thumbUrl, opener) {
  const dialog = $("#preview-dialog");
  const img = dialog.querySelector("img");
  const label = placeLabel(place);
  img.alt = label;
  img.src = thumbUrl;
  dialog.querySelector("figcaption").textContent = label;
  dialog.returnFocusTo = opener;
  dialog.dataset.showing = label;
  if (!dialog.open) dialog.showModal();
  const full = await preview(place.document, pageNumber(place.location), "full");
  if (full && dialog.open && dialog.dataset.showing === label) img.src = full;
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
    where.textContent = placeLabel(source);
    const body = document.createElement("div");
    body.className = "source-body";
    addThumbnail(body, source);
    const passage = document.createElement("div");
    passage.className = "source-text";
    const quotes = citations.filter((c) => c.n === n).map((c) => c.quote);
    const text = trimDangling(source.text);
    if (md) {
      renderMarkdown(passage, text, {}, isPlainText(source) ? mdText : md);
      highlightRendered(passage, quotes);
    } else {
      passage.classList.add("plain");
      highlight(passage, text, quotes);
    }
    body.append(passage);
    item.append(where, body);
    if (source.also_at && source.also_at.length) {
      const also = document.createElement("div");
      also.className = "also";
      also.append(document.createTextNode("Also at: "));
      const places = document.createElement("ul");
      for (const place of source.also_at) {
        const entry = document.createElement("li");
        entry.append(document.createTextNode(placeLabel(place)));
        addThumbnail(entry, place, "small");
        places.append(entry);
      }
      also.append(places);
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
        answer.classList.add("streaming");
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
  const sources = final.grounded ? final.sources : dedupeSources(final.sources);
  renderSources(turn.querySelector(".sources"), sources, final.citations, turnId);
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
    const show = (f) => {
      result.textContent = f.status === "skipped" ? ` skipped: ${f.reason}` : ` ${f.status}`;
      result.className = f.status === "skipped" ? "skip" : "ok";
    };
    xhr.onload = async () => {
      bar.value = 100;
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if (xhr.status === 202) {  // queued for the ingest workers (store=postgres): follow the job
        result.textContent = " queued";
        const job = await followJob(body.id, result);
        if (job.state === "done" && job.report) show(job.report.files[0]);
        else { result.textContent = ` failed: ${job.error || "the job did not finish"}`; result.className = "skip"; }
      } else if (xhr.status === 200) {
        show(body.files[0]);
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

async function followJob(id, label) {
  for (;;) {
    await new Promise((r) => setTimeout(r, 1000));
    let job;
    try { job = await api(`/api/v1/jobs/${encodeURIComponent(id)}`); } catch (error) { return { state: "failed", error: explain(error) }; }
    if (job.state === "done" || job.state === "failed") return job;
    const p = job.progress || {};
    label.textContent = job.state === "running" && p.total ? ` ${p.stage} ${p.done}/${p.total}` : ` ${job.state}`;
  }
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
  const dialog = $("#preview-dialog");
  dialog.querySelector("button.close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (e) => { if (e.target === dialog) dialog.close(); }); // the backdrop
  dialog.addEventListener("close", () => {
    dialog.querySelector("img").removeAttribute("src");
    delete dialog.dataset.showing;
    if (dialog.returnFocusTo && dialog.returnFocusTo.isConnected) dialog.returnFocusTo.focus();
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
