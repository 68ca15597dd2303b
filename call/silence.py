"""The watchdog's loop: every half second, what silence and the call's length call for (a keepalive to
the STT, "are you still there?", the goodbye) — ``call.watchdog.Watchdog`` decides, this acts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from call.ending import CallEnding
from call.replies import Replies
from call.speaker import Speaker
from call.turns import TurnAssembler
from call.watchdog import MAX_DURATION_LINE, STILL_THERE_LINE, TIMEOUT_GOODBYE_LINE, Watchdog, WatchdogAction
from providers.base import STTSession

TICK_S = 0.5


async def watch_silence(
    watchdog: Watchdog,
    turns: TurnAssembler,
    replies: Replies,
    speaker: Speaker,
    stt: STTSession,
    ending: CallEnding,
    last_media_at: Callable[[], float],
) -> None:
    while not ending.closing:
        await asyncio.sleep(TICK_S)
        busy = replies.busy or turns.has_finals or not speaker.idle
        now, last_voice = time.monotonic(), turns.last_voice_at
        for action in watchdog.tick(now, last_media=last_media_at(), last_voice=last_voice, busy=busy):
            if action is WatchdogAction.KEEPALIVE:
                await stt.keepalive()  # no caller audio flowing: keep the STT stream open
            elif action is WatchdogAction.ASK_STILL_THERE:
                replies.say(STILL_THERE_LINE, kind="silence_prompt")
            else:
                line = MAX_DURATION_LINE if action is WatchdogAction.MAX_DURATION else TIMEOUT_GOODBYE_LINE
                await ending.say_last(line, action.value)
                return
