"""The per-agent knowledge base: documents chunked, embedded and stored in ChromaDB; retrieval per turn.

One Chroma collection per agent (cosine space). Chroma is synchronous, so every call to it runs on a
worker thread; embeddings come from ``embeddings.Embedder`` (packaged MiniLM, never downloaded).

Uploaded documents are indexed in the background by one worker (``start_indexer``): a document row
goes ``pending`` -> ``indexing`` -> ``ready`` (or ``failed``). The worker claims a document with a
conditional UPDATE (several instances on one database never index it twice), embeds a small batch
of chunks at a time on the embedder's one thread, and pauses between batches; while calls are live it
pauses at least as long as the batch took, so indexing never holds more than half of a core from them
and steps aside whenever speech recognition or synthesis runs (``providers.cpu_priority``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from config import Settings
from knowledge.embeddings import ChromaEmbeddingFunction, Embedder
from models import KnowledgeDocument
from providers.cpu_priority import CPU
from speech.text import strip_markdown
from utils import utcnow

log = logging.getLogger(__name__)

CHUNK_CHARS = 400
OVERLAP_SENTENCES = 1
MIN_CHUNK_CHARS = 80  # a paragraph at least this long ends its chunk
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_BLOCK_START = re.compile(r"(#{1,6}\s|[-*+•]\s|\d+[.)]\s|>\s|\|)")  # heading, list item, quote, table
_SENTENCE_OR_LINE = re.compile(r"\n+|(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
INDEX_POLL_S = 5.0  # also look for pending documents this often (copies, other instances' uploads)
MIN_PAUSE_S = 0.01  # between batches, always: the event loop and the GIL get a turn
MAX_URGENT_WAIT_S = 0.5  # step aside for live speech work at most this long per batch
STALE_INDEXING = timedelta(minutes=10)  # "indexing" with no progress this long: its worker died


@dataclass(slots=True)
class RetrievedChunk:
    text: str
    document_id: str
    title: str
    score: float


def _block_lines(paragraph: str) -> list[str]:
    """A paragraph's lines with hard wraps joined: headings and list items stay lines of their own, so a
    heading is not read into the sentence under it ("Pricing Starter is ...")."""
    lines: list[str] = []
    heading_above = True
    for raw in paragraph.splitlines():
        line = re.sub(r"\s+", " ", raw).strip()
        if not line:
            continue
        block = bool(_BLOCK_START.match(line))
        if lines and not block and not heading_above:
            lines[-1] += " " + line
        else:
            lines.append(line)
        heading_above = line.startswith("#")
    return lines


def chunk_text(text: str, max_chars: int = CHUNK_CHARS, overlap: int = OVERLAP_SENTENCES) -> list[str]:
    """Chunks on paragraph boundaries; a long paragraph is cut between sentences, each piece carrying the
    previous piece's last sentence(s) so an answer split across the cut is still found."""
    paragraphs = [_block_lines(p) for p in re.split(r"\n\s*\n", text.replace("\r\n", "\n"))]
    chunks: list[str] = []
    carry: list[str] = []  # short paragraphs (a heading, one line) join the next one
    for lines in filter(None, paragraphs):
        lines = [*carry, *lines]
        carry = []
        paragraph = "\n".join(lines)
        if len(paragraph) < MIN_CHUNK_CHARS:
            carry = lines
            continue
        if len(paragraph) <= max_chars:
            chunks.append(paragraph)
            continue
        sentences: list[str] = []  # each piece keeps the separator it had before it: a space or a line break
        for line in lines:
            for i, sentence in enumerate(_SENTENCE_END.split(line)):
                lead = " " if i else "\n"
                while len(sentence) > max_chars:  # a run-on "sentence" is cut at a word boundary
                    cut = sentence.rfind(" ", 0, max_chars)
                    cut = cut if cut > max_chars // 2 else max_chars
                    sentences.append(lead + sentence[:cut].strip())
                    sentence, lead = sentence[cut:].strip(), " "
                sentences.append(lead + sentence)
        current: list[str] = []
        for sentence in sentences:
            if current and sum(len(s) for s in current) + len(sentence) > max_chars:
                chunks.append("".join(current).strip())
                current = current[-overlap:] if overlap else []
            current.append(sentence)
        if current:
            chunks.append("".join(current).strip())
    if carry:
        chunks.append("\n".join(carry))
    return chunks


def _answers(line: str) -> bool:
    """A sentence that can answer a question: not a heading, not a fragment."""
    ends = line[-1:] in (".", "!", "?")
    return len(line) > 20 and (ends or (len(line) > 60 and not line.startswith("#")))


class KnowledgeStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedder = Embedder(settings.embed_model)
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._db: Any = None
        self._live_calls: Callable[[], int] = lambda: 0
        self._wake = asyncio.Event()
        self._indexer: asyncio.Task[None] | None = None

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

    def _reset_document_sync(self, agent_id: str, document_id: str) -> None:
        self._collection(agent_id).delete(where={"document_id": document_id})

    def _add_batch_sync(
        self, agent_id: str, document_id: str, title: str, start: int, batch: list[str], vectors: Any
    ) -> None:
        self._collection(agent_id).add(
            ids=[f"{document_id}:{start + i}" for i in range(len(batch))],
            documents=batch,
            embeddings=vectors,
            metadatas=[
                {"document_id": document_id, "title": title[:200], "index": start + i}
                for i in range(len(batch))
            ],
        )

    def _query_sync(
        self,
        agent_id: str,
        text: str,
        top_k: int,
        min_score: float,
        context: str = "",
        document_ids: list[str] | None = None,
    ) -> list[RetrievedChunk]:
        collection = self._collection(agent_id, create=False)
        if collection is None or collection.count() == 0 or document_ids == []:
            return []
        # A reply only makes sense after what the agent said ("How much is it?", or a name the
        # recogniser misheard): the turn is also searched with that context, and a chunk counts with
        # the better of its two scores.
        queries = [text, f"{context} {text}"] if context.strip() else [text]
        result = collection.query(
            query_embeddings=self.embedder.embed_sync(queries),
            n_results=min(top_k, collection.count()),
            include=["documents", "metadatas", "distances"],
            # only the documents of the version the call runs (a detached one keeps its vectors)
            where={"document_id": {"$in": document_ids}} if document_ids is not None else None,
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
        document_ids: list[str] | None = None,
    ) -> list[RetrievedChunk]:
        """Top chunks for a caller's turn; ``context`` is what the agent said just before it;
        ``document_ids``: search only these documents (the call's version's), None: all of the agent's
        collection, detached documents included."""
        return await asyncio.to_thread(
            self._query_sync,
            agent_id,
            text,
            top_k or self.settings.rag_top_k,
            self.settings.rag_min_score if min_score is None else min_score,
            context,
            document_ids,
        )

    async def delete_document(self, agent_id: str, document_id: str) -> None:
        await asyncio.to_thread(self._delete_document_sync, agent_id, document_id)

    async def delete_agent(self, agent_id: str) -> None:
        await asyncio.to_thread(self._delete_agent_sync, agent_id)

    # ------------------------------------------------------------ background indexing

    def start_indexer(self, db: Any, live_calls: Callable[[], int] = lambda: 0) -> None:
        """Start the one indexing worker (it also resumes documents a stopped process left behind)."""
        self._db, self._live_calls = db, live_calls
        self._indexer = asyncio.create_task(self._index_loop(), name="knowledge-indexer")

    async def stop_indexer(self) -> None:
        if self._indexer is not None:
            self._indexer.cancel()
            await asyncio.gather(self._indexer, return_exceptions=True)
            self._indexer = None

    def wake_indexer(self) -> None:
        self._wake.set()

    async def index_pending(self, db: Any, agent_id: str) -> None:
        """Documents copied into an agent (status "pending") are indexed by the background worker: wake
        it. Never indexes inline, so a call that asks is not held up by (or slowed by) the indexing."""
        self.wake_indexer()

    async def _index_loop(self) -> None:
        await self._requeue_stale()
        while True:
            try:
                while await self._index_next():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database was away: try again on the next wake-up
                log.warning("knowledge indexer error", extra={"fields": {"error": type(exc).__name__}})
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), INDEX_POLL_S)
            except TimeoutError:
                pass

    async def _requeue_stale(self) -> None:
        """``indexing`` rows that stopped making progress (their process died) go back to ``pending``."""
        async with self._db.session() as session:
            await session.execute(
                update(KnowledgeDocument)
                .where(
                    KnowledgeDocument.status == "indexing",
                    KnowledgeDocument.updated_at < utcnow() - STALE_INDEXING,
                )
                .values(status="pending", updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )

    async def _index_next(self) -> bool:
        """Claim the oldest pending document and index it; False when there is none."""
        async with self._db.session() as session:
            candidates = (
                await session.execute(
                    select(KnowledgeDocument.id)
                    .where(KnowledgeDocument.status == "pending")
                    .order_by(KnowledgeDocument.created_at)
                    .limit(5)
                )
            ).scalars()
            claimed = None
            for document_id in candidates:
                result = await session.execute(
                    update(KnowledgeDocument)
                    .where(KnowledgeDocument.id == document_id, KnowledgeDocument.status == "pending")
                    .values(status="indexing", chunk_count=0, error=None, updated_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount == 1:
                    claimed = document_id
                    break
        if claimed is None:
            return False
        async with self._db.session() as session:
            document = await session.get(KnowledgeDocument, claimed)
            if document is None:
                return True
            agent_id, title, text = document.agent_id, document.name, document.text
        await self._index_document(agent_id, claimed, title, text)
        return True

    async def _index_document(self, agent_id: str, document_id: str, title: str, text: str) -> None:
        started = time.perf_counter()
        try:
            chunks = await asyncio.to_thread(chunk_text, text)
            await asyncio.to_thread(self._reset_document_sync, agent_id, document_id)
            done = 0
            for start in range(0, len(chunks), self.settings.knowledge_index_batch):
                batch = chunks[start : start + self.settings.knowledge_index_batch]
                await self._make_room()
                batch_started = time.perf_counter()
                vectors = await self.embedder.embed(batch)
                await asyncio.to_thread(
                    self._add_batch_sync, agent_id, document_id, title, start, batch, vectors
                )
                done += len(batch)
                if not await self._set(document_id, "indexing", chunk_count=done):
                    await asyncio.to_thread(self._delete_document_sync, agent_id, document_id)
                    return  # deleted meanwhile: drop what was added
                took = time.perf_counter() - batch_started
                await asyncio.sleep(max(MIN_PAUSE_S, took if self._live_calls() else 0.0))
            if not await self._set(document_id, "ready", chunk_count=done):
                await asyncio.to_thread(self._delete_document_sync, agent_id, document_id)
                return
            log.info(
                "document indexed",
                extra={
                    "fields": {
                        "agent_id": agent_id,
                        "document_id": document_id,
                        "chunks": done,
                        "ms": round((time.perf_counter() - started) * 1000),
                    }
                },
            )
        except asyncio.CancelledError:
            raise  # shutting down: the row stays "indexing" and is picked up again after a restart
        except Exception as exc:
            log.warning(
                "indexing failed", extra={"fields": {"document_id": document_id, "error": type(exc).__name__}}
            )
            await self._set(document_id, "failed", error=f"indexing failed ({type(exc).__name__})")

    async def _make_room(self) -> None:
        """Wait (boundedly) while a live call's speech recognition or synthesis is running."""
        waited = 0.0
        while CPU.busy and waited < MAX_URGENT_WAIT_S:
            await asyncio.sleep(0.02)
            waited += 0.02

    async def _set(self, document_id: str, status: str, **values: Any) -> bool:
        """Update a document this worker claimed; False if it is gone (deleted while indexing)."""
        async with self._db.session() as session:
            result = await session.execute(
                update(KnowledgeDocument)
                .where(KnowledgeDocument.id == document_id, KnowledgeDocument.status == "indexing")
                .values(status=status, updated_at=utcnow(), **values)
                .execution_options(synchronize_session=False)
            )
            return result.rowcount == 1

    async def warm(self) -> None:
        await self.embedder.embed(["warm up"])

    async def best_sentence(self, question: str, chunks: list[RetrievedChunk]) -> tuple[str, float]:
        """The retrieved sentence closest in meaning to the question (for extractive answers)."""
        lines = (s.strip() for c in chunks for s in _SENTENCE_OR_LINE.split(c.text))
        sentences = [s for s in lines if _answers(s)]
        if not sentences:
            return "", 0.0
        vectors = await self.embedder.embed([question, *sentences])
        scores = vectors[1:] @ vectors[0]  # embeddings are normalized: dot product = cosine
        best = int(scores.argmax())
        return strip_markdown(sentences[best]), float(scores[best])

    @staticmethod
    def format_for_prompt(chunks: list[RetrievedChunk]) -> str:
        return "\n".join(f"[{i}] ({c.title}) {c.text}" for i, c in enumerate(chunks, start=1))

    def close(self) -> None:
        self.embedder.close()
