// The do-not-call list: search, page, add and remove numbers, import a CSV (errors per row), and see who
// put each number there and when (the caller on a call, a person, an import).
import { api, del, get, post } from "./api.js";

const PAGE = 25;
export const SOURCES = { api: "a person", tool: "the caller, on a call", csv: "an import" };

export async function dncPage(view, ui) {
  const { h, toast, fail } = ui;
  const when = (iso) => new Date(iso).toLocaleString();
  const field = (label, el, hint) => h("div", {}, h("label", { for: el.id }, label), el, hint && h("p", { class: "muted small" }, hint));

  // ---------------------------------------------------------------- the list
  const search = h("input", { type: "search", id: "dnc-search", placeholder: "digits of a number, or words of the reason", autocomplete: "off" });
  const source = h("select", { id: "dnc-source" }, h("option", { value: "" }, "anyone"),
    Object.entries(SOURCES).map(([value, label]) => h("option", { value }, label)));
  const count = h("p", { id: "dnc-count", class: "muted", "aria-live": "polite" });
  const table = h("div", { class: "table-wrap" });
  const prev = h("button", { type: "button", class: "secondary", id: "dnc-prev" }, "← Newer");
  const next = h("button", { type: "button", class: "secondary", id: "dnc-next" }, "Older →");
  const cursors = [null]; // the cursor of each page seen, for going back
  let page = 0;
  let timer = null;

  const load = async () => {
    const query = new URLSearchParams({ page_size: String(PAGE) });
    if (search.value.trim()) query.set("search", search.value.trim());
    if (source.value) query.set("source", source.value);
    if (cursors[page]) query.set("cursor", cursors[page]);
    const data = await get(`/convai/dnc?${query}`);
    cursors[page + 1] = data.next_cursor;
    const first = page * PAGE + (data.entries.length ? 1 : 0);
    count.textContent = `${data.total} number${data.total === 1 ? "" : "s"}${search.value.trim() || source.value ? " match" : " on the list"}`
      + (data.total > PAGE ? ` · showing ${first}–${page * PAGE + data.entries.length}` : "");
    prev.disabled = page === 0;
    next.disabled = !data.has_more;
    table.replaceChildren(data.entries.length ? h("table", { id: "dnc-entries" },
      h("thead", {}, h("tr", {}, ["Number", "Added by", "Reason", "When", ""].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, data.entries.map((e) => h("tr", { "data-number": e.phone_number },
        h("td", {}, h("strong", {}, e.phone_number)),
        h("td", {}, h("span", { class: `pill source-${e.source}` }, SOURCES[e.source] || e.source),
          e.conversation_id && h("div", {}, h("a", { href: `#/conversations/${e.conversation_id}` }, "the call"))),
        h("td", { class: "muted" }, e.reason || "—"),
        h("td", {}, h("time", { datetime: e.created_at }, when(e.created_at))),
        h("td", {}, h("button", { type: "button", class: "danger", "aria-label": `Remove ${e.phone_number}`, onclick: async () => {
          if (!confirm(`Take ${e.phone_number} off the do-not-call list? It may be called again.`)) return;
          try { await del(`/convai/dnc/${e.id}`); toast(`${e.phone_number} removed.`); await load(); } catch (error) { fail(error); }
        } }, "Remove"))))))
      : h("p", { class: "muted" }, search.value.trim() || source.value ? "No number matches." : "The list is empty."));
  };
  const reload = () => { page = 0; cursors.length = 1; load().catch(fail); };
  search.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(reload, 250); });
  source.addEventListener("change", reload);
  prev.onclick = () => { page = Math.max(0, page - 1); load().catch(fail); };
  next.onclick = () => { page += 1; load().catch(fail); };

  // ---------------------------------------------------------------- add numbers
  const numbers = h("textarea", { id: "dnc-numbers", rows: 3, placeholder: "+1 212 555 0123\n+44 20 7946 0958" });
  const reason = h("input", { id: "dnc-reason", maxlength: 500, placeholder: "asked not to be called" });
  const add = async (event) => {
    event.preventDefault();
    const list = numbers.value.split(/[\n,;]+/).map((n) => n.trim()).filter(Boolean);
    if (!list.length) { toast("Type at least one number.", true); numbers.focus(); return; }
    try {
      const body = await post("/convai/dnc", { phone_numbers: list, reason: reason.value });
      toast(`${body.added} added${list.length - body.added ? `, ${list.length - body.added} already listed` : ""}.`);
      numbers.value = "";
      reload();
    } catch (error) {
      // Which number is wrong: the API names its index in phone_numbers.
      const bad = Array.isArray(error.detail) ? error.detail.map((e) => `${list[e.loc?.[2]] ?? ""} ${e.msg}`.trim()) : null;
      fail(bad ? new Error(bad.join("; ")) : error);
    }
  };

  // ---------------------------------------------------------------- import a CSV
  const file = h("input", { type: "file", id: "dnc-file", accept: ".csv,text/csv,text/plain" });
  const importReason = h("input", { id: "dnc-import-reason", maxlength: 500, placeholder: "e.g. suppression list from the CRM" });
  const region = h("input", { id: "dnc-region", maxlength: 2, placeholder: "US", autocomplete: "off" });
  const report = h("div", { id: "dnc-import-report", "aria-live": "polite" });
  const upload = async (event) => {
    event.preventDefault();
    if (!file.files.length) { toast("Choose a CSV file.", true); file.focus(); return; }
    const form = new FormData();
    form.append("file", file.files[0]);
    if (importReason.value) form.append("reason", importReason.value);
    if (region.value.trim()) form.append("default_region", region.value.trim().toUpperCase());
    try {
      const r = await api("POST", "/convai/dnc/import", form);
      report.replaceChildren(h("div", { class: `notice ${r.invalid ? "warn" : "ok"}` },
        h("strong", {}, `${r.added} added`), ` · ${r.already_listed} already listed · ${r.duplicates} repeated in the file · ${r.invalid} rejected (of ${r.rows} rows)`),
        r.errors.length > 0 && h("div", { class: "table-wrap" }, h("table", { id: "dnc-import-errors" },
          h("thead", {}, h("tr", {}, ["Line", "Value", "Why it was rejected"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, r.errors.map((e) => h("tr", {}, h("td", {}, String(e.line)), h("td", {}, h("code", {}, e.value || "(empty)")), h("td", {}, e.error)))))));
      file.value = "";
      reload();
    } catch (error) { report.replaceChildren(); fail(error); }
  };

  await load();
  view.replaceChildren(
    h("h1", {}, "Do-not-call list"),
    h("p", { class: "muted" }, "Numbers here are never dialled: outbound calls are refused and campaign leads end as dnc. A caller who asks is added during the call."),
    h("div", { class: "card", id: "dnc-list" },
      h("div", { class: "row" }, field("Search", search), field("Added by", source)),
      count, table,
      h("div", { class: "actions" }, prev, next)),
    h("div", { class: "two-col" },
      h("form", { class: "card", id: "dnc-add", onsubmit: add },
        h("h2", {}, "Add numbers"),
        field("Numbers (one per line, any international notation)", numbers),
        field("Reason", reason),
        h("div", { class: "actions" }, h("button", { type: "submit", id: "dnc-add-button" }, "Add to the list"))),
      h("form", { class: "card", id: "dnc-import", onsubmit: upload },
        h("h2", {}, "Import a CSV"),
        field("CSV file", file, "A phone_number column (and optionally reason), or one number per line. Each number is checked and stored in E.164, as the API does."),
        h("div", { class: "row" }, field("Reason for rows without one", importReason), field("Country of numbers without +code", region)),
        h("div", { class: "actions" }, h("button", { type: "submit", id: "dnc-import-button" }, "Import")),
        report)));
  return () => clearTimeout(timer);
}
