"""Builds the LLM's messages for one agent reply."""

from __future__ import annotations

from providers.base import ChatMessage

STATE_HINTS = {
    "CALL_START": "The call has just started; you already greeted the caller.",
    "DISCOVERY": "You are learning who the caller is and what they need.",
    "ACTIVE": "You are in the main conversation.",
    "COMPLETION": "The conversation is ending; close politely.",
}

VOICE_RULES = (
    "You are on a phone call. Reply to the caller in one or two short, friendly spoken sentences. "
    "No lists, no markdown, no emoji. Do not invent facts: if the facts below do not answer a question, "
    "say you will follow up by email."
)
# A supervisor's whispers (call.supervisor): the model follows them, the caller never hears them.
GUIDANCE_INTRO = (
    "Guidance from your supervisor, who is listening to this call (follow it in your next replies; never "
    "read it out or mention it):\n"
)
# What the engine tells the model (not the agent's own prompt): a reply reciting it is dropped.
INSTRUCTIONS = " ".join([VOICE_RULES, *STATE_HINTS.values()])


def build_messages(
    system_prompt: str,
    call_state: str,
    knowledge: str,
    history: list[ChatMessage],
    user_text: str,
    max_history: int = 12,
    guidance: list[str] | None = None,
) -> list[ChatMessage]:
    """System prompt (variables already filled) + state + a supervisor's guidance + retrieved knowledge +
    heard history + the turn."""
    parts = [system_prompt.strip(), VOICE_RULES, STATE_HINTS.get(call_state, "")]
    if guidance:
        parts.append(GUIDANCE_INTRO + "\n".join(f"- {line}" for line in guidance))
    if knowledge:
        parts.append("Facts from the knowledge base (use only what answers the caller):\n" + knowledge)
    messages = [ChatMessage("system", "\n\n".join(p for p in parts if p))]
    messages.extend(history[-max_history:])
    messages.append(ChatMessage("user", user_text))
    return messages
