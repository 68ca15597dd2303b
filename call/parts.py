"""The parts of one agent call, built once the call's agent is known (the engine wires them)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from call.amd import AnsweringMachineDetector
from call.bargein import BargeIn
from call.clock import CallClock
from call.profile import AgentProfile, build_profile
from call.recovery import Recovery
from call.reply_turn import ReplyTurn
from call.responder import Responder
from call.seat import HeardSTT, SeatHub
from call.speaker import Speaker
from call.transcript import CallTranscript
from call.turns import (
    EAGERNESS,
    EndOfTurn,
    PauseHabit,
    TextTurnPolicy,
    TurnAssembler,
    TurnModelPolicy,
    WordDoubt,
)
from call.watchdog import Watchdog
from providers.base import ChatMessage, LLMProvider, STTSession
from speech.vad import FrameClassifier
from storage.recordings import CallRecorder
from telephony.warm_transfer import resume_after_transfer
from tools.runner import EventEmitter, ToolContext

if TYPE_CHECKING:
    from call.registry import ConnectionManager
    from speech.text_turn import TextTurnJudge
    from speech.turn_model import TurnJudge
    from storage.batch_writer import BatchWriter
    from storage.commands import CommandChannel
    from telephony.twilio_gateway import TwilioGateway


class Services(Protocol):
    """What a call uses of the process's services (``app_runtime.Runtime`` has them)."""

    settings: Any
    providers: Any
    tool_runner: Any
    knowledge: Any
    db: Any
    turn_judge: TurnJudge | None  # the turn-end model, when TURN_MODEL is on and it loaded
    text_judge: TextTurnJudge | None  # the text end-of-turn model, when TURN_TEXT_MODEL is on

    def webhooks_notify(self) -> None: ...


class CallServices(Services, Protocol):
    """What a live call (``voice_pipeline.WSConn``) uses besides: the registry of calls, the write-behind,
    the webhook events and Twilio (to hang up)."""

    calls: ConnectionManager
    writer: BatchWriter
    webhooks: EventEmitter
    twilio: TwilioGateway
    commands: CommandChannel  # commands for this call from any instance (AMD verdicts, supervisors)
    seats: SeatHub  # the supervisor seat: listeners and take-over of this instance's calls


@dataclass(slots=True)
class CallParts:
    profile: AgentProfile
    stt: STTSession
    llm: LLMProvider
    barge: BargeIn[ReplyTurn]
    turns: TurnAssembler
    watchdog: Watchdog
    responder: Responder
    amd: AnsweringMachineDetector | None  # outbound calls with detection on
    recorder: CallRecorder | None
    provider_names: dict[str, str]
    open_stt: Callable[[], Awaitable[STTSession]]  # another session like the call's (a supervisor's voice)
    recovery: Recovery | None = None  # the caller going on early in our reply (TURN_RECOVERY_MS)


def turn_assembler(services: Services, profile: AgentProfile, clock: CallClock) -> TurnAssembler:
    """Silence and the words, with the process's turn-end model when it is on for this agent."""
    settings = services.settings
    judge = services.turn_judge if profile.turn.turn_model != "off" else None
    policy = TurnModelPolicy(
        complete=settings.turn_model_complete,
        override=settings.turn_model_override,
        incomplete=settings.turn_model_incomplete,
        hold_s=settings.turn_model_hold_sec,
        early=settings.turn_model_early,
    )
    text_policy = TextTurnPolicy(
        unlikely=settings.turn_text_unlikely,
        likely=settings.turn_text_likely,
        hold_s=settings.turn_text_hold_sec,
        mid_s=settings.turn_text_mid_sec,
        wait_s=settings.turn_text_wait_sec,
    )
    habit = (
        PauseHabit(settings.turn_pause_margin_sec, settings.turn_pause_cap_sec)
        if settings.turn_pause_adapt
        else None
    )
    eot = EndOfTurn(profile.turn.silence_threshold_sec)
    doubt = WordDoubt(settings.turn_word_doubt, settings.turn_word_doubt_hold_sec)
    eagerness = EAGERNESS[profile.turn.turn_eagerness]
    text_policy, doubt = eagerness.text_policy(text_policy), eagerness.word_doubt(doubt)
    return TurnAssembler(
        eot, clock.ms, clock.t0, judge=judge, policy=policy,
        text_judge=getattr(services, "text_judge", None), text_policy=text_policy, habit=habit,
        doubt=doubt,
    )  # fmt: skip


async def assemble(
    services: Services,
    conversation: Any,
    agent: Any,
    *,
    call_sid: str,
    numbers: tuple[str, str],  # (caller, agent)
    clock: CallClock,
    speaker: Speaker,
    transcript: CallTranscript,
    log_fields: dict[str, Any],
) -> CallParts:
    settings = services.settings
    caller, callee = numbers
    profile = build_profile(
        agent,
        conversation.dynamic_variables or {},
        settings=settings,
        tool_specs=services.tool_runner.specs_for(agent),
        caller_number=caller,
        call_sid=call_sid,
    )
    overrides = agent.providers or {}
    stt = services.providers.stt(overrides.get("stt"))
    speaker.use(services.providers.tts(overrides.get("tts")), agent.voice_id)
    speaker.log_fields = log_fields
    llm = await services.providers.llm(overrides.get("llm"))
    session = await stt.open_session(
        language=agent.language or "en", call_id=call_sid, keywords=agent.stt_keywords or ()
    )
    # a caller a warm transfer brought back: the agent says so (no greeting, no machine detection) and
    # goes on with the call so far
    resumed = await resume_after_transfer(services.db, conversation.id)
    if resumed is not None:
        profile.first_message = resumed[0]
        transcript.history.extend(ChatMessage(role, text) for role, text in resumed[1] if text)
    history = lambda: [(m.role, m.content) for m in transcript.history]  # noqa: E731
    context = ToolContext(conversation.id, call_sid, caller, callee, profile.variables, history=history)

    def open_stt() -> Awaitable[STTSession]:
        return stt.open_session(language=agent.language or "en", call_id=f"{call_sid}-supervisor")

    responder = Responder(
        profile=profile,
        llm=llm,
        speaker=speaker,
        transcript=transcript,
        tool_runner=services.tool_runner,
        tool_context=context,
        knowledge=services.knowledge,
        settings=settings,
        ms=clock.ms,
        after_tool=services.webhooks_notify,
        log_fields=log_fields,
    )
    detect_machines = conversation.direction == "outbound" and agent.voicemail_detection and resumed is None
    recorder = CallRecorder(settings.recordings_dir, conversation.id) if settings.record_calls else None
    if recorder is not None:  # the agent's side, stamped with when it plays
        speaker.tap(lambda frame, at: recorder.agent_audio(frame, clock.sample_at(at)))
    return CallParts(
        profile=profile,
        stt=HeardSTT(session, transcript),  # type: ignore[arg-type]
        llm=llm,
        barge=BargeIn(profile.turn, FrameClassifier(profile.turn.vad_aggressiveness)),
        turns=turn_assembler(services, profile, clock),
        watchdog=Watchdog.for_agent(agent, settings, started=clock.t0),
        responder=responder,
        amd=AnsweringMachineDetector(silent_after_greeting_s=settings.amd_silent_after_greeting_sec)
        if detect_machines
        else None,
        recorder=recorder,
        provider_names={"stt": stt.name, "llm": llm.name, "tts": getattr(speaker.tts, "name", "")},
        open_stt=open_stt,
        recovery=Recovery(settings.turn_recovery_ms, clock.ms),
    )
