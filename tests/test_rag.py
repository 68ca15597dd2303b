"""Knowledge base: chunking, real MiniLM embeddings in a real ChromaDB, and the REST routes.

The store runs against embedded Chroma and against ChromaDB's own server (``chroma run``, one per session,
shared by the tests: each test uses agent ids of its own); the routes on SQLite + embedded Chroma and on
PostgreSQL + the Chroma server (how several instances are deployed).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from knowledge.store import KnowledgeStore, chunk_text
from tests.conftest import make_settings

FACTS = """Acme Analytics builds real-time dashboards for sales teams.

Pricing: the Team plan costs 30 dollars per seat per month. The Enterprise plan adds single sign-on
and costs 55 dollars per seat per month.

Integrations: Acme connects to Salesforce, HubSpot and Pipedrive. Data syncs every five minutes.

Security: Acme is SOC 2 Type II certified and keeps customer data in the EU or the US."""


def make_pdf(text: str) -> bytes:
    """A minimal one-page PDF with ``text`` on it (what a user would upload)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_chunks_follow_paragraphs_and_overlap() -> None:
    chunks = chunk_text(FACTS)
    assert len(chunks) >= 3
    assert any("Salesforce" in c for c in chunks)
    long_text = " ".join(f"Sentence number {i} talks about feature {i}." for i in range(200))
    long_chunks = chunk_text(long_text, max_chars=300)
    assert all(len(c) <= 360 for c in long_chunks)
    # Overlap: each chunk starts with the last sentence of the previous one.
    assert long_chunks[1].split(". ")[0] in long_chunks[0]


@pytest.mark.asyncio
def server_count(chroma: dict[str, object], collection: str) -> int:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.HttpClient(
        host=str(chroma["chroma_host"]),
        port=int(chroma["chroma_port"]),  # type: ignore[call-overload]
        settings=ChromaSettings(anonymized_telemetry=False),
    )
    return client.get_collection(collection).count()


def fresh_agent_ids() -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return f"agent_a{suffix}", f"agent_b{suffix}"


@pytest_asyncio.fixture
async def kb_client(
    request: pytest.FixtureRequest, tmp_path: Path, database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The app on SQLite + embedded Chroma, or on PostgreSQL + the Chroma server."""
    from main import create_app
    from tests.conftest import API_KEY

    chroma = {} if database_url.startswith("sqlite") else request.getfixturevalue("chroma_server").settings()
    app = create_app(make_settings(tmp_path, database_url=database_url, **chroma))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test", headers={"xi-api-key": API_KEY}
        ) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@pytest.mark.asyncio
async def test_store_retrieves_relevant_chunks_and_forgets_deleted_documents(
    tmp_path: Path, chroma_overrides: dict[str, object]
) -> None:
    store = KnowledgeStore(make_settings(tmp_path, **chroma_overrides))
    agent_a, agent_b = fresh_agent_ids()
    try:
        chunks = await store.add_document(agent_a, "doc_1", "Acme facts", FACTS)
        assert chunks >= 3
        assert await store.add_document(agent_a, "doc_1", "Acme facts", FACTS) == chunks  # re-indexed
        if chroma_overrides:  # the chunks are on the server, once, where another instance finds them
            assert await asyncio.to_thread(server_count, chroma_overrides, f"kb_{agent_a}") == chunks
        hits = await store.query(agent_a, "Do you work with Salesforce?")
        assert hits and "Salesforce" in hits[0].text and hits[0].document_id == "doc_1"
        assert len({h.text for h in hits}) == len(hits)
        price = await store.query(agent_a, "How much is the Team plan per seat?")
        assert "30 dollars" in price[0].text
        assert await store.query(agent_a, "What is the capital of Mongolia?", min_score=0.35) == []
        assert await store.query(agent_b, "Salesforce") == []  # another agent's collection is separate
        assert "[1] (Acme facts)" in store.format_for_prompt(hits)
        await store.delete_document(agent_a, "doc_1")
        assert await store.query(agent_a, "Salesforce", min_score=-1) == []
    finally:
        store.close()


async def wait_indexed(client, url: str, timeout_s: float = 120.0) -> dict:  # type: ignore[no-untyped-def]
    """The document once the background indexer is done with it (ready or failed)."""
    for _ in range(int(timeout_s / 0.1)):
        body = (await client.get(url)).json()
        if body["status"] in ("ready", "failed"):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"not indexed: {body}")


@pytest.mark.asyncio
async def test_knowledge_routes(kb_client: httpx.AsyncClient) -> None:
    app_client = kb_client
    agent = (await app_client.post("/v1/convai/agents", json={"name": "KB Bot"})).json()
    base = f"/v1/convai/agents/{agent['agent_id']}/knowledge"

    created = await app_client.post(
        base, json={"name": "Facts", "text": FACTS, "content_type": "text/markdown"}
    )
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "pending"  # indexed in the background
    ready = await wait_indexed(app_client, f"{base}/{created.json()['id']}")
    assert ready["chunk_count"] >= 3 and ready["status"] == "ready"

    pdf = await app_client.post(
        f"{base}/upload",
        files={"file": ("sso.pdf", make_pdf("Single sign-on uses SAML 2.0 and Okta."), "application/pdf")},
    )
    assert pdf.status_code == 201, pdf.text
    txt = await app_client.post(
        f"{base}/upload", files={"file": ("notes.txt", b"Support is open 24/7 by phone.", "text/plain")}
    )
    assert txt.status_code == 201

    for document in (pdf.json(), txt.json()):
        assert (await wait_indexed(app_client, f"{base}/{document['id']}"))["status"] == "ready"
    listed = (await app_client.get(base)).json()["documents"]
    assert [d["name"] for d in listed] == ["Facts", "sso.pdf", "notes.txt"]
    store = app_client.app.state.runtime.knowledge
    hits = await store.query(agent["agent_id"], "Which identity protocol does single sign-on use?")
    assert "SAML" in hits[0].text

    bad_type = await app_client.post(
        f"{base}/upload", files={"file": ("x.exe", b"MZ...", "application/octet-stream")}
    )
    assert bad_type.status_code == 415 and "unsupported" in bad_type.json()["detail"]
    broken_pdf = await app_client.post(
        f"{base}/upload", files={"file": ("b.pdf", b"%PDF-1.4 garbage", "application/pdf")}
    )
    assert broken_pdf.status_code == 422
    empty = await app_client.post(base, json={"name": "Empty", "text": "   "})
    assert empty.status_code == 422
    unknown = await app_client.get("/v1/convai/agents/agent_nope/knowledge")
    assert unknown.status_code == 404

    doc_id = created.json()["id"]
    assert (await app_client.delete(f"{base}/{doc_id}")).status_code == 204
    assert (await app_client.get(f"{base}/{doc_id}")).status_code == 404
    current = [d["id"] for d in (await app_client.get(base)).json()["documents"]]
    assert doc_id not in current
    assert all(  # what the agent's calls search: its documents now
        "Salesforce" not in h.text
        for h in await store.query(agent["agent_id"], "Salesforce", min_score=-1, document_ids=current)
    )
    # the versions that list it still reach its vectors (test_knowledge_is_part_of_a_version)
    kept = await store.query(agent["agent_id"], "Salesforce", min_score=-1, document_ids=[doc_id])
    assert kept and "Salesforce" in kept[0].text


@pytest.mark.asyncio
async def test_upload_size_limit(tmp_path: Path) -> None:
    import httpx

    from main import create_app
    from tests.conftest import API_KEY

    app = create_app(make_settings(tmp_path, max_upload_bytes=1000))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t", headers={"xi-api-key": API_KEY}
        ) as client:
            agent = (await client.post("/v1/convai/agents", json={"name": "A"})).json()
            big = await client.post(
                f"/v1/convai/agents/{agent['agent_id']}/knowledge/upload",
                files={"file": ("big.txt", b"x" * 5000, "text/plain")},
            )
            assert big.status_code == 413
            assert (await client.get(f"/v1/convai/agents/{agent['agent_id']}/knowledge")).json()[
                "documents"
            ] == []


@pytest.mark.asyncio
async def test_a_turn_is_also_searched_in_the_context_of_what_the_agent_said(
    tmp_path: Path, chroma_overrides: dict[str, object]
) -> None:
    """ "How much does orbicost proceed?" is what Whisper once heard for "How much does Orbit cost per seat?":
    on its own it matches nothing; after the agent's greeting it finds the pricing."""
    pricing = "# Orbit CRM pricing\n\nOrbit CRM costs 49 dollars per seat per month on the Growth plan."
    store = KnowledgeStore(make_settings(tmp_path, **chroma_overrides))
    agent_a, _ = fresh_agent_ids()
    try:
        await store.add_document(agent_a, "doc_1", "pricing.md", pricing)
        assert await store.query(agent_a, "How much does orbicost proceed?") == []
        hits = await store.query(
            agent_a, "How much does orbicost proceed?", context="Hi, this is Ava from Orbit CRM."
        )
        assert hits and "49 dollars" in hits[0].text
        assert hits == sorted(hits, key=lambda h: h.score, reverse=True)
    finally:
        store.close()


MARKDOWN_FAQ = """# Acme Analytics FAQ

## Pricing
Starter is $49 per seat per month.
Growth is $99 per seat per month.

## Security
- **SOC 2 Type II** certified since 2023.
- Data is encrypted at rest with AES-256.
"""


def test_markdown_headings_and_list_items_stay_lines_of_their_own() -> None:
    chunks = chunk_text(MARKDOWN_FAQ + "\nOur support team answers\nwithin one business hour.\n")
    assert "## Pricing\nStarter is $49 per seat per month. Growth" in chunks[0]  # hard wrap joined
    assert "## Security\n- **SOC 2 Type II** certified since 2023.\n- Data" in chunks[1]
    assert chunks[-1] == "Our support team answers within one business hour."


@pytest.mark.asyncio
async def test_an_extractive_answer_is_the_sentence_without_its_heading_or_markup(tmp_path: Path) -> None:
    """What the embedded agent says for a knowledge question: not "Pricing Starter is ..." nor "**"."""
    store = KnowledgeStore(make_settings(tmp_path))
    agent_a, _ = fresh_agent_ids()
    try:
        await store.add_document(agent_a, "doc_1", "faq.md", MARKDOWN_FAQ)
        for question, answer in [
            ("How much is the Starter plan?", "Starter is $49 per seat per month."),
            ("Are you SOC 2 certified?", "SOC 2 Type II certified since 2023."),
        ]:
            chunks = await store.query(agent_a, question)
            assert (await store.best_sentence(question, chunks))[0] == answer
    finally:
        store.close()


PRICING = "# Pricing\n\nThe Team plan costs 30 dollars per seat per month, billed monthly."
INTEGRATIONS = (
    "# Integrations\n\nAcme connects to Salesforce, HubSpot and Pipedrive; data syncs every five minutes."
)


@pytest.mark.asyncio
async def test_knowledge_is_part_of_a_version(tmp_path: Path) -> None:
    """Removing a document detaches it (text and vectors kept while a version lists it); a call of the
    version that had it still answers from it, a call of the later version cannot; restoring the version
    attaches it again. Real MiniLM embeddings, embedded Chroma, the embedded LLM's extractive answers."""
    from main import create_app
    from models import KnowledgeDocument
    from tests.api_helpers import db_of
    from tests.conftest import API_KEY

    app = create_app(make_settings(tmp_path, llm_provider="local"))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t", headers={"xi-api-key": API_KEY}
        ) as client:
            client.app = app  # type: ignore[attr-defined]
            agent_id = (await client.post("/v1/convai/agents", json={"name": "Kai"})).json()["agent_id"]
            base = f"/v1/convai/agents/{agent_id}/knowledge"
            ids = {}
            for name, text in (("Pricing", PRICING), ("Integrations", INTEGRATIONS)):
                created = await client.post(base, json={"name": name, "text": text})
                assert created.status_code == 201, created.text
                ids[name] = created.json()["id"]
                assert (await wait_indexed(client, f"{base}/{ids[name]}"))["status"] == "ready"
            versions = f"/v1/convai/agents/{agent_id}/versions"
            with_pricing = (await client.get(versions)).json()["versions"][0]
            assert (await client.get(f"{versions}/{with_pricing['id']}")).json()["config"][
                "knowledge_base_ids"
            ] == [ids["Pricing"], ids["Integrations"]]

            assert (await client.delete(f"{base}/{ids['Pricing']}")).status_code == 204
            assert (await client.get(f"{base}/{ids['Pricing']}")).status_code == 404
            assert [d["name"] for d in (await client.get(base)).json()["documents"]] == ["Integrations"]
            agent = (await client.get(f"/v1/convai/agents/{agent_id}")).json()
            assert agent["knowledge_base_ids"] == [ids["Integrations"]]
            without = (await client.get(versions)).json()["versions"][0]
            assert without["description"] == "removed knowledge document Pricing"
            async with db_of(client).session() as session:  # kept: its text, and its vectors below
                kept = await session.get(KnowledgeDocument, ids["Pricing"])
                assert kept is not None and kept.detached_at is not None and kept.text == PRICING

            question = {
                "name": "price",
                "caller": [{"say": "How much is the Team plan per seat?"}],
                "criteria": {"agent_never_says": ["xyzzy"]},
            }

            async def answers(version_id: str | None) -> str:
                body = {"scenarios": [question], **({"version_id": version_id} if version_id else {})}
                run = await client.post(f"/v1/convai/agents/{agent_id}/tests/run?wait=true", json=body)
                assert run.status_code == 200, run.text
                return " ".join(
                    t["text"] for t in run.json()["results"][0]["transcript"] if t["role"] == "agent"
                )

            assert "30 dollars" in await answers(with_pricing["id"])  # the version that had it
            assert "30 dollars" not in await answers(without["id"])  # the one without it: not retrieved
            assert "30 dollars" not in await answers(None)  # the agent as it is now

            restored = await client.post(f"{versions}/{with_pricing['id']}/restore")
            assert restored.status_code == 201, restored.text
            assert restored.json()["config_hash"] == with_pricing["config_hash"]
            listed = (await client.get(base)).json()["documents"]
            assert [(d["name"], d["status"]) for d in listed] == [
                ("Pricing", "ready"),
                ("Integrations", "ready"),
            ]
            assert "30 dollars" in await answers(None)  # answered again, from the same vectors

            # restoring the version without it detaches it again; removing a document the versions
            # never listed would delete it with its vectors
            assert (await client.post(f"{versions}/{without['id']}/restore")).status_code == 201
            assert [d["name"] for d in (await client.get(base)).json()["documents"]] == ["Integrations"]
            assert "30 dollars" not in await answers(None)
