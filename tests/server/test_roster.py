"""RFC 6121 §2: roster get, set, remove, pushes and versioning, over real sockets."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
import slixmpp
from slixmpp.exceptions import IqError

from imedge.domain.jid import Jid
from imedge.domain.roster import RosterItem, Subscription
from imedge.features.roster import item_element
from tests.helpers import Inbox, RunningServer

ROSTER = "jabber:iq:roster"
Q = "{" + ROSTER + "}"


async def roster_iq(client: slixmpp.ClientXMPP, type_: str, query: str) -> Any:
    """Send a roster IQ with exactly the `query` XML given; return the result stanza."""
    iq = client.Iq()
    iq["type"] = type_
    iq.xml.append(ET.fromstring(query))
    return await iq.send(timeout=5)


async def set_error(client: slixmpp.ClientXMPP, query: str) -> str:
    with pytest.raises(IqError) as err:
        await roster_iq(client, "set", query)
    return str(err.value.iq["error"]["condition"])


def items_of(result: Any) -> dict[str, ET.Element]:
    query = result.xml.find(Q + "query")
    assert query is not None
    return {el.get("jid", ""): el for el in query.findall(Q + "item")}


# --- pure ---------------------------------------------------------------------------------
def test_item_element_shows_ask_approved_and_groups() -> None:
    item = RosterItem(
        jid=Jid.parse("bob@example.net"),
        name="Bob",
        groups=("Friends", "Work"),
        pending_out=True,
        approved=True,
    )
    el = item_element(item)
    assert el.attrs == {
        "jid": "bob@example.net",
        "name": "Bob",
        "subscription": "none",
        "ask": "subscribe",
        "approved": "true",
    }
    assert [g.text for g in el.find_all("group")] == ["Friends", "Work"]
    # §2.1.2.2: no ask once subscribed; §3.4: no approved once the contact is subscribed.
    both = RosterItem(jid=item.jid, subscription=Subscription.BOTH, pending_out=True, approved=True)
    assert item_element(both).attrs == {"jid": "bob@example.net", "subscription": "both"}
    assert item_element(item, removed=True).attrs == {
        "jid": "bob@example.net",
        "subscription": "remove",
    }


# --- end to end ---------------------------------------------------------------------------
async def test_roster_get_empty(server: RunningServer) -> None:
    alice = await server.client(await server.add_user("alice"), start=False)
    result = await roster_iq(alice, "get", f"<query xmlns='{ROSTER}'/>")
    assert items_of(result) == {}
    assert result["to"].full == alice.boundjid.full


async def test_set_pushes_to_interested_resources_and_remove(server: RunningServer) -> None:
    alice = await server.add_user("alice")
    await server.add_user("bob")
    one = await server.client(alice + "/one")
    two = await server.client(alice + "/two")
    # A resource that never asked for the roster gets no pushes (§2.1.6).
    three = await server.client(alice + "/three", start=False)
    pushes_two = Inbox(two, "roster_update")
    pushes_three = Inbox(three, "roster_update")

    await roster_iq(
        one,
        "set",
        f"<query xmlns='{ROSTER}'><item jid='bob@localhost' name='Bob'>"
        "<group>Friends</group></item></query>",
    )
    push = await pushes_two.get()
    assert push["type"] == "set"
    assert not push["from"]
    assert push.xml.find(Q + "query").get("ver")
    assert two.client_roster["bob@localhost"]["name"] == "Bob"
    assert two.client_roster["bob@localhost"]["groups"] == ["Friends"]
    assert two.client_roster["bob@localhost"]["subscription"] == "none"

    result = await roster_iq(one, "get", f"<query xmlns='{ROSTER}'/>")
    bob = items_of(result)["bob@localhost"]
    assert bob.get("name") == "Bob"
    assert bob.get("subscription") == "none"
    assert [g.text for g in bob.findall(Q + "group")] == ["Friends"]

    # An update keeps the item and changes name and groups.
    await roster_iq(
        one,
        "set",
        f"<query xmlns='{ROSTER}'><item jid='bob@localhost' name='Robert'/></query>",
    )
    await pushes_two.get()
    assert two.client_roster["bob@localhost"]["name"] == "Robert"
    assert two.client_roster["bob@localhost"]["groups"] == []

    await roster_iq(
        one,
        "set",
        f"<query xmlns='{ROSTER}'><item jid='bob@localhost' subscription='remove'/></query>",
    )
    push = await pushes_two.get()
    item = push.xml.find(Q + "query").find(Q + "item")
    assert item.get("subscription") == "remove"
    assert items_of(await roster_iq(one, "get", f"<query xmlns='{ROSTER}'/>")) == {}
    await pushes_three.nothing()


async def test_versioning(server: RunningServer) -> None:
    alice = await server.client(await server.add_user("alice"), start=False)
    first = await roster_iq(alice, "get", f"<query xmlns='{ROSTER}' ver=''/>")
    ver = first.xml.find(Q + "query").get("ver")
    assert ver is not None

    # §2.6.3: the cached version is current: an empty result.
    same = await roster_iq(alice, "get", f"<query xmlns='{ROSTER}' ver='{ver}'/>")
    assert same.xml.find(Q + "query") is None

    await roster_iq(alice, "set", f"<query xmlns='{ROSTER}'><item jid='bob@localhost'/></query>")
    changed = await roster_iq(alice, "get", f"<query xmlns='{ROSTER}' ver='{ver}'/>")
    new_ver = changed.xml.find(Q + "query").get("ver")
    assert new_ver not in (None, ver)
    assert list(items_of(changed)) == ["bob@localhost"]
    current = await roster_iq(alice, "get", f"<query xmlns='{ROSTER}' ver='{new_ver}'/>")
    assert current.xml.find(Q + "query") is None


@pytest.mark.parametrize(
    ("query", "condition"),
    [
        (
            f"<query xmlns='{ROSTER}'><item jid='a@localhost'/><item jid='b@localhost'/></query>",
            "bad-request",
        ),
        (f"<query xmlns='{ROSTER}'/>", "bad-request"),
        (f"<query xmlns='{ROSTER}'><item name='no jid'/></query>", "bad-request"),
        (f"<query xmlns='{ROSTER}'><item jid='a@b@localhost'/></query>", "jid-malformed"),
        (f"<query xmlns='{ROSTER}'><item jid='bob@localhost/res'/></query>", "bad-request"),
        (f"<query xmlns='{ROSTER}'><item jid='alice@localhost'/></query>", "not-allowed"),
        (
            f"<query xmlns='{ROSTER}'><item jid='bob@localhost'><group/></item></query>",
            "not-acceptable",
        ),
        (
            f"<query xmlns='{ROSTER}'><item jid='bob@localhost'>"
            "<group>A</group><group>A</group></item></query>",
            "bad-request",
        ),
        (
            f"<query xmlns='{ROSTER}'><item jid='bob@localhost' name='{'x' * 2000}'/></query>",
            "not-acceptable",
        ),
        (
            f"<query xmlns='{ROSTER}'><item jid='nobody@localhost' subscription='remove'/></query>",
            "item-not-found",
        ),
    ],
)
async def test_invalid_set(server: RunningServer, query: str, condition: str) -> None:
    alice = await server.client(await server.add_user("alice"), start=False)
    assert await set_error(alice, query) == condition
    assert items_of(await roster_iq(alice, "get", f"<query xmlns='{ROSTER}'/>")) == {}


async def test_set_ignores_subscription_ask_and_approved(server: RunningServer) -> None:
    alice = await server.client(await server.add_user("alice"), start=False)
    await roster_iq(
        alice,
        "set",
        f"<query xmlns='{ROSTER}'><item jid='bob@localhost' subscription='both' "
        "ask='subscribe' approved='true'/></query>",
    )
    bob = items_of(await roster_iq(alice, "get", f"<query xmlns='{ROSTER}'/>"))["bob@localhost"]
    assert bob.attrib == {"jid": "bob@localhost", "subscription": "none"}
