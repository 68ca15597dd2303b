// Campaigns (batch calling): upload a lead CSV, start a campaign, watch every lead reach an outcome.
import { api, get, post, session } from "./api.js";

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

const RUNNING = ["pending", "in_progress", "paused"];
const STATUS_WORDS = ["pending", "dispatched", "in_progress", "completed", "voicemail", "failed", "skipped", "cancelled"];
const OUTCOME_WORDS = ["meeting_booked", "interested", "not_interested", "callback_requested", "unknown", "voicemail",
  "screened", "ivr", "no_answer", "busy", "failed", "dnc", "invalid_number", "duplicate", "outside_calling_hours", "cancelled"];
// The bar's segments, left to right: what became of the leads so far.
const SEGMENTS = [
  ["booked", "Booked", (p) => p.booked],
  ["reached", "Talked, not booked", (p) => p.reached - p.booked],
  ["unreached", "Not reached", (p) => p.finished - p.reached - (p.by_status.skipped || 0) - (p.by_status.cancelled || 0)],
  ["skipped", "Skipped or cancelled", (p) => (p.by_status.skipped || 0) + (p.by_status.cancelled || 0)],
  ["calling", "On a call now", (p) => p.calling_now],
];
const words = (s) => s.replaceAll("_", " ");

function finishText(p) {
  if (!RUNNING.includes(p.status)) return p.status === "completed" ? "finished" : `stopped (${p.status})`;
  if (p.status === "paused") return "paused: resume to go on";
  if (p.expected_finish_unix) return new Date(p.expected_finish_unix * 1000).toLocaleString();
  if (p.calling_hours_open === false && p.next_opening_unix) return `calling hours open ${unixWhen(p.next_opening_unix)}`;
  return p.left ? "measuring the pace…" : "finishing the last calls";
}

export async function campaignPage(view, ui, batchId) {
  const { h, toast, fail, pill } = ui;
  // The progress carries the campaign without its leads (they come a filtered page at a time).
  const b = (await get(`/convai/batch-calling/${batchId}/progress`)).campaign;
  const stat = (id, label) => { const value = h("strong", { id }); return [h("div", { class: "stat" }, h("span", { class: "muted" }, label), value), value]; };
  const [finishedBox, finished] = stat("campaign-finished", "Finished");
  const [dialledBox, dialled] = stat("campaign-dialled", "Dialled");
  const [callingBox, calling] = stat("campaign-calling", "On a call");
  const [reachedBox, reached] = stat("campaign-reached", "Reached");
  const [bookedBox, booked] = stat("campaign-booked", "Booked");
  const [retryingBox, retrying] = stat("campaign-retrying", "Retrying");
  const [leftBox, left] = stat("campaign-left", "Left");
  const [paceBox, pace] = stat("campaign-pace", "Pace");
  const [etaBox, eta] = stat("campaign-eta", "Expected finish");
  const statusPill = h("span", { id: "campaign-status" });
  const bar = h("div", { class: "progress", id: "campaign-progress", role: "progressbar", "aria-valuemin": 0, "aria-label": "Leads finished" });
  const legend = h("div", { class: "legend" }, SEGMENTS.map(([key, label]) => h("span", {}, h("i", { class: `seg-${key}` }), label)));
  const byStatus = h("div", { class: "counts", id: "campaign-by-status" });
  const byOutcome = h("div", { class: "counts", id: "campaign-by-outcome" });
  const actions = h("div", { class: "actions wrap" });
  const hours = b.calling_hours ? `${b.calling_hours.start}–${b.calling_hours.end} lead's time${b.calling_hours.days.length && b.calling_hours.days.length < 7 ? `, days ${b.calling_hours.days.join(",")}` : ""}` : "any time";

  // ------------------------------------------------------------ the lead list
  const filters = {
    status: h("select", { id: "lead-status" }, h("option", { value: "" }, "any"), STATUS_WORDS.map((s) => h("option", { value: s }, words(s)))),
    outcome: h("select", { id: "lead-outcome" }, h("option", { value: "" }, "any"), h("option", { value: "none" }, "none yet"), OUTCOME_WORDS.map((s) => h("option", { value: s }, words(s)))),
    search: h("input", { type: "search", id: "lead-search", placeholder: "digits of the number", autocomplete: "off" }),
  };
  const leadCount = h("p", { class: "muted", id: "lead-count" });
  const table = h("table", { id: "recipients" });
  const more = h("button", { type: "button", class: "secondary", id: "recipients-more", hidden: true }, "Show more leads");
  let shown = 50;
  const fetchLeads = () => {
    const query = new URLSearchParams({ page_size: String(Math.min(shown, 500)) });
    for (const [key, el] of Object.entries(filters)) if (el.value.trim()) query.set(key, el.value.trim());
    return get(`/convai/batch-calling/${batchId}/recipients?${query}`);
  };
  const loadLeads = async () => renderLeads(await fetchLeads());
  const renderLeads = (page) => {
    leadCount.textContent = `${page.total} lead${page.total === 1 ? "" : "s"}${page.has_more ? `, the first ${page.recipients.length} shown` : ""}`;
    more.hidden = !page.has_more || shown >= 500;
    table.replaceChildren(
      h("thead", {}, h("tr", {}, ["Lead", "Status", "Outcome", "Attempts", "Next attempt", "Variables", "Note"].map((t, i) => h("th", { scope: "col", class: i === 4 || i === 5 ? "wide-only" : null }, t)))),
      h("tbody", {}, page.recipients.map((r) => h("tr", {},
        h("td", {}, r.conversation_id ? h("a", { href: `#/conversations/${r.conversation_id}` }, r.phone_number) : r.phone_number),
        h("td", {}, pill(r.status)), h("td", {}, pill(r.outcome)), h("td", {}, String(r.attempts)),
        h("td", { class: "wide-only" }, unixWhen(r.next_attempt_unix)),
        h("td", { class: "muted wide-only" }, Object.entries(r.conversation_initiation_client_data.dynamic_variables || {}).map(([k, v]) => `${k}=${v}`).join(", ")),
        h("td", { class: "muted" }, r.error || "")))));
  };
  let searchTimer = null;
  filters.status.onchange = filters.outcome.onchange = () => { shown = 50; loadLeads().catch(fail); };
  filters.search.oninput = () => { clearTimeout(searchTimer); searchTimer = setTimeout(() => { shown = 50; loadLeads().catch(fail); }, 250); };
  more.onclick = () => { shown += 100; loadLeads().catch(fail); };

  // ------------------------------------------------------------ progress, live
  let status = b.status;
  const act = (what, done) => async () => {
    try { await post(`/convai/batch-calling/${batchId}/${what}`); toast(done); await refresh(); } catch (error) { fail(error); }
  };
  const exportCsv = async () => {
    // A link cannot carry the API key header: fetch the CSV, then save it from a blob URL.
    try {
      const response = await fetch(`/v1/convai/batch-calling/${batchId}/export.csv`, { headers: { "xi-api-key": session.key } });
      if (!response.ok) throw new Error(`export failed (${response.status})`);
      const name = /filename="([^"]+)"/.exec(response.headers.get("content-disposition") || "")?.[1] || "leads.csv";
      const url = URL.createObjectURL(await response.blob());
      const link = h("a", { href: url, download: name, hidden: true });
      document.body.append(link); link.click(); link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (error) { fail(error); }
  };
  const renderActions = () => actions.replaceChildren(...[
    (status === "pending" || status === "in_progress") && h("button", { type: "button", id: "pause-campaign", class: "secondary", onclick: act("pause", "Paused: no new calls until you resume.") }, "Pause"),
    status === "paused" && h("button", { type: "button", id: "resume-campaign", onclick: act("resume", "Resumed.") }, "Resume"),
    RUNNING.includes(status) && h("button", { type: "button", id: "cancel-campaign", class: "danger", onclick: async () => {
      if (confirm("Cancel the campaign? Leads not called yet will not be called.")) await act("cancel", "Cancelled.")();
    } }, "Cancel"),
    !RUNNING.includes(status) && h("button", { type: "button", id: "retry-campaign", class: "secondary", onclick: act("retry", "Calling again.") }, "Call unreached leads again"),
    h("button", { type: "button", id: "export-campaign", class: "secondary", onclick: exportCsv }, "Export leads (CSV)")].filter(Boolean));
  const refresh = async () => {
    // The leads are read after the counts and painted with them: the counts never run ahead of the list.
    const p = await get(`/convai/batch-calling/${batchId}/progress`);
    const leads = await fetchLeads();
    const changed = p.status !== status;
    status = p.status;
    statusPill.replaceChildren(pill(p.status));
    finished.textContent = `${p.finished} / ${p.total}`;
    dialled.textContent = String(p.dialled); calling.textContent = String(p.calling_now);
    reached.textContent = String(p.reached); booked.textContent = String(p.booked);
    retrying.textContent = String(p.retrying); left.textContent = String(p.left);
    pace.textContent = p.pace_per_min ? `${p.pace_per_min.toFixed(1)} leads/min` : "—";
    eta.textContent = finishText(p);
    bar.setAttribute("aria-valuemax", String(p.total)); bar.setAttribute("aria-valuenow", String(p.finished));
    bar.setAttribute("aria-valuetext", `${p.finished} of ${p.total} leads finished`);
    bar.replaceChildren(...SEGMENTS.map(([key, label, count]) => {
      const n = Math.max(0, count(p));
      return n ? h("div", { class: `seg-${key}`, style: `width:${(100 * n) / Math.max(p.total, 1)}%`, title: `${label}: ${n}` }) : null;
    }).filter(Boolean));
    const counts = (el, data) => el.replaceChildren(...(Object.keys(data).length
      ? Object.entries(data).map(([k, v]) => h("span", { "data-key": k }, pill(k), ` ${v}`)) : [h("span", { class: "muted" }, "none yet")]));
    counts(byStatus, p.by_status); counts(byOutcome, p.by_outcome);
    if (changed || !actions.childElementCount) renderActions();
    renderLeads(leads);
  };

  await refresh();
  // Live while anything can still change: every 2 s while it runs or is paused (calls may be finishing).
  const timer = setInterval(() => { if (RUNNING.includes(status) || Number(calling.textContent) > 0) refresh().catch(fail); }, 2000);
  view.replaceChildren(
    h("h1", {}, `Campaign: ${b.name}`),
    h("div", { class: "card", id: "campaign" },
      h("div", { class: "row baseline" }, h("div", {}, statusPill), h("span", { class: "muted" },
        `Agent ${b.agent_name || b.agent_id} · ${b.target_concurrency_limit} at once, ${b.calls_per_minute}/min · calling hours ${hours}`)),
      bar, legend,
      h("div", { class: "stats" }, finishedBox, dialledBox, callingBox, reachedBox, bookedBox, retryingBox, leftBox, paceBox, etaBox),
      h("div", { class: "two-col" },
        h("div", {}, h("h2", {}, "By status"), byStatus),
        h("div", {}, h("h2", {}, "By outcome"), byOutcome)),
      actions),
    h("h2", {}, "Leads"),
    h("div", { class: "card" },
      h("div", { class: "row" },
        h("div", {}, h("label", { for: "lead-status" }, "Status"), filters.status),
        h("div", {}, h("label", { for: "lead-outcome" }, "Outcome"), filters.outcome),
        h("div", {}, h("label", { for: "lead-search" }, "Number"), filters.search)),
      leadCount, h("div", { class: "table-wrap" }, table), h("div", { class: "actions" }, more)));
  return () => { clearInterval(timer); clearTimeout(searchTimer); };
}
