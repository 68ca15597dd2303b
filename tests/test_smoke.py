import pytest


@pytest.mark.asyncio
async def test_health_and_auth(app_client):
    assert (await app_client.get("/healthz")).json() == {"status": "ok"}
    r = await app_client.get("/readyz")
    print("READYZ", r.status_code, r.json())
