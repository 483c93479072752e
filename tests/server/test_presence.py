"""RFC 6121 §3 and §4: subscriptions, presence broadcast, probes, directed presence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import slixmpp

from imedge.domain.jid import Jid
from imedge.domain.roster import RosterItem, Subscription
from tests.helpers import DOMAIN, Inbox, RunningServer, running_server, wait_for

STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def manual(client: slixmpp.ClientXMPP) -> None:
    """The test answers subscription requests itself (slixmpp approves them by default)."""
    client.auto_authorize = None
    client.auto_subscribe = False


async def sync(client: slixmpp.ClientXMPP) -> None:
    """A ping to the server: everything the client sent before has been handled."""
    await client.plugin["xep_0199"].send_ping(DOMAIN, timeout=5)


async def connect(
    server: RunningServer, jid: str, *, available: bool = True, **presence: Any
) -> tuple[slixmpp.ClientXMPP, Inbox]:
    """A client that has fetched its roster, with an inbox that saw everything since."""
    client = await server.client(jid, start=False, setup=manual)
    inbox = Inbox(client, "presence")
    await client.get_roster()
    if available:
        client.send_presence(**presence)
    await sync(client)
    return client, inbox


def send(client: slixmpp.ClientXMPP, xml: str) -> None:
    client.send_raw(xml)


def sub_of(item: RosterItem | None) -> tuple[str, bool, bool] | None:
    if item is None:
        return None
    return (str(item.subscription), item.pending_out, item.approved)


async def stored(server: RunningServer, user: str, contact: str) -> RosterItem | None:
    return await server.server.store.rosters.get_item(Jid.parse(user), Jid.parse(contact))


async def befriend(server: RunningServer, a: str, b: str) -> None:
    """Mutual subscription, written to the store directly (the flow is tested separately)."""
    rosters = server.server.store.rosters
    await rosters.put_item(
        Jid.parse(a), RosterItem(jid=Jid.parse(b), subscription=Subscription.BOTH)
    )
    await rosters.put_item(
        Jid.parse(b), RosterItem(jid=Jid.parse(a), subscription=Subscription.BOTH)
    )


def kind(type_: str, sender: str) -> Any:
    return lambda p: p["type"] == type_ and p["from"].bare == sender


def available_from(sender: str) -> Any:
    return lambda p: (
        p["from"].bare == sender
        and p["type"]
        not in (
            "unavailable",
            "subscribe",
            "subscribed",
            "unsubscribe",
            "unsubscribed",
            "probe",
            "error",
        )
    )


def condition_of(stanza: Any) -> str | None:
    err = stanza.xml.find("{jabber:client}error")
    if err is None:
        return None
    for child in err:
        if child.tag.startswith("{" + STANZAS + "}") and not child.tag.endswith("}text"):
            return str(child.tag.split("}", 1)[1])
    return None


# --- subscriptions (§3) -------------------------------------------------------------------
async def test_subscription_flow_both_ways(server: RunningServer) -> None:
    alice_jid, bob_jid = await server.add_user("alice"), await server.add_user("bob")
    alice, alice_in = await connect(server, alice_jid)
    bob, bob_in = await connect(server, bob_jid, pstatus="here")
    alice_pushes = Inbox(alice, "roster_update")

    alice.send_presence(pto=bob_jid, ptype="subscribe")
    request = await bob_in.get(kind("subscribe", alice_jid))
    # §3.1.2: stamped with the user's bare JID.
    assert request["from"].full == alice_jid
    await alice_pushes.get()
    assert alice.client_roster[bob_jid]["pending_out"]
    assert sub_of(await stored(server, alice_jid, bob_jid)) == ("none", True, False)
    # §3.1.3: the request is kept, but bob's roster shows no item before he answers.
    pending = await stored(server, bob_jid, alice_jid)
    assert pending is not None
    assert pending.pending_in
    assert not pending.listed

    bob.send_presence(pto=alice_jid, ptype="subscribed")
    await alice_in.get(kind("subscribed", bob_jid))
    # §3.1.5: bob's current presence follows his approval.
    seen = await alice_in.get(available_from(bob_jid))
    assert seen["status"] == "here"
    assert sub_of(await stored(server, alice_jid, bob_jid)) == ("to", False, False)
    assert sub_of(await stored(server, bob_jid, alice_jid)) == ("from", False, False)

    bob.send_presence(pto=alice_jid, ptype="subscribe")
    await alice_in.get(kind("subscribe", bob_jid))
    alice.send_presence(pto=bob_jid, ptype="subscribed")
    await bob_in.get(kind("subscribed", alice_jid))
    await bob_in.get(available_from(alice_jid))
    assert sub_of(await stored(server, alice_jid, bob_jid)) == ("both", False, False)
    assert sub_of(await stored(server, bob_jid, alice_jid)) == ("both", False, False)
    await wait_for(lambda: alice.client_roster[bob_jid]["subscription"] == "both")
    await wait_for(lambda: bob.client_roster[alice_jid]["subscription"] == "both")

    # Presence now flows both ways.
    alice.send_presence(pshow="away")
    assert (await bob_in.get(available_from(alice_jid)))["show"] == "away"
    bob.send_presence(pshow="dnd")
    assert (await alice_in.get(available_from(bob_jid)))["show"] == "dnd"


async def test_unsubscribe_and_cancel(server: RunningServer) -> None:
    alice_jid, bob_jid = await server.add_user("alice"), await server.add_user("bob")
    await befriend(server, alice_jid, bob_jid)
    alice, alice_in = await connect(server, alice_jid)
    bob, bob_in = await connect(server, bob_jid)
    await alice_in.get(available_from(bob_jid))
    await bob_in.get(available_from(alice_jid))

    # §3.3: alice no longer wants bob's presence.
    alice.send_presence(pto=bob_jid, ptype="unsubscribe")
    await bob_in.get(kind("unsubscribe", alice_jid))
    # §3.3.3: bob's server tells alice he is "offline" for her.
    await alice_in.get(kind("unavailable", bob_jid))
    assert sub_of(await stored(server, alice_jid, bob_jid)) == ("from", False, False)
    assert sub_of(await stored(server, bob_jid, alice_jid)) == ("to", False, False)

    # Bob still sees alice; she now cancels that too (§3.2).
    alice.send_presence(pto=bob_jid, ptype="unsubscribed")
    await bob_in.get(kind("unavailable", alice_jid))
    await bob_in.get(kind("unsubscribed", alice_jid))
    assert sub_of(await stored(server, alice_jid, bob_jid)) == ("none", False, False)
    assert sub_of(await stored(server, bob_jid, alice_jid)) == ("none", False, False)

    # Nothing flows any more.
    alice.send_presence(pshow="away")
    bob.send_presence(pshow="away")
    await sync(alice)
    await sync(bob)
    await bob_in.nothing(available_from(alice_jid))
    await alice_in.nothing(available_from(bob_jid))


async def test_deny_request(server: RunningServer) -> None:
    alice_jid, bob_jid = await server.add_user("alice"), await server.add_user("bob")
    alice, alice_in = await connect(server, alice_jid)
    bob, bob_in = await connect(server, bob_jid)
    alice.send_presence(pto=bob_jid, ptype="subscribe")
    await bob_in.get(kind("subscribe", alice_jid))
    bob.send_presence(pto=alice_jid, ptype="unsubscribed")
    await alice_in.get(kind("unsubscribed", bob_jid))
    assert sub_of(await stored(server, alice_jid, bob_jid)) == ("none", False, False)
    # The refused request is forgotten: no pending item is left on bob's side.
    assert await stored(server, bob_jid, alice_jid) is None
    assert await server.server.store.subscription_requests.get_requests(Jid.parse(bob_jid)) == []


async def test_pre_approval(server: RunningServer) -> None:
    alice_jid, bob_jid = await server.add_user("alice"), await server.add_user("bob")
    alice, alice_in = await connect(server, alice_jid)
    bob, bob_in = await connect(server, bob_jid)
    bob_pushes = Inbox(bob, "roster_update")

    # §3.4: bob approves alice before she asks.
    bob.send_presence(pto=alice_jid, ptype="subscribed")
    push = await bob_pushes.get()
    item = push.xml.find("{jabber:iq:roster}query/{jabber:iq:roster}item")
    assert item.get("approved") == "true"
    assert sub_of(await stored(server, bob_jid, alice_jid)) == ("none", False, True)
    await alice_in.nothing(kind("subscribed", bob_jid), wait=0.2)

    alice.send_presence(pto=bob_jid, ptype="subscribe")
    await alice_in.get(kind("subscribed", bob_jid))
    await alice_in.get(available_from(bob_jid))
    assert sub_of(await stored(server, alice_jid, bob_jid)) == ("to", False, False)
    assert sub_of(await stored(server, bob_jid, alice_jid)) == ("from", False, False)
    # Bob was never asked.
    await bob_in.nothing(kind("subscribe", alice_jid))


async def test_request_to_offline_user_is_delivered_at_login(server: RunningServer) -> None:
    alice_jid, bob_jid = await server.add_user("alice"), await server.add_user("bob")
    alice, _ = await connect(server, alice_jid)
    send(
        alice,
        f"<presence to='{bob_jid}' type='subscribe'><status>hi, it is alice</status></presence>",
    )
    await sync(alice)

    bob, bob_in = await connect(server, bob_jid)
    request = await bob_in.get(kind("subscribe", alice_jid))
    assert request["status"] == "hi, it is alice"
    # Unanswered, it comes again at the next login (§3.1.3).
    bob.abort()
    bob, bob_in = await connect(server, bob_jid)
    await bob_in.get(kind("subscribe", alice_jid))
    bob.send_presence(pto=alice_jid, ptype="subscribed")
    await sync(bob)
    bob.abort()
    bob, bob_in = await connect(server, bob_jid)
    await bob_in.nothing(kind("subscribe", alice_jid))


async def test_subscription_to_nonexistent_user_is_silently_dropped(server: RunningServer) -> None:
    alice_jid = await server.add_user("alice")
    alice, alice_in = await connect(server, alice_jid)
    nobody = f"nobody@{DOMAIN}"
    for type_ in ("subscribe", "subscribed", "unsubscribe", "unsubscribed"):
        alice.send_presence(pto=nobody, ptype=type_)
    alice.send_presence(pto=nobody)
    alice.send_presence(pto=nobody + "/res")
    await sync(alice)
    # §8.5.1: no error would tell alice whether the account exists.
    await alice_in.nothing(lambda p: p["type"] == "error" or p["from"].bare == nobody)
    assert await server.server.store.subscription_requests.get_requests(Jid.parse(nobody)) == []


# --- presence (§4) ------------------------------------------------------------------------
async def test_broadcast_and_unavailable_on_logout(server: RunningServer) -> None:
    alice_jid, bob_jid = await server.add_user("alice"), await server.add_user("bob")
    carol_jid = await server.add_user("carol")
    await befriend(server, alice_jid, bob_jid)
    _bob, bob_in = await connect(server, bob_jid)
    _carol, carol_in = await connect(server, carol_jid)

    alice, alice_in = await connect(server, alice_jid, pstatus="hello")
    initial = await bob_in.get(available_from(alice_jid))
    assert initial["status"] == "hello"
    assert initial["from"].full == alice.boundjid.full
    # §4.2.2: the user's own resource gets its presence too.
    await alice_in.get(lambda p: p["from"].full == alice.boundjid.full)

    alice.send_presence(pshow="xa", pstatus="later")
    assert (await bob_in.get(available_from(alice_jid)))["show"] == "xa"

    # A clean logout.
    alice.send_presence(ptype="unavailable", pstatus="bye")
    gone = await bob_in.get(kind("unavailable", alice_jid))
    assert gone["status"] == "bye"
    alice.disconnect()
    # Carol is no contact: she saw none of it.
    await carol_in.nothing(lambda p: p["from"].bare == alice_jid)


async def test_unavailable_on_abrupt_disconnect(server: RunningServer) -> None:
    alice_jid, bob_jid = await server.add_user("alice"), await server.add_user("bob")
    await befriend(server, alice_jid, bob_jid)
    _bob, bob_in = await connect(server, bob_jid)
    alice, _ = await connect(server, alice_jid)
    await bob_in.get(available_from(alice_jid))
    resource = alice.boundjid.full
    alice.abort()
    gone = await bob_in.get(kind("unavailable", alice_jid))
    assert gone["from"].full == resource


async def test_probe_at_login_and_own_resources(server: RunningServer) -> None:
    alice_jid, bob_jid = await server.add_user("alice"), await server.add_user("bob")
    await befriend(server, alice_jid, bob_jid)
    bob, _ = await connect(server, bob_jid, pshow="away", pstatus="lunch")
    one, one_in = await connect(server, alice_jid + "/one", pstatus="desk")

    seen = await one_in.get(available_from(bob_jid))
    assert (seen["show"], seen["status"]) == ("away", "lunch")
    assert seen["from"].full == bob.boundjid.full

    # A second resource learns about the contact and about the first resource (§4.2.2).
    two, two_in = await connect(server, alice_jid + "/two")
    await two_in.get(available_from(bob_jid))
    mine = await two_in.get(lambda p: p["from"].full == one.boundjid.full)
    assert mine["status"] == "desk"
    # ...and the first resource learns about the second.
    await one_in.get(lambda p: p["from"].full == two.boundjid.full)


async def test_no_presence_from_strangers_to_bare_jid(server: RunningServer) -> None:
    alice_jid, bob_jid = await server.add_user("alice"), await server.add_user("bob")
    alice, _ = await connect(server, alice_jid)
    _bob, bob_in = await connect(server, bob_jid)
    alice.send_presence(pto=bob_jid, pstatus="let me in")
    await sync(alice)
    await bob_in.nothing(available_from(alice_jid))


async def test_directed_presence_then_unavailable(server: RunningServer) -> None:
    alice_jid, carol_jid = await server.add_user("alice"), await server.add_user("carol")
    alice, _ = await connect(server, alice_jid)
    carol, carol_in = await connect(server, carol_jid)

    alice.send_presence(pto=carol.boundjid.full, pstatus="psst")
    directed = await carol_in.get(available_from(alice_jid))
    assert directed["status"] == "psst"
    # §4.6.3: when alice goes offline, the target of her directed presence learns it.
    alice.abort()
    await carol_in.get(kind("unavailable", alice_jid))


async def test_directed_unavailable_ends_tracking(server: RunningServer) -> None:
    alice_jid, carol_jid = await server.add_user("alice"), await server.add_user("carol")
    alice, _ = await connect(server, alice_jid)
    carol, carol_in = await connect(server, carol_jid)
    alice.send_presence(pto=carol.boundjid.full)
    await carol_in.get(available_from(alice_jid))
    alice.send_presence(pto=carol.boundjid.full, ptype="unavailable")
    await carol_in.get(kind("unavailable", alice_jid))
    alice.send_presence(ptype="unavailable")
    await sync(alice)
    await carol_in.nothing(kind("unavailable", alice_jid))


async def test_invalid_presence_gets_bad_request(server: RunningServer) -> None:
    alice_jid = await server.add_user("alice")
    alice, alice_in = await connect(server, alice_jid)
    send(alice, "<presence><priority>300</priority></presence>")
    err = await alice_in.get(lambda p: p["type"] == "error")
    assert condition_of(err) == "bad-request"
    send(alice, "<presence type='dance'/>")
    err = await alice_in.get(lambda p: p["type"] == "error")
    assert condition_of(err) == "bad-request"
    send(alice, "<presence type='available'/>")
    err = await alice_in.get(lambda p: p["type"] == "error")
    assert condition_of(err) == "bad-request"


async def test_priority_is_kept(server: RunningServer) -> None:
    alice_jid = await server.add_user("alice")
    alice, _ = await connect(server, alice_jid, ppriority=5)
    session = server.server.sessions.get(Jid.parse(alice.boundjid.full))
    assert session is not None
    assert session.available
    assert session.priority == 5
    alice.send_presence(ptype="unavailable")
    await sync(alice)
    assert not session.available


async def test_probe_from_non_subscriber_gets_unsubscribed(server: RunningServer) -> None:
    alice_jid, bob_jid = await server.add_user("alice"), await server.add_user("bob")
    nobody = f"nobody@{DOMAIN}"
    # Alice's roster wrongly claims subscriptions (as after a contact server lost state).
    for contact in (bob_jid, nobody):
        await server.server.store.rosters.put_item(
            Jid.parse(alice_jid), RosterItem(jid=Jid.parse(contact), subscription=Subscription.TO)
        )
    alice, alice_in = await connect(server, alice_jid)
    await connect(server, bob_jid)
    for target in (bob_jid, nobody):
        send(alice, f"<presence to='{target}' type='probe'/>")
        # §4.3.2: "unsubscribed", the same whether or not the account exists (§8.5.1),
        # which ends the subscription alice's server believed in.
        await alice_in.get(kind("unsubscribed", target))
        assert sub_of(await stored(server, alice_jid, target)) == ("none", False, False)
    await alice_in.nothing(available_from(bob_jid))


# --- persistence --------------------------------------------------------------------------
async def test_roster_and_requests_survive_restart(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        alice_jid, bob_jid = await server.add_user("alice"), await server.add_user("bob")
        carol_jid = await server.add_user("carol")
        alice, alice_in = await connect(server, alice_jid)
        bob, bob_in = await connect(server, bob_jid)
        alice.send_presence(pto=bob_jid, ptype="subscribe")
        await bob_in.get(kind("subscribe", alice_jid))
        bob.send_presence(pto=alice_jid, ptype="subscribed")
        await alice_in.get(kind("subscribed", bob_jid))
        carol, _ = await connect(server, carol_jid)
        carol.send_presence(pto=alice_jid, ptype="subscribe")
        await alice_in.get(kind("subscribe", carol_jid))

    async with running_server(tmp_path) as server:
        bob, _ = await connect(server, bob_jid, pstatus="back")
        alice = await server.client(alice_jid, start=False, setup=manual)
        alice_in = Inbox(alice, "presence")
        roster = await alice.get_roster()
        items = {
            el.get("jid"): el.get("subscription")
            for el in roster.xml.iter("{jabber:iq:roster}item")
        }
        assert items == {bob_jid: "to"}
        alice.send_presence()
        await alice_in.get(kind("subscribe", carol_jid))
        assert (await alice_in.get(available_from(bob_jid)))["status"] == "back"
