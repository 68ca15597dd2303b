"""Placeholder: webhook outbox and delivery are being written (see issue 7)."""


class WebhookDispatcher:
    def __init__(self, db, settings) -> None:  # type: ignore[no-untyped-def]
        self.db = db
        self.settings = settings

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass
