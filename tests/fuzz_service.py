"""The service as the REST fuzzer meets it, in a process of its own:

    python -m tests.fuzz_service WORKDIR PORT

Settings come from the environment (``tests.service_process.service_env``). Before the app is built,
Twilio's REST API is pointed at a local stand-in that only records calls (started here), and every
address a user-configured URL (webhooks, HTTP tools) resolves to becomes a documentation address that
the outbound guard refuses, so nothing the fuzzer configures can reach another machine.
"""

from __future__ import annotations

import asyncio
import os
import sys

import uvicorn

from tests.twilio_standin import TwilioStandIn

ACCOUNT_SID = "AC" + "f" * 32
AUTH_TOKEN = "fuzz-auth-token"


async def _no_outbound_dns(host: str, port: int) -> list[str]:
    return ["192.0.2.1"]  # TEST-NET-1: never public, so the guard refuses it and no socket is opened


async def main(port: int) -> None:
    from core import net_guard

    net_guard.resolve = _no_outbound_dns
    async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, answer=False) as twilio:
        os.environ.update(
            TWILIO_ACCOUNT_SID=ACCOUNT_SID,
            TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            TWILIO_API_BASE=twilio.url,
            TWILIO_PHONE_NUMBER="+14155550100",
        )
        from main import app

        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="websockets-sansio")
        await uvicorn.Server(config).serve()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
