// groundqa chat page: plain JavaScript, no build step, nothing from a CDN.
// Offsets from the API count Unicode code points; JavaScript strings count UTF-16 units,
// so every slice and highlight goes through codePoints() below.
"use strict";

const CITATIONS = 3;
// The API's own limits (GET /v1/limits), read at start: the page keeps no copy of them.
let limits = null;
// The conversation so far, [{question, body}] (body: the QueryResponse), kept for this tab in
// sessionStorage so that a reload shows it again and follow-ups keep their history.
const STORED = "groundqa.conversation";
let conversation = [];
const ABSTAINED = "The articles don't seem to answer this question.";
const $ = (id) => document.getElementById(id);

function codePoints(text) {
  return Array.from(text); // one element per code point: index i is offset i
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// Text with ranges highlighted: ranges are {start, end, cls} in code points.
function highlighted(points, ranges, from = 0, to = points.length) {
  const cuts = new Set([from, to]);
  for (const r of ranges) {
    cuts.add(Math.min(Math.max(r.start, from), to));
    cuts.add(Math.min(Math.max(r.end, from), to));
  }
  const bounds = [...cuts].sort((a, b) => a - b);
  const fragment = document.createDocumentFragment();
  for (let i = 0; i + 1 < bounds.length; i++) {
    const [a, b] = [bounds[i], bounds[i + 1]];
    if (a === b) continue;
    const text = points.slice(a, b).join("");
    const classes = ranges.filter((r) => r.start <= a && b <= r.end).map((r) => r.cls);
    if (classes.length === 0) {
      fragment.append(text);
    } else {
      const mark = el("mark", { class: classes.map((c) => "hl-" + c).join(" "), "data-hl": classes.join(" ") }, text);
      fragment.append(mark);
    }
  }
  return fragment;
}

function say(message, isError = false) {
  const status = $("status");
  status.textContent = message;
  status.classList.toggle("error", isError);
}

function selectedDocs() {
  const boxes = [...document.querySelectorAll("#docs-list input[type=checkbox]")];
  const chosen = boxes.filter((b) => b.checked).map((b) => b.value);
  return chosen.length === 0 || chosen.length === boxes.length ? null : chosen;
}

function updateDocsSummary() {
  const chosen = selectedDocs();
  $("docs-summary").textContent = chosen === null ? "Documents: all" : `Documents: ${chosen.length} chosen`;
}

async function loadDocuments() {
  try {
    const reply = await fetch("/v1/documents");
    if (!reply.ok) throw new Error(await errorText(reply));
    const { documents } = await reply.json();
    const list = $("docs-list");
    list.replaceChildren();
    for (const doc of documents) {
      const box = el("input", { type: "checkbox", value: doc.doc_id, onchange: updateDocsSummary });
      list.append(el("label", { class: "doc-choice" }, box, " " + doc.title));
    }
    if (documents.length === 0) list.append(el("p", {}, "The index holds no documents yet."));
    renderDocuments(documents);
  } catch (err) {
    say("Could not list the documents: " + err.message, true);
  }
}

async function errorText(reply) {
  try {
    const body = await reply.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch {
    return `the server answered ${reply.status}`;
  }
}

function addTurn(question) {
  const turn = el("li", { class: "turn" });
  turn.append(el("div", { class: "bubble question" }, question));
  const reply = el("div", { class: "bubble reply pending" }, "Searching…");
  turn.append(reply);
  $("log").append(turn);
  $("hint").hidden = true;
  reply.scrollIntoView({ block: "end" });
  return reply;
}

function excerpt(passage, answer) {
  const points = codePoints(passage.text);
  const ranges = [];
  let from = 0;
  let to = Math.min(points.length, 240);
  if (answer && answer.doc_id === passage.doc_id && passage.start <= answer.start && answer.end <= passage.end) {
    const a = answer.start - passage.start;
    const b = answer.end - passage.start;
    ranges.push({ start: a, end: b, cls: "answer" });
    from = Math.max(0, a - 80);
    to = Math.min(points.length, Math.max(b + 80, from + 240));
  }
  const fragment = document.createDocumentFragment();
  if (from > 0) fragment.append("…");
  fragment.append(highlighted(points, ranges, from, to));
  if (to < points.length) fragment.append("…");
  return fragment;
}

function showAnswer(reply, body) {
  reply.classList.remove("pending");
  reply.replaceChildren();
  if (body.searched_for && body.searched_for !== body.question) {
    // A follow-up read in the light of the conversation: say what was searched.
    reply.append(el("p", { class: "searched-for" }, "Searched for: ", el("q", {}, body.searched_for)));
  }
  if (body.passages.length === 0) {
    reply.classList.add("empty");
    reply.append(el("p", { class: "answer-text" }, "Nothing in the documents answers this. Try other words, or search all documents."));
    return;
  }
  if (body.generated) reply.append(written(body.generated));
  let label = "Sources";
  if (!body.answer) {
    // Abstained: the closest passages are shown as such, with nothing highlighted as an answer.
    reply.classList.add("abstained");
    reply.append(el("p", { class: "answer-text" }, ABSTAINED + " These are the closest passages."));
    label = "Closest passages";
    reply.append(el("p", { class: "closest-head" }, label));
  } else {
    const answer = el("p", { class: "answer-text" }, body.answer.text);
    if (body.answer.page) answer.append(" ", pageLink(body.answer.doc_id, body.answer.page));
    reply.append(answer);
    reply.append(el("p", { class: "confidence", title: "the chance that this sentence answers the question" },
      `confidence ${Math.round(body.confidence * 100)}%`));
  }
  const list = el("ol", { class: "citations", "aria-label": label });
  for (const p of body.passages.slice(0, CITATIONS)) {
    const button = el(
      "button",
      { type: "button", class: "citation", "data-doc": p.doc_id, "data-start": p.start, "data-end": p.end,
        "aria-label": `Open source ${p.rank}: ${p.title}, characters ${p.start} to ${p.end}`,
        onclick: () => openArticle(p, body.answer) },
      el("span", { class: "cite-head" }, el("span", { class: "cite-title" }, `${p.rank}. ${p.title}`),
        el("span", { class: "score", title: "relevance score" }, p.score.toFixed(2))),
      el("span", { class: "cite-text" }, excerpt(p, body.answer)),
    );
    const item = el("li", {}, button);
    if (p.page) item.append(pageLink(p.doc_id, p.page));
    list.append(item);
  }
  reply.append(list);
}

// The written answer: each kept sentence with a link to the span that supports it (the citation
// view), the sentences no passage supports apart, or why there is none.
function written(generated) {
  const box = el("div", { class: "written" });
  if (generated.fallback !== null) {
    box.append(el("p", { class: "written-note" }, `No written answer: ${generated.warnings.join("; ")}`));
    return box;
  }
  const text = el("p", { class: "written-text" });
  generated.sentences.forEach((s, i) => text.append(i ? " " : "", ...claim(s)));
  box.append(el("p", { class: "written-head" }, `Written by ${generated.model}, every sentence checked against the articles`), text);
  if (generated.unsupported.length) {
    const left = el("ul", { class: "unsupported", "aria-label": "Left out: no passage supports these" });
    for (const s of generated.unsupported) left.append(el("li", {}, el("q", {}, s.text), ` (${s.reason})`));
    box.append(el("p", { class: "written-head" }, "Left out, because no passage supports them:"), left);
  }
  box.append(el("p", { class: "written-head" }, "From the article:"));
  return box;
}

// "p. 21": the original file (a PDF) opened at that page, in a new tab.
function pageLink(docId, page) {
  return el("a", { class: "page-link", href: `/v1/documents/${encodeURIComponent(docId)}/source#page=${page}`,
    target: "_blank", rel: "noopener", title: "open the original at this page" }, `p. ${page}`);
}

function showError(reply, message) {
  reply.classList.remove("pending");
  reply.classList.add("failed");
  reply.replaceChildren(el("p", { class: "answer-text", role: "alert" }, message));
}

async function ask(event) {
  event.preventDefault();
  const box = $("question");
  const question = box.value.trim();
  if (!question) {
    say("Type a question first.", true);
    box.focus();
    return;
  }
  if (limits && codePoints(question).length > limits.question_chars) {
    say(`The question is too long: ${codePoints(question).length} characters, at most ${limits.question_chars}.`, true);
    return;
  }
  say("");
  const reply = addTurn(question);
  box.value = "";
  setBusy(true);
  try {
    const generate = !$("written-choice").hidden && $("written").checked;
    const response = await fetch("/v1/query", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      // Until the limits arrive the mode list is empty: the server's default mode answers then.
      // A written answer streams: each sentence is shown as soon as it is checked.
      body: JSON.stringify({ question, mode: $("mode").value || undefined, doc_ids: selectedDocs(), history: history(),
        generate, stream: generate }),
    });
    if (!response.ok) {
      showError(reply, `The server could not answer: ${await errorText(response)}`);
    } else {
      const body = generate ? await streamed(response, reply) : await response.json();
      showAnswer(reply, body);
      conversation.push({ question, body });
      save();
    }
  } catch {
    showError(reply, "The server cannot be reached. Check that groundqa is running, then ask again.");
  } finally {
    setBusy(false);
    reply.scrollIntoView({ block: "end" });
    box.focus();
  }
}

// A streamed written answer: each checked sentence shown as it comes, with its source link; the
// whole response (the event "result") at the end.
async function streamed(response, reply) {
  const text = el("p", { class: "written-text" });
  reply.classList.remove("pending");
  reply.replaceChildren(el("div", { class: "written" },
    el("p", { class: "written-head" }, "Writing; every sentence is checked against the articles as it comes"), text));
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let result = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const kind = (block.match(/^event: (.*)$/m) || [])[1];
      const data = JSON.parse((block.match(/^data: (.*)$/m) || [])[1]);
      if (kind === "result") result = data;
      else if (kind === "sentence") text.append(text.childNodes.length ? " " : "", ...claim(data));
    }
  }
  if (!result) throw new Error("the stream ended without its result");
  return result;
}

// One sentence of a written answer, and its link to the span that supports it.
function claim(s) {
  const out = [el("span", { class: s.supported ? "claim" : "claim unsupported" }, s.text)];
  // A sentence joining facts of one passage has a link for each part's span.
  for (const c of s.supported && s.citation ? [s.citation, ...(s.also || [])] : []) {
    const href = `/view/${encodeURIComponent(c.doc_id)}?start=${c.start}&end=${c.end}#cited`;
    out.push(" ", el("a", { class: "claim-cite", href, target: "_blank", rel: "noopener",
      title: `supported (${Math.round(s.score * 100)}%): ${c.text}` }, "[source]"));
  }
  return out;
}

// The earlier turns as the API takes them: each question, and the answer sentence given (or the
// abstention), the latest ones within the server's limits.
function writtenText(body) {
  return body.generated && body.generated.fallback === null ? body.generated.text : null;
}

function history() {
  const turns = conversation.flatMap(({ question, body }) => [
    { role: "user", content: question },
    { role: "assistant", content: writtenText(body) || (body.answer ? body.answer.text : ABSTAINED) },
  ]);
  if (!limits) return turns.slice(-10);
  const kept = [];
  let chars = 0;
  for (const turn of turns.reverse()) {
    const content = turn.content.slice(0, limits.history_turn_chars);
    if (kept.length === limits.history_turns || chars + content.length > limits.history_chars) break;
    kept.unshift({ role: turn.role, content });
    chars += content.length;
  }
  return kept;
}

function save() {
  try {
    sessionStorage.setItem(STORED, JSON.stringify(conversation));
  } catch {
    // Storage full or refused: the conversation still goes on in this page.
  }
}

function restore() {
  try {
    conversation = JSON.parse(sessionStorage.getItem(STORED) || "[]");
  } catch {
    conversation = [];
  }
  for (const { question, body } of conversation) showAnswer(addTurn(question), body);
}

function newConversation() {
  conversation = [];
  save();
  $("log").replaceChildren();
  $("hint").hidden = false;
  say("New conversation: earlier questions are forgotten.");
  $("question").focus();
}

function setBusy(busy) {
  $("question").disabled = busy;
  $("send").disabled = busy;
  $("ask").setAttribute("aria-busy", String(busy));
}

async function openArticle(passage, answer) {
  const viewer = $("viewer");
  let doc;
  try {
    // The browser keeps the text and asks again each time: the server answers 304 (by its sha256)
    // unless the document was replaced since, so an old text is never shown.
    const reply = await fetch(`/v1/documents/${encodeURIComponent(passage.doc_id)}`, { cache: "no-cache" });
    if (!reply.ok) throw new Error(await errorText(reply));
    doc = await reply.json();
  } catch (err) {
    say("Could not open the article: " + (err.message || "the server cannot be reached"), true);
    return;
  }
  const points = codePoints(doc.text);
  if (points.slice(passage.start, passage.end).join("") !== passage.text) {
    say("This article was changed after the answer was given: ask again to cite its new text.", true);
    return;
  }
  say("");
  const title = doc.title;
  const ranges = [{ start: passage.start, end: passage.end, cls: "passage" }];
  if (answer && answer.doc_id === passage.doc_id) ranges.push({ start: answer.start, end: answer.end, cls: "answer" });
  $("viewer-title").textContent = title;
  $("viewer-offsets").textContent = `characters ${passage.start}–${passage.end}`;
  const body = $("viewer-text");
  body.replaceChildren(highlighted(points, ranges));
  body.dataset.doc = passage.doc_id;
  if (!viewer.open) viewer.showModal();
  const target = body.querySelector("mark.hl-answer") || body.querySelector("mark.hl-passage");
  if (target) target.scrollIntoView({ block: "center" });
}

async function loadLimits() {
  try {
    const reply = await fetch("/v1/limits");
    if (!reply.ok) throw new Error(await errorText(reply));
    limits = await reply.json();
  } catch (err) {
    say("Could not read the server's limits: " + (err.message || "the server cannot be reached"), true);
    return;
  }
  $("question").maxLength = limits.question_chars;
  $("written-choice").hidden = !limits.generation;
  $("mode").replaceChildren(
    ...limits.modes.map((mode) => {
      const option = el("option", { value: mode }, mode);
      option.selected = mode === limits.default_mode;
      return option;
    }),
  );
}

// --- the workspace: the key, adding files and text, the documents ---------------------------

const KEY = "groundqa.key";
const STAGES = { waiting: "Waiting", reading: "Reading pages", embedding: "Embedding passages and sentences", saving: "Saving" };
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

function writeHeaders(extra = {}) {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}`, ...extra } : extra;
}

function renderDocuments(documents) {
  const body = $("documents").tBodies[0];
  body.replaceChildren();
  for (const doc of documents) {
    const remove = el("button", { type: "button", class: "remove", "aria-label": `Remove ${doc.title}`,
      onclick: () => removeDocument(doc) }, "Remove");
    body.append(el("tr", { "data-doc": doc.doc_id },
      el("td", {}, doc.title), el("td", {}, doc.format), el("td", {}, doc.pages ? String(doc.pages) : "–"),
      el("td", {}, String(doc.passages)), el("td", {}, doc.created_at.slice(0, 10)), el("td", {}, remove)));
  }
  if (documents.length === 0) body.append(el("tr", {}, el("td", { colspan: "6" }, "The index holds no documents yet.")));
}

async function removeDocument(doc) {
  if (!confirm(`Remove “${doc.title}” from the index? Its passages will no longer answer questions.`)) return;
  try {
    const reply = await fetch(`/v1/documents/${encodeURIComponent(doc.doc_id)}`, { method: "DELETE", headers: writeHeaders() });
    if (!reply.ok) throw new Error(await errorText(reply));
    say(`Removed “${doc.title}”.`);
  } catch (err) {
    say(`Could not remove “${doc.title}”: ${err.message || "the server cannot be reached"}`, true);
  }
  loadDocuments();
}

function uploadItem(name) {
  const bar = el("progress", { "aria-label": `Progress of ${name}` });
  const status = el("span", { class: "upload-status" }, "Sending…");
  const li = el("li", { class: "upload", "data-name": name }, el("strong", {}, name), bar, status);
  $("uploads").append(li);
  return { li, bar, status };
}

function failUpload(item, message) {
  item.li.classList.add("failed");
  item.bar.max = 1;
  item.bar.value = 0;
  item.status.textContent = `Not added: ${message}`;
}

function showJob(item, job) {
  const { done, total } = job.progress;
  if (job.state === "failed") return failUpload(item, job.error);
  if (job.state === "done") {
    const r = job.result;
    item.bar.max = 1;
    item.bar.value = 1;
    item.li.classList.add("done");
    const pages = r.pages ? `, ${r.pages} pages` : "";
    const what = r.state === "unchanged" ? "Already in the index" : r.state === "replaced" ? "Replaced" : "Added";
    item.status.textContent = `${what}: ${r.title} (${r.passages} passages${pages})`
      + (r.warnings.length ? `. ${r.warnings.join("; ")}` : "");
    return;
  }
  if (total) {
    item.bar.max = total;
    item.bar.value = done;
  } else {
    item.bar.removeAttribute("value");
  }
  item.status.textContent = `${STAGES[job.stage] || job.stage}${total ? ` ${done} of ${total}` : ""}…`;
}

// One file as a background job (Prefer: respond-async): its progress until it ends.
async function uploadFile(file) {
  const item = uploadItem(file.name);
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const reply = await fetch("/v1/documents/upload",
      { method: "POST", headers: writeHeaders({ Prefer: "respond-async" }), body: form });
    if (reply.status !== 202) return failUpload(item, await errorText(reply));
    const location = reply.headers.get("Location");
    for (;;) {
      const polled = await fetch(location, { headers: writeHeaders() });
      if (!polled.ok) return failUpload(item, await errorText(polled));
      const job = await polled.json();
      showJob(item, job);
      if (job.state === "done" || job.state === "failed") break;
      await sleep(500);
    }
  } catch {
    return failUpload(item, "the server cannot be reached");
  } finally {
    loadDocuments();
  }
}

function addFiles(files) {
  if (files.length === 0) return;
  if (!$("workspace").open) $("workspace").showModal();
  if (!apiKey()) say("Adding articles needs the server's API key: enter it under Documents.", true);
  for (const file of files) uploadFile(file);
}

async function pasteText(event) {
  event.preventDefault();
  const text = $("paste-text").value;
  const title = $("paste-title").value.trim();
  if (!text.trim()) {
    say("Paste the article's text first.", true);
    $("paste-text").focus();
    return;
  }
  try {
    const reply = await fetch("/v1/documents", {
      method: "POST",
      headers: writeHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify({ text, title: title || undefined }),
    });
    if (!reply.ok) throw new Error(await errorText(reply));
    const doc = await reply.json();
    say(`${reply.status === 201 ? "Added" : "Already in the index"}: “${doc.title}” (${doc.passages} passages).`);
    $("paste-text").value = "";
    $("paste-title").value = "";
  } catch (err) {
    say(`The text was not added: ${err.message || "the server cannot be reached"}`, true);
  }
  loadDocuments();
}

function watchDrops() {
  const hint = $("drop-hint");
  const hasFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
  document.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    hint.hidden = false;
  });
  document.addEventListener("dragleave", (event) => {
    if (event.relatedTarget === null) hint.hidden = true;
  });
  document.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    hint.hidden = true;
    addFiles([...event.dataTransfer.files]);
  });
}

function init() {
  $("ask").addEventListener("submit", ask);
  $("question").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("ask").requestSubmit();
    }
  });
  $("viewer-close").addEventListener("click", () => $("viewer").close());
  $("new-conversation").addEventListener("click", newConversation);
  $("open-workspace").addEventListener("click", () => $("workspace").showModal());
  $("workspace-close").addEventListener("click", () => $("workspace").close());
  $("key").value = apiKey();
  $("key").addEventListener("input", () => sessionStorage.setItem(KEY, $("key").value.trim()));
  $("files").addEventListener("change", () => {
    addFiles([...$("files").files]);
    $("files").value = "";
  });
  $("paste").addEventListener("submit", pasteText);
  watchDrops();
  restore();
  loadLimits();
  loadDocuments();
  $("question").focus();
}

document.addEventListener("DOMContentLoaded", init);
