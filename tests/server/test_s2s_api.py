"""The s2s admin API (`/api/v1/s2s`) and s2s metrics, against in-process IM Edge servers
federating over real loopback sockets.

Every remote domain is reached through an edge address or the test DNS stub: nothing here
asks the system resolver or leaves loopback.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from tests.helpers import Inbox, RunningServer, federated_server, running_server
from tests.peers.dns import DnsStub

A, B = "a.test", "b.test"
# Addresses of this module only, so that it can run beside the other federation tests.
A_IP, B_IP = "127.0.0.36", "127.0.0.37"
DOWN = "127.0.0.99:5269"  # nothing listens there: connection refused


def edges(**extra: str) -> dict[str, Any]:
    return {
        "s2s.edge_addresses": {A: f"{A_IP}:5269", B: f"{B_IP}:5269", "down.test": DOWN, **extra}
    }


@contextlib.asynccontextmanager
async def admin(rs: RunningServer, token: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {token or rs.server.admin_token}"}
    async with httpx.AsyncClient(
        base_url=f"http://{rs.server.bound['http'].host}:{rs.http_port}",
        headers=headers,
        timeout=30,
    ) as http:
        yield http


@contextlib.asynccontextmanager
async def two_servers(
    tmp_path: Path, **b_overrides: Any
) -> AsyncIterator[tuple[RunningServer, RunningServer]]:
    ca = trustme.CA()
    async with (
        federated_server(tmp_path / "a", A, A_IP, ca, **edges()) as a,
        federated_server(tmp_path / "b", B, B_IP, ca, **edges(), **b_overrides) as b,
    ):
        yield a, b


async def exchange_message(a: RunningServer, b: RunningServer) -> None:
    alice = await a.add_user("alice")
    bob = await b.add_user("bob")
    ca_client = await a.client(alice)
    cb_client = await b.client(bob)
    inbox = Inbox(cb_client)
    ca_client.send_message(mto=bob, mbody="hello across", mtype="chat")
    await inbox.get(lambda m: m["body"] == "hello across", timeout=10)


# --- authentication and validation -----------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/s2s/streams", "/api/v1/s2s/links"])
async def test_requests_without_the_admin_token_are_refused(
    server: RunningServer, path: str
) -> None:
    base = f"http://127.0.0.1:{server.http_port}"
    async with httpx.AsyncClient(base_url=base) as http:
        anonymous = await http.get(path)
        wrong = await http.get(path, headers={"Authorization": "Bearer not-the-token"})
        basic = await http.get(path, headers={"Authorization": "Basic YWRtaW46YWRtaW4="})
        posted = await http.post("/api/v1/s2s/test", json={"domain": "b.test"})
    for r in (anonymous, wrong, basic, posted):
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"] == "Bearer"
        detail = r.json()["detail"]
        assert "Authorization: Bearer <token>" in detail
        assert "admin.token" in detail
    assert wrong.json()["detail"].startswith("the admin token is not valid")
    assert anonymous.json()["detail"].startswith("admin credentials required")
    async with admin(server) as http:
        r = await http.get(path)
    assert r.status_code == 200
    assert r.json() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"domain": "a b"}, "domain"),
        ({"domain": ""}, "domain"),
        ({"domain": "x" * 2000}, "domain"),
        ({"domain": "a..test"}, "domain"),
        ({}, "domain"),
        ({"domain": 5}, "domain"),
        ({"domain": "localhost"}, "domain"),  # ourselves
        ({"domain": "b.test", "local": "elsewhere.test"}, "local"),
        ({"domain": "b.test", "local": "a b"}, "local"),
    ],
)
async def test_a_bad_domain_is_refused_naming_the_field(
    server: RunningServer, body: dict[str, Any], field: str
) -> None:
    async with admin(server) as http:
        r = await http.post("/api/v1/s2s/test", json=body)
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]
    assert isinstance(errors, list) and errors
    assert errors[0]["loc"] == ["body", field]
    assert errors[0]["msg"]


async def test_openapi_lists_the_s2s_paths(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
        r = await http.get("/api/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    paths = spec["paths"]
    assert "get" in paths["/api/v1/s2s/streams"]
    assert "get" in paths["/api/v1/s2s/links"]
    assert "post" in paths["/api/v1/s2s/test"]
    schemas = spec["components"]["schemas"]
    assert {"StreamOut", "LinkOut", "DiagnosisOut", "TestRequest"} <= set(schemas)
    assert "bearer" in str(spec["components"]["securitySchemes"]).lower()


# --- live streams and links -------------------------------------------------------------


async def test_streams_show_both_directions_after_two_servers_talked(tmp_path: Path) -> None:
    async with two_servers(tmp_path) as (a, b):
        await exchange_message(a, b)
        async with admin(a) as http:
            streams = (await http.get("/api/v1/s2s/streams")).json()
            metrics = (await http.get("/metrics")).text
        async with admin(b) as http:
            b_streams = (await http.get("/api/v1/s2s/streams")).json()
            links = (await http.get("/api/v1/s2s/links")).json()
    out = [s for s in streams if s["direction"] == "out"]
    assert len(out) == 1, streams
    s = out[0]
    assert s["local"] == A and s["remote"] == B
    assert s["peer"] == f"{B_IP}:5269"
    assert s["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert s["auth"] == "sasl-external"
    assert s["certificate"] == "valid"
    assert "valid" in s["certificate_detail"]
    assert s["authenticated_domains"] == [B]
    assert s["stanzas_out"] >= 1
    assert s["age_seconds"] >= 0
    inbound = [s for s in b_streams if s["direction"] == "in"]
    assert inbound and inbound[0]["remote"] == A and inbound[0]["stanzas_in"] >= 1
    assert inbound[0]["auth"] == "sasl-external" and inbound[0]["certificate"] == "valid"
    # b answered nothing on its own link to a yet: no link, or an idle/connected one.
    assert all(link["remote"] == A for link in links)
    # The live stream is in the metrics, with how it authenticated.
    assert (
        'imedge_s2s_streams{auth="sasl-external",certificate="valid",direction="out"} 1.0'
        in metrics
    )
    assert 'imedge_s2s_links{state="connected"} 1.0' in metrics
    assert 'imedge_stanzas_out_total{kind="message",transport="s2s"}' in metrics


async def test_links_show_the_failure_of_an_unreachable_domain(tmp_path: Path) -> None:
    async with running_server(tmp_path, **edges()) as rs:
        alice = await rs.add_user("alice")
        client = await rs.client(alice)
        errors = Inbox(client, "message_error")
        client.send_message(mto="nobody@down.test", mbody="anyone?", mtype="chat")
        err = await errors.get(timeout=10)
        assert err["error"]["condition"] == "remote-server-not-found"
        async with admin(rs) as http:
            links = (await http.get("/api/v1/s2s/links")).json()
            metrics = (await http.get("/metrics")).text
    assert len(links) == 1, links
    link = links[0]
    assert link["local"] == "localhost" and link["remote"] == "down.test"
    assert link["state"] == "failed"
    assert link["queued"] == 0
    assert link["last_success"] is None and link["last_failure"] is not None
    assert link["last_error"].startswith("connect: cannot connect to 127.0.0.99:5269")
    assert "connection refused" in link["last_error"]
    assert link["retry_in"] is not None and link["retry_in"] > 0
    assert 'imedge_s2s_link_failures_total{remote="down.test",step="connect"} 1.0' in metrics
    assert 'imedge_s2s_links{state="failed"} 1.0' in metrics


# --- connection tests -------------------------------------------------------------------


async def test_testing_a_reachable_imedge_peer_succeeds(tmp_path: Path) -> None:
    async with two_servers(tmp_path) as (a, _b), admin(a) as http:
        r = await http.post("/api/v1/s2s/test", json={"domain": "B.test"})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["ok"] is True and d["failed_step"] is None
    assert d["local"] == A and d["remote"] == B
    assert [s["step"] for s in d["steps"]] == ["dns", "connect", "tls", "authentication"]
    assert all(s["ok"] for s in d["steps"])
    assert d["steps"][0]["detail"].startswith(f"configured edge address {B_IP}:5269")
    assert d["steps"][1]["detail"] == f"connected to {B_IP}:5269"
    assert "certificate valid" in d["steps"][2]["detail"]
    summary = d["summary"]
    assert summary.startswith(
        f"{A} can federate with {B}: its configured edge address {B_IP}:5269 answered over TLS"
    )
    assert "presenting a valid certificate" in summary
    assert summary.endswith("accepted us by SASL EXTERNAL, trusting our certificate.")
    assert summary.count(". ") == 0  # one sentence


async def test_testing_an_unreachable_address_fails_at_connect(tmp_path: Path) -> None:
    async with running_server(tmp_path, **edges()) as rs, admin(rs) as http:
        r = await http.post("/api/v1/s2s/test", json={"domain": "down.test"})
    d = r.json()
    assert r.status_code == 200
    assert d["ok"] is False and d["failed_step"] == "connect"
    assert [(s["step"], s["ok"]) for s in d["steps"]] == [("dns", True), ("connect", False)]
    assert d["steps"][1]["detail"] == "127.0.0.99:5269: connection refused"
    summary = d["summary"]
    assert summary.startswith(
        "localhost cannot federate with down.test: its configured edge address is "
        "127.0.0.99:5269, but no connection could be made (127.0.0.99:5269: connection refused)."
    )
    assert "Check that the XMPP server of down.test is running" in summary
    assert "firewall" in summary
    assert ".." not in summary


async def test_testing_an_unknown_dns_name_fails_at_dns(tmp_path: Path, peer_dns: DnsStub) -> None:
    async with (
        running_server(tmp_path, **{"dns.nameservers": [peer_dns.nameserver]}) as rs,
        admin(rs) as http,
    ):
        r = await http.post("/api/v1/s2s/test", json={"domain": "nosuch.test"})
    d = r.json()
    assert d["ok"] is False and d["failed_step"] == "dns"
    assert [(s["step"], s["ok"]) for s in d["steps"]] == [("dns", False)]
    assert "nosuch.test" in d["steps"][0]["detail"]
    assert "NXDOMAIN" in d["steps"][0]["detail"]
    summary = d["summary"]
    assert summary.startswith("localhost cannot federate with nosuch.test: the DNS lookup failed")
    assert "Check the spelling of nosuch.test and its DNS records" in summary
    assert "edge address" in summary


@pytest.mark.parametrize(
    ("b_overrides", "detail", "advice"),
    [
        # b trusts another CA and does not do dialback: nothing lets us in.
        (
            {"s2s.dialback": False},
            "b.test offers no authentication method we can use",
            "must either trust our certificate",
        ),
        # b does dialback but cannot reach a's authoritative server to verify our key.
        (
            {"s2s.edge_addresses": {A: DOWN}},
            "b.test rejected our dialback key",
            "could not confirm our dialback key",
        ),
    ],
    ids=["no-method", "dialback-refused"],
)
async def test_testing_a_peer_that_refuses_us_fails_at_authentication(
    tmp_path: Path, b_overrides: dict[str, Any], detail: str, advice: str
) -> None:
    async with (
        federated_server(tmp_path / "a", A, A_IP, trustme.CA(), **edges()) as a,
        # Another CA: neither side trusts the other's certificate.
        federated_server(tmp_path / "b", B, B_IP, trustme.CA(), **{**edges(), **b_overrides}) as b,
        admin(a) as http,
    ):
        r = await http.post("/api/v1/s2s/test", json={"domain": B})
        async with admin(b) as b_http:
            b_metrics = (await b_http.get("/metrics")).text
    d = r.json()
    assert d["ok"] is False and d["failed_step"] == "authentication"
    steps = [(s["step"], s["ok"]) for s in d["steps"]]
    assert steps == [("dns", True), ("connect", True), ("tls", True), ("authentication", False)]
    assert "certificate untrusted" in d["steps"][2]["detail"]
    assert "(dialback can still authenticate)" in d["steps"][2]["detail"]
    assert d["steps"][3]["detail"].startswith(detail)
    summary = d["summary"]
    assert summary.startswith(
        f"{A} cannot federate with {B}: {B_IP}:5269 accepted the connection and negotiated TLS"
    )
    assert "but the authentication step failed" in summary
    assert advice in summary
    if "s2s.dialback" not in b_overrides:
        # b counted the key it could not verify.
        assert 'imedge_s2s_dialback_verifications_total{result="error"} 1.0' in b_metrics
