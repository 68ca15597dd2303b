"""The responder: a caller turn → the agent's reply, spoken through the speaker.

Intent first: a goodbye or a second "not interested" ends the call, a booking or a transfer runs its tool
straight from the words (``call/tool_turns.py`` ``ToolTurns``, which also runs the LLM's tools and
transfers); with a playbook, the current stage answers first (``call/playbook_turns.py``
``PlaybookTurns``); otherwise knowledge (a sentence of the knowledge base when a small embedded model would
paraphrase it unreliably) or the LLM, streamed sentence by sentence into the speaker, with the tools it
calls run after its words. Each reply records how it was produced and each stage's time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import aclosing, nullcontext
from typing import Any

from call.intents import CONVERSATIONAL, Intent, detect_intent
from call.playbook import PlaybookRun
from call.playbook_turns import PlaybookTurns
from call.playbook_words import playbook_intent
from call.profile import AgentProfile
from call.prompt import INSTRUCTIONS, build_messages
from call.reply_turn import ReplySource, ReplyTurn
from call.speaker import FIRST_CLAUSE_CHARS, Speaker
from call.tool_turns import GOODBYE_LINE, ToolTurns
from call.transcript import CallState, CallTranscript
from providers.base import ChatMessage, LLMProvider, ProviderError, ToolCall
from speech.reply_shape import NO_ANSWER_LINES, ReplyShaper, fresh_line
from speech.sentences import SentenceChunker
from tools.runner import ToolContext, ToolRunner

log = logging.getLogger("ai_sdr.call")

FALLBACK_LINE = "Sorry, could you say that again?"
FALLBACK_LINES = (FALLBACK_LINE, "Sorry, I missed that. Could you say it once more?")
HOLD_LINE = "Sure, take your time."
EMAIL_GOODBYE_LINE = "Of course, I'll send you the details by email. Thanks for your time, goodbye!"
REPLY_MAX_TOKENS = 64  # two spoken sentences; the shaper cuts at the second sentence end anyway
EXTRACTIVE_MIN_SCORE = 0.45  # question ↔ knowledge-sentence cosine needed to answer with the sentence
# Replies that act (book, transfer, hang up) are never started on a guess.
NOT_PREEMPTED = frozenset(
    {
        Intent.GOODBYE,
        Intent.EMAIL_INSTEAD,
        Intent.HOLD,  # the caller usually goes on ("Actually, wait, can we...")
        Intent.NOT_INTERESTED,
        Intent.BOOK_MEETING,
        Intent.TRANSFER_REQUEST,
        Intent.DO_NOT_CALL,
    }
)
# With a playbook, what no transition covers is left to the engine's own handling (a request to wait, to
# be transferred, a goodbye; "do not call me" is honoured with or without a playbook).
ENGINE_HANDLED = frozenset(
    {
        Intent.HOLD,
        Intent.TRANSFER_REQUEST,
        Intent.GOODBYE,
        Intent.DO_NOT_CALL,
        Intent.EMAIL_INSTEAD,
        Intent.NOT_INTERESTED,
    }
)


class EmptyReply(Exception):
    """The LLM's stream ended without a word or a tool call."""


def state_after(state: CallState, intent: Intent) -> CallState:
    """The call moves from discovery to the main conversation on the first turn that is not a greeting."""
    if state == CallState.DISCOVERY and intent not in (Intent.HELLO, Intent.BACKCHANNEL):
        return CallState.ACTIVE
    return state


def may_preempt(intent: Intent, sounds_finished: bool) -> bool:
    """A reply may start before the turn is confirmed only if it does not act and the words sound done."""
    return intent not in NOT_PREEMPTED and sounds_finished


class Responder:
    def __init__(
        self,
        *,
        profile: AgentProfile,
        llm: LLMProvider,
        speaker: Speaker,
        transcript: CallTranscript,
        tool_runner: ToolRunner,
        tool_context: ToolContext,
        knowledge: Any,  # knowledge.store.KnowledgeStore
        settings: Any,
        ms: Any,  # CallClock.ms
        after_tool: Any = None,  # called after a tool ran (wakes the webhook worker)
        log_fields: dict[str, Any] | None = None,
    ) -> None:
        self.profile = profile
        self.llm = llm
        self.speaker = speaker
        self.transcript = transcript
        self.knowledge = knowledge
        self.settings = settings
        self._ms = ms
        self._log_fields = log_fields or {}
        self.tool_turns = ToolTurns(
            profile=profile,
            llm=llm,
            speaker=speaker,
            transcript=transcript,
            tool_runner=tool_runner,
            tool_context=tool_context,
            settings=settings,
            ms=ms,
            after_tool=after_tool,
            log_fields=self._log_fields,
        )
        self.stages: PlaybookTurns | None = None
        if profile.playbook:
            self.stages = PlaybookTurns(
                profile=profile,
                llm=llm,
                speaker=speaker,
                transcript=transcript,
                tool_turns=self.tool_turns,
                log_fields=self._log_fields,
            )

    @property
    def playbook(self) -> PlaybookRun | None:
        """The call's playbook run (stages and transitions), when its agent has one."""
        return self.stages.run if self.stages is not None else None

    # ---------------------------------------------------------------- entry points

    async def greet(self, turn: ReplyTurn, line: str) -> None:
        turn.source = ReplySource.FIXED_LINE
        await self.speaker.say(turn, [line])

    async def answer(self, turn: ReplyTurn, intent: Intent) -> None:
        self.transcript.set_state(state_after(self.transcript.state, intent))
        if self.stages is not None and await self._in_stage(turn, intent, self.stages):
            return
        if (
            intent == Intent.DO_NOT_CALL
        ):  # before any goodbye: the number goes on the list, then the call ends
            await self.tool_turns.run(turn, ToolCall("add_to_dnc", {"reason": turn.user_text[:200]}))
            return
        ends = intent in (Intent.GOODBYE, Intent.EMAIL_INSTEAD)
        if ends or (intent == Intent.NOT_INTERESTED and self._said_no_before()):
            self.transcript.set_state(CallState.COMPLETION)
            # The promise is kept by whoever acts on the end reason (the call.completed webhook has it).
            turn.hang_up_after = "email_requested" if intent == Intent.EMAIL_INSTEAD else "agent_goodbye"
            turn.source = ReplySource.FIXED_LINE
            await self.speaker.say(
                turn, [EMAIL_GOODBYE_LINE if intent == Intent.EMAIL_INSTEAD else GOODBYE_LINE]
            )
            return
        if intent == Intent.HOLD:  # asked to wait: say so, no LLM turn about "wait"
            turn.source = ReplySource.FIXED_LINE
            await self.speaker.say(turn, [HOLD_LINE])
            return
        if await self.tool_turns.from_words(turn, intent):
            return
        await self.llm_reply(turn, intent)

    async def transfer(
        self, turn: ReplyTurn, number: str | None, mode: str, requested_by: str = "supervisor"
    ) -> Any:
        """A transfer nobody asked the model for (a supervisor's command): ``ToolTurns.transfer``."""
        return await self.tool_turns.transfer(turn, number, mode, requested_by)

    async def _in_stage(self, turn: ReplyTurn, intent: Intent, stages: PlaybookTurns) -> bool:
        """Answer within the playbook; False: no transition and the engine's own handling applies."""
        step = await stages.on_turn(turn)
        if not step.stay:
            return True  # a stage entered: its tool ran and its lines were said
        if intent in ENGINE_HANDLED:
            return False
        if stages.stage_model:
            await self.llm_reply(turn, intent, stage_tools=stages.stage_tools())
            return True
        # the small model's turn in a stage: a knowledge answer or an acknowledgement, then the ask
        chunks = await self._retrieve(turn.user_text) if intent == Intent.QUESTION else []
        answered = bool(chunks) and await self._extractive_answer(turn, chunks)
        await stages.within_stage(turn, intent, step, answered=answered)
        return True

    def _said_no_before(self) -> bool:
        return any(
            m.role == "user" and detect_intent(m.content) == Intent.NOT_INTERESTED
            for m in self.transcript.history
        )

    # ---------------------------------------------------------------- knowledge and the LLM

    async def llm_reply(
        self, turn: ReplyTurn, intent: Intent | None = None, stage_tools: list[Any] | None = None
    ) -> None:
        """Knowledge, then the LLM streamed into the speaker; tools it calls run after its words. In a
        playbook's stage (``stage_tools``), the stage's prompt and tools: its transitions are tool calls."""
        started = time.monotonic()
        chunks = await self._retrieve(turn.user_text)
        if self.profile.agent.documents:
            turn.timings["retrieval_dur_ms"] = round((time.monotonic() - started) * 1000, 1)
        extractive = getattr(self.llm, "extractive_knowledge", False)
        if chunks and intent == Intent.QUESTION and extractive:
            if await self._extractive_answer(turn, chunks):
                return
        if extractive and not chunks and self._unanswerable(intent, turn.user_text):
            # A small model asked what its knowledge base does not say invents an answer: say so instead.
            turn.source = ReplySource.FIXED_LINE
            await self.speaker.say(turn, [fresh_line(NO_ANSWER_LINES, self.transcript.last_agent_line())])
            return
        knowledge = self.knowledge.format_for_prompt(chunks) if chunks else ""
        messages = self._messages(knowledge, turn.user_text)
        tools = (
            self.profile.tool_specs if getattr(self.llm, "supports_tools", self.llm.name != "local") else None
        )
        if stage_tools is not None and self.stages is not None:
            messages[0] = ChatMessage("system", messages[0].content + "\n\n" + self.stages.stage_prompt())
            tools = stage_tools
        previous = self.transcript.last_agent_line().rstrip(" —")
        # The fact check is for the small embedded model, which invents; a larger model's general words
        # (product names, acronyms) are not in the prompt and would trip it.
        known = " ".join(m.content for m in messages) if extractive else ""
        shaper = ReplyShaper(
            previous=previous,
            known=known,
            instructions=" ".join([INSTRUCTIONS, *self.transcript.guidance]),  # whispers: never said
            caller=turn.user_text if extractive else "",  # the small model parrots; others quote on purpose
            disclose_ai=playbook_intent(turn.user_text) == "robot",  # never hide it when asked
        )
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        speaking = asyncio.create_task(self.speaker.speak(turn, sentences))
        chunker = SentenceChunker(first_clause_chars=FIRST_CLAUSE_CHARS)
        tool_calls: list[ToolCall] = []
        produced = False
        heard_text = False  # the model said something (the shaper may still drop all of it)
        turn.source = ReplySource.LLM

        def emit(pieces: list[str]) -> None:
            nonlocal produced
            for piece in pieces:
                if (shaped := shaper.push(piece)) is not None:
                    produced = True
                    sentences.put_nowait(shaped)

        try:
            stream = self.llm.stream_chat(
                messages,
                tools=tools or None,
                model=self.profile.agent.llm_model,
                temperature=self.profile.agent.temperature,
                max_tokens=min(self.settings.llm_max_tokens, REPLY_MAX_TOKENS),
            )
            closing = aclosing(stream) if hasattr(stream, "aclose") else nullcontext()
            # Two deadlines: the first token (a hung model must not leave the caller in silence), then
            # the whole reply. The first is moved to the second once the model has started.
            now = asyncio.get_running_loop().time()
            reply_deadline = now + self.settings.llm_timeout_sec
            first_deadline = min(reply_deadline, now + self.settings.llm_first_token_timeout_sec)
            async with asyncio.timeout_at(first_deadline) as deadline, closing:
                async for chunk in stream:
                    if chunk.text or chunk.tool_calls:
                        deadline.reschedule(reply_deadline)
                    if chunk.text:
                        turn.timings.setdefault("llm_first_token_ms", self._ms())
                        heard_text = heard_text or bool(chunk.text.strip())
                        emit(chunker.push(chunk.text))
                    if chunk.tool_calls:
                        tool_calls.extend(chunk.tool_calls)
                    if shaper.done:
                        break  # two sentences said: stop the model (the stream's close ends generation)
            if not shaper.done and (rest := chunker.flush()):
                emit([rest])
            if not heard_text and not tool_calls:
                raise EmptyReply  # a stream with no words: as much a failure as an error
        except asyncio.CancelledError:
            # Dropped (a guess on a pause) or interrupted: its audio is never to be heard, and a
            # preemptive reply's speech waits on ``turn.go`` forever: stop it with the reply.
            speaking.cancel()
            raise
        except (ProviderError, TimeoutError, EmptyReply) as exc:
            first_token = isinstance(exc, TimeoutError) and "llm_first_token_ms" not in turn.timings
            error = "first token deadline" if first_token else type(exc).__name__
            self._log("llm turn failed", logging.WARNING, error=error)
            if not produced:
                turn.kind = "fallback"
                turn.source = ReplySource.FALLBACK
                line = fresh_line(FALLBACK_LINES, previous)  # the LLM failed twice: say it differently
                sentences.put_nowait(line)
                produced = True
        finally:
            if not produced and not tool_calls and (line := shaper.fallback()) is not None:
                sentences.put_nowait(line)  # every piece was a repeat or off persona
            if shaper.dropped:
                self._log("reply shaped", dropped=",".join(sorted(set(shaper.dropped))))
            sentences.put_nowait(None)
            await speaking
        if tool_calls:
            await turn.go.wait()  # a tool acts: never on a turn that is still a guess
        for call in tool_calls[:3]:
            if self.stages is None or not await self.stages.model_tool(turn, call):
                await self.tool_turns.run(turn, call)

    def _unanswerable(self, intent: Intent | None, text: str) -> bool:
        """A question about the product, and the agent's knowledge base (it has one) found nothing for it."""
        return (
            intent == Intent.QUESTION
            and bool(self.profile.agent.documents)
            and not CONVERSATIONAL.search(text)
        )

    async def _extractive_answer(self, turn: ReplyTurn, chunks: list[Any]) -> bool:
        """A small embedded model paraphrases facts unreliably: answer a knowledge question with the
        knowledge base's own best-matching sentence instead, when it matches the question well."""
        try:
            sentence, score = await self.knowledge.best_sentence(turn.user_text, chunks)
        except Exception as exc:
            self._log("extractive answer failed", logging.WARNING, error=type(exc).__name__)
            return False
        if score < EXTRACTIVE_MIN_SCORE:
            return False
        turn.timings["knowledge_answer_ms"] = self._ms()
        turn.source = ReplySource.KNOWLEDGE
        await self.speaker.say(turn, [sentence])
        return True

    async def _retrieve(self, text: str) -> list[Any]:
        documents = self.profile.agent.documents
        if not documents:
            return []
        if any(d.status == "pending" for d in documents):
            self.knowledge.wake_indexer()  # documents copied from another agent: indexed in the background
        said = self.transcript.last_agent_line()
        try:
            async with asyncio.timeout(1.5):
                return await self.knowledge.query(
                    self.profile.id, text, context=said.rstrip(" —"), document_ids=[d.id for d in documents]
                )
        except Exception as exc:
            self._log("retrieval failed", logging.WARNING, error=type(exc).__name__)
            return []

    def _messages(self, knowledge: str, user_text: str) -> list[ChatMessage]:
        return build_messages(
            self.profile.system_prompt,
            self.transcript.state.value,
            knowledge,
            self.transcript.history,
            user_text,
            guidance=self.transcript.guidance,
        )

    def prefill_prompt(self) -> list[ChatMessage]:
        """The system prompt as the first reply will see it (for the LLM's prompt cache)."""
        return build_messages(self.profile.system_prompt, CallState.DISCOVERY.value, "", [], "")[:1]

    def _log(self, msg: str, level: int = logging.INFO, **fields: Any) -> None:
        log.log(level, msg, extra={"fields": {**self._log_fields, **fields}})
