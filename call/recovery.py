"""A recovery, not a barge-in: the caller goes on within the first moments of our reply.

We ended the turn on a pause and started answering; the caller was not done and speaks again within
``window_ms`` of the reply's first audio. Then the reply is withdrawn (stopped at once, never stored as
an agent turn: the caller heard a syllable or two of it) and the caller's new words join the turn they
continue, which is answered whole. Later than that, the caller is talking over an answer they heard:
an ordinary barge-in (the reply is stored as far as it was heard, the new words are a turn of their own).
A reply that ends the call (a goodbye, a transfer) is never withdrawn: the call is closing already.
"""

from __future__ import annotations

from collections.abc import Callable

from call.reply_turn import ReplyTurn


class Recovery:
    def __init__(self, window_ms: float, ms: Callable[..., float]) -> None:
        self.window_ms = window_ms
        self._ms = ms  # CallClock.ms: monotonic time → ms since the stream started

    def applies(self, turn: ReplyTurn | None, onset: float) -> bool:
        """``turn`` was playing when the caller's voice began at ``onset`` (monotonic): is this the
        caller going on with the turn it answers?"""
        if turn is None or self.window_ms <= 0 or turn.user_seq is None or turn.kind != "speech":
            return False
        if turn.hang_up_after is not None or turn.end_reason is not None:
            return False  # a goodbye (or a hand-over) is not taken back: the call is already closing
        first = turn.timings.get("first_frame_sent_ms")
        if first is None:
            return False
        return self._ms(onset) - first <= self.window_ms
