"""Twilio's REST API and request signatures, through the official ``twilio`` SDK.

(First cut: signature validation; calls/SMS/hang-up are added with the outbound issue.)
"""

from __future__ import annotations

from typing import Any

from twilio.request_validator import RequestValidator

from config import Settings


class TwilioGateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def configured(self) -> bool:
        return self.settings.twilio_configured

    def validate_request(self, url: str, params: dict[str, Any], signature: str) -> bool:
        token = self.settings.twilio_auth_token.get_secret_value()
        if not token:
            return True  # no token configured: nothing to check against (local simulator use)
        return RequestValidator(token).validate(url, params, signature)
