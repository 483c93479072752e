"""XEP-0191: Blocking Command, over real sockets with slixmpp (plus the pure JID matching)."""

from __future__ import annotations

from typing import Any

import pytest
import slixmpp
from slixmpp.exceptions import IqError

from imedge.domain.jid import Jid
from imedge.domain.roster import RosterItem, Subscription
from imedge.features.blocking import BlockList, matches
from tests.helpers import DOMAIN, Inbox, RunningServer, wait_for

BLOCKING = "urn:xmpp:blocking"
BLOCKING_ERRORS = "urn:xmpp:blocking:errors"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
PLUGINS = ("xep_0030", "xep_0199", "xep_0191")


def j(text: str) -> Jid:
    return Jid.parse(text)


# --- pure: JID matching (XEP-0191 §4, XEP-0016 §2.1) -------------------------------------
@pytest.mark.parametrize(
    ("item", "jid", "expected"),
    [
        ("bob@example.net", "bob@example.net", True),
        ("bob@example.net", "bob@example.net/phone", True),
        ("bob@example.net/phone", "bob@example.net/phone", True),
        ("bob@example.net/phone", "bob@example.net/laptop", False),
        ("bob@example.net/phone", "bob@example.net", False),
        ("example.net", "bob@example.net/phone", True),
        ("example.net", "example.net", True),
        ("example.net", "bob@other.example", False),
        ("example.net/res", "example.net/res", True),
        ("example.net/res", "bob@example.net/res", False),
        ("carol@example.net", "bob@example.net", False),
    ],
)
def test_matching(item: str, jid: str, expected: bool) -> None:
    assert matches(j(item), j(jid)) is expected
    assert BlockList(frozenset({j(item)})).blocks(j(jid)) is expected


def test_empty_list_blocks_nothing() -> None:
    assert not BlockList(frozenset()).blocks(j("bob@example.net"))


# --- helpers ------------------------------------------------------------------------------
async def blocked_jids(client: slixmpp.ClientXMPP) -> set[str]:
    return {str(x) for x in await client.plugin["xep_0191"].get_blocked_jids()}


def condition_of(stanza: Any) -> str | None:
    err = stanza.xml.find("{jabber:client}error")
    if err is None:
        return None
    for child in err:
        if child.tag.startswith("{" + STANZAS + "}") and not child.tag.endswith("}text"):
            return str(child.tag.split("}", 1)[1])
    return None


def has_blocked_condition(stanza: Any) -> bool:
    err = stanza.xml.find("{jabber:client}error")
    return err is not None and err.find(f"{{{BLOCKING_ERRORS}}}blocked") is not None


async def iq_error(client: slixmpp.ClientXMPP, payload: str) -> str | None:
    iq = client.make_iq_set()
    iq.append(slixmpp.xmlstream.ET.fromstring(payload))
    with pytest.raises(IqError) as info:
        await iq.send(timeout=5)
    return condition_of(info.value.iq)


async def sync(client: slixmpp.ClientXMPP) -> None:
    await client.plugin["xep_0199"].send_ping(DOMAIN, timeout=5)


# --- the block list -----------------------------------------------------------------------
async def test_block_unblock_and_unblock_all(server: RunningServer) -> None:
    alice = await server.client(await server.add_user("alice"), plugins=PLUGINS)
    assert await blocked_jids(alice) == set()
    await alice.plugin["xep_0191"].block(["bob@localhost", "example.net", "carol@example.org/x"])
    assert await blocked_jids(alice) == {"bob@localhost", "example.net", "carol@example.org/x"}
    await alice.plugin["xep_0191"].unblock(["example.net"])
    assert await blocked_jids(alice) == {"bob@localhost", "carol@example.org/x"}
    # XEP-0191 §3.5: an empty <unblock/> unblocks everyone.
    iq = alice.make_iq_set()
    iq.enable("unblock")
    await iq.send(timeout=5)
    assert await blocked_jids(alice) == set()


async def test_invalid_requests(server: RunningServer) -> None:
    alice = await server.client(await server.add_user("alice"), plugins=PLUGINS)
    assert await iq_error(alice, f"<block xmlns='{BLOCKING}'/>") == "bad-request"
    assert await iq_error(alice, f"<block xmlns='{BLOCKING}'><item/></block>") == "bad-request"
    bad = f"<block xmlns='{BLOCKING}'><item jid='a@b@c'/></block>"
    assert await iq_error(alice, bad) == "jid-malformed"
    assert await blocked_jids(alice) == set()


async def test_changes_are_pushed_to_resources_that_fetched_the_list(server: RunningServer) -> None:
    user = await server.add_user("alice")
    one = await server.client(user, plugins=PLUGINS)
    two = await server.client(user, plugins=PLUGINS)
    three = await server.client(user, plugins=PLUGINS)
    pushes_two = Inbox(two, "blocked")
    unpushes_two = Inbox(two, "unblocked")
    pushes_three = Inbox(three, "blocked")
    await blocked_jids(one)
    await blocked_jids(two)  # three never asks: XEP-0191 §3.3 pushes only to those who did
    await one.plugin["xep_0191"].block("bob@localhost")
    push = await pushes_two.get()
    assert [str(i["jid"]) for i in push["block"]] == ["bob@localhost"]
    await one.plugin["xep_0191"].unblock("bob@localhost")
    push = await unpushes_two.get()
    assert [str(i["jid"]) for i in push["unblock"]] == ["bob@localhost"]
    await pushes_three.nothing()


# --- what blocking does to stanzas ----------------------------------------------------------
async def test_message_from_blocked_user_is_refused_as_unavailable(server: RunningServer) -> None:
    alice = await server.client(await server.add_user("alice"), plugins=PLUGINS)
    bob = await server.client(await server.add_user("bob"), plugins=PLUGINS)
    inbox = Inbox(alice, "message")
    errors = Inbox(bob, "message_error")
    await alice.plugin["xep_0191"].block("bob@localhost")
    bob.send_message(mto="alice@localhost", mbody="hello?", mtype="chat")
    bob.send_message(mto=str(alice.boundjid), mbody="hello again?", mtype="chat")
    for _ in range(2):
        err = await errors.get()
        # XEP-0191 §3.5: what an unavailable user would produce; the block is not revealed.
        assert condition_of(err) == "service-unavailable"
        assert not has_blocked_condition(err)
    await inbox.nothing()


async def test_iq_from_blocked_user_is_refused(server: RunningServer) -> None:
    alice = await server.client(await server.add_user("alice"), plugins=PLUGINS)
    bob = await server.client(await server.add_user("bob"), plugins=PLUGINS)
    await alice.plugin["xep_0191"].block("localhost")  # a domain item covers every user there
    with pytest.raises(IqError) as info:
        await bob.plugin["xep_0199"].send_ping(str(alice.boundjid), timeout=5)
    assert condition_of(info.value.iq) == "service-unavailable"


async def test_presence_from_blocked_user_is_dropped(server: RunningServer) -> None:
    alice = await server.client(await server.add_user("alice"), plugins=PLUGINS)
    bob = await server.client(await server.add_user("bob"), plugins=PLUGINS)
    presences = Inbox(alice, "presence")
    bob_errors = Inbox(bob, "presence_error")
    await alice.plugin["xep_0191"].block("bob@localhost")
    bob.send_presence(pto=str(alice.boundjid), pstatus="directed")
    bob.send_presence(pto="alice@localhost", ptype="subscribe")
    await sync(bob)
    await presences.nothing(lambda p: p["from"].bare == "bob@localhost")
    await bob_errors.nothing()  # no answer at all (XEP-0191 §3.5)


async def test_user_cannot_send_to_blocked_entity(server: RunningServer) -> None:
    alice = await server.client(await server.add_user("alice"), plugins=PLUGINS)
    bob = await server.client(await server.add_user("bob"), plugins=PLUGINS)
    bob_inbox = Inbox(bob, "message")
    errors = Inbox(alice, "message_error")
    presence_errors = Inbox(alice, "presence_error")
    await alice.plugin["xep_0191"].block(["bob@localhost", "remote.example"])
    alice.send_message(mto="bob@localhost", mbody="you are blocked", mtype="chat")
    alice.send_message(mto="someone@remote.example", mbody="so are you", mtype="chat")
    alice.send_presence(pto="bob@localhost/x", pstatus="directed")
    for _ in range(2):
        err = await errors.get()
        # XEP-0191 §3.6: not-acceptable, with the blocking application condition.
        assert condition_of(err) == "not-acceptable"
        assert has_blocked_condition(err)
    err = await presence_errors.get()
    assert condition_of(err) == "not-acceptable"
    with pytest.raises(IqError) as info:
        await alice.plugin["xep_0199"].send_ping(str(bob.boundjid), timeout=5)
    assert condition_of(info.value.iq) == "not-acceptable"
    await bob_inbox.nothing()


async def test_offline_message_from_blocked_contact_is_not_stored(server: RunningServer) -> None:
    alice_jid = await server.add_user("alice")
    alice = await server.client(alice_jid, plugins=PLUGINS)
    await alice.plugin["xep_0191"].block("bob@localhost")
    alice.disconnect()
    await wait_for(lambda: not server.server.sessions.sessions_of(j(alice_jid)))
    bob = await server.client(await server.add_user("bob"), plugins=PLUGINS)
    errors = Inbox(bob, "message_error")
    bob.send_message(mto=alice_jid, mbody="are you there?", mtype="chat")
    assert condition_of(await errors.get()) == "service-unavailable"
    assert await server.server.store.offline.count(j(alice_jid)) == 0


async def test_blocking_a_subscriber_sends_unavailable_then_presence_again(
    server: RunningServer,
) -> None:
    alice_jid = await server.add_user("alice")
    bob_jid = await server.add_user("bob")
    rosters = server.server.store.rosters
    await rosters.put_item(j(alice_jid), RosterItem(j(bob_jid), subscription=Subscription.BOTH))
    await rosters.put_item(j(bob_jid), RosterItem(j(alice_jid), subscription=Subscription.BOTH))
    bob = await server.client(bob_jid, plugins=PLUGINS)
    available = Inbox(bob, "presence_available")
    unavailable = Inbox(bob, "presence_unavailable")
    alice = await server.client(alice_jid, plugins=PLUGINS)
    from_alice = lambda p: p["from"] == alice.boundjid  # noqa: E731
    await available.get(from_alice)
    # XEP-0191 §3.3: the blocked subscriber sees the user go offline...
    await alice.plugin["xep_0191"].block(bob_jid)
    await unavailable.get(from_alice)
    # ...and later changes of presence do not reach it.
    alice.send_presence(pstatus="busy")
    await sync(alice)
    await available.nothing(from_alice)
    # §3.4: unblocked, it gets the current presence again.
    await alice.plugin["xep_0191"].unblock(bob_jid)
    presence = await available.get(from_alice)
    assert presence["status"] == "busy"
