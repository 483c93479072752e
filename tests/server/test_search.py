"""XEP-0055: Jabber Search of the corporate directory on `directory.localhost`, from slixmpp
clients: disco, the search form, searches with data forms and legacy fields, the
`reachable` flag against the partner table, and bad queries."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import slixmpp
from slixmpp.exceptions import IqError

from imedge.directory.model import AttributeMapping, DirectoryEntry, LdapSource, PeerServer
from imedge.directory.plan import plan_sync, sync_report
from imedge.features.search import MAX_RESULTS, Attr, Person, Query, parse_query
from imedge.policy import GlobalSettings, Partner
from imedge.protocol.element import Element
from tests.helpers import Inbox, RunningServer, running_server

SERVICE = "directory.localhost"
SEARCH = "jabber:iq:search"
DATA = "jabber:x:data"
PARTNERS = (
    Partner(name="OCS", domains=("ocs.example",)),
    Partner(name="Closed", domains=("closed.example",), allowed=False),
)


async def seed(rs: RunningServer, name: str, domain: str, people: list[dict[str, str]]) -> None:
    """A peer server with an anonymous LDAP bind (no secret to encrypt) and its people."""
    directory = rs.server.store.directory
    peer = await directory.add_peer_server(
        PeerServer(
            name=name,
            domains=(domain,),
            ldap=LdapSource(url="ldap://ldap.invalid", base_dn="dc=x"),
            mapping=AttributeMapping(im_address="mail"),
        ),
        "test",
    )
    assert peer.id is not None
    entries = [
        DirectoryEntry(
            peer_server_id=peer.id,
            im_address=f"{p['uid']}@{domain}",
            dn=f"uid={p['uid']},dc=x",
            **{k: v for k, v in p.items() if k != "uid"},  # type: ignore[arg-type]
        )
        for p in people
    ]
    plan = plan_sync([], entries)
    await directory.apply_plan(
        peer.id, plan, sync_report(peer.id, started=1, finished=2, plan=plan)
    )


@pytest.fixture
async def rs(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path, partners=PARTNERS) as server:
        await seed(
            server,
            "OCS",
            "ocs.example",
            [
                {
                    "uid": "john_smith",
                    "display_name": "John Smith",
                    "email": "john.smith@corp.example",
                    "department": "Sales",
                    "title": "Account manager",
                },
                {
                    "uid": "jane_doe",
                    "display_name": "Jane Doe",
                    "email": "jane.doe@corp.example",
                    "department": "Engineering",
                },
            ],
        )
        await seed(
            server,
            "Closed",
            "closed.example",
            [{"uid": "sam", "display_name": "Sam Smith", "department": "Sales"}],
        )
        await server.add_user("alice")
        await server.add_user("smithy")
        yield server


async def client(rs: RunningServer) -> slixmpp.ClientXMPP:
    return await rs.client("alice@localhost", plugins=("xep_0030", "xep_0004", "xep_0055"))


async def form_search(c: slixmpp.ClientXMPP, **fields: str) -> list[dict[str, Any]]:
    iq = c.plugin["xep_0055"].make_search_iq(ito=SERVICE)
    for var, value in fields.items():
        iq["search"]["form"].add_field(var, value=value)
    res = await iq.send(timeout=5)
    form = res["search"]["form"]
    assert form["type"] == "result"
    assert set(form.get_reported()) == {"jid", "name", "email", "department", "title", "reachable"}
    return [dict(item) for item in form["items"]]


async def raw_iq(c: slixmpp.ClientXMPP, type_: str, payload: str) -> Any:
    iq = c.make_iq(ito=SERVICE, itype=type_)
    iq.append(ET.fromstring(payload))
    return await iq.send(timeout=5)


def jids(items: list[dict[str, Any]]) -> list[str]:
    return [str(i["jid"]) for i in items]


# --- disco ------------------------------------------------------------------------------


async def test_the_server_lists_the_directory_service(rs: RunningServer) -> None:
    c = await client(rs)
    items = await c.plugin["xep_0030"].get_items(jid="localhost", timeout=5)
    assert (SERVICE, None, "Corporate directory") in items["disco_items"]["items"]


async def test_the_service_says_what_it_is(rs: RunningServer) -> None:
    c = await client(rs)
    info = await c.plugin["xep_0030"].get_info(jid=SERVICE, timeout=5)
    assert ("directory", "user", None, "Corporate directory") in info["disco_info"]["identities"]
    assert {SEARCH, DATA} <= set(info["disco_info"]["features"])


# --- the form ---------------------------------------------------------------------------


async def test_the_search_form_has_legacy_fields_and_a_data_form(rs: RunningServer) -> None:
    c = await client(rs)
    res = await raw_iq(c, "get", f"<query xmlns='{SEARCH}'/>")
    query = res.xml.find(f"{{{SEARCH}}}query")
    assert f"at most {MAX_RESULTS}" in query.findtext(f"{{{SEARCH}}}instructions").lower()
    for legacy in ("first", "last", "nick", "email"):
        assert query.find(f"{{{SEARCH}}}{legacy}") is not None
    form = res["search"]["form"]
    assert form["type"] == "form"
    fields = form.get_fields()
    assert fields["FORM_TYPE"]["value"] in (SEARCH, [SEARCH])  # hidden: slixmpp gives a list
    assert {"name", "email", "department", "im"} <= set(fields)


# --- searching --------------------------------------------------------------------------


async def test_search_by_name_finds_synced_people_with_their_details(rs: RunningServer) -> None:
    c = await client(rs)
    items = await form_search(c, name="john")
    assert items == [
        {
            "jid": "john_smith@ocs.example",
            "name": "John Smith",
            "email": "john.smith@corp.example",
            "department": "Sales",
            "title": "Account manager",
            "reachable": "yes",
        }
    ]


async def test_search_by_email_and_department(rs: RunningServer) -> None:
    c = await client(rs)
    assert jids(await form_search(c, email="JANE.DOE@")) == ["jane_doe@ocs.example"]
    assert sorted(jids(await form_search(c, department="sales"))) == [
        "john_smith@ocs.example",
        "sam@closed.example",
    ]
    # Every filled field must match.
    assert jids(await form_search(c, department="sales", name="sam")) == ["sam@closed.example"]
    assert await form_search(c, department="sales", email="jane") == []


async def test_search_finds_local_users_first(rs: RunningServer) -> None:
    c = await client(rs)
    items = await form_search(c, name="smith")
    assert jids(items) == ["smithy@localhost", "john_smith@ocs.example", "sam@closed.example"]
    assert items[0]["reachable"] == "yes"
    assert jids(await form_search(c, im="alice@")) == ["alice@localhost"]


async def test_reachable_follows_the_partner_table(rs: RunningServer) -> None:
    c = await client(rs)
    flags = {i["jid"]: i["reachable"] for i in await form_search(c, department="sales")}
    assert flags == {"john_smith@ocs.example": "yes", "sam@closed.example": "no"}

    # Federation switched off: nobody outside is reachable.
    await rs.server.store.federation.save_settings(GlobalSettings(federation=False), "test")
    flags = {i["jid"]: i["reachable"] for i in await form_search(c, department="sales")}
    assert flags == {"john_smith@ocs.example": "no", "sam@closed.example": "no"}


async def test_legacy_search_answers_with_legacy_items(rs: RunningServer) -> None:
    c = await client(rs)
    res = await raw_iq(c, "set", f"<query xmlns='{SEARCH}'><last>doe</last></query>")
    items = res.xml.find(f"{{{SEARCH}}}query").findall(f"{{{SEARCH}}}item")
    assert [i.get("jid") for i in items] == ["jane_doe@ocs.example"]
    item = items[0]
    assert [item.findtext(f"{{{SEARCH}}}{f}") for f in ("first", "last", "nick", "email")] == [
        "Jane",
        "Doe",
        "jane_doe",
        "jane.doe@corp.example",
    ]


async def test_results_are_limited(tmp_path: Path) -> None:
    async with running_server(tmp_path, partners=PARTNERS) as rs:
        many = [{"uid": f"p{n:03}", "display_name": f"Person {n}"} for n in range(MAX_RESULTS + 5)]
        await seed(rs, "OCS", "ocs.example", many)
        await rs.add_user("alice")
        c = await client(rs)
        iq = c.plugin["xep_0055"].make_search_iq(ito=SERVICE)
        iq["search"]["form"].add_field("name", value="person")
        form = (await iq.send(timeout=5))["search"]["form"]
        assert len(form["items"]) == MAX_RESULTS
        assert str(MAX_RESULTS) in form["title"]


# --- bad queries ------------------------------------------------------------------------


async def errors_of(c: slixmpp.ClientXMPP, payload: str) -> str:
    with pytest.raises(IqError) as err:
        await raw_iq(c, "set", payload)
    return str(err.value.iq["error"]["condition"])


async def test_an_empty_query_is_not_acceptable(rs: RunningServer) -> None:
    c = await client(rs)
    assert await errors_of(c, f"<query xmlns='{SEARCH}'><first/><email> </email></query>") == (
        "not-acceptable"
    )
    empty_form = (
        f"<query xmlns='{SEARCH}'><x xmlns='{DATA}' type='submit'>"
        f"<field var='FORM_TYPE'><value>{SEARCH}</value></field>"
        "<field var='name'><value></value></field></x></query>"
    )
    assert await errors_of(c, empty_form) == "not-acceptable"


async def test_unknown_fields_are_bad_requests(rs: RunningServer) -> None:
    c = await client(rs)
    assert await errors_of(c, f"<query xmlns='{SEARCH}'><phone>1</phone></query>") == (
        "bad-request"
    )
    unknown = (
        f"<query xmlns='{SEARCH}'><x xmlns='{DATA}' type='submit'>"
        "<field var='shoe_size'><value>42</value></field></x></query>"
    )
    assert await errors_of(c, unknown) == "bad-request"
    other_form = (
        f"<query xmlns='{SEARCH}'><x xmlns='{DATA}' type='submit'>"
        "<field var='FORM_TYPE'><value>urn:other</value></field>"
        "<field var='name'><value>john</value></field></x></query>"
    )
    assert await errors_of(c, other_form) == "bad-request"


async def test_an_unsupported_iq_is_service_unavailable(rs: RunningServer) -> None:
    c = await client(rs)
    with pytest.raises(IqError) as err:
        await raw_iq(c, "get", "<query xmlns='jabber:iq:version'/>")
    assert err.value.iq["error"]["condition"] == "service-unavailable"


async def test_a_message_to_the_service_bounces(rs: RunningServer) -> None:
    c = await client(rs)
    inbox = Inbox(c, "message_error")
    c.send_message(mto=SERVICE, mbody="hello?", mtype="chat")
    error = await inbox.get()
    assert error["from"] == SERVICE
    assert error["error"]["condition"] == "service-unavailable"


# --- pure parts -------------------------------------------------------------------------


def test_parse_prefers_the_form_over_legacy_fields() -> None:
    q = Element("query", SEARCH)
    q.sub("first", text="ignored")
    x = q.sub("x", DATA, {"type": "submit"})
    x.sub("field", attrs={"var": "department"}).sub("value", text=" Sales ")
    assert parse_query(q) == Query(((Attr.DEPARTMENT, "Sales"),), legacy=False)


def test_a_person_without_a_name_matches_by_localpart() -> None:
    alice = Person(jid="alice@localhost")
    assert alice.matches(Query(((Attr.NAME, "ALI"),), legacy=True))
    assert not alice.matches(Query(((Attr.EMAIL, "ali"),), legacy=True))
