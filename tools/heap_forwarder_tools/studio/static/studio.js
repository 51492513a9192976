// The event tester page: plain JavaScript, no build step, no library.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { name: "pasted event", sampleText: null, sent: [], previewTimer: null, previewSeq: 0 };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const payload = await response.json();
  if (!response.ok) throw new Error(payload.error || `HTTP ${response.status}`);
  return payload;
}

// ---------------------------------------------------------------------------- 1. the event
async function loadSamples() {
  const { samples } = await api("GET", "/api/samples");
  const groups = {};
  for (const name of samples) {
    const folder = name.split("/")[0];
    if (!groups[folder]) groups[folder] = $("sample").appendChild(el("optgroup", { label: `events/${folder}` }));
    groups[folder].append(el("option", { value: name }, name.split("/")[1]));
  }
}

async function pickSample() {
  const name = $("sample").value;
  if (!name) return;
  const sample = await api("GET", `/api/sample?name=${encodeURIComponent(name)}`);
  $("event").value = sample.text;
  state.sampleText = sample.text;
  setName(sample.name);
  schedulePreview(0);
}

function setName(name) {
  state.name = name;
  $("event-name").textContent = name;
}

function eventEdited() {
  if (state.sampleText !== null && $("event").value !== state.sampleText) {
    state.sampleText = null;
    $("sample").value = "";
    setName("pasted event");
  }
  schedulePreview();
}

// ---------------------------------------------------------------------------- 2. the override editor
function lineHeight() {
  return parseFloat(getComputedStyle($("override")).lineHeight);
}

function renderGutter(problemLines) {
  const count = $("override").value.split("\n").length;
  const gutter = $("override-gutter");
  gutter.replaceChildren();
  for (let line = 1; line <= count; line++) {
    gutter.append(el("div", problemLines.has(line) ? { class: "bad" } : {}, line));
  }
  syncScroll();
}

function renderMarks(problems) {
  const marks = $("override-marks");
  marks.replaceChildren();
  const height = lineHeight();
  const top = parseFloat(getComputedStyle($("override")).paddingTop);
  for (const problem of problems) {
    if (!problem.line) continue;
    // At its line, the position (override.yaml:L:C) and the path would only repeat where it is:
    // the last step of the path and the message are enough (the list below has it all).
    const [where, ...message] = problem.text.replace(/^override\.yaml:\d+:\d+: /, "").split(": ");
    const short = message.length ? `${where.split(".").pop()}: ${message.join(": ")}` : where;
    const mark = el("div", { class: "mark", "data-line": problem.line, title: problem.text }, short);
    mark.style.top = `${top + (problem.line - 1) * height}px`;
    marks.append(mark);
  }
  syncScroll();
}

function syncScroll() {
  const scrollTop = $("override").scrollTop;
  $("override-gutter").scrollTop = scrollTop;
  $("override-marks").style.transform = `translateY(${-scrollTop}px)`;
}

function goToLine(line) {
  const area = $("override");
  const lines = area.value.split("\n");
  const start = lines.slice(0, line - 1).reduce((n, text) => n + text.length + 1, 0);
  area.focus();
  area.setSelectionRange(start, start + (lines[line - 1] || "").length);
  area.scrollTop = Math.max(0, (line - 3) * lineHeight());
  syncScroll();
}

function renderOverride(override) {
  const status = $("override-status");
  const list = $("problems");
  list.replaceChildren();
  const problems = override.problems || [];
  if (!$("override").value.trim()) {
    status.className = "status";
    status.textContent = "No override: the default playbook.";
  } else if (override.ok) {
    status.className = "status ok";
    status.textContent = "The override is valid, merged onto the default playbook.";
  } else {
    status.className = "status bad";
    status.textContent = `${problems.length} problem(s) in the override.`;
  }
  for (const problem of problems) {
    const item = el("li", { "data-line": problem.line || "" });
    if (problem.line) {
      item.append(el("button", { type: "button", onclick: () => goToLine(problem.line) }, `line ${problem.line}`), ": ");
    }
    item.append(problem.text);
    list.append(item);
  }
  renderGutter(new Set(problems.filter((p) => p.line).map((p) => p.line)));
  renderMarks(problems);
}

// ---------------------------------------------------------------------------- 3. the preview
function schedulePreview(delay = 250) {
  clearTimeout(state.previewTimer);
  state.previewTimer = setTimeout(runPreview, delay);
}

async function runPreview() {
  const seq = ++state.previewSeq;
  let result;
  try {
    result = await api("POST", "/api/preview", {
      event: $("event").value, override: $("override").value, name: state.name, explain: $("explain").checked,
    });
  } catch (error) {
    $("preview-text").textContent = `error: ${error.message}`;
    return;
  }
  if (seq !== state.previewSeq) return; // a newer edit is being previewed
  renderOverride(result.override);
  $("preview-text").textContent = result.text;
  $("preview-text").dataset.status = result.status;
  const verdicts = $("verdicts");
  const requests = $("requests");
  verdicts.replaceChildren();
  requests.replaceChildren();
  if (!result.preview) {
    verdicts.append(el("li", { class: "refused" }, el("span", { class: "outcome" }, "not previewed"), ": ",
      result.override.ok ? "the event is not JSON" : "fix the override first"));
    return;
  }
  for (const verdict of result.preview.verdicts) {
    const reason = verdict.outcome === "mapped" ? "" : ` (${verdict.error_class}): ${verdict.reason}`;
    const explained = verdict.explanation.length ? [el("pre", { class: "explanation" }, verdict.explanation.join("\n"))] : [];
    verdicts.append(el("li", { class: verdict.outcome },
      `${verdict.label}: `, el("span", { class: "outcome" }, verdict.outcome), reason, ...explained));
  }
  if (!result.preview.requests.length) requests.append(el("p", { class: "quiet" }, "No Heap request."));
  for (const request of result.preview.requests) {
    requests.append(el("div", { class: "request" },
      el("h4", {}, `POST ${request.endpoint}`), el("pre", {}, JSON.stringify(request.body, null, 2))));
  }
}

// ---------------------------------------------------------------------------- 4. sending
async function send(via) {
  const buttons = [$("send-api"), $("send-queue")];
  buttons.forEach((b) => { b.disabled = true; });
  const result = $("send-result");
  result.replaceChildren(via === "api" ? "Sending to the local API (Heap may be retried for a while)..." : "Sending to the main queue...");
  try {
    const answer = await api("POST", "/api/send", { event: $("event").value, override: $("override").value, via });
    state.sent = answer.events.map((e) => (e && e.messageId) || "").filter(Boolean);
    const head = via === "api" ? `POST ${answer.path}: HTTP ${answer.status}` : `Sent to the main queue as message ${answer.messageId}`;
    result.replaceChildren(el("p", {}, el("strong", {}, head)),
      ...(via === "api" ? [el("pre", { id: "send-answer" }, JSON.stringify(answer.answer, null, 2))] : []),
      el("div", { id: "send-followup" }));
  } catch (error) {
    result.replaceChildren(el("p", { class: "refused-status" }, `Not sent: ${error.message}`));
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
  refreshTraffic();
}

function renderFollowup(traffic) {
  const box = $("send-followup");
  if (!box || !state.sent.length) return;
  const byId = Object.fromEntries(traffic.traffic.map((t) => [t.message_id, t]));
  const stored = Object.fromEntries(traffic.heap.tracked_events.map((e) => [e.idempotency_key, e]));
  const letters = Object.fromEntries(traffic.dead_letters.map((d) => [d.message_id, d]));
  box.replaceChildren();
  for (const id of state.sent) {
    const entry = byId[id];
    const line = el("p", { class: "followup" }, `${entry ? entry.name : id}: `,
      el("span", { class: entry ? entry.status : "" }, entry ? entry.status : "?"), entry && entry.reason ? ` (${entry.reason})` : "");
    box.append(line);
    if (stored[id]) box.append(el("pre", {}, "Heap stored: " + JSON.stringify(stored[id], null, 2)));
    else if (letters[id]) box.append(el("pre", {}, `In the DLQ: [${letters[id].error_class}] ${letters[id].reason}`));
  }
}

// ---------------------------------------------------------------------------- 5. traffic
async function refreshTraffic() {
  let traffic;
  try {
    traffic = await api("GET", "/api/traffic");
  } catch (error) {
    $("queue-depth").textContent = `traffic unavailable: ${error.message}`;
    return;
  }
  const rows = traffic.traffic.map((t) => el("tr", { "data-message-id": t.message_id, "data-status": t.status },
    el("td", {}, new Date(t.updated * 1000).toLocaleTimeString()), el("td", {}, `${t.name} (${t.via})`),
    el("td", { class: "why" }, el("strong", { class: t.status }, t.status), t.reason ? `: ${t.reason}` : "",
      el("ul", { class: "history" }, ...t.history.slice(0, -1).map((h) => el("li", {}, h))))));
  $("traffic-body").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 3, class: "quiet" }, "No event sent yet."))]));
  const letters = traffic.dead_letters.map((d) => el("tr", { "data-message-id": d.message_id },
    el("td", {}, d.body && d.body.event ? d.body.event : (d.body && d.body.type) || d.letter_id),
    el("td", { class: "dead-lettered" }, d.error_class), el("td", { class: "why" }, d.reason)));
  $("dlq-body").replaceChildren(...(letters.length ? letters : [el("tr", {}, el("td", { colspan: 3, class: "quiet" }, "Empty."))]));
  const heap = traffic.heap;
  $("heap-total").textContent = `(${heap.tracked_total} track event(s), ${Object.keys(heap.user_properties).length} user(s), ${Object.keys(heap.account_properties).length} account(s))`;
  const stored = heap.tracked_events.slice().reverse().map((e) => el("li", {}, JSON.stringify(e)));
  for (const [identity, properties] of Object.entries(heap.user_properties)) stored.push(el("li", {}, `user ${identity}: ${JSON.stringify(properties)}`));
  for (const [account, properties] of Object.entries(heap.account_properties)) stored.push(el("li", {}, `account ${account}: ${JSON.stringify(properties)}`));
  $("heap-body").replaceChildren(...stored);
  $("stack-log").replaceChildren(...traffic.stack_log.slice().reverse().map((t) =>
    el("li", {}, `${new Date(t.at * 1000).toLocaleTimeString()} ${t.source}: ${t.summary}`)));
  $("queue-depth").textContent = `Main queue: ${traffic.main_queue.waiting} waiting, ${traffic.main_queue.in_flight} in flight. Timings ${traffic.time_scale}x faster than the template.`;
  renderFaults(traffic.faults);
  renderFollowup(traffic);
}

function renderFaults(faults) {
  $("fault-outage").checked = faults.outage;
  if (document.activeElement !== $("fault-latency")) $("fault-latency").value = faults.latency;
  if (document.activeElement !== $("fault-reject")) $("fault-reject").value = faults.reject_event_names.join(", ");
}

async function setFaults(changes) {
  try {
    renderFaults(await api("POST", "/api/faults", changes));
  } catch (error) {
    $("queue-depth").textContent = `Faults not changed: ${error.message}`;
  }
}

function applyFaults() {
  setFaults({
    latency: Number($("fault-latency").value || 0),
    reject_event_names: $("fault-reject").value.split(",").map((n) => n.trim()).filter(Boolean),
  });
}

// ---------------------------------------------------------------------------- wiring
document.addEventListener("DOMContentLoaded", () => {
  $("sample").addEventListener("change", pickSample);
  $("event").addEventListener("input", eventEdited);
  $("override").addEventListener("input", () => { renderGutter(new Set()); schedulePreview(); });
  $("override").addEventListener("scroll", syncScroll);
  $("send-api").addEventListener("click", () => send("api"));
  $("send-queue").addEventListener("click", () => send("queue"));
  $("explain").addEventListener("change", () => schedulePreview(0));
  $("fault-outage").addEventListener("change", () => setFaults({ outage: $("fault-outage").checked }));
  $("fault-apply").addEventListener("click", applyFaults);
  for (const id of ["fault-latency", "fault-reject"]) {
    $(id).addEventListener("keydown", (event) => { if (event.key === "Enter") applyFaults(); });
  }
  renderGutter(new Set());
  loadSamples().catch((error) => { $("event-name").textContent = `samples unavailable: ${error.message}`; });
  schedulePreview(0);
  refreshTraffic();
  setInterval(refreshTraffic, 1000);
});
