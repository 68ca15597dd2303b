// The agent form's answering-machine section: detect machines, hang up or leave a message (with
// {{variables}} filled per lead), and press keys through phone menus.
const VARIABLE = /\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}/g;
const BUILTIN = new Set(["agent_name", "caller_number", "call_sid", "date"]);

export const templateVariables = (text) => [...new Set([...(text || "").matchAll(VARIABLE)].map((m) => m[1]))]
  .filter((name) => !BUILTIN.has(name));

export function voicemailSection(h, agent) {
  const detection = h("input", { type: "checkbox", id: "agent-voicemail_detection", checked: agent.voicemail_detection ?? true });
  const action = h("select", { id: "agent-voicemail_action", name: "voicemail_action" },
    h("option", { value: "hang_up", selected: (agent.voicemail_action ?? "hang_up") === "hang_up" }, "Hang up (leave nothing)"),
    h("option", { value: "leave_message", selected: agent.voicemail_action === "leave_message" }, "Leave the message below after the beep"));
  const message = h("textarea", { id: "agent-voicemail_message", name: "voicemail_message", maxlength: 2000, rows: 3,
    placeholder: "Hi {{first_name}}, it's Ava from Orbit CRM about your team's reports. I'll email you the details. Bye!",
    "aria-describedby": "voicemail-variables" }, agent.voicemail_message || "");
  const dtmf = h("input", { type: "checkbox", id: "agent-dtmf_navigation", checked: agent.dtmf_navigation ?? false });
  const hint = h("p", { class: "muted", id: "voicemail-variables", "aria-live": "polite" });
  const refresh = () => {
    const names = templateVariables(message.value);
    const leaving = action.value === "leave_message";
    message.disabled = !leaving;
    hint.replaceChildren(!leaving ? "The message is not used while the agent hangs up on machines."
      : names.length ? h("span", {}, "Every campaign lead needs a column for: ", names.flatMap((n, i) => [i ? ", " : "", h("code", {}, n)]),
        ". A campaign whose leads lack one is refused before anyone is called.")
        : "No {{variables}}: every mailbox hears the same words.");
  };
  message.addEventListener("input", refresh);
  action.addEventListener("change", refresh);
  refresh();
  const section = h("section", { id: "voicemail-settings", "aria-labelledby": "voicemail-heading" },
    h("h2", { id: "voicemail-heading" }, "Answering machines and voicemail"),
    h("div", { class: "checks" },
      h("label", {}, detection, "Tell people from answering machines on outbound calls"),
      h("label", {}, dtmf, "Phone menus: press the keys that reach a person")),
    h("label", { for: "agent-voicemail_action" }, "When a machine answers"), action,
    h("label", { for: "agent-voicemail_message" }, "Voicemail message ({{variables}} are filled from the lead's columns)"), message,
    hint);
  const values = () => ({
    voicemail_detection: detection.checked,
    voicemail_action: action.value,
    voicemail_message: message.value,
    dtmf_navigation: dtmf.checked,
  });
  return { section, values };
}
