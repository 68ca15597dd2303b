"""Placeholder: the call engine is being written (issue 3)."""


class ConnectionManager:
    def __init__(self, runtime) -> None:  # type: ignore[no-untyped-def]
        self.runtime = runtime

    async def drain(self) -> None:
        pass
