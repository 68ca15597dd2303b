// The playbook editor of one agent: the stages as a graph (Cytoscape.js + dagre, vendored), a stage's
// fields and scripted lines, its transitions, the JSON, save (422 problems listed by path) and
// "test a stage" (caller lines through POST /v1/convai/playbooks/try, no model).
import { ApiError, get, patch, post } from "./api.js";

const ANY = "*"; // edges from every stage: drawn from one "any stage" node
const CONDITIONS = ["intent", "fields", "llm", "unconditional"];
let vendor = null; // the graph library, loaded on first use (only this page needs it)

async function loadGraphLibrary() {
  if (!vendor) {
    vendor = Promise.all([import("./vendor/cytoscape.esm.min.js"), import("./vendor/cytoscape-dagre.esm.min.js")])
      .then(([cy, dagre]) => { cy.default.use(dagre.default); return cy.default; });
  }
  return vendor;
}

const conditionText = (c = {}) => c.type === "intent" ? (c.intents || []).join(" / ")
  : c.type === "fields" ? `has ${(c.fields || []).join(", ")}` : c.type === "llm" ? `llm: ${c.label || c.condition || ""}` : "answered";

export async function playbookPage(view, ui, agentId) {
  const { h, toast, fail } = ui;
  const [agent, vocabulary] = await Promise.all([get(`/convai/agents/${agentId}`), get("/convai/playbooks/vocabulary")]);
  let pb = agent.playbook ? structuredClone(agent.playbook) : null;
  let selected = pb?.start ?? null;
  let cy = null;
  const graphBox = h("div", { id: "playbook-graph", class: "pb-graph" });
  const stagePanel = h("div", { id: "stage-editor" });
  const errorsBox = h("div", { id: "playbook-errors", class: "pb-errors", hidden: true });
  const json = h("textarea", { id: "playbook-json", class: "pb-json", spellcheck: "false" });
  const stageSelect = h("select", { id: "stage-select", onchange: () => select(stageSelect.value) });
  const trySelect = h("select", { id: "try-stage" });
  const tryLine = h("input", { id: "try-line", placeholder: "What is this about?" });
  const tryResult = h("div", { id: "try-result" });

  // ---------------------------------------------------------------- the graph
  const elements = () => {
    const nodes = Object.entries(pb.nodes).map(([id, n]) => ({
      group: "nodes", classes: ["stage", id === pb.start && "start", n.ends_call && "end", n.returns && "detour"].filter(Boolean).join(" "),
      data: { id, label: n.label ? `${n.label}\n(${id})` : id },
    }));
    const edges = Object.entries(pb.edges || {}).filter(([, e]) => (e.source === ANY || pb.nodes[e.source]) && pb.nodes[e.target])
      .map(([id, e]) => ({ group: "edges", classes: e.source === ANY ? "any" : "", data: { id: `edge:${id}`, source: e.source, target: e.target, label: conditionText(e.forward_condition) } }));
    const anyNode = edges.some((e) => e.data.source === ANY) ? [{ group: "nodes", classes: "anynode", data: { id: ANY, label: "any stage" } }] : [];
    return [...nodes, ...anyNode, ...edges];
  };
  const drawGraph = async () => {
    const cytoscape = await loadGraphLibrary();
    cy?.destroy();
    cy = cytoscape({
      container: graphBox, elements: elements(), wheelSensitivity: 0.3, minZoom: 0.2, maxZoom: 2.5,
      layout: { name: "dagre", rankDir: "LR", nodeSep: 14, rankSep: 70, edgeSep: 6, padding: 12 },
      style: [
        { selector: "node", style: { shape: "round-rectangle", "background-color": "#eef2fb", "border-color": "#2557d6", "border-width": 1,
          label: "data(label)", "text-wrap": "wrap", "text-max-width": 130, "font-size": 11, "text-valign": "center", color: "#1d2330",
          width: "label", height: "label", padding: 8 } },
        { selector: "node.start", style: { "border-width": 3 } },
        { selector: "node.end", style: { "background-color": "#dcf2e4", "border-color": "#1d8a4a" } },
        { selector: "node.detour", style: { "border-style": "dashed" } },
        { selector: "node.anynode", style: { "background-color": "#fff7e6", "border-color": "#c27c0e", shape: "ellipse" } },
        { selector: "node:selected", style: { "background-color": "#2557d6", color: "#fff" } },
        { selector: "node.error", style: { "border-color": "#c62f2f", "border-width": 3, "background-color": "#f8e0e0" } },
        { selector: "node.reached", style: { "background-color": "#1d8a4a", color: "#fff" } },
        { selector: "edge", style: { width: 1, "line-color": "#9aa3b5", "target-arrow-color": "#9aa3b5", "target-arrow-shape": "triangle",
          "curve-style": "bezier", "arrow-scale": 0.8, label: "data(label)", "font-size": 8, color: "#6b7385",
          "text-background-color": "#fff", "text-background-opacity": 0.8, "text-rotation": "autorotate" } },
        { selector: "edge.any", style: { "line-style": "dashed", "line-color": "#e0c690", "target-arrow-color": "#e0c690", label: "" } },
        { selector: "edge:selected, edge.near", style: { label: "data(label)", "line-color": "#2557d6", "target-arrow-color": "#2557d6", width: 2 } },
      ],
    });
    cy.on("tap", "node", (event) => select(event.target.id()));
    if (selected && cy.getElementById(selected).length) cy.getElementById(selected).select();
    window.__playbookGraph = cy; // lets the browser test count the drawn stages
  };
  const markErrors = (stages) => { if (cy) { cy.nodes().removeClass("error"); stages.forEach((s) => cy.getElementById(s).addClass("error")); } };

  // ---------------------------------------------------------------- the selected stage's fields
  const text = (id, value, onInput, attrs = {}) => h("input", { id, value: value ?? "", oninput: (e) => onInput(e.target.value), ...attrs });
  const area = (id, value, onInput, attrs = {}) => h("textarea", { id, oninput: (e) => onInput(e.target.value), ...attrs }, value ?? "");
  const row = (...cells) => h("div", { class: "row" }, ...cells);
  const field = (label, input) => h("div", {}, h("label", { for: input.id }, label), input);
  const list = (value) => value.split(",").map((v) => v.trim()).filter(Boolean);
  const setOrDrop = (obj, key, value) => { if (value === "" || value == null || (Array.isArray(value) && !value.length)) delete obj[key]; else obj[key] = value; };

  const edgeRow = (id, edge) => {
    const c = edge.forward_condition || (edge.forward_condition = { type: "unconditional" });
    const target = h("select", { class: "edge-target", onchange: (e) => { edge.target = e.target.value; changed(true); } },
      Object.keys(pb.nodes).map((s) => h("option", { value: s, selected: s === edge.target }, s)));
    if (!pb.nodes[edge.target]) target.prepend(h("option", { value: edge.target, selected: true }, `${edge.target} (unknown)`));
    const kind = h("select", { class: "edge-type", onchange: (e) => {
      edge.forward_condition = { type: e.target.value, ...(c.label ? { label: c.label } : {}),
        ...(e.target.value === "intent" ? { intents: ["confirm"] } : e.target.value === "fields" ? { fields: [] } : e.target.value === "llm" ? { condition: "" } : {}) };
      changed(true); renderStage();
    } }, CONDITIONS.map((t) => h("option", { value: t, selected: t === c.type }, t)));
    const detail = c.type === "intent" ? text(`edge-${id}-intents`, (c.intents || []).join(", "), (v) => { c.intents = list(v); changed(true); }, { list: "pb-intents", placeholder: "what_about, robot" })
      : c.type === "fields" ? text(`edge-${id}-fields`, (c.fields || []).join(", "), (v) => { c.fields = list(v); changed(true); }, { placeholder: "meeting_time, email" })
      : c.type === "llm" ? text(`edge-${id}-condition`, c.condition, (v) => { c.condition = v; changed(false); }, { placeholder: "when the model should take this exit" })
      : h("span", { class: "muted" }, "the caller answered");
    return h("tr", { dataset: { edge: id } }, h("td", { class: "muted" }, id), h("td", {}, kind), h("td", {}, detail), h("td", {}, "→ ", target),
      h("td", {}, h("button", { type: "button", class: "danger", onclick: () => { delete pb.edges[id]; changed(true); renderStage(); } }, "✕")));
  };
  const edgesTable = (source) => {
    const mine = Object.entries(pb.edges || {}).filter(([, e]) => e.source === source);
    const add = () => {
      pb.edges = pb.edges || {};
      let n = 1; while (pb.edges[`${source === ANY ? "any" : source}_${n}`]) n += 1;
      pb.edges[`${source === ANY ? "any" : source}_${n}`] = { source, target: pb.start, forward_condition: { type: "intent", intents: ["confirm"] } };
      changed(true); renderStage();
    };
    return h("div", {}, h("h3", {}, source === ANY ? "Transitions from any stage (after each stage's own)" : "Transitions (tried in order)"),
      mine.length ? h("table", { class: "pb-edges", id: "stage-edges" }, h("tr", {}, ["id", "when", "", "goes to", ""].map((t) => h("th", {}, t))), mine.map(([id, e]) => edgeRow(id, e)))
        : h("p", { class: "muted" }, "None."),
      h("button", { type: "button", class: "secondary", id: "add-edge", onclick: add }, "Add a transition"));
  };

  const renderStage = () => {
    if (!pb) return stagePanel.replaceChildren();
    stageSelect.replaceChildren(h("option", { value: ANY, selected: selected === ANY }, "any stage (global transitions)"),
      ...Object.keys(pb.nodes).map((s) => h("option", { value: s, selected: s === selected }, `${s}${pb.nodes[s].label ? ` — ${pb.nodes[s].label}` : ""}`)));
    if (selected === ANY) return stagePanel.replaceChildren(edgesTable(ANY));
    const n = pb.nodes[selected];
    if (!n) return stagePanel.replaceChildren(h("p", { class: "muted" }, "Pick a stage in the graph."));
    const lines = h("div", { id: "stage-lines" }, (n.lines || []).map((line, i) => h("div", { class: "pb-line" },
      area(`stage-line-${i}`, line, (v) => { n.lines[i] = v; changed(false); }, { rows: 2 }),
      h("button", { type: "button", class: "danger", title: "Remove this line", onclick: () => { n.lines.splice(i, 1); changed(false); renderStage(); } }, "✕"))));
    const collect = area("stage-collect", (n.collect || []).map((c) => `${c.name}: ${c.type || "string"}${c.description ? ` — ${c.description}` : ""}`).join("\n"), (v) => {
      setOrDrop(n, "collect", v.split("\n").map((l) => l.match(/^\s*([a-z_][a-z0-9_]*)\s*(?::\s*([a-z]+))?\s*(?:—\s*(.*))?$/)).filter(Boolean)
        .map(([, name, type, description]) => ({ name, type: type || "string", ...(description ? { description: description.trim() } : {}) })));
      changed(false);
    }, { rows: 2, placeholder: "meeting_time: datetime — Day and time of the demo" });
    const check = (id, key, label) => h("label", {}, h("input", { type: "checkbox", id, checked: Boolean(n[key]), onchange: (e) => { setOrDrop(n, key, e.target.checked || null); changed(true); } }), label);
    stagePanel.replaceChildren(
      h("h3", {}, `Stage “${selected}”`, selected === pb.start ? " (start)" : ""),
      row(field("Label", text("stage-label", n.label, (v) => { setOrDrop(n, "label", v); changed(true); })),
        field("Outcome once here", text("stage-outcome", n.outcome, (v) => { setOrDrop(n, "outcome", v || null); changed(false); }, { placeholder: "meeting_booked" }))),
      field("Goal", text("stage-goal", n.goal, (v) => { setOrDrop(n, "goal", v); changed(false); })),
      field("Instructions (for a model that calls tools)", area("stage-instructions", n.instructions, (v) => { setOrDrop(n, "instructions", v); changed(false); }, { rows: 2 })),
      h("label", {}, "Scripted lines, said on entering ({{variables}} filled per call; variants are used in turn)"), lines,
      h("button", { type: "button", class: "secondary", id: "add-line", onclick: () => { (n.lines = n.lines || []).push(""); renderStage(); } }, "Add a line variant"),
      field("The stage's question (asked again after a detour)", text("stage-ask", n.ask, (v) => { setOrDrop(n, "ask", v); changed(false); })),
      row(field("Fields to collect (one a line: name: type — description)", collect),
        field("Tools it may use (comma-separated)", text("stage-tools", (n.tools || []).join(", "), (v) => { setOrDrop(n, "tools", list(v)); changed(false); }))),
      row(field("On a second visit, go to", text("stage-on_revisit", n.on_revisit, (v) => { setOrDrop(n, "on_revisit", v || null); changed(false); }, { placeholder: "stage id" })),
        field("Runs on entering (tool, JSON)", text("stage-run_tool", n.run_tool ? JSON.stringify(n.run_tool) : "", (v) => {
          try { setOrDrop(n, "run_tool", v ? JSON.parse(v) : null); changed(false); } catch { /* finished typing later */ }
        }))),
      h("div", { class: "checks" }, check("stage-ends_call", "ends_call", "ends the call"), check("stage-returns", "returns", "a detour (back to the stage before)")),
      edgesTable(selected),
      h("div", { class: "actions" }, h("button", { type: "button", class: "danger", id: "delete-stage", onclick: deleteStage }, "Delete this stage")));
  };

  const select = (id) => {
    selected = id;
    renderStage();
    if (cy) { cy.elements().unselect().removeClass("near"); const node = cy.getElementById(id); node.select(); node.connectedEdges().addClass("near"); }
    if (id !== ANY && pb?.nodes[id]) trySelect.value = id;
  };
  // Any edit: the JSON view follows; a change of shape (stages, transitions, labels) redraws the graph.
  let redraw = null;
  const changed = (shape) => {
    json.value = JSON.stringify(pb, null, 2);
    if (shape) { clearTimeout(redraw); redraw = setTimeout(() => drawGraph().then(() => select(selected)), 250); }
  };
  const deleteStage = () => {
    if (selected === pb.start) return toast("The start stage cannot be deleted: make another stage the start first.", true);
    delete pb.nodes[selected];
    for (const [id, e] of Object.entries(pb.edges || {})) if (e.source === selected || e.target === selected) delete pb.edges[id];
    selected = pb.start; changed(true); renderAll();
  };
  const addStage = (event) => {
    event.preventDefault();
    const id = event.target.elements.id.value.trim();
    if (!/^[a-z][a-z0-9_]{0,39}$/.test(id) || pb.nodes[id]) return toast("A stage id is lower-case letters, digits and _, and new.", true);
    pb.nodes[id] = { type: "override_agent", label: id.replaceAll("_", " "), lines: [""] };
    (pb.edges = pb.edges || {})[`${selected && selected !== ANY ? selected : pb.start}_to_${id}`] = { source: selected && selected !== ANY ? selected : pb.start, target: id, forward_condition: { type: "unconditional" } };
    selected = id; changed(true); renderAll();
  };

  // ---------------------------------------------------------------- save, JSON, starter
  const showErrors = (error) => {
    if (!(error instanceof ApiError) || error.status !== 422) { errorsBox.hidden = true; return fail(error); }
    const detail = Array.isArray(error.detail) ? error.detail : [{ loc: [], msg: error.message }];
    const stages = new Set();
    const items = detail.map((e) => {
      const path = (e.loc || []).filter((p) => p !== "body");
      const at = path.indexOf("nodes") >= 0 ? path[path.indexOf("nodes") + 1] : path.indexOf("edges") >= 0 ? pb.edges?.[path[path.indexOf("edges") + 1]]?.source : null;
      if (at && pb.nodes[at]) stages.add(at);
      return h("li", {}, h("code", { class: "pb-path" }, path.join(" › ") || "playbook"), ": ", e.msg,
        at && (pb.nodes[at] || at === ANY) ? h("button", { type: "button", class: "link", onclick: () => select(at) }, ` (open ${at === ANY ? "any stage" : at})`) : "");
    });
    errorsBox.replaceChildren(h("strong", {}, "Not saved — fix these:"), h("ul", {}, items));
    errorsBox.hidden = false;
    markErrors(stages);
  };
  const save = async () => {
    try {
      const saved = await patch(`/convai/agents/${agentId}`, { playbook: pb });
      // The stored playbook (normalised by the API) becomes the one edited: every field is bound anew.
      pb = structuredClone(saved.playbook); errorsBox.hidden = true;
      renderAll(); toast("Playbook saved.");
    } catch (error) { showErrors(error); }
  };
  const applyJson = () => {
    try { pb = JSON.parse(json.value); } catch (error) { return toast(`Not JSON: ${error.message}`, true); }
    if (!pb?.nodes || typeof pb.nodes !== "object") return toast("A playbook needs a nodes map.", true);
    if (!pb.nodes[selected] && selected !== ANY) selected = pb.start;
    errorsBox.hidden = true;
    renderAll();
  };
  const useStarter = async () => {
    if (pb && !confirm("Replace this agent's playbook with the starter playbook?")) return;
    try { const saved = await patch(`/convai/agents/${agentId}`, { playbook: "starter" }); pb = structuredClone(saved.playbook); selected = pb.start; toast("Starter playbook added."); renderAll(); }
    catch (error) { fail(error); }
  };
  const removePlaybook = async () => {
    if (!confirm("Remove the playbook from this agent?")) return;
    try { await patch(`/convai/agents/${agentId}`, { playbook: null }); pb = null; renderAll(); } catch (error) { fail(error); }
  };

  // ---------------------------------------------------------------- test a stage
  const runTry = async (event) => {
    event.preventDefault();
    const say = tryLine.value.trim() || tryLine.placeholder;
    try {
      const out = await post("/convai/playbooks/try", { playbook: pb, stage: trySelect.value, say: [say], variables: { agent_name: agent.name } });
      const turn = out.turns[0];
      const reply = [...turn.lines, turn.ask].filter(Boolean).join(" ");
      if (cy) { cy.nodes().removeClass("reached"); turn.entered.forEach((s) => cy.getElementById(s).addClass("reached")); }
      tryResult.replaceChildren(h("div", { class: "card pb-try" },
        h("div", { class: "transcript" }, h("div", { class: "turn user" }, say), h("div", { class: "turn agent", id: "try-reply" }, reply || "(nothing)")),
        h("div", { class: "row" },
          h("div", {}, h("label", {}, "Intent read"), turn.intent || "—"),
          h("div", {}, h("label", {}, "Next stage"), h("strong", { id: "try-next" }, turn.stage), turn.answered_within_stage ? " (stayed)" : ` via ${turn.entered.join(" → ")}`),
          h("div", {}, h("label", {}, "Tool"), turn.tools.map((t) => `${t.name}(${JSON.stringify(t.arguments)})`).join(", ") || "—"),
          h("div", {}, h("label", {}, "Ends the call"), turn.ends_call ? "yes" : "no")),
        Object.keys(out.collected || {}).length > 0 && h("p", { class: "muted" }, `Collected: ${JSON.stringify(out.collected)}`)));
    } catch (error) {
      if (error instanceof ApiError && error.status === 422) { showErrors(error); tryResult.replaceChildren(h("p", { class: "muted" }, "The playbook has problems (above): fix them to test.")); }
      else fail(error);
    }
  };

  // ---------------------------------------------------------------- the page
  const header = h("div", { class: "actions" }, h("h1", {}, `Playbook: ${agent.name}`), h("a", { href: `#/agents/${agentId}` }, h("button", { type: "button", class: "secondary" }, "Back to the agent")));
  const renderAll = () => {
    if (!pb) {
      view.replaceChildren(header, h("div", { class: "card" }, h("p", {}, "This agent has no playbook: its calls follow the system prompt alone."),
        h("label", { for: "starter-select" }, "Start from"),
        h("select", { id: "starter-select" }, h("option", { value: "starter" }, "The starter B2B demo-booking playbook")),
        h("div", { class: "actions" }, h("button", { type: "button", id: "use-starter", onclick: useStarter }, "Use this playbook"))));
      return;
    }
    json.value = JSON.stringify(pb, null, 2);
    trySelect.replaceChildren(...Object.keys(pb.nodes).map((s) => h("option", { value: s, selected: s === (selected === ANY ? pb.start : selected) }, s)));
    const vars = h("div", { id: "playbook-variables" }, Object.keys(pb.variables || {}).map((k) => field(`{{${k}}}`,
      text(`var-${k}`, pb.variables[k], (v) => { pb.variables[k] = v; changed(false); }))));
    view.replaceChildren(header,
      h("div", { class: "card" },
        row(field("Name", text("playbook-name", pb.name, (v) => { pb.name = v; changed(false); })),
          field("Start stage", h("select", { id: "playbook-start", onchange: (e) => { pb.start = e.target.value; changed(true); } },
            Object.keys(pb.nodes).map((s) => h("option", { value: s, selected: s === pb.start }, s)))),
          field("Says it is an AI", h("select", { id: "playbook-ai_disclosure", onchange: (e) => { pb.ai_disclosure = e.target.value; changed(false); } },
            ["when_asked", "up_front"].map((v) => h("option", { value: v, selected: v === pb.ai_disclosure }, v.replace("_", " ")))))),
        h("details", {}, h("summary", {}, "Variables ({{name}} in lines)"), vars),
        h("div", { class: "actions" }, h("button", { type: "button", id: "save-playbook", onclick: save }, "Save playbook"),
          h("button", { type: "button", class: "secondary", id: "use-starter", onclick: useStarter }, "Replace with the starter"),
          h("button", { type: "button", class: "danger", onclick: removePlaybook }, "Remove playbook")),
        errorsBox),
      h("div", { class: "pb-layout" },
        h("div", { class: "card" }, h("div", { class: "actions" }, h("strong", {}, `${Object.keys(pb.nodes).length} stages`),
          h("span", { class: "muted" }, "click a stage to edit it · dashed: from any stage · green: ends the call")), graphBox),
        h("div", { class: "card pb-stage" }, h("label", { for: "stage-select" }, "Stage"), stageSelect, stagePanel,
          h("form", { onsubmit: addStage, class: "actions" }, h("input", { name: "id", placeholder: "new_stage_id" }), h("button", { type: "submit", class: "secondary" }, "Add a stage")))),
      h("h2", {}, "Test a stage"),
      h("form", { class: "card", id: "try-form", onsubmit: runTry },
        h("p", { class: "muted" }, "A caller line said in a stage of this (unsaved) playbook: the agent's reply and the stage it goes to. Rules only, no model."),
        row(field("In stage", trySelect), field("The caller says", tryLine)),
        h("div", { class: "actions" }, h("button", { type: "submit", id: "try-run" }, "Try it"))),
      tryResult,
      h("details", { class: "card" }, h("summary", {}, "JSON"), json,
        h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", id: "apply-json", onclick: applyJson }, "Apply JSON"))),
      h("datalist", { id: "pb-intents" }, vocabulary.intents.map((i) => h("option", { value: i }))));
    renderStage();
    drawGraph().then(() => select(selected)).catch(fail);
  };
  renderAll();
  return () => { cy?.destroy(); clearTimeout(redraw); };
}
