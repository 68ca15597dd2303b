// The analytics page: the funnel, time series and breakdowns (GET /v1/convai/analytics/…) drawn with
// Chart.js (vendored in console/vendor/, loaded on first use), filtered by agent, campaign, version, dates.
import { get, session } from "./api.js";

let chartLib = null;
export function loadChart() {
  if (!document.getElementById("analytics-css")) {
    document.head.append(Object.assign(document.createElement("link"), { id: "analytics-css", rel: "stylesheet", href: "/console/analytics.css" }));
  }
  if (window.Chart) return Promise.resolve(window.Chart);
  chartLib ??= new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = "/console/vendor/chart.umd.min.js";
    script.onload = () => resolve(window.Chart);
    script.onerror = () => { chartLib = null; reject(new Error("The chart library did not load.")); };
    document.head.append(script);
  });
  return chartLib;
}

// Every chart on screen, by name: what it draws can be read back (tests do: window.__charts.funnel.data).
export const charts = (window.__charts ??= {});
export function draw(name, canvas, config) {
  charts[name]?.destroy();
  const options = { animation: false, responsive: true, maintainAspectRatio: false, ...config.options };
  charts[name] = new window.Chart(canvas, { ...config, options });
  return charts[name];
}
export function destroyCharts(names) {
  for (const name of names) { charts[name]?.destroy(); delete charts[name]; }
}

export const pct = (v) => (v == null ? "—" : `${(v * 100).toFixed(1)} %`);
const percentAxis = { beginAtZero: true, ticks: { callback: (v) => `${Math.round(v * 100)} %` } };
const percentTooltip = { callbacks: { label: (c) => `${c.dataset.label}: ${pct(c.parsed.y)}` } };
const COLOURS = ["#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#64748b"];
const STEPS = ["dialled", "answered", "human", "conversations", "qualified", "meetings_booked"];
const BREAKDOWNS = ["local_hour", "campaign", "version", "stage", "objection", "outcome"];
const FILTERS = ["agent_id", "campaign_id", "version_id", "from", "to"];

const isoDay = (date) => date.toISOString().slice(0, 10);
function defaults() {
  const tomorrow = new Date(Date.now() + 86400e3);
  return { from: isoDay(new Date(tomorrow - 30 * 86400e3)), to: isoDay(tomorrow), bucket: "day" };
}
function query(params, extra = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries({ ...params, ...extra })) if (v) q.set(k, v);
  return q.toString();
}

// A CSV export needs the API key header, so it is fetched and handed to the browser as a file.
async function downloadCsv(path, name) {
  const response = await fetch(`/v1${path}`, { headers: { "xi-api-key": session.key || "" } });
  if (!response.ok) throw new Error(`CSV export failed (${response.status})`);
  const url = URL.createObjectURL(await response.blob());
  const a = Object.assign(document.createElement("a"), { href: url, download: name });
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export async function analyticsPage(view, ui, params) {
  const { h, fail } = ui;
  const f = { ...defaults(), ...Object.fromEntries([...params].filter(([, v]) => v)) };
  const filters = Object.fromEntries(FILTERS.map((k) => [k, f[k]]));
  const A = "/convai/analytics";
  const series = (metric) => get(`${A}/timeseries?${query(filters, { metric, bucket: f.bucket })}`);
  const [, agents, campaigns, versions, funnel, ts, breakdowns] = await Promise.all([
    loadChart(),
    get("/convai/agents?page_size=100"),
    get("/convai/batch-calling/workspace?limit=100"),
    f.agent_id ? get(`/convai/agents/${f.agent_id}/versions?page_size=100`) : { versions: [] },
    get(`${A}/funnel?${query(filters)}`),
    Promise.all(["calls", "human", "meetings_booked", "answer_rate", "booking_rate", "v2v_p50", "v2v_p95", "outcomes"].map(series)),
    Promise.all(BREAKDOWNS.map((by) => get(`${A}/breakdowns/${by}?${query(filters)}`))),
  ]);

  // ---- filters: applying them changes the address (a filtered view can be bookmarked or shared)
  const select = (id, all, options, value) => h("select", { id }, h("option", { value: "" }, all),
    options.map(([v, label]) => h("option", { value: v, selected: v === value }, label)));
  const el = {
    agent_id: select("an-agent", "All agents", agents.agents.map((a) => [a.agent_id, a.name]), f.agent_id),
    campaign_id: select("an-campaign", "All campaigns", campaigns.batch_calls.map((c) => [c.id, c.name]), f.campaign_id),
    version_id: select("an-version", f.agent_id ? "All versions" : "Pick an agent first",
      versions.versions.map((v) => [v.id, `v${v.number}${v.description ? ` — ${v.description}` : ""}`]), f.version_id),
    from: h("input", { id: "an-from", type: "date", value: f.from.slice(0, 10) }),
    to: h("input", { id: "an-to", type: "date", value: f.to.slice(0, 10) }),
    bucket: select("an-bucket", "Per day", [["hour", "Per hour"]], f.bucket === "hour" ? "hour" : ""),
  };
  el.version_id.disabled = !f.agent_id;
  el.agent_id.addEventListener("change", () => { el.version_id.value = ""; apply(); });
  const apply = (event) => {
    event?.preventDefault();
    const next = Object.fromEntries(Object.entries(el).map(([k, e]) => [k, e.value]));
    location.hash = `#/analytics?${query({ ...next, bucket: next.bucket || "day" })}`;
  };
  const label = (text, input) => h("div", {}, h("label", { for: input.id }, text), input);
  const form = h("form", { class: "card filters", id: "analytics-filters", onsubmit: apply },
    h("div", { class: "row" }, label("Agent", el.agent_id), label("Campaign", el.campaign_id), label("Version", el.version_id)),
    h("div", { class: "row" }, label("From (UTC)", el.from), label("To (exclusive)", el.to), label("Buckets", el.bucket)),
    h("div", { class: "actions" }, h("button", { type: "submit", id: "an-apply" }, "Apply")));

  // ---- a card per chart, each with its CSV export
  const card = (name, title, csvPath, ...extra) => {
    const canvas = h("canvas", { id: `chart-${name}` });
    const csv = csvPath && h("button", { type: "button", class: "secondary small", onclick: () =>
      downloadCsv(`${csvPath}${csvPath.includes("?") ? "&" : "?"}format=csv`, `${name}.csv`).catch(fail) }, "CSV");
    return [h("div", { class: "card chart-card", "data-chart": name },
      h("div", { class: "actions" }, h("h2", {}, title), csv), h("div", { class: "chart-box" }, canvas), ...extra), canvas];
  };
  const stepRows = funnel.steps.map((s) => h("tr", { "data-step": s.step }, h("td", {}, s.step.replaceAll("_", " ")),
    h("td", {}, String(s.count)), h("td", {}, pct(s.rate_of_previous)), h("td", {}, pct(s.rate_of_dialled))));
  const [funnelCard, funnelCanvas] = card("funnel", "Funnel", `${A}/funnel?${query(filters)}`,
    h("table", { id: "funnel-table" }, h("tr", {}, ["Step", "Calls", "Of previous", "Of dialled"].map((t) => h("th", {}, t))), stepRows),
    h("p", { class: "muted", id: "funnel-summary" }, `Answer rate ${pct(funnel.answer_rate)} · booking rate ${pct(funnel.booking_rate)} ` +
      `(booked / a person answered) · ${funnel.call_minutes} call minutes`));
  const tsPath = (metric) => `${A}/timeseries?${query(filters, { metric, bucket: f.bucket })}`;
  const cards = {
    volume: card("volume", "Calls, people reached, meetings booked", tsPath("calls")),
    rates: card("rates", "Answer and booking rates", tsPath("booking_rate")),
    latency: card("latency", "Voice-to-voice latency (ms)", tsPath("v2v_p95")),
    outcomes: card("outcomes", "Outcomes", tsPath("outcomes")),
  };
  const titles = { local_hour: "By the lead's local hour", campaign: "By campaign", version: "By version",
    stage: "By playbook stage the call ended in", objection: "Most common objections", outcome: "By outcome" };
  const byCards = BREAKDOWNS.map((by) => card(`by_${by}`, titles[by], `${A}/breakdowns/${by}?${query(filters)}`));
  view.replaceChildren(h("section", { id: "analytics" },
    h("h1", {}, "Analytics"), form, funnelCard,
    h("div", { class: "chart-grid" }, Object.values(cards).map(([c]) => c)),
    h("h2", {}, "Breakdowns"), h("div", { class: "chart-grid" }, byCards.map(([c]) => c))));

  // ---- the charts
  const when = (t) => (f.bucket === "hour" ? t.slice(5, 13).replace("T", " ") + ":00" : t.slice(0, 10));
  const labels = ts[0].series[0].points.map((p) => when(p.t));
  const line = (resp, name, i) => ({ label: name, data: resp.series[0].points.map((p) => p.value),
    borderColor: COLOURS[i], backgroundColor: COLOURS[i], spanGaps: true, tension: 0.2 });
  draw("funnel", funnelCanvas, { type: "bar",
    data: { labels: STEPS.map((s) => s.replaceAll("_", " ")), datasets: [{ label: "calls", data: STEPS.map((s) => funnel[s]), backgroundColor: COLOURS }] },
    options: { indexAxis: "y", plugins: { legend: { display: false } } } });
  draw("volume", cards.volume[1], { type: "line", data: { labels,
    datasets: [line(ts[0], "calls", 0), line(ts[1], "a person answered", 1), line(ts[2], "meetings booked", 2)] },
    options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } } });
  draw("rates", cards.rates[1], { type: "line", data: { labels,
    datasets: [line(ts[3], "answer rate", 0), line(ts[4], "booking rate", 2)] },
    options: { scales: { y: percentAxis }, plugins: { tooltip: percentTooltip } } });
  draw("latency", cards.latency[1], { type: "line", data: { labels,
    datasets: [line(ts[5], "p50", 1), line(ts[6], "p95", 3)] }, options: { scales: { y: { beginAtZero: true } } } });
  draw("outcomes", cards.outcomes[1], { type: "bar", data: { labels,
    datasets: ts[7].series.map((s, i) => ({ label: s.name, data: s.points.map((p) => p.value), backgroundColor: COLOURS[i % COLOURS.length] })) },
    options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } } });
  BREAKDOWNS.forEach((by, i) => {
    const rows = breakdowns[i].rows;
    draw(`by_${by}`, byCards[i][1], { type: "bar", data: { labels: rows.map((r) => r.label || "(none)"),
      datasets: [{ label: "calls", data: rows.map((r) => r.calls), backgroundColor: COLOURS[0] },
        { label: "meetings booked", data: rows.map((r) => r.meetings_booked), backgroundColor: COLOURS[2] }] },
      options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } } });
  });
  // Drawn: tests wait for this (data-hash: which address these charts are for).
  const section = document.getElementById("analytics");
  if (section) Object.assign(section.dataset, { ready: "", hash: location.hash });
  const names = ["funnel", ...Object.keys(cards), ...BREAKDOWNS.map((by) => `by_${by}`)];
  return () => destroyCharts(names);
}
