"""The per-agent knowledge base: documents chunked, embedded and stored in ChromaDB; retrieval per turn.

One Chroma collection per agent (cosine space). Chroma is synchronous, so every call to it runs on a
worker thread; embeddings come from ``embeddings.Embedder`` (packaged MiniLM, never downloaded).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from config import Settings
from knowledge.embeddings import ChromaEmbeddingFunction, Embedder

log = logging.getLogger(__name__)

CHUNK_CHARS = 400
OVERLAP_SENTENCES = 1
MIN_CHUNK_CHARS = 80  # a paragraph at least this long ends its chunk
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_SENTENCE_OR_LINE = re.compile(r"\n+|(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


@dataclass(slots=True)
class RetrievedChunk:
    text: str
    document_id: str
    title: str
    score: float


def chunk_text(text: str, max_chars: int = CHUNK_CHARS, overlap: int = OVERLAP_SENTENCES) -> list[str]:
    """Chunks on paragraph boundaries; a long paragraph is cut between sentences, each piece carrying the
    previous piece's last sentence(s) so an answer split across the cut is still found."""
    paragraphs = [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", text.replace("\r\n", "\n"))]
    chunks: list[str] = []
    carry = ""  # short paragraphs (a heading, one line) join the next one
    for paragraph in filter(None, paragraphs):
        paragraph = f"{carry}\n{paragraph}".strip() if carry else paragraph
        carry = ""
        if len(paragraph) < MIN_CHUNK_CHARS:
            carry = paragraph
            continue
        if len(paragraph) <= max_chars:
            chunks.append(paragraph)
            continue
        sentences: list[str] = []
        for sentence in _SENTENCE_END.split(paragraph):
            while len(sentence) > max_chars:  # a run-on "sentence" is cut at a word boundary
                cut = sentence.rfind(" ", 0, max_chars)
                cut = cut if cut > max_chars // 2 else max_chars
                sentences.append(sentence[:cut].strip())
                sentence = sentence[cut:].strip()
            sentences.append(sentence)
        current: list[str] = []
        for sentence in sentences:
            if current and sum(len(s) + 1 for s in current) + len(sentence) > max_chars:
                chunks.append(" ".join(current))
                current = current[-overlap:] if overlap else []
            current.append(sentence)
        if current:
            chunks.append(" ".join(current))
    if carry:
        chunks.append(carry)
    return chunks


class KnowledgeStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedder = Embedder(settings.embed_model)
        self._client: Any = None
        self._client_lock = threading.Lock()

    # ------------------------------------------------------------ chroma (worker thread only)

    def _chroma(self) -> Any:
        with self._client_lock:  # worker threads: one client, made once
            if self._client is None:
                self._client = self._make_client()
        return self._client

    def _make_client(self) -> Any:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
        if self.settings.chroma_host:  # a ChromaDB server, shared by every instance of the service
            return chromadb.HttpClient(
                host=self.settings.chroma_host, port=self.settings.chroma_port, settings=chroma_settings
            )
        return chromadb.PersistentClient(path=self.settings.chroma_path, settings=chroma_settings)

    def _collection(self, agent_id: str, create: bool = True) -> Any:
        name = f"kb_{agent_id}"
        client = self._chroma()
        if not create:
            try:
                return client.get_collection(name, embedding_function=ChromaEmbeddingFunction(self.embedder))
            except Exception:
                return None
        return client.get_or_create_collection(
            name, embedding_function=ChromaEmbeddingFunction(self.embedder), metadata={"hnsw:space": "cosine"}
        )

    def _add_sync(self, agent_id: str, document_id: str, title: str, text: str) -> int:
        chunks = chunk_text(text)
        if not chunks:
            return 0
        collection = self._collection(agent_id)
        collection.delete(where={"document_id": document_id})  # re-indexing replaces, never duplicates
        for start in range(0, len(chunks), 256):
            batch = chunks[start : start + 256]
            # upsert: two instances indexing the same document at once end with one copy of each chunk
            collection.upsert(
                ids=[f"{document_id}:{start + i}" for i in range(len(batch))],
                documents=batch,
                embeddings=self.embedder.embed_sync(batch),
                metadatas=[
                    {"document_id": document_id, "title": title[:200], "index": start + i}
                    for i in range(len(batch))
                ],
            )
        return len(chunks)

    def _query_sync(
        self, agent_id: str, text: str, top_k: int, min_score: float, context: str = ""
    ) -> list[RetrievedChunk]:
        collection = self._collection(agent_id, create=False)
        if collection is None or collection.count() == 0:
            return []
        # A reply only makes sense after what the agent said ("How much is it?", or a name the
        # recogniser misheard): the turn is also searched with that context, and a chunk counts with
        # the better of its two scores.
        queries = [text, f"{context} {text}"] if context.strip() else [text]
        result = collection.query(
            query_embeddings=self.embedder.embed_sync(queries),
            n_results=min(top_k, collection.count()),
            include=["documents", "metadatas", "distances"],
        )
        best: dict[str, RetrievedChunk] = {}
        for ids, docs, metas, distances in zip(
            result["ids"], result["documents"], result["metadatas"], result["distances"], strict=True
        ):
            for chunk_id, doc, meta, distance in zip(ids, docs, metas, distances, strict=True):
                score = 1.0 - float(distance)
                if score >= min_score and (chunk_id not in best or score > best[chunk_id].score):
                    best[chunk_id] = RetrievedChunk(
                        doc, str(meta.get("document_id")), str(meta.get("title", "")), score
                    )
        return sorted(best.values(), key=lambda c: c.score, reverse=True)[:top_k]

    def _delete_document_sync(self, agent_id: str, document_id: str) -> None:
        collection = self._collection(agent_id, create=False)
        if collection is not None:
            collection.delete(where={"document_id": document_id})

    def _delete_agent_sync(self, agent_id: str) -> None:
        try:
            self._chroma().delete_collection(f"kb_{agent_id}")
        except Exception:
            pass

    # ------------------------------------------------------------ async API

    async def add_document(self, agent_id: str, document_id: str, title: str, text: str) -> int:
        started = time.perf_counter()
        count = await asyncio.to_thread(self._add_sync, agent_id, document_id, title, text)
        log.info(
            "document indexed",
            extra={
                "fields": {
                    "agent_id": agent_id,
                    "document_id": document_id,
                    "chunks": count,
                    "ms": round((time.perf_counter() - started) * 1000),
                }
            },
        )
        return count

    async def query(
        self,
        agent_id: str,
        text: str,
        top_k: int | None = None,
        min_score: float | None = None,
        context: str = "",
    ) -> list[RetrievedChunk]:
        """Top chunks for a caller's turn; ``context`` is what the agent said just before it."""
        return await asyncio.to_thread(
            self._query_sync,
            agent_id,
            text,
            top_k or self.settings.rag_top_k,
            self.settings.rag_min_score if min_score is None else min_score,
            context,
        )

    async def delete_document(self, agent_id: str, document_id: str) -> None:
        await asyncio.to_thread(self._delete_document_sync, agent_id, document_id)

    async def delete_agent(self, agent_id: str) -> None:
        await asyncio.to_thread(self._delete_agent_sync, agent_id)

    async def index_pending(self, db: Any, agent_id: str) -> None:
        """Embed documents copied into an agent (status "pending") that are not indexed yet."""
        from sqlalchemy import select

        from models import KnowledgeDocument

        async with db.session() as session:
            pending = (
                await session.scalars(
                    select(KnowledgeDocument)
                    .where(KnowledgeDocument.agent_id == agent_id, KnowledgeDocument.status == "pending")
                    # Several instances: the first indexes, the others wait and then find nothing pending.
                    .with_for_update()
                )
            ).all()
            for document in pending:
                try:
                    document.chunk_count = await self.add_document(
                        agent_id, document.id, document.name, document.text
                    )
                    document.status = "ready"
                except Exception as exc:
                    log.warning(
                        "indexing failed",
                        extra={"fields": {"document_id": document.id, "error": type(exc).__name__}},
                    )
                    document.status = "failed"

    async def warm(self) -> None:
        await self.embedder.embed(["warm up"])

    async def best_sentence(self, question: str, chunks: list[RetrievedChunk]) -> tuple[str, float]:
        """The retrieved sentence closest in meaning to the question (for extractive answers)."""
        sentences = [
            s.strip()
            for c in chunks
            for s in _SENTENCE_OR_LINE.split(c.text)
            if len(s.strip()) > 20 and (s.strip()[-1] in ".!?" or len(s.strip()) > 60)  # not a heading
        ]
        if not sentences:
            return "", 0.0
        vectors = await self.embedder.embed([question, *sentences])
        scores = vectors[1:] @ vectors[0]  # embeddings are normalized: dot product = cosine
        best = int(scores.argmax())
        return sentences[best], float(scores[best])

    @staticmethod
    def format_for_prompt(chunks: list[RetrievedChunk]) -> str:
        return "\n".join(f"[{i}] ({c.title}) {c.text}" for i, c in enumerate(chunks, start=1))

    def close(self) -> None:
        self.embedder.close()
