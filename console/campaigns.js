// Campaigns (batch calling): upload a lead CSV, start a campaign, watch every lead reach an outcome.
import { api, get, post } from "./api.js";

const RETRYABLE = ["no_answer", "busy", "voicemail", "failed"];
const unixWhen = (s) => (s ? new Date(s * 1000).toLocaleString() : "—");

export async function campaignsPage(view, ui) {
  const { h, toast, fail, pill } = ui;
  const [data, agents] = await Promise.all([get("/convai/batch-calling/workspace?limit=100"), get("/convai/agents?page_size=100")]);
  const names = Object.fromEntries(agents.agents.map((a) => [a.agent_id, a.name]));
  const rows = data.batch_calls.map((b) => h("tr", { class: "clickable", onclick: () => (location.hash = `#/campaigns/${b.id}`) },
    h("td", {}, b.name), h("td", {}, names[b.agent_id] || b.agent_name || b.agent_id), h("td", {}, pill(b.status)),
    h("td", {}, `${b.total_calls_finished} / ${b.total_calls_scheduled}`), h("td", {}, unixWhen(b.created_at_unix))));

  const input = (name, attrs = {}) => h("input", { name, id: `campaign-${name}`, ...attrs });
  const f = {
    call_name: input("call_name", { required: true, placeholder: "Q4 webinar follow-up" }),
    agent_id: h("select", { name: "agent_id", id: "campaign-agent_id", required: true },
      agents.agents.map((a) => h("option", { value: a.agent_id }, a.name))),
    file: input("file", { type: "file", accept: ".csv,text/csv", required: true }),
    default_region: input("default_region", { placeholder: "US", maxlength: 2 }),
    target_concurrency_limit: input("target_concurrency_limit", { type: "number", min: 1, max: 200, value: 5 }),
    calls_per_minute: input("calls_per_minute", { type: "number", min: 1, value: 30 }),
    calling_hours_start: input("calling_hours_start", { type: "time", value: "09:00" }),
    calling_hours_end: input("calling_hours_end", { type: "time", value: "17:00" }),
    retry_delay_sec: input("retry_delay_sec", { type: "number", min: 0, value: 3600 }),
    max_attempts: input("max_attempts", { type: "number", min: 1, max: 10, value: 2 }),
  };
  const retry = RETRYABLE.map((o) => h("label", {}, h("input", { type: "checkbox", value: o, checked: o !== "failed" }), o.replace("_", " ")));
  const start = async (event) => {
    event.preventDefault();
    const form = new FormData();
    for (const [name, el] of Object.entries(f)) {
      if (name === "file") form.append("file", el.files[0]);
      else if (el.value !== "") form.append(name, el.value);
    }
    form.append("retry_outcomes", retry.map((l) => l.firstChild).filter((c) => c.checked).map((c) => c.value).join(","));
    try {
      const created = await api("POST", "/convai/batch-calling/upload", form);
      toast(`Campaign started: ${created.total_calls_scheduled} leads.`);
      location.hash = `#/campaigns/${created.id}`;
    } catch (error) { fail(error); }
  };
  const field = (label, el) => h("div", {}, h("label", { for: el.id }, label), el);
  view.replaceChildren(
    h("h1", {}, "Campaigns"),
    rows.length ? h("table", { id: "campaigns" }, h("tr", {}, ["Name", "Agent", "Status", "Finished", "Created"].map((t) => h("th", {}, t))), rows)
      : h("p", { class: "card muted" }, "No campaigns yet."),
    h("h2", {}, "New campaign"),
    h("form", { class: "card", id: "new-campaign", onsubmit: start },
      h("p", { class: "muted" }, "Lead CSV with a header row: a phone_number column, optionally timezone; every other column becomes a {{variable}} of the agent's prompt."),
      h("div", { class: "row" }, field("Name", f.call_name), field("Agent", f.agent_id)),
      h("div", { class: "row" }, field("Leads (CSV)", f.file), field("Region of national numbers", f.default_region)),
      h("div", { class: "row" }, field("Concurrent calls", f.target_concurrency_limit), field("Calls per minute", f.calls_per_minute)),
      h("div", { class: "row" }, field("Call from (lead's time)", f.calling_hours_start), field("Until", f.calling_hours_end)),
      h("label", {}, "Retry after"), h("div", { class: "checks" }, retry),
      h("div", { class: "row" }, field("Retry delay (s)", f.retry_delay_sec), field("Max attempts per lead", f.max_attempts)),
      h("div", { class: "actions" }, h("button", { type: "submit", id: "start-campaign" }, "Start campaign"))));
}

export async function campaignPage(view, ui, batchId) {
  const { h, toast, fail, pill } = ui;
  const body = h("div", { id: "campaign" });
  let running = true;
  const act = (what) => async () => {
    try { await post(`/convai/batch-calling/${batchId}/${what}`); toast(what === "cancel" ? "Cancelled." : "Calling again."); await render(); }
    catch (error) { fail(error); }
  };
  const render = async () => {
    const b = await get(`/convai/batch-calling/${batchId}`);
    running = b.status === "pending" || b.status === "in_progress";
    const outcomes = Object.entries(b.totals.by_outcome);
    body.replaceChildren(
      h("div", { class: "card" },
        h("div", { class: "row" },
          h("div", {}, h("label", {}, "Status"), pill(b.status)),
          h("div", {}, h("label", {}, "Finished"), h("strong", { id: "campaign-finished" }, `${b.total_calls_finished} / ${b.total_calls_scheduled}`)),
          h("div", {}, h("label", {}, "Dialled"), String(b.total_calls_dispatched)),
          h("div", {}, h("label", {}, "Pacing"), `${b.target_concurrency_limit} at once, ${b.calls_per_minute}/min`)),
        h("div", { class: "row" }, outcomes.length ? outcomes.map(([k, v]) => h("div", {}, h("label", {}, k.replaceAll("_", " ")), String(v))) : h("span", { class: "muted" }, "No outcomes yet.")),
        h("div", { class: "actions" },
          running && h("button", { id: "cancel-campaign", onclick: act("cancel") }, "Cancel"),
          !running && h("button", { id: "retry-campaign", onclick: act("retry") }, "Call unreached leads again"))),
      h("table", { id: "recipients" },
        h("tr", {}, ["Lead", "Status", "Outcome", "Attempts", "Next attempt", "Variables", "Note"].map((t) => h("th", {}, t))),
        b.recipients.map((r) => h("tr", r.conversation_id ? { class: "clickable", onclick: () => (location.hash = `#/conversations/${r.conversation_id}`) } : {},
          h("td", {}, r.phone_number), h("td", {}, pill(r.status)), h("td", {}, pill(r.outcome)), h("td", {}, String(r.attempts)),
          h("td", {}, unixWhen(r.next_attempt_unix)),
          h("td", { class: "muted" }, Object.entries(r.conversation_initiation_client_data.dynamic_variables || {}).map(([k, v]) => `${k}=${v}`).join(", ")),
          h("td", { class: "muted" }, r.error || "")))));
    return b;
  };
  const first = await render();
  const timer = setInterval(() => { if (running) render().catch(fail); }, 2000);
  view.replaceChildren(h("h1", {}, `Campaign: ${first.name}`), body);
  return () => clearInterval(timer);
}
