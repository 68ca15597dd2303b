// Scenario tests of one agent: each test edited as a form (caller steps and criteria as fields; JSON
// still there), the SDR starter pack added with a button, runs K times in text or audio mode, and each
// call's criteria (pass/fail) beside its transcript.
import { del, get, patch, post } from "./api.js";

const EXAMPLE = {
  name: "books a meeting with the right slot",
  dynamic_variables: { name: "Dana" },
  caller: [{ say: "Sure, I have a minute." }, { say: "Can we book a demo tomorrow at 3pm?" }],
  criteria: {
    tools_called: [{ name: "book_meeting", arguments: { start_time: { contains: "T15:00" } }, success: true }],
    agent_never_says: ["I can't help"],
  },
};
const SPEC_KEYS = ["name", "description", "caller", "criteria", "dynamic_variables", "caller_number", "expect_on_embedded"];
const OUTCOMES = ["meeting_booked", "interested", "not_interested", "callback_requested", "voicemail", "no_answer", "failed", "unknown"];
const rate = (r) => `${r.passed}/${r.runs} (${Math.round(r.pass_rate * 100)}%)`;
const describeStep = (s) => (s.say ? `“${s.say}”` : s.dtmf ? `keys ${s.dtmf}` : `silent ${s.silence_s} s`);
const lines = (text) => text.split("\n").map((l) => l.trim()).filter(Boolean);
const names = (text) => [...new Set(text.split(",").map((n) => n.trim()).filter(Boolean))];
// A phrase line "booked | scheduled" means any one of them.
const phrase = (line) => (line.includes("|") ? line.split("|").map((p) => p.trim()).filter(Boolean) : line);
const phraseText = (p) => (Array.isArray(p) ? p.join(" | ") : p);
const specOf = (test) => Object.fromEntries(SPEC_KEYS.filter((k) => test[k] !== undefined && test[k] !== null).map((k) => [k, test[k]]));
const criteriaNames = (c) => Object.entries(c).filter(([, v]) => v !== null && v !== undefined && !(Array.isArray(v) && !v.length)
  && !(typeof v === "object" && !Array.isArray(v) && !Object.keys(v).length)).map(([k]) => k.replaceAll("_", " "));

// ------------------------------------------------------------------ one test's form

function testEditor(h, spec, onSave) {
  const original = structuredClone(spec);
  const c = spec.criteria || {};
  const id = (name) => `test-${name}`;
  const input = (name, value, attrs = {}) => h("input", { id: id(name), value: value ?? "", ...attrs });
  const area = (name, value, attrs = {}) => h("textarea", { id: id(name), rows: 2, ...attrs }, value ?? "");
  const choose = (name, options, value) => h("select", { id: id(name) }, options.map(([v, label]) => h("option", { value: v, selected: v === value }, label)));
  const field = (label, el) => h("div", {}, h("label", { for: el.id }, label), el);
  const f = {
    name: input("name", spec.name, { required: true, maxlength: 200 }),
    description: input("description", spec.description, { maxlength: 2000 }),
    variables: area("variables", Object.entries(spec.dynamic_variables || {}).map(([k, v]) => `${k}=${v}`).join("\n"), { placeholder: "name=Dana" }),
    agent_says: area("agent_says", (c.agent_says || []).map(phraseText).join("\n"), { placeholder: "booked | scheduled" }),
    agent_never_says: area("agent_never_says", (c.agent_never_says || []).join("\n")),
    states_facts: area("states_facts", (c.states_facts || []).map(phraseText).join("\n")),
    tools_called: input("tools_called", (c.tools_called || []).map((t) => t.name).join(", "), { placeholder: "book_meeting" }),
    tools_not_called: input("tools_not_called", (c.tools_not_called || []).join(", "), { placeholder: "transfer_call" }),
    outcome: choose("outcome", [["", "any"], ...OUTCOMES.map((o) => [o, o.replaceAll("_", " ")])], c.outcome ?? ""),
    ended_by: choose("ended_by", [["", "either"], ["agent", "the agent"], ["caller", "the caller"]], c.ended_by ?? ""),
    end_reason: input("end_reason", c.end_reason, { placeholder: "e.g. agent_goodbye, transferred" }),
    on_dnc_list: choose("on_dnc_list", [["", "not checked"], ["true", "yes"], ["false", "no"]], c.on_dnc_list == null ? "" : String(c.on_dnc_list)),
    max_v2v: input("max_v2v", c.max_v2v_p95_ms, { type: "number", min: 1, placeholder: "no bound" }),
    rubric: area("rubric", c.rubric, { placeholder: "Judged by an LLM other than the embedded one" }),
  };
  // Caller steps: one row each (say a line, press keys, or stay silent), with the pause before it.
  const steps = h("div", { class: "steps", id: id("steps") });
  const stepRow = (step = { say: "" }) => {
    const kind = step.dtmf != null ? "dtmf" : step.silence_s != null ? "silence_s" : "say";
    const type = h("select", { "aria-label": "Caller does" },
      [["say", "says"], ["dtmf", "presses keys"], ["silence_s", "is silent (s)"]].map(([v, l]) => h("option", { value: v, selected: v === kind }, l)));
    const value = h("input", { "aria-label": "What", value: step[kind] ?? "", class: "step-value" });
    const pause = h("input", { type: "number", min: 0, step: "0.5", "aria-label": "Pause before (s)", title: "Pause before (s)", value: step.pause_s || 0 });
    const row = h("div", { class: "step" }, type, value, pause,
      h("button", { type: "button", class: "danger", "aria-label": "Remove this step", onclick: () => row.remove() }, "✕"));
    row.read = () => {
      const extra = Object.fromEntries(Object.entries(step).filter(([k]) => !["say", "dtmf", "silence_s", "pause_s"].includes(k)));
      const v = type.value === "silence_s" ? Number(value.value) : value.value;
      return { ...extra, [type.value]: v, ...(Number(pause.value) ? { pause_s: Number(pause.value) } : {}) };
    };
    return row;
  };
  const fillSteps = (list) => steps.replaceChildren(...(list?.length ? list : [{ say: "" }]).map(stepRow));
  fillSteps(spec.caller);

  const fromForm = () => {
    const oc = original.criteria || {};
    const keep = Object.fromEntries((oc.tools_called || []).map((t) => [t.name, t]));
    const criteria = {
      ...oc, // what the form does not show (argument checks, collected data) is kept as it was
      agent_says: lines(f.agent_says.value).map(phrase),
      agent_never_says: lines(f.agent_never_says.value),
      states_facts: lines(f.states_facts.value).map(phrase),
      tools_called: names(f.tools_called.value).map((n) => keep[n] || { name: n }),
      tools_not_called: names(f.tools_not_called.value),
      outcome: f.outcome.value || null,
      ended_by: f.ended_by.value || null,
      end_reason: f.end_reason.value.trim() || null,
      on_dnc_list: f.on_dnc_list.value === "" ? null : f.on_dnc_list.value === "true",
      max_v2v_p95_ms: f.max_v2v.value === "" ? null : Number(f.max_v2v.value),
      rubric: f.rubric.value.trim() || null,
    };
    return {
      ...specOf(original),
      name: f.name.value.trim(), description: f.description.value,
      dynamic_variables: Object.fromEntries(lines(f.variables.value).map((l) => [l.split("=")[0].trim(), l.split("=").slice(1).join("=").trim()]).filter(([k]) => k)),
      caller: [...steps.children].map((row) => row.read()),
      criteria: Object.fromEntries(Object.entries(criteria).filter(([, v]) => v !== null)),
    };
  };

  const json = h("textarea", { id: "test-json", rows: 16, spellcheck: "false", "aria-label": "The test as JSON" });
  const formPane = h("div", { id: "test-form-pane" },
    h("div", { class: "row" }, field("Name", f.name), field("Description", f.description)),
    h("h3", {}, "The caller"),
    steps,
    h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", id: "add-step", onclick: () => { steps.append(stepRow()); steps.lastChild.querySelector(".step-value").focus(); } }, "Add a step")),
    field("Variables of the call (name=value, one per line)", f.variables),
    h("h3", {}, "Passes when"),
    h("div", { class: "criteria-grid" },
      field("The agent says (one per line; a | b = either)", f.agent_says),
      field("The agent never says (one per line)", f.agent_never_says),
      field("Tools called (comma-separated)", f.tools_called),
      field("Tools not called", f.tools_not_called),
      field("Outcome", f.outcome), field("Who ends the call", f.ended_by),
      field("End reason", f.end_reason), field("Number put on the do-not-call list", f.on_dnc_list),
      field("Facts from the knowledge base it states (one per line)", f.states_facts),
      field("Voice-to-voice p95 at most (ms)", f.max_v2v)),
    field("Rubric", f.rubric),
    h("p", { class: "muted small" }, "Argument checks of tools, collected data and noise are kept as they are: edit them in JSON."));
  const jsonPane = h("div", { id: "test-json-pane", hidden: true }, json,
    h("p", { class: "muted small" }, "A scenario (or a list of them, or a file with \"scenarios\"): caller steps (say, dtmf, silence_s, pause_s, barge_in_after_s, noise) and criteria (tools_called, tools_not_called, agent_says, agent_never_says, states_facts, ended_by, end_reason, on_dnc_list, outcome, collected_data, max_v2v_p95_ms, rubric)."));
  const tab = (key, label) => h("button", { type: "button", role: "tab", id: `test-tab-${key}`, "aria-selected": key === "form" ? "true" : "false" }, label);
  const tabs = { form: tab("form", "Form"), json: tab("json", "JSON") };
  let current = "form";
  const show = (key) => {
    if (key === current) return true;
    if (key === "json") json.value = JSON.stringify(fromForm(), null, 2);
    else {
      let parsed;
      try { parsed = JSON.parse(json.value); } catch (error) { return false; }
      if (Array.isArray(parsed) || parsed.scenarios) return false; // many at once: stay in JSON
      Object.assign(original, parsed);
      const again = testEditor(h, parsed, onSave);
      form.replaceWith(again);
      return true;
    }
    current = key;
    formPane.hidden = key !== "form"; jsonPane.hidden = key !== "json";
    for (const [k, b] of Object.entries(tabs)) b.setAttribute("aria-selected", String(k === key));
    return true;
  };
  tabs.form.onclick = () => { if (!show("form")) onSave.toast("The JSON is not a single valid test: fix it first.", true); };
  tabs.json.onclick = () => show("json");
  const form = h("form", { class: "card", id: "new-test", onsubmit: async (event) => {
    event.preventDefault();
    let body;
    if (current === "json") {
      try { body = JSON.parse(json.value); } catch (error) { onSave.toast(`Not JSON: ${error.message}`, true); return; }
    } else body = fromForm();
    await onSave(body);
  } },
    h("div", { class: "tabs", role: "tablist", "aria-label": "Edit as" }, tabs.form, tabs.json),
    formPane, jsonPane,
    h("div", { class: "actions" }, h("button", { type: "submit", id: "save-test" }, onSave.label)));
  return form;
}

// ------------------------------------------------------------------ the page

export async function testsPage(view, ui, agentId) {
  const { h, toast, fail } = ui;
  const agent = await get(`/convai/agents/${agentId}`);
  const list = h("div", { id: "tests-list" });
  const editorSlot = h("div", { id: "test-editor" });
  const editorTitle = h("h2", { id: "test-editor-title" }, "New test");
  const results = h("div", { id: "test-results" });
  let timer = null;
  let tests = [];

  const criterionRow = (c) => h("li", { class: c.status },
    h("strong", {}, `${c.status.replaceAll("_", " ")}: `), c.criterion, c.message && h("span", { class: "msg" }, c.message));
  const renderRun = (run) => {
    const status = run.status === "passed" ? "completed" : run.status === "running" ? "in_progress" : "failed";
    results.replaceChildren(...[
      h("div", { class: "card" },
        h("div", { class: "row" },
          h("div", {}, h("label", {}, "Run"), h("span", { class: `pill ${status}`, id: "run-status" }, run.status)),
          h("div", {}, h("label", {}, "Mode"), `${run.mode}, K=${run.repeat}`),
          h("div", {}, h("label", {}, "LLM"), run.llm || "—"),
          h("div", {}, h("label", {}, "Rubric judge"), run.judge || "none: rubrics not judged")),
        run.error && h("p", { class: "muted" }, run.error)),
      run.summary.length ? h("div", { class: "table-wrap" }, h("table", { id: "test-summary" },
        h("thead", {}, h("tr", {}, ["Scenario", "Pass rate", "Failures"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, run.summary.map((s) => h("tr", {},
          h("td", {}, s.scenario, s.expect_on_embedded ? "" : h("span", { class: "muted" }, " (needs a real LLM)")),
          h("td", {}, h("span", { class: `pill ${s.pass_rate === 1 ? "completed" : "failed"}` }, rate(s)),
            s.not_judged ? h("div", { class: "muted" }, "rubric not judged") : ""),
          h("td", { class: "muted" }, s.failures.map((f) => h("div", {}, f)))))))) : "",
      run.results.length ? h("h2", {}, "Calls") : "",
      run.results.map((r) => h("details", { class: "card", open: !r.passed },
        h("summary", {}, `${r.passed ? "✓" : "✗"} ${r.scenario} #${r.attempt}`, h("span", { class: "muted" },
          ` · ended by ${r.ended_by || "—"} (${r.end_reason || "—"}) · ${r.duration_s} s`)),
        h("div", { class: "result-grid" },
          h("div", {}, h("h3", {}, "Criteria"), h("ul", { class: "criteria-list" }, r.criteria.map(criterionRow)),
            r.notes.length ? h("p", { class: "muted" }, r.notes.join("; ")) : ""),
          h("div", {}, h("h3", {}, "Transcript"), h("div", { class: "transcript" },
            r.transcript.map((t) => h("div", { class: `turn ${t.role}` }, h("div", { class: "meta" }, t.role), h("div", { class: "text" }, t.text))),
            r.tool_calls.map((c) => h("div", { class: "tool" }, `${c.name}(${JSON.stringify(c.arguments)}) → ${c.success ? "ok" : c.error}`)))))))].flat());
  };

  const poll = (runId) => {
    clearInterval(timer);
    timer = setInterval(async () => {
      try {
        const run = await get(`/convai/agents/${agentId}/tests/runs/${runId}`);
        renderRun(run);
        if (run.status !== "running") clearInterval(timer);
      } catch (error) { clearInterval(timer); fail(error); }
    }, 1000);
  };
  const startRun = async (testIds) => {
    try {
      const body = { mode: mode.value, repeat: Number(repeat.value), ...(testIds ? { test_ids: testIds } : {}) };
      const started = await post(`/convai/agents/${agentId}/tests/run`, body);
      renderRun(started); poll(started.id);
      results.scrollIntoView({ block: "start" });
    } catch (error) { fail(error); }
  };

  // The editor: a new test, or the one picked in the list (its form, or its JSON).
  const openEditor = (test) => {
    const save = async (body) => {
      try {
        if (test) await patch(`/convai/agents/${agentId}/tests/${test.id}`, body);
        else for (const scenario of Array.isArray(body) ? body : body.scenarios || [body]) await post(`/convai/agents/${agentId}/tests`, scenario);
        toast("Saved."); await renderList(); if (!test) openEditor(null);
      } catch (error) { fail(error); }
    };
    save.toast = toast;
    save.label = test ? "Save changes" : "Save test";
    editorTitle.textContent = test ? `Edit: ${test.name}` : "New test";
    editorSlot.replaceChildren(testEditor(h, test ? specOf(test) : structuredClone(EXAMPLE), save));
  };

  const renderList = async () => {
    ({ tests } = await get(`/convai/agents/${agentId}/tests`));
    list.replaceChildren(tests.length ? h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Test", "Caller", "Criteria", ""].map((t, i) => h("th", { scope: "col", class: i === 1 || i === 2 ? "wide-only" : null }, t)))),
      h("tbody", {}, tests.map((t) => h("tr", { "data-test": t.name },
        h("td", {}, t.name), h("td", { class: "muted wide-only" }, t.caller.map(describeStep).join(" → ")),
        h("td", { class: "muted wide-only" }, criteriaNames(t.criteria).join(", ")),
        h("td", {}, h("div", { class: "actions wrap" },
          h("button", { type: "button", class: "secondary", "aria-label": `Edit ${t.name}`, onclick: () => { openEditor(t); editorTitle.scrollIntoView(); editorSlot.querySelector("input")?.focus(); } }, "Edit"),
          h("button", { type: "button", class: "secondary", "aria-label": `Run ${t.name}`, onclick: () => startRun([t.id]) }, "Run"),
          h("button", { type: "button", class: "danger", "aria-label": `Delete ${t.name}`, onclick: async () => {
            if (!confirm(`Delete the test “${t.name}”?`)) return;
            try { await del(`/convai/agents/${agentId}/tests/${t.id}`); await renderList(); } catch (error) { fail(error); }
          } }, "Delete")))))))) : h("p", { class: "card muted" }, "No tests yet: add the SDR starter pack, or write one below."));
  };

  const addPack = async () => {
    try {
      const r = await post(`/convai/agents/${agentId}/tests/starter-pack`);
      toast(`Starter pack: ${r.added.length} test${r.added.length === 1 ? "" : "s"} added${r.skipped.length ? `, ${r.skipped.length} already there` : ""}.`);
      await renderList();
    } catch (error) { fail(error); }
  };
  const mode = h("select", { id: "test-mode" }, h("option", { value: "text" }, "text (fast, no audio)"), h("option", { value: "audio" }, "audio (real call path)"));
  const repeat = h("input", { id: "test-repeat", type: "number", min: 1, max: 20, value: 3 });
  const recent = await get(`/convai/agents/${agentId}/tests/runs?limit=1`);
  await renderList();
  openEditor(null);
  if (recent.runs.length) { renderRun(recent.runs[0]); if (recent.runs[0].status === "running") poll(recent.runs[0].id); }
  view.replaceChildren(
    h("h1", {}, `Tests: ${agent.name}`),
    h("p", {}, h("a", { href: `#/agents/${agentId}` }, "← agent")),
    h("div", { class: "actions wrap" },
      h("button", { type: "button", class: "secondary", id: "add-starter-pack", onclick: addPack }, "Add the SDR starter pack"),
      h("span", { class: "muted small" }, "Scripted callers every SDR agent meets: booking, pricing, objections, \"not interested\", a transfer, do-not-call, the wrong person, silence.")),
    list,
    h("div", { class: "card" },
      h("div", { class: "row" }, h("div", {}, h("label", { for: "test-mode" }, "Mode"), mode), h("div", {}, h("label", { for: "test-repeat" }, "Runs of each (K)"), repeat)),
      h("div", { class: "actions" }, h("button", { type: "button", id: "run-tests", onclick: () => startRun(null) }, "Run all tests"))),
    results,
    h("div", { class: "actions wrap" }, editorTitle,
      h("button", { type: "button", class: "secondary", id: "new-test-button", onclick: () => { openEditor(null); editorSlot.querySelector("input")?.focus(); } }, "New test")),
    editorSlot);
  return () => clearInterval(timer);
}
