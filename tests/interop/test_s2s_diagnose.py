"""`imedge s2s test` (POST /api/v1/s2s/test) against real Prosody 0.12 peers (RFC 6120 §13).

IM Edge serves edge1.test on 127.0.0.10 and resolves peers through the test DNS stub
(SRV records of a.test and b.test); Prosody a.test (certificate mode) is on 127.0.0.2,
b.test (dialback mode) on 127.0.0.3.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import PkiFiles, RunningServer, imedge_instance
from tests.peers.common import S2SMode
from tests.peers.dns import DnsStub
from tests.peers.pki import PrivateCA

pytestmark = pytest.mark.interop

EDGE, EDGE_IP = "edge1.test", "127.0.0.10"


@pytest.fixture
async def edge(
    tmp_path: Path, peer_pki: PrivateCA, peer_dns: DnsStub
) -> AsyncIterator[RunningServer]:
    files = peer_pki.issue(EDGE, directory=tmp_path / "edge-pki")
    pki = PkiFiles(None, files.ca, files.cert, files.key)
    async with imedge_instance(
        tmp_path / "edge", EDGE, EDGE_IP, pki, **{"dns.nameservers": [peer_dns.nameserver]}
    ) as rs:
        yield rs


async def s2s_test(edge: RunningServer, domain: str) -> dict[str, Any]:
    async with httpx.AsyncClient(
        base_url=f"http://{EDGE_IP}:{edge.http_port}",
        headers={"Authorization": f"Bearer {edge.server.admin_token}"},
        timeout=60,
    ) as http:
        r = await http.post("/api/v1/s2s/test", json={"domain": domain})
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def steps(d: dict[str, Any]) -> list[tuple[str, bool]]:
    return [(s["step"], s["ok"]) for s in d["steps"]]


async def test_prosody_in_certificate_mode_accepts_us_by_sasl_external(
    edge: RunningServer, prosody_peers: Any
) -> None:
    prosody = prosody_peers.prosody("a.test", "127.0.0.2", S2SMode.CERTIFICATE)
    d = await s2s_test(edge, "a.test")
    assert d["ok"] is True, d["summary"]
    assert steps(d) == [("dns", True), ("connect", True), ("tls", True), ("authentication", True)]
    # Found through DNS (the stub's SRV record), not an edge address.
    assert "SRV" in d["steps"][0]["detail"] and "127.0.0.2:5269" in d["steps"][0]["detail"]
    assert d["steps"][1]["detail"] == "connected to 127.0.0.2:5269"
    assert "certificate valid" in d["steps"][2]["detail"]
    assert "SASL EXTERNAL" in d["steps"][3]["detail"]
    summary = d["summary"]
    assert summary.startswith(f"{EDGE} can federate with a.test: 127.0.0.2:5269, found by 1 SRV")
    assert "presenting a valid certificate" in summary
    assert summary.endswith("accepted us by SASL EXTERNAL, trusting our certificate.")
    assert "Accepting SASL EXTERNAL identity from edge1.test" in prosody.log_text()


async def test_prosody_in_dialback_mode_accepts_us_by_dialback(
    edge: RunningServer, prosody_peers: Any
) -> None:
    prosody_peers.prosody("b.test", "127.0.0.3", S2SMode.DIALBACK)
    d = await s2s_test(edge, "b.test")
    assert d["ok"] is True, d["summary"]
    assert steps(d) == [("dns", True), ("connect", True), ("tls", True), ("authentication", True)]
    assert d["steps"][3]["detail"] == "b.test accepted us by Server Dialback (XEP-0220)"
    assert d["summary"].endswith("accepted us by Server Dialback (XEP-0220).")


async def test_a_stopped_prosody_fails_at_connect(edge: RunningServer, prosody_peers: Any) -> None:
    prosody = prosody_peers.prosody("a.test", "127.0.0.2", S2SMode.CERTIFICATE)
    prosody_peers.stop(prosody)
    d = await s2s_test(edge, "a.test")
    assert d["ok"] is False and d["failed_step"] == "connect"
    assert steps(d) == [("dns", True), ("connect", False)]
    assert d["steps"][1]["detail"] == "127.0.0.2:5269: connection refused"
    summary = d["summary"]
    assert summary.startswith(f"{EDGE} cannot federate with a.test: 1 SRV record(s)")
    assert "but no connection could be made (127.0.0.2:5269: connection refused)." in summary
    assert "Check that the XMPP server of a.test is running" in summary
