"""FEDERATION.md §The partner table, §Global settings, §Outbound over real s2s, live.

What an administrator changes through `FederationService` acts on live traffic with a
real Prosody partner (pa.test, strong trust): a public provider needs public IM rights
and a licence; blocking a partner closes its streams at once and refuses its traffic both
ways until it is unblocked, with its configuration intact; switching federation off does
the same for everyone; open federation admits an unlisted domain with `contacts_only`
semantics, but never a blocked domain. Refusals are audited, counted and explainable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from imedge.policy import Filter, StanzaKind, Verdict
from imedge.services.federation import FederationError
from tests.helpers import Inbox, RunningServer, wait_for
from tests.interop.policy_support import (
    PA,
    Sent,
    World,
    add_contact,
    closed_inbound,
    decisions,
    from_,
    got_message,
    home_server,
    local_client,
    partner,
    streams,
)
from tests.peers.dns import DnsStub
from tests.peers.pki import PrivateCA
from tests.peers.prosody import Prosody

pytestmark = pytest.mark.interop

NAME = "pa partner"


@pytest.fixture
async def world(tmp_path: Path, peer_pki: PrivateCA, peer_dns: DnsStub) -> AsyncIterator[World]:
    w = World(tmp_path, peer_pki, peer_dns)
    try:
        yield w
    finally:
        await w.close()


async def audited(rs: RunningServer, **query: str) -> list[tuple[str, str, str, str]]:
    """(direction, kind, reason, recipient) of the audit entries matching `query`."""
    await rs.server.gate.flush_audit()
    entries = await rs.server.store.audit.query(limit=100, **query)  # type: ignore[arg-type]
    return sorted((e.direction, e.kind, e.reason, e.recipient) for e in entries)


async def chat_both_ways(alice: Sent, alice_jid: str, s: Sent, s_jid: str, tag: str) -> None:
    s.message(alice_jid, f"{tag}: to alice")
    await got_message(alice.messages, f"{tag}: to alice", s_jid)
    alice.message(s_jid, f"{tag}: to s")
    await got_message(s.messages, f"{tag}: to s", alice_jid)


async def refused_both_ways(
    home: RunningServer, peer: Prosody, alice: Sent, alice_jid: str, s: Sent, s_jid: str, tag: str
) -> str:
    """Outbound: `not-allowed` with a text for the user (returned). Inbound: Prosody's new
    stream is closed with `<policy-violation/>`, and nothing reaches alice."""
    condition, text = await alice.error_for(alice.message(s_jid, f"{tag}: out"))
    assert condition == "not-allowed"
    assert text
    refused_before = len(closed_inbound(home, PA))
    mark = peer.log_mark()
    s.message(alice_jid, f"{tag}: in")
    await peer.wait_log("policy-violation", since=mark, timeout=15)
    await wait_for(lambda: len(closed_inbound(home, PA)) > refused_before, timeout=15)
    refused = closed_inbound(home, PA)[-1]
    assert refused.closed and refused.closed.startswith("stream error policy-violation")
    assert PA not in refused.authenticated
    await alice.messages.nothing(lambda m: m["body"] == f"{tag}: in", wait=0.3)
    return text


async def test_public_provider_needs_public_im_and_a_licence(world: World) -> None:
    peer = world.prosody(PA)
    row = partner(NAME, PA, Filter.ALL, public=True)
    async with home_server(world, (row,)) as home:
        pat, pia = await home.add_user("pat"), await home.add_user("pia")
        service = home.server.federation
        remote = await peer.new_user("remote")
        r = Sent(await world.login(peer, remote))
        p = Sent(await local_client(home, pat))

        # Without public IM rights: refused out with a readable reason, refused in.
        condition, text = await p.error_for(p.message(remote, "hello public"))
        assert condition == "not-allowed"
        assert text and "public IM" in text and PA in text
        condition, _ = await r.error_for(r.message(pat, "hello pat"))
        assert condition == "service-unavailable"
        r.subscribe(pat)
        await r.unsubscribed.get(from_(pat), timeout=15)
        assert await audited(home, partner=NAME) == [
            ("in", "message", "no_public_im", pat),
            ("in", "subscribe", "no_public_im", pat),
            ("out", "message", "no_public_im", remote),
        ]
        assert decisions(home, NAME, "reject", "no_public_im") == 3
        explained = await service.explain(pat, remote, StanzaKind.MESSAGE)
        assert (explained.verdict, explained.reason) == (Verdict.REJECT, "no_public_im")

        # One licence, granted to pat: both ways work.
        with pytest.raises(FederationError, match="licen"):
            await service.update_user(pat, {"public_im": True}, "test")  # 0 licences
        await service.update_settings({"public_im_licences": 1}, "test")
        await service.update_user(pat, {"public_im": True}, "test")
        assert (await service.explain(pat, remote, StanzaKind.MESSAGE)).verdict is Verdict.ACCEPT
        await chat_both_ways(p, pat, r, remote, "licensed")

        # A second user past the licence count is refused, with an error that says so.
        with pytest.raises(FederationError, match="licence is in use") as refused:
            await service.update_user(pia, {"public_im": True}, "test")
        assert any(problem.field == "public_im" for problem in refused.value.problems)
        assert not (await service.user_settings(pia)).public_im
        explained = await service.explain(pia, remote, StanzaKind.MESSAGE)
        assert (explained.verdict, explained.reason) == (Verdict.REJECT, "no_public_im")


async def test_blocking_a_partner_mid_conversation(world: World) -> None:
    peer = world.prosody(PA)
    async with home_server(world, (partner(NAME, PA, Filter.ALL, comment="our friends"),)) as home:
        service = home.server.federation
        alice = await home.add_user("alice")
        remote = await peer.new_user("remote")
        a = Sent(await local_client(home, alice))
        s = Sent(await world.login(peer, remote))
        await chat_both_ways(a, alice, s, remote, "before")
        assert streams(home, PA, "in") and streams(home, PA, "out")
        before = service.find(NAME)

        live = streams(home, PA)
        mark = peer.log_mark()
        await service.block(NAME, "test")
        # Closed at once, both directions; Prosody is told why.
        assert all((info.closed or "").startswith("stream error policy-violation") for info in live)
        await wait_for(lambda: not streams(home, PA), timeout=5)
        log = await peer.wait_log("policy-violation", since=mark, timeout=10)
        assert "blocked" in log
        text = await refused_both_ways(home, peer, a, alice, s, remote, "blocked")
        assert "blocked" in text and PA in text
        audit = await audited(home, partner=NAME)
        assert ("out", "message", "partner_blocked", remote) in audit
        assert ("stream", "stream", "partner_blocked", "home.test") in audit
        assert decisions(home, NAME, "reject", "partner_blocked") >= 2
        explained = await service.explain(alice, remote, StanzaKind.MESSAGE)
        assert (explained.verdict, explained.reason) == (Verdict.REJECT, "partner_blocked")

        # Unblocking restores exactly the old configuration, and traffic flows again.
        await service.unblock(NAME, "test")
        assert service.find(NAME) == before
        assert await home.server.store.federation.get_partner_by_name(NAME) == before
        await chat_both_ways(a, alice, s, remote, "after")


async def test_federation_disabled_then_enabled(world: World) -> None:
    peer = world.prosody(PA)
    async with home_server(world, (partner(NAME, PA, Filter.ALL),)) as home:
        service = home.server.federation
        alice = await home.add_user("alice")
        remote = await peer.new_user("remote")
        a = Sent(await local_client(home, alice))
        s = Sent(await world.login(peer, remote))
        await chat_both_ways(a, alice, s, remote, "on")

        live = home.server.s2s.streams()
        await service.update_settings({"federation": False}, "test")
        assert all((info.closed or "").startswith("stream error policy-violation") for info in live)
        await wait_for(lambda: not home.server.s2s.streams(), timeout=5)
        text = await refused_both_ways(home, peer, a, alice, s, remote, "off")
        assert "turned off" in text
        audit = await audited(home, reason="federation_off")
        assert ("out", "message", "federation_off", remote) in audit
        assert ("stream", "stream", "federation_off", "home.test") in audit
        explained = await service.explain(remote, alice, StanzaKind.MESSAGE)
        assert (explained.verdict, explained.reason) == (Verdict.REJECT, "federation_off")

        await service.update_settings({"federation": True}, "test")
        await chat_both_ways(a, alice, s, remote, "on again")


async def test_open_federation_admits_an_unlisted_domain_as_contacts_only(world: World) -> None:
    peer = world.prosody(PA)
    async with home_server(world, ()) as home:  # pa.test is in no partner row
        service = home.server.federation
        await service.update_settings({"open_federation": True}, "test")
        alice = await home.add_user("alice")
        stranger, friend = await peer.new_user("stranger"), await peer.new_user("friend")
        a = Sent(await local_client(home, alice))
        await add_contact(a.client, friend)
        s = Sent(await world.login(peer, stranger))
        f = Sent(await world.login(peer, friend))

        # A roster contact's messages pass both ways; a stranger's are refused.
        await chat_both_ways(a, alice, f, friend, "open")
        condition, _ = await s.error_for(s.message(alice, "who dis"))
        assert condition == "service-unavailable"
        s.subscribe(alice)
        await s.unsubscribed.get(from_(alice), timeout=15)
        await a.messages.nothing(lambda m: m["body"] == "who dis", wait=0.2)
        label = "(open federation)"
        reason = "unverified_not_on_allow_list"
        assert decisions(home, label, "reject", reason) == 2
        assert await audited(home, reason=reason) == [
            ("in", "message", reason, alice),
            ("in", "subscribe", reason, alice),
        ]
        explained = await service.explain(stranger, alice, StanzaKind.MESSAGE)
        assert explained.verdict is Verdict.REJECT and explained.discovered

        # A blocked domain is refused even under open federation; its streams close.
        await service.update_settings({"blocked_domains": (PA,)}, "test")
        await wait_for(lambda: not streams(home, PA), timeout=5)
        text = await refused_both_ways(home, peer, a, alice, f, friend, "blocked domain")
        assert "blocked" in text and PA in text
        audit = await audited(home, reason="domain_blocked")
        assert ("out", "message", "domain_blocked", friend) in audit
        assert ("stream", "stream", "domain_blocked", "home.test") in audit
        assert decisions(home, "(none)", "reject", "domain_blocked") >= 2
        explained = await service.explain(friend, alice, StanzaKind.MESSAGE)
        assert (explained.verdict, explained.reason) == (Verdict.REJECT, "domain_blocked")


async def test_open_federation_limits_contacts_and_stanza_rate(world: World) -> None:
    """FEDERATION.md §Every decision is explainable: discovered domains get abuse limits."""
    peer = world.prosody(PA)
    async with home_server(world, ()) as home:
        service = home.server.federation
        await service.update_settings(
            {
                "open_federation": True,
                "open_federation_max_contacts": 1,
                "open_federation_stanza_rate": 1.0,
            },
            "test",
        )
        alice = await home.add_user("alice")
        first, second = await peer.new_user("first"), await peer.new_user("second")
        a = Sent(await local_client(home, alice))

        # The cap on contacts at a discovered domain: with one contact there already, a
        # request to a second user is refused with a presence error.
        await add_contact(a.client, first)
        errors = Inbox(a.client, "presence_error")
        a.subscribe(second)
        err = await errors.get(from_(second), timeout=10)
        assert err["error"]["condition"] == "not-allowed"
        assert "contacts" in (err["error"]["text"] or "")
        assert decisions(home, "(open federation)", "reject", "open_federation_contact_limit") == 1

        # The stanza rate of a discovered domain: a burst beyond it is refused, not queued.
        f = Sent(await world.login(peer, first))
        ids = [f.message(alice, f"burst {i}") for i in range(12)]
        refused = 0
        for msg_id in ids:
            try:
                condition, _ = await f.error_for(msg_id)
            except TimeoutError:
                continue
            assert condition == "service-unavailable"
            refused += 1
            if refused >= 3:
                break
        assert refused >= 3
        assert decisions(home, "(open federation)", "reject", "open_federation_rate_limit") >= 3
        assert await audited(home, reason="open_federation_rate_limit")
