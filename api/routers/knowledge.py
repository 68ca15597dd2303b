"""An agent's knowledge base: ``/v1/convai/agents/{agent_id}/knowledge`` (text, Markdown, PDF, text files).

Documents are stored as rows (their text kept for re-indexing) and their chunks as vectors in ChromaDB.
Deleting a document takes it off the agent; while a version of the agent lists it, it is only detached
(text and vectors kept for that version's calls and its restore: ``storage.agent_versions``), else it
and its vectors are deleted. Extracted text and PDF pages are capped (KNOWLEDGE_MAX_TEXT_BYTES,
KNOWLEDGE_MAX_PDF_PAGES: 413 beyond). A new document is answered at once with ``status: "pending"``
and indexed in the background (``indexing`` -> ``ready`` or ``failed``; see ``knowledge.store``).
"""

from __future__ import annotations

import asyncio
import io
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, File, HTTPException, Request, Response, UploadFile, status
from pydantic import BaseModel, Field
from sqlalchemy import select

from api.agent_service import record_change
from api.deps import SessionDep, error_responses
from models import Agent, KnowledgeDocument
from storage.agent_versions import remove_document

router = APIRouter(prefix="/convai/agents/{agent_id}/knowledge", tags=["knowledge base"])

TEXT_TYPES = {"text/plain", "text/markdown", "text/x-markdown"}
PDF_TYPE = "application/pdf"
SUFFIX_TYPES = {".txt": "text/plain", ".md": "text/markdown", ".markdown": "text/markdown", ".pdf": PDF_TYPE}


class DocumentCreate(BaseModel):
    name: str = Field(min_length=1, max_length=300, examples=["Pricing FAQ"])
    text: str = Field(min_length=1, description="At most KNOWLEDGE_MAX_TEXT_BYTES (413 beyond)")
    content_type: str = Field(default="text/plain", pattern=r"^text/(plain|markdown)$")


DocumentStatus = Literal["pending", "indexing", "ready", "failed"]


class DocumentResponse(BaseModel):
    id: str
    agent_id: str
    name: str
    content_type: str
    size_bytes: int
    chunk_count: int = Field(description="Chunks indexed so far")
    status: DocumentStatus = Field(description="pending -> indexing -> ready | failed (background indexing)")
    error: str | None = Field(default=None, description="Why indexing failed")
    created_at: datetime


class DocumentList(BaseModel):
    documents: list[DocumentResponse]


def _response(document: KnowledgeDocument) -> DocumentResponse:
    return DocumentResponse(
        id=document.id,
        agent_id=document.agent_id,
        name=document.name,
        content_type=document.content_type,
        size_bytes=document.size_bytes,
        chunk_count=document.chunk_count,
        status=document.status,
        error=document.error,
        created_at=document.created_at,
    )


async def _agent_or_404(session: SessionDep, agent_id: str) -> Agent:
    agent = await session.get(Agent, agent_id)
    if agent is None:
        raise HTTPException(404, detail=f"agent {agent_id!r} not found")
    return agent


class TooLarge(HTTPException):
    def __init__(self, detail: str) -> None:
        super().__init__(413, detail=detail)


def _check_text_size(text: str, limit: int) -> None:
    if len(text) > limit or len(text.encode()) > limit:  # chars first: cheap for the common case
        raise TooLarge(
            f"the document's text is larger than {limit} bytes (KNOWLEDGE_MAX_TEXT_BYTES): split it"
        )


async def _store(
    request: Request, session: SessionDep, agent_id: str, name: str, content_type: str, text: str, size: int
) -> DocumentResponse:
    if not text.strip():
        raise HTTPException(422, detail="the document has no text")
    _check_text_size(text, request.app.state.runtime.settings.knowledge_max_text_bytes)
    document = KnowledgeDocument(
        agent_id=agent_id, name=name, content_type=content_type, size_bytes=size, text=text, status="pending"
    )
    session.add(document)
    await session.flush()
    response = _response(document)
    await record_change(session, agent_id, f"added knowledge document {name[:200]}")
    await session.commit()  # the indexer reads the row: commit before waking it
    request.app.state.runtime.knowledge.wake_indexer()
    return response


@router.get(
    "", response_model=DocumentList, responses=error_responses(404), summary="List an agent's documents"
)
async def list_documents(agent_id: str, request: Request, session: SessionDep) -> DocumentList:
    await _agent_or_404(session, agent_id)
    documents = (
        await session.scalars(
            select(KnowledgeDocument)
            .where(KnowledgeDocument.agent_id == agent_id, KnowledgeDocument.detached_at.is_(None))
            .order_by(KnowledgeDocument.created_at)
        )
    ).all()
    return DocumentList(documents=[_response(d) for d in documents])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DocumentResponse,
    responses=error_responses(404, 413, 422),
    summary="Add a text or Markdown document (indexed in the background: see its status)",
)
async def add_text(
    agent_id: str, body: DocumentCreate, request: Request, session: SessionDep
) -> DocumentResponse:
    await _agent_or_404(session, agent_id)
    return await _store(
        request, session, agent_id, body.name, body.content_type, body.text, len(body.text.encode())
    )


@router.post(
    "/upload",
    status_code=status.HTTP_201_CREATED,
    response_model=DocumentResponse,
    responses=error_responses(404, 413, 415, 422),
    summary="Upload a .txt, .md or .pdf file (indexed in the background: see its status)",
)
async def upload(
    agent_id: str, request: Request, session: SessionDep, file: Annotated[UploadFile, File()]
) -> DocumentResponse:
    await _agent_or_404(session, agent_id)
    limit = request.app.state.runtime.settings.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, detail=f"file is larger than {limit} bytes")
    name = file.filename or "document"
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    content_type = SUFFIX_TYPES.get(suffix) or (file.content_type or "").split(";")[0].strip()
    settings = request.app.state.runtime.settings
    if content_type == PDF_TYPE:
        text = await asyncio.to_thread(
            _pdf_text, data, settings.knowledge_max_pdf_pages, settings.knowledge_max_text_bytes
        )
    elif content_type in TEXT_TYPES:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPException(422, detail="text files must be UTF-8") from None
    else:
        raise HTTPException(415, detail="unsupported file type: upload .txt, .md or .pdf")
    return await _store(request, session, agent_id, name, content_type, text, len(data))


def _pdf_text(data: bytes, max_pages: int, max_text_bytes: int) -> str:
    """The PDF's text, page by page; 413 as soon as it has too many pages or too much text."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = len(reader.pages)
        if pages > max_pages:
            raise TooLarge(f"the PDF has {pages} pages, more than {max_pages} (KNOWLEDGE_MAX_PDF_PAGES)")
        texts: list[str] = []
        size = 0
        for page in reader.pages:
            texts.append(page.extract_text() or "")
            size += len(texts[-1].encode()) + 2
            if size > max_text_bytes:
                limit = f"{max_text_bytes} bytes (KNOWLEDGE_MAX_TEXT_BYTES)"
                raise TooLarge(f"the PDF's text is larger than {limit}: split it")
        return "\n\n".join(texts)
    except (PdfReadError, ValueError, KeyError) as exc:
        raise HTTPException(422, detail="could not read the PDF") from exc


@router.get(
    "/{document_id}",
    response_model=DocumentResponse,
    responses=error_responses(404),
    summary="Get a document",
)
async def get_document(agent_id: str, document_id: str, session: SessionDep) -> DocumentResponse:
    return _response(await _document_or_404(session, agent_id, document_id))


@router.delete(
    "/{document_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404),
    summary="Remove a document from the agent (kept while a version lists it; else deleted with its vectors)",
)
async def delete_document(agent_id: str, document_id: str, request: Request, session: SessionDep) -> Response:
    document = await _document_or_404(session, agent_id, document_id)
    if not await remove_document(session, document):
        await request.app.state.runtime.knowledge.delete_document(agent_id, document.id)
        await session.delete(document)
    await record_change(session, agent_id, f"removed knowledge document {document.name[:200]}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _document_or_404(session: SessionDep, agent_id: str, document_id: str) -> KnowledgeDocument:
    document = await session.get(KnowledgeDocument, document_id)
    if document is None or document.agent_id != agent_id or document.detached_at is not None:
        raise HTTPException(404, detail=f"document {document_id!r} not found")
    return document
