"""Placeholder: Twilio REST gateway is being written (issue 3)."""


class TwilioGateway:
    def __init__(self, settings) -> None:  # type: ignore[no-untyped-def]
        self.settings = settings
