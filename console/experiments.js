// Experiments (/v1/convai/experiments): A/B tests between versions of an agent on a campaign or an inbound
// number. The list, a form to start one (versions + weights), and each one's per-variant results with the
// booking rate's 95 % interval and the verdict, as the API computes them.
import { get, patch, post } from "./api.js";
import { destroyCharts, draw, loadChart, pct } from "./analytics.js";

const E = "/convai/experiments";
const points = (v) => (v == null ? "—" : `${v >= 0 ? "+" : ""}${(v * 100).toFixed(1)} points`);

export async function experimentsPage(view, ui) {
  const { h, fail } = ui;
  const [data, agents, campaigns] = await Promise.all([get(`${E}?page_size=100`), get("/convai/agents?page_size=100"),
    get("/convai/batch-calling/workspace?limit=100")]);
  await loadChart(); // its stylesheet too
  const agentName = Object.fromEntries(agents.agents.map((a) => [a.agent_id, a.name]));
  const campaignName = Object.fromEntries(campaigns.batch_calls.map((c) => [c.id, c.name]));
  const rows = data.experiments.map((e) => h("tr", { class: "clickable", "data-experiment": e.id, onclick: () => (location.hash = `#/experiments/${e.id}`) },
    h("td", {}, e.name || e.id), h("td", {}, agentName[e.agent_id] || e.agent_id),
    h("td", {}, e.campaign_id ? `campaign ${campaignName[e.campaign_id] || e.campaign_id}` : `number ${e.phone_number}`),
    h("td", {}, e.variants.map((v) => `${v.label} ${v.weight}`).join(" · ")), h("td", {}, ui.pill(e.status)),
    h("td", { class: "verdict-cell" }, ui.pill(e.verdict))));

  // ---- start one: the agent, its versions with weights, a campaign or a number of the agent
  const agent = h("select", { id: "exp-agent", required: true }, h("option", { value: "" }, "Pick an agent"),
    agents.agents.map((a) => h("option", { value: a.agent_id }, a.name)));
  const name = h("input", { id: "exp-name", placeholder: "New greeting vs old" });
  const target = h("select", { id: "exp-target", required: true }, h("option", { value: "" }, "Pick an agent first"));
  const variantsBox = h("div", { id: "exp-variants" });
  let versions = [];
  const variantRow = (i) => h("div", { class: "row variant-row", "data-variant": i },
    h("div", {}, h("label", {}, i === 0 ? "Control (A): version" : `Variant ${String.fromCharCode(65 + i)}: version`),
      h("select", { class: "exp-version", required: true }, versions.map((v, j) => h("option", { value: v.id, selected: j === Math.min(i, versions.length - 1) ? true : undefined },
        `v${v.number}${v.description ? ` — ${v.description}` : ""}`)))),
    h("div", {}, h("label", {}, "Weight"), h("input", { class: "exp-weight", type: "number", min: 1, max: 1000, value: 1, required: true })),
    h("div", {}, h("label", {}, "Label (optional)"), h("input", { class: "exp-label", placeholder: String.fromCharCode(65 + i) })));
  const addVariant = () => { if (variantsBox.children.length < 10) variantsBox.append(variantRow(variantsBox.children.length)); };
  agent.addEventListener("change", async () => {
    variantsBox.replaceChildren();
    target.replaceChildren(h("option", { value: "" }, agent.value ? "Loading…" : "Pick an agent first"));
    if (!agent.value) return;
    try {
      const [vs, numbers, own] = await Promise.all([get(`/convai/agents/${agent.value}/versions?page_size=100`),
        get(`/convai/phone-numbers?page_size=100&agent_id=${agent.value}`), get(`/convai/batch-calling/workspace?limit=100&agent_id=${agent.value}`)]);
      versions = vs.versions.slice().reverse(); // oldest first: the control is usually the older version
      addVariant(); addVariant();
      target.replaceChildren(h("option", { value: "" }, "Pick a campaign or a number"),
        ...own.batch_calls.map((c) => h("option", { value: `campaign:${c.id}` }, `Campaign: ${c.name}`)),
        ...numbers.phone_numbers.map((n) => h("option", { value: `number:${n.phone_number}` }, `Inbound number: ${n.phone_number}`)));
    } catch (error) { fail(error); }
  });
  const start = async (event) => {
    event.preventDefault();
    const [kind, value] = target.value.split(/:(.*)/s);
    const variants = [...variantsBox.children].map((row) => ({ version_id: row.querySelector(".exp-version").value,
      weight: Number(row.querySelector(".exp-weight").value), label: row.querySelector(".exp-label").value || undefined }));
    const body = { agent_id: agent.value, name: name.value, variants, ...(kind === "campaign" ? { campaign_id: value } : { phone_number: value }) };
    try {
      const created = await post(E, body);
      location.hash = `#/experiments/${created.id}`;
    } catch (error) { fail(error); }
  };
  const field = (label, el) => h("div", {}, h("label", { for: el.id }, label), el);
  view.replaceChildren(h("h1", {}, "Experiments"),
    rows.length ? h("table", { id: "experiments" }, h("tr", {}, ["Name", "Agent", "On", "Weights", "Status", "Verdict"].map((t) => h("th", {}, t))), rows)
      : h("p", { class: "card muted" }, "No experiments yet."),
    h("h2", {}, "New experiment"),
    h("form", { class: "card", id: "new-experiment", onsubmit: start },
      h("p", { class: "muted" }, "Each call is assigned a variant when it is placed (sticky per lead) and runs that version. " +
        "Run the agent's scenario tests against a version before it takes traffic."),
      h("div", { class: "row" }, field("Agent", agent), field("Name", name), field("Run on", target)),
      variantsBox,
      h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", id: "exp-add-variant", onclick: addVariant }, "Add a variant"),
        h("button", { type: "submit", id: "start-experiment" }, "Start experiment"))));
}

export async function experimentPage(view, ui, id) {
  const { h, fail } = ui;
  const e = await get(`${E}/${id}`);
  const [versions, campaigns] = await Promise.all([get(`/convai/agents/${e.agent_id}/versions?page_size=100`).catch(() => ({ versions: [] })),
    get(`/convai/batch-calling/workspace?limit=100&agent_id=${e.agent_id}`).catch(() => ({ batch_calls: [] })), loadChart()]);
  const campaign = campaigns.batch_calls.find((c) => c.id === e.campaign_id);
  const number = Object.fromEntries(versions.versions.map((v) => [v.id, `v${v.number}`]));
  const ci = (i) => (i ? `${pct(i.low)} – ${pct(i.high)}` : "—");
  const rows = e.variants.map((v) => h("tr", { "data-variant": v.label },
    h("td", {}, v.label), h("td", {}, number[v.version_id] || v.version_id), h("td", {}, String(v.weight)),
    ...["calls", "answered", "human", "conversations", "qualified", "meetings_booked"].map((k) => h("td", { "data-field": k }, String(v[k]))),
    h("td", { "data-field": "booking_rate" }, pct(v.booking_rate)), h("td", { "data-field": "ci" }, ci(v.booking_rate_ci95))));
  const stop = async () => {
    if (!confirm("Stop this experiment? New calls will run the agent's latest version.")) return;
    try { await patch(`${E}/${id}`, { status: "stopped" }); location.hash = `#/experiments/${id}?stopped`; } catch (error) { fail(error); }
  };
  const canvas = h("canvas", { id: "chart-experiment" });
  const [control, challenger] = e.compared;
  view.replaceChildren(h("section", { id: "experiment", "data-verdict": e.verdict },
    h("div", { class: "actions" }, h("h1", {}, e.name || e.id), ui.pill(e.status),
      e.status === "running" && h("button", { class: "danger", id: "stop-experiment", onclick: stop }, "Stop")),
    h("p", { class: "muted" }, e.campaign_id ? `On campaign “${campaign?.name ?? e.campaign_id}”` : `On inbound calls to ${e.phone_number}`,
      ` · started ${new Date(e.created_at).toLocaleString()}`, e.stopped_at ? ` · stopped ${new Date(e.stopped_at).toLocaleString()}` : ""),
    h("div", { class: `card verdict ${e.verdict}`, id: "verdict" }, h("strong", {}, e.verdict.replaceAll("_", " ")), h("p", { id: "verdict-text" }, e.verdict_text),
      challenger && h("p", { class: "muted", id: "difference" }, `${challenger} − ${control}: ${points(e.difference)}`,
        e.difference_ci95 ? ` (95 % CI ${points(e.difference_ci95.low)} to ${points(e.difference_ci95.high)})` : "")),
    h("table", { id: "variants" }, h("tr", {}, ["Variant", "Version", "Weight", "Calls", "Answered", "Person answered", "Conversations",
      "Qualified", "Booked", "Booking rate", "95 % interval"].map((t) => h("th", {}, t))), rows),
    h("div", { class: "card chart-card", "data-chart": "experiment" }, h("h2", {}, "Booking rate (booked / a person answered) with its 95 % interval"),
      h("div", { class: "chart-box" }, canvas))));
  draw("experiment", canvas, { type: "bar", data: { labels: e.variants.map((v) => `${v.label} (${number[v.version_id] || "?"})`), datasets: [
    { type: "line", label: "booking rate", data: e.variants.map((v) => v.booking_rate), showLine: false, pointRadius: 6, backgroundColor: "#dc2626", borderColor: "#dc2626" },
    { label: "95 % interval", data: e.variants.map((v) => (v.booking_rate_ci95 ? [v.booking_rate_ci95.low, v.booking_rate_ci95.high] : null)),
      backgroundColor: "rgba(37, 99, 235, .35)", borderColor: "#2563eb", borderWidth: 1, barPercentage: 0.4 }] },
    options: { scales: { y: { min: 0, max: 1, ticks: { callback: (v) => `${Math.round(v * 100)} %` } } },
      plugins: { tooltip: { callbacks: { label: (c) => (Array.isArray(c.raw) ? `95 % interval: ${pct(c.raw[0])} – ${pct(c.raw[1])}` : `booking rate: ${pct(c.raw)}`) } } } } });
  return () => destroyCharts(["experiment"]);
}
