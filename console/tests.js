// Scenario tests of one agent: write them (JSON), run them K times in text or audio mode, read the results.
import { del, get, post } from "./api.js";

const EXAMPLE = {
  name: "books a meeting with the right slot",
  dynamic_variables: { name: "Dana" },
  caller: [{ say: "Sure, I have a minute." }, { say: "Can we book a demo tomorrow at 3pm?" }],
  criteria: {
    tools_called: [{ name: "book_meeting", arguments: { start_time: { contains: "T15:00" } }, success: true }],
    agent_never_says: ["I can't help"],
  },
};
const rate = (r) => `${r.passed}/${r.runs} (${Math.round(r.pass_rate * 100)}%)`;
const describeStep = (s) => s.say ? `“${s.say}”` : s.dtmf ? `keys ${s.dtmf}` : `silent ${s.silence_s} s`;

export async function testsPage(view, ui, agentId) {
  const { h, toast, fail, pill } = ui;
  const agent = await get(`/convai/agents/${agentId}`);
  const list = h("div", { id: "tests-list" });
  const results = h("div", { id: "test-results" });
  let timer = null;

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
      run.summary.length ? h("table", { id: "test-summary" },
        h("tr", {}, ["Scenario", "Pass rate", "Failures"].map((t) => h("th", {}, t))),
        run.summary.map((s) => h("tr", {},
          h("td", {}, s.scenario, s.expect_on_embedded ? "" : h("span", { class: "muted" }, " (needs a real LLM)")),
          h("td", {}, h("span", { class: `pill ${s.pass_rate === 1 ? "completed" : "failed"}` }, rate(s)),
            s.not_judged ? h("div", { class: "muted" }, "rubric not judged") : ""),
          h("td", { class: "muted" }, s.failures.map((f) => h("div", {}, f)))))) : "",
      run.results.length ? h("h2", {}, "Calls") : "",
      run.results.map((r) => h("details", { class: "card" },
        h("summary", {}, `${r.passed ? "✓" : "✗"} ${r.scenario} #${r.attempt}`, h("span", { class: "muted" },
          ` · ended by ${r.ended_by || "—"} (${r.end_reason || "—"}) · ${r.duration_s} s`)),
        h("ul", {}, r.criteria.map((c) => h("li", {}, h("strong", {}, `${c.status}: `), `${c.criterion} — ${c.message}`))),
        h("div", { class: "transcript" },
          r.transcript.map((t) => h("div", { class: `turn ${t.role}` }, h("div", { class: "meta" }, t.role), h("div", { class: "text" }, t.text))),
          r.tool_calls.map((c) => h("div", { class: "tool" }, `${c.name}(${JSON.stringify(c.arguments)}) → ${c.success ? "ok" : c.error}`))),
        r.notes.length ? h("p", { class: "muted" }, r.notes.join("; ")) : ""))].flat());
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

  const renderList = async () => {
    const { tests } = await get(`/convai/agents/${agentId}/tests`);
    list.replaceChildren(tests.length ? h("table", {},
      h("tr", {}, ["Test", "Caller", "Criteria", ""].map((t) => h("th", {}, t))),
      tests.map((t) => h("tr", {},
        h("td", {}, t.name), h("td", { class: "muted" }, t.caller.map(describeStep).join(" → ")),
        h("td", { class: "muted" }, Object.entries(t.criteria).filter(([, v]) => v !== null && !(Array.isArray(v) && !v.length)
          && !(typeof v === "object" && !Array.isArray(v) && !Object.keys(v).length)).map(([k]) => k.replaceAll("_", " ")).join(", ")),
        h("td", {}, h("button", { class: "danger", onclick: async () => {
          try { await del(`/convai/agents/${agentId}/tests/${t.id}`); await renderList(); } catch (error) { fail(error); }
        } }, "Delete"))))) : h("p", { class: "card muted" }, "No tests yet: add one below, or load the SDR starter pack from scenarios/starter_pack.json."));
  };

  const editor = h("textarea", { id: "test-json", rows: 14, spellcheck: "false" }, JSON.stringify(EXAMPLE, null, 2));
  const add = async (event) => {
    event.preventDefault();
    let body;
    try { body = JSON.parse(editor.value); } catch (error) { toast(`Not JSON: ${error.message}`, true); return; }
    try {
      for (const scenario of Array.isArray(body) ? body : body.scenarios || [body]) await post(`/convai/agents/${agentId}/tests`, scenario);
      toast("Saved."); await renderList();
    } catch (error) { fail(error); }
  };
  const mode = h("select", { id: "test-mode" }, h("option", { value: "text" }, "text (fast, no audio)"), h("option", { value: "audio" }, "audio (real call path)"));
  const repeat = h("input", { id: "test-repeat", type: "number", min: 1, max: 20, value: 3 });
  const run = async () => {
    try {
      const started = await post(`/convai/agents/${agentId}/tests/run`, { mode: mode.value, repeat: Number(repeat.value) });
      renderRun(started); poll(started.id);
    } catch (error) { fail(error); }
  };
  const recent = await get(`/convai/agents/${agentId}/tests/runs?limit=1`);
  await renderList();
  if (recent.runs.length) { renderRun(recent.runs[0]); if (recent.runs[0].status === "running") poll(recent.runs[0].id); }
  view.replaceChildren(
    h("h1", {}, `Tests: ${agent.name}`),
    h("p", {}, h("a", { href: `#/agents/${agentId}` }, "← agent")),
    list,
    h("div", { class: "card" },
      h("div", { class: "row" }, h("div", {}, h("label", { for: "test-mode" }, "Mode"), mode), h("div", {}, h("label", { for: "test-repeat" }, "Runs of each (K)"), repeat)),
      h("div", { class: "actions" }, h("button", { id: "run-tests", onclick: run }, "Run all tests"))),
    results,
    h("h2", {}, "New test"),
    h("form", { class: "card", id: "new-test", onsubmit: add },
      h("p", { class: "muted" }, "A scenario as JSON (or a list, or a file with \"scenarios\"): caller steps (say, dtmf, silence_s, pause_s, barge_in_after_s, noise) and criteria (tools_called, tools_not_called, agent_says, agent_never_says, states_facts, ended_by, end_reason, on_dnc_list, outcome, collected_data, max_v2v_p95_ms, rubric)."),
      editor,
      h("div", { class: "actions" }, h("button", { type: "submit", id: "save-test" }, "Save test"))));
  return () => clearInterval(timer);
}
