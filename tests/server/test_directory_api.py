"""FEDERATION.md §Words (peer server, directory): the directory admin API (`/api/v1`,
issue 5) against an in-process server, and against a real slapd for tests and syncs.

Peer-server CRUD with validation errors naming their fields; the bind password is
write-only (no answer, nor the change log, ever carries it) and kept when a PATCH leaves
it out; LDAP connection tests; background syncs with their progress, a 409 for a second
one, dry runs and kept reports; the directory search with its reachable flags.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from imedge.policy import OriginKind
from tests.helpers import RunningServer, free_port, running_server
from tests.peers.slapd import Flaw, Slapd

API = "/api/v1"
SECRET = "s3cret-Bind-Passw0rd"


def ldap(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "url": url,
        "start_tls": False,
        "bind_dn": "cn=reader,dc=ocs,dc=example",
        "bind_password": SECRET,
        "base_dn": "ou=people,dc=ocs,dc=example",
        "page_size": 40,
        "timeout": 5,
        **extra,
    }


def peer_body(url: str = "ldap://127.0.0.1:1", **extra: Any) -> dict[str, Any]:
    return {
        "name": "OCS",
        "domains": ["ocs.example"],
        "edge_address": "127.0.0.1:5270",
        "ldap": ldap(url),
        "mapping": {"im_address": "labeledURI", "display_name": "cn"},
        **extra,
    }


def slapd_body(server: Slapd, **ldap_extra: Any) -> dict[str, Any]:
    """The slapd's people as a peer server (IM address from labeledURI, as in the sync
    service's interop tests)."""
    body = peer_body(server.url)
    body["domains"] = [server.im_domain]
    body["ldap"] = ldap(
        server.url,
        bind_dn=server.bind_dn,
        bind_password=server.password,
        base_dn=server.base_dn,
        **ldap_extra,
    )
    return body


def good_addresses(server: Slapd) -> set[str]:
    dup = server.people.duplicated_ims
    return {p.im for p in server.people.people if p.im and p.flaw is Flaw.NONE and p.im not in dup}


def fields(r: httpx.Response) -> list[str]:
    assert r.status_code == 422, r.text
    return [p["field"] for p in r.json()["detail"]]


@pytest.fixture
async def rs(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path, partners=()) as server:
        yield server


@pytest.fixture
async def http(rs: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {rs.server.admin_token}"}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{rs.http_port}", headers=headers, timeout=30
    ) as c:
        yield c


async def finished(http: httpx.AsyncClient, peer_id: int) -> dict[str, Any]:
    """Poll the sync's progress until it is not running; its last state."""
    async with asyncio.timeout(20):
        while True:
            r = await http.get(f"{API}/peer-servers/{peer_id}/sync")
            assert r.status_code == 200, r.text
            if not r.json()["running"]:
                return dict(r.json())
            await asyncio.sleep(0.05)


# --- authentication ---------------------------------------------------------------------


async def test_every_route_needs_admin_credentials(rs: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{rs.http_port}") as anonymous:
        answers = [
            await anonymous.get(f"{API}/peer-servers"),
            await anonymous.post(f"{API}/peer-servers", json=peer_body()),
            await anonymous.get(f"{API}/peer-servers/1"),
            await anonymous.patch(f"{API}/peer-servers/1", json={"name": "x"}),
            await anonymous.delete(f"{API}/peer-servers/1"),
            await anonymous.post(f"{API}/peer-servers/1/test-ldap"),
            await anonymous.post(f"{API}/peer-servers/1/sync", json={}),
            await anonymous.get(f"{API}/peer-servers/1/sync"),
            await anonymous.get(f"{API}/peer-servers/1/reports"),
            await anonymous.get(f"{API}/directory/search", params={"q": "a"}),
            await anonymous.get(f"{API}/peer-servers", headers={"Authorization": "Bearer wrong"}),
        ]
    assert [r.status_code for r in answers] == [401] * len(answers)
    assert await rs.server.directory.peer_servers() == []


# --- peer servers -------------------------------------------------------------------------


async def test_crud_never_returns_the_password_and_patch_keeps_it(
    rs: RunningServer, http: httpx.AsyncClient
) -> None:
    r = await http.post(f"{API}/peer-servers", json=peer_body(schedule_minutes=60))
    assert r.status_code == 201, r.text
    created = r.json()
    peer_id = created["id"]
    assert created["ldap"]["has_password"] is True
    assert "bind_password" not in created["ldap"]
    assert created["domains"] == ["ocs.example"]
    assert created["edge_address"] == "127.0.0.1:5270"
    assert created["schedule_minutes"] == 60
    assert created["mapping"]["im_address"] == "labeledURI"
    assert created["mapping"]["email"] == "mail"  # the default mapping

    # A PATCH without the password keeps it; nested fields left out keep theirs.
    r = await http.patch(
        f"{API}/peer-servers/{peer_id}",
        json={"ldap": {"page_size": 100}, "mapping": {"title": None}, "edge_address": None},
    )
    assert r.status_code == 200, r.text
    patched = r.json()
    assert patched["ldap"]["page_size"] == 100
    assert patched["ldap"]["bind_dn"] == created["ldap"]["bind_dn"]
    assert patched["ldap"]["has_password"] is True
    assert patched["mapping"]["title"] is None
    assert patched["mapping"]["display_name"] == "cn"
    assert patched["edge_address"] is None
    stored = await rs.server.directory.get(peer_id)
    assert stored.ldap.bind_password == SECRET
    assert stored.ldap.page_size == 100

    listed = await http.get(f"{API}/peer-servers")
    one = await http.get(f"{API}/peer-servers/{peer_id}")
    changes = await http.get(f"{API}/changes")
    assert listed.json() == [patched] and one.json() == patched
    for answer in (listed, one, changes):
        assert SECRET not in answer.text
    assert SECRET not in json.dumps(created) + json.dumps(patched)

    # An empty password clears it (an anonymous bind needs no DN either).
    r = await http.patch(
        f"{API}/peer-servers/{peer_id}", json={"ldap": {"bind_password": "", "bind_dn": ""}}
    )
    assert r.status_code == 200 and r.json()["ldap"]["has_password"] is False

    r = await http.delete(f"{API}/peer-servers/{peer_id}")
    assert r.status_code == 204
    assert (await http.get(f"{API}/peer-servers/{peer_id}")).status_code == 404
    assert (await http.delete(f"{API}/peer-servers/{peer_id}")).status_code == 404
    assert await rs.server.directory.peer_servers() == []


async def test_refusals_name_their_fields(rs: RunningServer, http: httpx.AsyncClient) -> None:
    post = f"{API}/peer-servers"
    # The service's checks.
    r = await http.post(post, json=peer_body(url="http://ldap.example"))
    assert fields(r) == ["ldap.url"]
    bad_mapping = peer_body(mapping={"im_address": "{uid@ocs.example"})
    assert fields(await http.post(post, json=bad_mapping)) == ["mapping.im_address"]
    assert "domains" in fields(await http.post(post, json=peer_body(domains=[])))
    no_filter = peer_body()
    no_filter["ldap"]["filter"] = "objectClass=person"
    assert fields(await http.post(post, json=no_filter)) == ["ldap.filter"]
    assert fields(await http.post(post, json=peer_body(schedule_minutes=0))) == ["schedule_minutes"]
    # The schema's.
    missing = peer_body()
    del missing["ldap"]["base_dn"]
    assert fields(await http.post(post, json=missing)) == ["ldap.base_dn"]
    assert fields(await http.post(post, json=peer_body(edge_address="host:notaport"))) == [
        "edge_address"
    ]
    assert fields(await http.post(post, json=peer_body(extra=1))) == ["extra"]
    nul = peer_body()
    nul["ldap"]["bind_password"] = "a\x00b"
    assert fields(await http.post(post, json=nul)) == ["ldap.bind_password"]
    assert await rs.server.directory.peer_servers() == []

    # Duplicates, and a PATCH's own refusals.
    first = (await http.post(post, json=peer_body())).json()
    assert "name" in fields(await http.post(post, json=peer_body(domains=["other.example"])))
    url = f"{API}/peer-servers/{first['id']}"
    assert fields(await http.patch(url, json={"ldap": {"url": "ldaps://x", "start_tls": True}}))
    assert fields(await http.patch(url, json={"name": None})) == ["name"]
    assert fields(await http.patch(url, json={"ldap": {"page_size": 0}})) == ["ldap.page_size"]
    assert (await http.patch(f"{API}/peer-servers/999", json={"name": "x"})).status_code == 404
    assert (await http.get(f"{API}/peer-servers/999/reports")).status_code == 404
    assert (await http.post(f"{API}/peer-servers/999/sync", json={})).status_code == 404
    assert (await http.post(f"{API}/peer-servers/999/test-ldap")).status_code == 404
    assert (await http.get(url)).json() == first  # unchanged by the refusals


async def test_test_ldap_reports_an_unreachable_server(http: httpx.AsyncClient) -> None:
    body = peer_body(url=f"ldap://127.0.0.1:{free_port()}")
    peer_id = (await http.post(f"{API}/peer-servers", json=body)).json()["id"]
    r = await http.post(f"{API}/peer-servers/{peer_id}/test-ldap")
    assert r.status_code == 200
    assert r.json()["ok"] is False and r.json()["summary"]


# --- against slapd ----------------------------------------------------------------------


@pytest.mark.interop
async def test_test_ldap_ok_and_with_a_wrong_password(
    http: httpx.AsyncClient, slapd_server: Slapd
) -> None:
    peer = (await http.post(f"{API}/peer-servers", json=slapd_body(slapd_server))).json()
    r = await http.post(f"{API}/peer-servers/{peer['id']}/test-ldap")
    assert r.status_code == 200 and r.json()["ok"] is True, r.text
    assert r.json()["summary"]

    await http.patch(f"{API}/peer-servers/{peer['id']}", json={"ldap": {"bind_password": "no"}})
    r = await http.post(f"{API}/peer-servers/{peer['id']}/test-ldap")
    assert r.status_code == 200 and r.json()["ok"] is False
    assert "credential" in r.json()["summary"].lower() or "password" in r.json()["summary"]
    assert slapd_server.password not in r.text


@pytest.mark.interop
async def test_sync_in_the_background_with_progress_reports_and_search(
    rs: RunningServer, http: httpx.AsyncClient, slapd_server: Slapd
) -> None:
    peer_id = (await http.post(f"{API}/peer-servers", json=slapd_body(slapd_server))).json()["id"]
    sync = f"{API}/peer-servers/{peer_id}/sync"
    before = (await http.get(sync)).json()
    assert before == {"running": False, "fetched": 0, "started": None, "last_report": None}
    good = good_addresses(slapd_server)

    # A dry run: the plan's counts, nothing applied, nothing kept.
    r = await http.post(sync, json={"dry_run": True})
    assert r.status_code == 202 and r.json() == {"sync": "started"}
    state = await finished(http, peer_id)
    dry = state["last_report"]
    assert dry["dry_run"] is True and dry["status"] == "ok"
    assert (dry["added"], dry["changed"], dry["removed"]) == (len(good), 0, 0)
    assert state["fetched"] == len(slapd_server.people)
    assert await rs.server.store.directory.entries(peer_id) == []
    assert (await http.get(f"{API}/peer-servers/{peer_id}/reports")).json() == []

    # Two syncs started together: one runs, the other is told so.
    first, second = await asyncio.gather(http.post(sync, json={}), http.post(sync, json={}))
    assert sorted([first.status_code, second.status_code]) == [202, 409]
    conflict = first if first.status_code == 409 else second
    assert "running" in conflict.json()["detail"]

    state = await finished(http, peer_id)
    report = state["last_report"]
    assert report["dry_run"] is False and report["status"] == "ok", report
    assert (report["added"], report["changed"], report["removed"]) == (len(good), 0, 0)
    assert report["issue_count"] > 0
    assert len(report["issues"]) == min(report["issue_count"], 100)
    assert {i["kind"] for i in report["issues"]} <= {
        "missing_im_address",
        "invalid_im_address",
        "duplicate_im_address",
        "outside_domains",
    }
    assert all(i["dn"] for i in report["issues"])

    reports = (await http.get(f"{API}/peer-servers/{peer_id}/reports", params={"limit": 5})).json()
    assert len(reports) == 1
    assert {k: reports[0][k] for k in ("added", "status", "issue_count")} == {
        k: report[k] for k in ("added", "status", "issue_count")
    }
    # The first successful sync made the peer's domain an allowed partner.
    partners = [
        p for p in rs.server.federation.config.partners if p.origin.kind is OriginKind.PEER_SERVER
    ]
    assert [p.domains for p in partners] == [(slapd_server.im_domain,)]

    # The search: synced people, reachable now that their domain is a partner.
    person = sorted(good)[0]
    found = (await http.get(f"{API}/directory/search", params={"q": person})).json()
    assert [(p["jid"], p["peer_server"], p["reachable"], p["local"]) for p in found] == [
        (person, "OCS", True, False)
    ]
    assert found[0]["name"]
    await rs.add_user("carol")
    local = (await http.get(f"{API}/directory/search", params={"q": "carol@"})).json()
    assert [(p["jid"], p["local"], p["reachable"], p["peer_server"]) for p in local] == [
        ("carol@localhost", True, True, None)
    ]
    limited = (await http.get(f"{API}/directory/search", params={"q": "", "limit": 3})).json()
    assert len(limited) == 3

    # Blocking the partner makes its people unreachable, as the search says.
    partner_id = partners[0].id
    r = await http.patch(f"{API}/partners/{partner_id}", json={"allowed": False})
    assert r.status_code == 200, r.text
    found = (await http.get(f"{API}/directory/search", params={"q": person})).json()
    assert [p["reachable"] for p in found] == [False]

    # Removing the peer server removes its partner and its people.
    assert (await http.delete(f"{API}/peer-servers/{peer_id}")).status_code == 204
    assert (await http.get(f"{API}/directory/search", params={"q": person})).json() == []
    assert not any(
        p.origin.kind is OriginKind.PEER_SERVER for p in rs.server.federation.config.partners
    )


@pytest.mark.interop
async def test_a_failed_sync_reports_why(http: httpx.AsyncClient, slapd_server: Slapd) -> None:
    body = slapd_body(slapd_server)
    body["ldap"]["bind_password"] = "wrong"
    peer_id = (await http.post(f"{API}/peer-servers", json=body)).json()["id"]
    assert (await http.post(f"{API}/peer-servers/{peer_id}/sync")).status_code == 202
    report = (await finished(http, peer_id))["last_report"]
    assert report["status"] == "failed" and report["error"]
    assert report["added"] == 0
    kept = (await http.get(f"{API}/peer-servers/{peer_id}/reports")).json()
    assert [r["status"] for r in kept] == ["failed"]
