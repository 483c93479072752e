"""Two IM Edge instances federating over real s2s streams on loopback addresses."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import trustme

from imedge.domain.jid import Jid
from tests.helpers import Inbox, federated_server

A, B = "a.test", "b.test"
A_IP, B_IP = "127.0.0.10", "127.0.0.11"


def edges(**extra: str) -> dict[str, object]:
    return {"s2s.edge_addresses": {A: f"{A_IP}:5269", B: f"{B_IP}:5269", **extra}}


async def test_chat_and_presence_between_two_imedge_servers(tmp_path: Path) -> None:
    ca = trustme.CA()
    async with (
        federated_server(tmp_path / "a", A, A_IP, ca, **edges()) as a,
        federated_server(tmp_path / "b", B, B_IP, ca, **edges()) as b,
    ):
        alice = await a.add_user("alice")
        bob = await b.add_user("bob")
        ca_client = await a.client(alice)
        cb_client = await b.client(bob)
        inbox_b = Inbox(cb_client)
        ca_client.send_message(mto=bob, mbody="hello across", mtype="chat")
        msg = await inbox_b.get(timeout=10)
        assert msg["body"] == "hello across"
        assert str(msg["from"].bare) == alice
        streams = a.server.s2s.streams() + b.server.s2s.streams()
        assert any(s.auth == "sasl-external" for s in streams), streams
        assert all(s.cert == "valid" for s in streams if s.remote)


async def test_unreachable_domain_bounces_remote_server_not_found(tmp_path: Path) -> None:
    ca = trustme.CA()
    async with federated_server(
        tmp_path / "a", A, A_IP, ca, **edges(**{"down.test": "127.0.0.99:5269"})
    ) as a:
        alice = await a.add_user("alice")
        client = await a.client(alice)
        inbox = Inbox(client, "message_error")
        client.send_message(mto="nobody@down.test", mbody="anyone?", mtype="chat")
        err = await inbox.get(lambda m: m["type"] == "error", timeout=10)
        assert err["error"]["condition"] == "remote-server-not-found"


async def test_subscription_presence_and_offline_between_two_imedge_servers(tmp_path: Path) -> None:
    ca = trustme.CA()
    async with (
        federated_server(tmp_path / "a", A, A_IP, ca, **edges()) as a,
        federated_server(tmp_path / "b", B, B_IP, ca, **edges()) as b,
    ):
        alice, bob = await a.add_user("alice"), await b.add_user("bob")
        ca_client, cb_client = await a.client(alice), await b.client(bob)

        # bob approves alice's request and asks back; both then see each other online.
        seen_by_alice = Inbox(ca_client, "presence_available")
        seen_by_bob = Inbox(cb_client, "presence_available")
        cb_client.add_event_handler(
            "presence_subscribe",
            lambda p: cb_client.send_presence(pto=p["from"].bare, ptype="subscribed"),
        )
        ca_client.add_event_handler(
            "presence_subscribe",
            lambda p: ca_client.send_presence(pto=p["from"].bare, ptype="subscribed"),
        )
        ca_client.send_presence(pto=bob, ptype="subscribe")
        cb_client.send_presence(pto=alice, ptype="subscribe")
        await seen_by_alice.get(lambda p: p["from"].bare == bob, timeout=10)
        await seen_by_bob.get(lambda p: p["from"].bare == alice, timeout=10)
        roster = await a.server.store.rosters.get_item(Jid.parse(alice), Jid.parse(bob))
        assert roster is not None
        assert roster.subscription == "both"

        # bob logs out: alice sees him go; her message waits for him on his server.
        gone = Inbox(ca_client, "presence_unavailable")
        cb_client.disconnect()
        await gone.get(lambda p: p["from"].bare == bob, timeout=10)
        ca_client.send_message(mto=bob, mbody="while you were away", mtype="chat")
        back = await b.client(bob, start=False)
        inbox = Inbox(back)
        back.send_presence()
        got = await inbox.get(lambda m: m["body"] == "while you were away", timeout=10)
        assert got["from"].bare == alice
        assert "urn:xmpp:delay" in str(got)  # delivered from offline storage


async def test_admin_adds_a_federated_contact_on_a_users_behalf(tmp_path: Path) -> None:
    """Issue 5: a personal contact added through the API; the user's client gets the
    roster push and the remote user the subscription request, then they chat."""
    ca = trustme.CA()
    async with (
        federated_server(tmp_path / "a", A, A_IP, ca, **edges()) as a,
        federated_server(tmp_path / "b", B, B_IP, ca, **edges()) as b,
    ):
        alice, bob = await a.add_user("alice"), await b.add_user("bob")
        ca_client, cb_client = await a.client(alice), await b.client(bob)
        pushes = Inbox(ca_client, "roster_update")
        requests = Inbox(cb_client, "presence_subscribe")
        token = (a.server.config.data_dir / "admin.token").read_text().strip()
        api = f"http://{A_IP}:{a.http_port}/api/v1"
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
            r = await http.post(f"{api}/users/{alice}/contacts", json={"jid": bob, "name": "Bob"})
            assert r.status_code == 201, r.text
            assert r.json()["ask"] is True
            bad = await http.post(f"{api}/users/{alice}/contacts", json={"jid": "not an address"})
            assert bad.status_code == 422
            missing = await http.post(f"{api}/users/nobody@{A}/contacts", json={"jid": bob})
            assert missing.status_code == 404
        await pushes.get(timeout=10)
        request = await requests.get(lambda p: p["from"].bare == alice, timeout=10)
        assert request["type"] == "subscribe"
        # bob's client approves (slixmpp's default): alice is now subscribed to bob.
        for _ in range(100):
            item = await a.server.store.rosters.get_item(Jid.parse(alice), Jid.parse(bob))
            assert item is not None
            if item.subscription in ("to", "both"):
                break
            await asyncio.sleep(0.05)
        assert item.name == "Bob"
        assert item.subscription in ("to", "both")
