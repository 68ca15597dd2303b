"""Placeholder: the RAG knowledge store is being written (see issue 5)."""


class KnowledgeStore:
    def __init__(self, settings) -> None:  # type: ignore[no-untyped-def]
        self.settings = settings

    def close(self) -> None:
        pass
