"""The HTTP listener: health and Prometheus metrics."""

from __future__ import annotations

import httpx

from tests.helpers import RunningServer


async def test_health_reports_ok_and_session_count(server: RunningServer) -> None:
    alice = await server.add_user("alice")
    await server.client(alice, start=False)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
        r = await http.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["sessions"] == 1


async def test_metrics_count_sessions_stanzas_and_auth(server: RunningServer) -> None:
    alice = await server.add_user("alice")
    client = await server.client(alice, start=False)
    await client.plugin["xep_0199"].ping(jid="localhost", timeout=5)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
        text = (await http.get("/metrics")).text
    assert "imedge_c2s_sessions 1.0" in text
    assert 'imedge_stanzas_in_total{kind="iq",transport="c2s"}' in text
    assert 'imedge_auth_total{mechanism="SCRAM-SHA-256' in text
