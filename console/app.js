// The console: a hash-routed page per screen, all data from the REST API (see api.js).
import { ApiError, del, get, patch, post, api, session } from "./api.js";
import { BrowserCall } from "./phone.js";
import { campaignPage, campaignsPage } from "./campaigns.js";
import { testsPage } from "./tests.js";
import { dncPage } from "./dnc.js";
import { livePage, seatPage } from "./seat.js";
import { voicemailSection } from "./voicemail.js";
import { playbookPage } from "./playbook.js";
import { analyticsPage } from "./analytics.js";
import { experimentPage, experimentsPage } from "./experiments.js";

const view = document.getElementById("view");
const BUILTIN_TOOLS = ["end_call", "transfer_call", "send_sms", "book_meeting", "add_to_dnc"];
const OUTCOMES = ["meeting_booked", "interested", "not_interested", "callback_requested", "voicemail", "no_answer", "failed"];
const STATUSES = ["initiated", "ringing", "in_progress", "completed", "busy", "no_answer", "failed", "canceled"];
let cleanup = () => {};

// ------------------------------------------------------------------ helpers

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "onclick" && String(attrs.class || "").split(" ").includes("clickable")) {
      // A clickable row is reached with Tab and opened with Enter, like a link.
      el.tabIndex = 0;
      el.addEventListener("keydown", (event) => { if (event.key === "Enter" && event.target === el) value(event); });
    }
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function toast(message, isError = false) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.className = isError ? "error" : "";
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (el.hidden = true), 4000);
}

function fail(error) {
  if (error instanceof ApiError && error.status === 401) { session.key = null; route(); return; }
  toast(error.message || String(error), true);
}

const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");
const secs = (value) => (value == null ? "—" : `${Math.round(value)} s`);
const pill = (text) => (text ? h("span", { class: `pill ${text}` }, text.replaceAll("_", " ")) : "—");

function field(label, input) { return h("div", {}, h("label", {}, label), input); }

// ------------------------------------------------------------------ sign-in

function signIn(view) {
  const key = h("input", { type: "password", id: "api-key", placeholder: "xi-api-key", autocomplete: "off" });
  const form = h("form", { class: "card signin", onsubmit: async (event) => {
    event.preventDefault();
    session.key = key.value.trim();
    // The page asked for (a deep link opened signed out) is where sign-in lands; the agents list if none.
    try { await get("/convai/agents?page_size=1"); route(); }
    catch (error) { session.key = null; toast(error.status === 401 ? "That API key is not valid." : error.message, true); }
  } },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "Paste an API key. It is kept in this browser tab only (session storage)."),
    field("API key", key),
    h("div", { class: "actions" }, h("button", { type: "submit", id: "sign-in" }, "Sign in")));
  view.replaceChildren(form);
  key.focus();
}

// ------------------------------------------------------------------ agents

async function agentsPage(view) {
  const data = await get("/convai/agents?page_size=100");
  const rows = data.agents.map((a) => h("tr", { class: "clickable", onclick: () => (location.hash = `#/agents/${a.agent_id}`) },
    h("td", {}, a.name), h("td", { class: "muted" }, a.agent_id), h("td", {}, a.voice_id || "default"),
    h("td", {}, [...a.builtin_tools, ...a.tools.map((t) => t.name)].join(", ") || "—"), h("td", {}, when(a.created_at))));
  view.replaceChildren(
    h("div", { class: "actions" }, h("h1", {}, "Agents"), h("a", { href: "#/agents/new" }, h("button", { id: "new-agent" }, "New agent"))),
    rows.length ? h("table", { id: "agents" }, h("tr", {}, ["Name", "Id", "Voice", "Tools", "Created"].map((t) => h("th", {}, t))), rows)
      : h("p", { class: "card muted" }, "No agents yet. Create one to start."));
}

async function agentPage(view, agentId) {
  const isNew = agentId === "new";
  const agent = isNew ? { name: "", system_prompt: "", first_message: "", voice_id: "", interrupt_enabled: true,
    language: "en", temperature: 0.7, max_call_duration_sec: 1800, silence_timeout_sec: 20, turn_settings: {},
    builtin_tools: ["end_call", "book_meeting"], stt_keywords: [], tools: [] } : await get(`/convai/agents/${agentId}`);
  const input = (name, value, attrs = {}) => h("input", { name, id: `agent-${name}`, value: value ?? "", ...attrs });
  const ts = agent.turn_settings || {};
  const f = {
    name: input("name", agent.name, { required: true }),
    system_prompt: h("textarea", { name: "system_prompt", id: "agent-system_prompt" }, agent.system_prompt),
    first_message: input("first_message", agent.first_message),
    voice_id: input("voice_id", agent.voice_id, { placeholder: "default voice" }),
    language: input("language", agent.language),
    stt_keywords: input("stt_keywords", (agent.stt_keywords || []).join(", "), { placeholder: "e.g. Orbit CRM, HubSpot" }),
    temperature: input("temperature", agent.temperature, { type: "number", step: "0.1", min: 0, max: 2 }),
    max_call_duration_sec: input("max_call_duration_sec", agent.max_call_duration_sec, { type: "number", min: 10 }),
    silence_timeout_sec: input("silence_timeout_sec", agent.silence_timeout_sec, { type: "number", min: 1 }),
    interrupt_enabled: h("input", { type: "checkbox", id: "agent-interrupt_enabled", checked: agent.interrupt_enabled }),
    interrupt_min_energy: input("interrupt_min_energy", ts.interrupt_min_energy, { type: "number", placeholder: "default" }),
    interrupt_baseline_factor: input("interrupt_baseline_factor", ts.interrupt_baseline_factor, { type: "number", step: "0.1", placeholder: "default" }),
    interrupt_min_speech_ms: input("interrupt_min_speech_ms", ts.interrupt_min_speech_ms, { type: "number", placeholder: "default" }),
    interrupt_debounce_ms: input("interrupt_debounce_ms", ts.interrupt_debounce_ms, { type: "number", placeholder: "default" }),
    silence_threshold_sec: input("silence_threshold_sec", ts.silence_threshold_sec, { type: "number", step: "0.05", placeholder: "default" }),
    turn_eagerness: h("select", { name: "turn_eagerness", id: "agent-turn_eagerness" },
      [["", "service default"], ["eager", "eager: answers soonest"], ["normal", "normal"],
        ["patient", "patient: waits out thinking pauses"]].map(([value, label]) =>
        h("option", { value, selected: (ts.turn_eagerness || "") === value }, label))),
  };
  const voicemail = voicemailSection(h, agent);
  const builtins = BUILTIN_TOOLS.map((name) => h("label", {}, h("input", { type: "checkbox", value: name, checked: agent.builtin_tools.includes(name) }), name));
  const num = (el) => (el.value === "" ? null : Number(el.value));
  const body = () => ({
    name: f.name.value, system_prompt: f.system_prompt.value, first_message: f.first_message.value,
    voice_id: f.voice_id.value || null, language: f.language.value || "en", temperature: Number(f.temperature.value),
    max_call_duration_sec: Number(f.max_call_duration_sec.value), silence_timeout_sec: Number(f.silence_timeout_sec.value),
    interrupt_enabled: f.interrupt_enabled.checked,
    stt_keywords: [...new Set(f.stt_keywords.value.split(",").map((k) => k.trim()).filter(Boolean))],
    turn_settings: Object.fromEntries(["interrupt_min_energy", "interrupt_baseline_factor", "interrupt_min_speech_ms",
      "interrupt_debounce_ms", "silence_threshold_sec"].map((k) => [k, num(f[k])]).filter(([, v]) => v !== null)
      .concat([["turn_eagerness", f.turn_eagerness.value || null]])),
    builtin_tools: builtins.map((l) => l.firstChild).filter((c) => c.checked).map((c) => c.value),
    ...voicemail.values(),
  });
  const save = async (event) => {
    event.preventDefault();
    try {
      const saved = isNew ? await post("/convai/agents", body()) : await patch(`/convai/agents/${agentId}`, body());
      toast("Saved.");
      if (isNew) location.hash = `#/agents/${saved.agent_id}`;
    } catch (error) { fail(error); }
  };
  const remove = async () => {
    if (!confirm(`Delete agent “${agent.name}”?`)) return;
    try { await del(`/convai/agents/${agentId}`); location.hash = "#/agents"; } catch (error) { fail(error); }
  };
  const form = h("form", { class: "card", id: "agent-form", onsubmit: save },
    field("Name", f.name), field("System prompt ({{variables}} are filled per call)", f.system_prompt),
    field("First message", f.first_message),
    field("Names and terms callers say (comma-separated: the speech recogniser listens for them)", f.stt_keywords),
    h("div", { class: "row" }, field("Voice", f.voice_id), field("Language", f.language), field("Temperature", f.temperature)),
    h("div", { class: "row" }, field("Max call duration (s)", f.max_call_duration_sec), field("Silence timeout (s)", f.silence_timeout_sec)),
    h("h2", {}, "Interruptions and turn-taking"),
    h("div", { class: "checks" }, h("label", {}, f.interrupt_enabled, "Caller can interrupt (barge-in)")),
    h("div", { class: "row" }, field("Min energy", f.interrupt_min_energy), field("Baseline factor", f.interrupt_baseline_factor),
      field("Min speech (ms)", f.interrupt_min_speech_ms)),
    h("div", { class: "row" }, field("Debounce (ms)", f.interrupt_debounce_ms), field("End-of-turn silence (s)", f.silence_threshold_sec),
      field("Turn eagerness", f.turn_eagerness)),
    voicemail.section,
    h("h2", {}, "Built-in tools"), h("div", { class: "checks" }, builtins),
    h("div", { class: "actions" }, h("button", { type: "submit", id: "save-agent" }, isNew ? "Create agent" : "Save"),
      !isNew && h("a", { href: `#/agents/${agentId}/tests`, id: "agent-tests" }, h("button", { type: "button", class: "secondary" }, "Scenario tests")),
      !isNew && h("a", { href: `#/agents/${agentId}/playbook`, id: "agent-playbook" }, h("button", { type: "button", class: "secondary" }, "Playbook")),
      !isNew && h("button", { type: "button", class: "danger", onclick: remove }, "Delete")));
  view.replaceChildren(h("h1", {}, isNew ? "New agent" : agent.name), isNew ? form : callPanel(agent), form);
  if (!isNew) {
    view.append(await toolsSection(agent), await knowledgeSection(agent));
  }
}

async function toolsSection(agent) {
  const section = h("div", { class: "card", id: "tools" }, h("h2", {}, "Tools"));
  const list = h("table", {}, h("tr", {}, ["Name", "Kind", "Description", ""].map((t) => h("th", {}, t))),
    agent.tools.map((tool) => h("tr", {}, h("td", {}, tool.name), h("td", {}, tool.kind), h("td", {}, tool.description),
      h("td", {}, h("button", { class: "danger", onclick: async () => {
        try { await del(`/convai/agents/${agent.agent_id}/tools/${tool.id}`); route(); } catch (error) { fail(error); }
      } }, "Remove")))));
  const name = h("input", { placeholder: "check_inventory" });
  const description = h("input", { placeholder: "What the tool does, for the LLM" });
  const url = h("input", { placeholder: "https://example.com/hook" });
  const params = h("textarea", {}, '{"type": "object", "properties": {}, "required": []}');
  const add = async (event) => {
    event.preventDefault();
    try {
      await post(`/convai/agents/${agent.agent_id}/tools`, { name: name.value, description: description.value, kind: "webhook",
        parameters: JSON.parse(params.value), config: { url: url.value, method: "POST" } });
      route();
    } catch (error) { fail(error); }
  };
  section.append(agent.tools.length ? list : h("p", { class: "muted" }, "No custom tools."),
    h("form", { onsubmit: add }, h("h2", {}, "Add an HTTP tool"),
      h("div", { class: "row" }, field("Name", name), field("URL", url)), field("Description", description),
      field("Parameters (JSON Schema)", params), h("div", { class: "actions" }, h("button", { type: "submit" }, "Add tool"))));
  return section;
}

async function knowledgeSection(agent) {
  const base = `/convai/agents/${agent.agent_id}/knowledge`;
  const section = h("div", { class: "card", id: "knowledge" }, h("h2", {}, "Knowledge base"));
  let documents = [];
  try {
    const data = await get(base);
    documents = data.documents ?? data.items ?? data;
  } catch (error) { section.append(h("p", { class: "muted" }, `Knowledge base unavailable: ${error.message}`)); return section; }
  // Documents are indexed in the background: pending -> indexing -> ready | failed.
  const statusCell = (d) => h("td", { class: `kb-status kb-${d.status ?? "ready"}`, title: d.error ?? "" },
    d.status === "failed" ? `failed${d.error ? `: ${d.error}` : ""}` : (d.status ?? "ready"));
  section.append(documents.length
    ? h("table", {}, h("tr", {}, ["Title", "Status", "Chunks", "Added", ""].map((t) => h("th", {}, t))),
      documents.map((d) => h("tr", { "data-doc": d.id }, h("td", {}, d.title || d.name || d.id), statusCell(d), h("td", {}, d.chunk_count ?? "—"), h("td", {}, when(d.created_at)),
        h("td", {}, h("button", { class: "danger", onclick: async () => {
          try { await del(`${base}/${d.id}`); route(); } catch (error) { fail(error); }
        } }, "Delete")))))
    : h("p", { class: "muted" }, "No documents yet."));
  const file = h("input", { type: "file", id: "kb-file", accept: ".txt,.md,.markdown,.pdf,text/plain,text/markdown,application/pdf" });
  const upload = async (event) => {
    event.preventDefault();
    if (!file.files.length) return;
    const form = new FormData();
    form.append("file", file.files[0]);
    try { await api("POST", `${base}/upload`, form); toast("Document added: indexing in the background."); route(); } catch (error) { fail(error); }
  };
  section.append(h("form", { onsubmit: upload }, field("Upload a .txt, .md or .pdf file", file),
    h("div", { class: "actions" }, h("button", { type: "submit", id: "kb-upload" }, "Upload"))));
  if (documents.some((d) => d.status === "pending" || d.status === "indexing")) {
    // Still indexing: refresh this card (only) until every document is ready or failed.
    setTimeout(async () => { if (section.isConnected) section.replaceWith(await knowledgeSection(agent)); }, 1500);
  }
  return section;
}

// ------------------------------------------------------------------ test call in the browser

function callPanel(agent) {
  const status = h("span", { class: "call-status", id: "call-status" }, "idle");
  const callerMeter = h("div"), agentMeter = h("div");
  const transcript = h("div", { class: "transcript", id: "live-transcript" });
  const button = h("button", { id: "call-button" }, "Call this agent");
  let call = null, poll = null;
  const refresh = async () => {
    if (!call?.conversationId) return;
    try { renderTranscript(transcript, await get(`/convai/conversations/${call.conversationId}`)); } catch { /* next tick */ }
  };
  const stop = () => { call?.hangUp(); clearInterval(poll); poll = null; setTimeout(refresh, 800); button.textContent = "Call this agent"; };
  button.onclick = async () => {
    if (call && !call.ended) { stop(); return; }
    call = new BrowserCall(agent.agent_id, {
      onStatus: (text) => { status.textContent = text; if (text === "call ended") stop(); },
      onLevel: (level, who) => { (who === "agent" ? agentMeter : callerMeter).style.width = `${Math.round(level * 100)}%`; },
    });
    window.__call = call; // lets the browser test read the call's counters
    try {
      await call.start();
      button.textContent = "Hang up";
      poll = setInterval(refresh, 1000);
    } catch (error) { status.textContent = "could not start"; fail(error); }
  };
  cleanup = () => { if (call && !call.ended) stop(); };
  return h("div", { class: "card", id: "call-panel" }, h("h2", {}, "Test call"),
    h("div", { class: "call-panel" },
      h("div", {}, h("div", { class: "actions" }, button, status),
        h("label", {}, "You"), h("div", { class: "meter" }, callerMeter),
        h("label", {}, "Agent"), h("div", { class: "meter" }, agentMeter),
        h("p", { class: "muted" }, "Uses your microphone; speak over the agent to interrupt it.")),
      h("div", {}, h("label", {}, "Live transcript"), transcript)));
}

// ------------------------------------------------------------------ conversations

function renderTranscript(container, conversation) {
  // Turns and tool calls interleaved by the time they were stored (a turn is stored when it ends).
  const stamp = (iso) => new Date(iso).getTime();
  const items = conversation.transcript.map((turn) => ({ at: stamp(turn.created_at), seq: turn.seq, el:
    h("div", { class: `turn ${turn.role === "user" ? "user" : "agent"}${turn.interrupted ? " interrupted" : ""}`, dataset: { role: turn.role } },
      h("div", { class: "meta" }, `${turn.role} · ${((turn.start_ms ?? 0) / 1000).toFixed(1)} s${turn.voice_to_voice_ms != null ? ` · ${Math.round(turn.voice_to_voice_ms)} ms voice-to-voice` : ""}`),
      h("div", { class: "text" }, turn.text)) }));
  for (const tool of conversation.tool_calls || []) {
    items.push({ at: stamp(tool.created_at), seq: Infinity, el: h("div", { class: "tool" },
      `🔧 ${tool.name}(${JSON.stringify(tool.arguments)}) → ${tool.success ? "ok" : `failed: ${tool.error}`} · ${Math.round(tool.duration_ms)} ms`) });
  }
  items.sort((a, b) => a.at - b.at || a.seq - b.seq);
  container.replaceChildren(...items.map((i) => i.el));
}

async function conversationsPage(view, params) {
  const agents = (await get("/convai/agents?page_size=100")).agents;
  const select = (name, options, value) => h("select", { name, id: `filter-${name}` }, h("option", { value: "" }, "any"),
    options.map(([v, label]) => h("option", { value: v, selected: v === value }, label)));
  const filters = {
    agent_id: select("agent_id", agents.map((a) => [a.agent_id, a.name]), params.get("agent_id")),
    status: select("status", STATUSES.map((s) => [s, s]), params.get("status")),
    outcome: select("outcome", OUTCOMES.map((s) => [s, s]), params.get("outcome")),
    after: h("input", { type: "date", id: "filter-after", value: params.get("after") || "" }),
  };
  const apply = () => {
    const query = new URLSearchParams(Object.entries(filters).map(([k, el]) => [k, el.value]).filter(([, v]) => v));
    location.hash = `#/conversations?${query}`;
  };
  Object.values(filters).forEach((el) => el.addEventListener("change", apply));
  const table = h("table", { id: "conversations" }, h("tr", {}, ["Started", "Agent", "Direction", "Status", "Outcome", "Duration", "Summary"].map((t) => h("th", {}, t))));
  const more = h("button", { class: "secondary", hidden: true }, "Load more");
  let cursor = null;
  const load = async () => {
    const query = new URLSearchParams([["page_size", "30"], ...[...params].filter(([, v]) => v)]);
    if (params.get("after")) query.set("after", new Date(params.get("after")).toISOString());
    if (cursor) query.set("cursor", cursor);
    const data = await get(`/convai/conversations?${query}`);
    for (const c of data.conversations) {
      table.append(h("tr", { class: "clickable", onclick: () => (location.hash = `#/conversations/${c.conversation_id}`) },
        h("td", {}, when(c.started_at || c.created_at)), h("td", {}, c.agent_name || c.agent_id || "—"), h("td", {}, c.direction),
        h("td", {}, pill(c.status)), h("td", {}, pill(c.outcome)), h("td", {}, secs(c.duration_sec)),
        h("td", { class: "muted" }, (c.summary || "").slice(0, 120))));
    }
    cursor = data.next_cursor;
    more.hidden = !data.has_more;
  };
  more.onclick = () => load().catch(fail);
  await load();
  view.replaceChildren(h("h1", {}, "Conversations"),
    h("div", { class: "card row" }, field("Agent", filters.agent_id), field("Status", filters.status),
      field("Outcome", filters.outcome), field("Since", filters.after)), table, h("div", { class: "actions" }, more));
}

const PHASES = [
  ["Endpointing + STT", "user_speech_end_ms", "stt_final_ms", "#8aa4e8"],
  ["LLM first token", "stt_final_ms", "llm_first_token_ms", "#e8a33d"],
  ["TTS first audio", "llm_first_token_ms", "tts_first_audio_ms", "#58b37e"],
  ["First frame sent", "tts_first_audio_ms", "first_frame_sent_ms", "#b36fc6"],
];

function waterfall(turns) {
  const rows = turns.filter((t) => t.role === "agent" && t.user_speech_end_ms != null && t.first_frame_sent_ms != null);
  if (!rows.length) return h("p", { class: "muted" }, "No measured agent turns.");
  const max = Math.max(...rows.map((t) => t.first_frame_sent_ms - t.user_speech_end_ms), 1);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const rowH = 26, left = 90, width = 760;
  svg.setAttribute("viewBox", `0 0 ${width + left + 60} ${rows.length * rowH + 10}`);
  rows.forEach((turn, i) => {
    const y = i * rowH + 4;
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", 0); label.setAttribute("y", y + 15); label.setAttribute("font-size", "12");
    label.textContent = `turn ${turn.seq}`;
    svg.append(label);
    for (const [name, from, to, color] of PHASES) {
      const a = turn[from] ?? turn.user_speech_end_ms, b = turn[to];
      if (b == null || a == null) continue;
      const rect = document.createElementNS(ns, "rect");
      rect.setAttribute("x", left + ((Math.max(a, turn.user_speech_end_ms) - turn.user_speech_end_ms) / max) * width);
      rect.setAttribute("y", y); rect.setAttribute("height", rowH - 8);
      rect.setAttribute("width", Math.max(1, ((b - Math.max(a, turn.user_speech_end_ms)) / max) * width));
      rect.setAttribute("fill", color);
      const title = document.createElementNS(ns, "title");
      title.textContent = `${name}: ${Math.round(b - a)} ms`;
      rect.append(title);
      svg.append(rect);
    }
    const total = document.createElementNS(ns, "text");
    total.setAttribute("x", left + ((turn.first_frame_sent_ms - turn.user_speech_end_ms) / max) * width + 6);
    total.setAttribute("y", y + 15); total.setAttribute("font-size", "12");
    total.textContent = `${Math.round(turn.first_frame_sent_ms - turn.user_speech_end_ms)} ms`;
    svg.append(total);
  });
  return h("div", { class: "waterfall", id: "waterfall" }, svg,
    h("div", { class: "legend" }, PHASES.map(([name, , , color]) => h("span", {}, h("i", { style: `background:${color}` }), name))));
}

function recordingPlayer(conversationId) {
  // <audio src> cannot send the API key header: fetch the WAV, then play it from a blob URL.
  const player = h("audio", { controls: true, id: "recording" });
  fetch(`/v1/convai/conversations/${conversationId}/recording`, { headers: { "xi-api-key": session.key } })
    .then((response) => (response.ok ? response.blob() : Promise.reject(new Error("recording unavailable"))))
    .then((blob) => { player.src = URL.createObjectURL(blob); })
    .catch((error) => player.replaceWith(h("span", { class: "muted" }, error.message)));
  return player;
}

async function conversationPage(view, conversationId) {
  const c = await get(`/convai/conversations/${conversationId}`);
  const transcript = h("div", { class: "transcript", id: "transcript" });
  renderTranscript(transcript, c);
  const collected = Object.entries(c.collected_data || {});
  view.replaceChildren(
    h("h1", {}, `Conversation ${c.conversation_id}`),
    h("div", { class: "card" },
      h("div", { class: "row" },
        h("div", {}, h("label", {}, "Status"), pill(c.status)), h("div", {}, h("label", {}, "Outcome"), pill(c.outcome)),
        h("div", {}, h("label", {}, "Direction"), c.direction), h("div", {}, h("label", {}, "Duration"), secs(c.duration_sec))),
      h("div", { class: "row" },
        h("div", {}, h("label", {}, "Agent"), h("a", { href: `#/agents/${c.agent_id}` }, c.agent_name || c.agent_id || "—")),
        h("div", {}, h("label", {}, "From → To"), `${c.from_number || "—"} → ${c.to_number || "—"}`),
        h("div", {}, h("label", {}, "Started"), when(c.started_at)), h("div", {}, h("label", {}, "End reason"), c.end_reason || "—")),
      h("label", {}, "Summary"), h("p", { id: "summary" }, c.summary || "—"),
      (c.stage_path || []).length > 0 && h("div", {}, h("label", {}, "Playbook stages"),
        h("p", { id: "stage-path" }, c.stage_path.join(" → "))),
      collected.length > 0 && h("div", {}, h("label", {}, "Collected data"),
        h("table", {}, collected.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, JSON.stringify(v)))))),
      c.recording_url && h("div", {}, h("label", {}, "Recording (caller left, agent right)"), recordingPlayer(c.conversation_id))),
    h("h2", {}, "Latency per turn"), h("div", { class: "card" }, waterfall(c.transcript)),
    h("h2", {}, "Transcript (as the caller heard it)"), h("div", { class: "card" }, transcript));
}

// ------------------------------------------------------------------ router

// A page paints only while it is still the page asked for: a slow page must not paint over a later one.
let routeSeq = 0;
function pageView(seq) {
  const current = () => seq === routeSeq;
  return {
    replaceChildren: (...nodes) => { if (current()) view.replaceChildren(...nodes); },
    append: (...nodes) => { if (current()) view.append(...nodes); },
  };
}

async function route() {
  cleanup();
  cleanup = () => {};
  const v = pageView(++routeSeq);
  const signedIn = Boolean(session.key);
  document.getElementById("nav").hidden = !signedIn;
  if (!signedIn) return signIn(v);
  const [path, query] = (location.hash.slice(1) || "/agents").split("?");
  const parts = path.split("/").filter(Boolean);
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === parts[0]));
  try {
    if (parts[0] === "agents" && parts[1] && parts[2] === "tests") cleanup = await testsPage(v, { h, toast, fail, pill }, parts[1]);
    else if (parts[0] === "agents" && parts[1] && parts[2] === "playbook") cleanup = await playbookPage(v, { h, toast, fail }, parts[1]);
    else if (parts[0] === "agents" && parts[1]) await agentPage(v, parts[1]);
    else if (parts[0] === "conversations" && parts[1]) await conversationPage(v, parts[1]);
    else if (parts[0] === "conversations") await conversationsPage(v, new URLSearchParams(query));
    else if (parts[0] === "live" && parts[1]) cleanup = await seatPage(v, { h, toast, fail, pill }, parts[1]);
    else if (parts[0] === "live") cleanup = await livePage(v, { h, toast, fail, pill });
    else if (parts[0] === "dnc") cleanup = await dncPage(v, { h, toast, fail, pill });
    else if (parts[0] === "campaigns" && parts[1]) cleanup = await campaignPage(v, { h, toast, fail, pill }, parts[1]);
    else if (parts[0] === "campaigns") await campaignsPage(v, { h, toast, fail, pill });
    else if (parts[0] === "analytics") cleanup = await analyticsPage(v, { h, toast, fail, pill }, new URLSearchParams(query));
    else if (parts[0] === "experiments" && parts[1]) cleanup = await experimentPage(v, { h, toast, fail, pill }, parts[1]);
    else if (parts[0] === "experiments") await experimentsPage(v, { h, toast, fail, pill });
    else await agentsPage(v);
  } catch (error) { fail(error); }
}

document.getElementById("sign-out").onclick = () => { session.key = null; location.hash = ""; route(); };
window.addEventListener("hashchange", route);
route();
