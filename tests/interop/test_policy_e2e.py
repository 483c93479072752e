"""FEDERATION.md §Inbound 2-5 over real s2s: filters, trust, allow list, per-user settings.

IM Edge home.test federates with real Prosody servers: pa.test proves its domain with a
certificate home trusts (strong trust), pw.test only with dialback (weak trust), and a
second IM Edge far.test with dialback too (weak). Each filter is shown with what reaches a
local user and what the remote user gets back: refused subscriptions are answered
`unsubscribed`, refused messages and IQs `<service-unavailable/>`, the same answer for a
user that does not exist (RFC 6121 §8.5), and every refusal is in the audit log, in the
metrics, and what `explain` predicts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from imedge.domain.jid import Jid
from imedge.policy import Filter, StanzaKind, Trust, Verdict, VerifiedSubscriptions
from imedge.server.s2s.gate import stream_facts
from tests.interop.policy_support import (
    FAR,
    HOME,
    PA,
    PW,
    Sent,
    World,
    add_contact,
    decisions,
    far_server,
    from_,
    got_message,
    home_server,
    inbound_stream,
    local_client,
    partner,
    quiet,
)
from tests.peers.dns import DnsStub
from tests.peers.pki import PrivateCA

pytestmark = pytest.mark.interop

GHOST = f"ghost@{HOME}"  # no such account
REFUSED = "service-unavailable"  # what a message or IQ to a missing account gets


@pytest.fixture
async def world(tmp_path: Path, peer_pki: PrivateCA, peer_dns: DnsStub) -> AsyncIterator[World]:
    w = World(tmp_path, peer_pki, peer_dns)
    try:
        yield w
    finally:
        await w.close()


@dataclass(frozen=True)
class Case:
    peer: str
    filter: Filter
    trust: Trust
    verified: bool  # what FEDERATION.md §Inbound 2 marks the stranger's stanzas


CASES = {
    "contacts_only-strong": Case(PA, Filter.CONTACTS_ONLY, Trust.STRONG, verified=False),
    "verified-strong": Case(PA, Filter.VERIFIED, Trust.STRONG, verified=True),
    "verified-weak": Case(PW, Filter.VERIFIED, Trust.WEAK, verified=False),
    "all-weak": Case(PW, Filter.ALL, Trust.WEAK, verified=True),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
async def test_filter_decides_what_a_stranger_and_a_contact_get_through(
    world: World, case: Case
) -> None:
    peer = world.prosody(case.peer, untrusted=case.peer == PW)
    name = f"{case.peer} partner"
    async with home_server(world, (partner(name, case.peer, case.filter),)) as home:
        alice, carol = await home.add_user("alice"), await home.add_user("carol")
        stranger, friend = await peer.new_user("stranger"), await peer.new_user("friend")
        carol_c = await local_client(home, carol)
        await add_contact(carol_c, friend)  # carol's allow list: her roster
        alice_sees, carol_sees = Sent(await local_client(home, alice)), Sent(carol_c)
        s = Sent(await world.login(peer, stranger))
        f = Sent(await world.login(peer, friend))

        # A message from a stranger (§Inbound 5).
        sent = s.message(alice, "hello alice")
        if case.verified:
            await got_message(alice_sees.messages, "hello alice", stranger)
        else:
            condition, text = await s.error_for(sent)
            assert condition == REFUSED
            # The same answer as for an account that does not exist.
            assert await s.error_for(s.message(GHOST, "hello ghost")) == (condition, text)
        info = inbound_stream(home, case.peer)
        assert stream_facts(info).trust is case.trust, info
        assert info.auth == ("sasl-external" if case.trust is Trust.STRONG else "dialback")

        # An IQ from a stranger (§Inbound 5): answered by the server for alice, or refused.
        if case.verified:
            assert await s.ping(alice) == "result"
        else:
            assert await s.ping(alice) == REFUSED
            assert await s.ping(GHOST) == REFUSED

        # A subscription request from a stranger (§Inbound 4); alice's default is prompt.
        s.subscribe(alice)
        if case.verified:
            await alice_sees.subscribe_requests.get(from_(stranger), timeout=15)
            # A pending request does not put the stranger on alice's allow list: asking
            # again is still alice's to decide, not approved by the server.
            s.subscribe(alice)
            await s.subscribed.nothing(wait=0.3)
        else:
            await s.unsubscribed.get(from_(alice), timeout=15)
            s.subscribe(GHOST)
            await s.unsubscribed.get(from_(GHOST), timeout=15)
        await alice_sees.messages.nothing(lambda m: m["body"] != "hello alice", wait=0.2)
        if not case.verified:
            await alice_sees.subscribe_requests.nothing(wait=0)

        # A contact on carol's allow list, whatever the filter: the server approves the
        # request itself (pre-approval semantics, RFC 6121 §3.4) and messages pass.
        f.subscribe(carol)
        await f.subscribed.get(from_(carol), timeout=15)
        f.message(carol, "from a friend")
        await got_message(carol_sees.messages, "from a friend", friend)
        await carol_sees.subscribe_requests.nothing(wait=0.2)
        await f.unsubscribed.nothing(wait=0)

        # An explicit allow-list entry counts like a roster contact (FEDERATION.md §Words).
        dave = await home.add_user("dave")
        await home.server.federation.update_user(dave, {"allow_list": (stranger,)}, "test")
        dave_sees = Sent(await local_client(home, dave))
        s.message(dave, "hello dave")
        await got_message(dave_sees.messages, "hello dave", stranger)

        # What explain says is what happened.
        facts = stream_facts(inbound_stream(home, case.peer))
        explain = home.server.federation.explain
        expected = Verdict.ACCEPT if case.verified else Verdict.REJECT
        assert (await explain(stranger, alice, StanzaKind.MESSAGE, facts=facts)).verdict is expected
        assert (await explain(stranger, GHOST, StanzaKind.IQ, facts=facts)).verdict is expected
        sub = await explain(stranger, alice, StanzaKind.SUBSCRIBE, facts=facts)
        assert sub.verdict is (Verdict.PROMPT if case.verified else Verdict.REJECT)
        assert (await explain(friend, carol, StanzaKind.SUBSCRIBE, facts=facts)).verdict is (
            Verdict.APPROVE
        )

        # Every refusal is audited with its reason and counted for the partner.
        await home.server.gate.flush_audit()
        reason = "unverified_not_on_allow_list"
        audit = await home.server.store.audit.query(partner=name, reason=reason, limit=50)
        if case.verified:
            assert audit == []
            assert decisions(home, name, "reject", reason) == 0
        else:
            assert sorted((e.kind, e.recipient) for e in audit) == sorted(
                (kind, rcpt) for kind in ("message", "iq", "subscribe") for rcpt in (alice, GHOST)
            )
            assert all(e.direction == "in" and e.verdict == "reject" for e in audit)
            assert all(e.sender.startswith(stranger) and e.domain == case.peer for e in audit)
            assert decisions(home, name, "reject", reason) == 6
        assert decisions(home, name, "approve", "on_allow_list") == 1


async def test_per_user_verified_subscriptions_and_block_non_allowed_im(world: World) -> None:
    """FEDERATION.md §Inbound 4-5: verified requests from outside the allow list follow the
    user's `verified_subscriptions`; `block_non_allowed_im` refuses verified IM from
    strangers but not from contacts."""
    peer = world.prosody(PA)
    name = "pa partner"
    async with home_server(world, (partner(name, PA, Filter.VERIFIED),)) as home:
        users = {n: await home.add_user(n) for n in ("ua", "ub", "up", "uo", "un")}
        service = home.server.federation
        await service.update_user(
            users["ua"], {"verified_subscriptions": VerifiedSubscriptions.ALLOW}, "test"
        )
        await service.update_user(
            users["ub"], {"verified_subscriptions": VerifiedSubscriptions.BLOCK}, "test"
        )
        await service.update_user(users["un"], {"block_non_allowed_im": True}, "test")
        stranger, friend = await peer.new_user("stranger"), await peer.new_user("friend")
        online = {n: Sent(await local_client(home, users[n])) for n in ("ua", "ub", "up", "un")}
        await add_contact(online["un"].client, friend)
        s = Sent(await world.login(peer, stranger))
        f = Sent(await world.login(peer, friend))

        # allow: approved by the server, the user is not asked.
        s.subscribe(users["ua"])
        await s.subscribed.get(from_(users["ua"]), timeout=15)
        # block: answered unsubscribed.
        s.subscribe(users["ub"])
        await s.unsubscribed.get(from_(users["ub"]), timeout=15)
        # prompt: the user's client is asked...
        s.subscribe(users["up"])
        await online["up"].subscribe_requests.get(from_(stranger), timeout=15)
        # ... and an offline user is asked at the next login (RFC 6121 §3.1.3).
        s.subscribe(users["uo"])
        uo = Jid.parse(users["uo"])
        async with asyncio.timeout(15):  # stored for uo before uo logs in
            while not await home.server.store.subscription_requests.get_requests(uo):
                await asyncio.sleep(0.05)
        later = await home.client(users["uo"], start=False, setup=quiet)
        later_sees = Sent(later)
        later.send_presence()
        await later_sees.subscribe_requests.get(from_(stranger), timeout=15)
        await s.subscribed.nothing(lambda p: str(p["from"].bare) != users["ua"], wait=0.2)
        await s.unsubscribed.nothing(lambda p: str(p["from"].bare) != users["ub"], wait=0)
        for n in ("ua", "ub"):
            await online[n].subscribe_requests.nothing(wait=0)

        # block_non_allowed_im: a verified stranger is refused, a contact gets through.
        condition, _ = await s.error_for(s.message(users["un"], "may I?"))
        assert condition == REFUSED
        f.message(users["un"], "it's me")
        await got_message(online["un"].messages, "it's me", friend)
        await online["un"].messages.nothing(lambda m: m["body"] == "may I?", wait=0.2)
        # ... while a user without it gets the stranger's verified message.
        s.message(users["up"], "hi up")
        await got_message(online["up"].messages, "hi up", stranger)

        await home.server.gate.flush_audit()
        audit = await home.server.store.audit.query(partner=name, limit=50)
        assert sorted((e.reason, e.kind, e.recipient) for e in audit) == [
            ("block_non_allowed_im", "message", users["un"]),
            ("verified_subscriptions_block", "subscribe", users["ub"]),
        ]
        for label, reason, count in (
            ("approve", "verified_subscriptions_allow", 1),
            ("reject", "verified_subscriptions_block", 1),
            ("prompt", "verified_subscriptions_prompt", 2),
            ("reject", "block_non_allowed_im", 1),
        ):
            assert decisions(home, name, label, reason) == count, (label, reason)
        explain = home.server.federation.explain
        facts = stream_facts(inbound_stream(home, PA))
        for user, kind, verdict in (
            ("ua", StanzaKind.SUBSCRIBE, Verdict.APPROVE),
            ("ub", StanzaKind.SUBSCRIBE, Verdict.REJECT),
            ("un", StanzaKind.MESSAGE, Verdict.REJECT),
        ):
            decision = await explain(stranger, users[user], kind, facts=facts)
            assert decision.verdict is verdict, decision
        assert (await explain(friend, users["un"], StanzaKind.MESSAGE, facts=facts)).allowed


async def test_second_im_edge_with_weak_trust_then_filter_all_on_the_live_stream(
    world: World,
) -> None:
    """far.test, an IM Edge whose certificate home does not trust, proves its domain with
    dialback: weak trust, so `verified` treats its users as unverified; switching the
    partner to `all` takes effect on the same live stream."""
    async with (
        home_server(world, (partner("far", FAR, Filter.VERIFIED),)) as home,
        far_server(world, (partner("home", HOME, Filter.ALL),)) as far,
    ):
        alice, bob = await home.add_user("alice"), await far.add_user("bob")
        alice_sees = Sent(await local_client(home, alice))
        b = Sent(await local_client(far, bob))

        condition, _ = await b.error_for(b.message(alice, "weakly yours"))
        assert condition == REFUSED
        b.subscribe(alice)
        await b.unsubscribed.get(from_(alice), timeout=15)
        info = inbound_stream(home, FAR)
        assert (info.auth, info.cert) == ("dialback", "untrusted")
        assert stream_facts(info).trust is Trust.WEAK
        decision = await home.server.federation.explain(
            bob, alice, StanzaKind.MESSAGE, facts=stream_facts(info)
        )
        assert decision.verdict is Verdict.REJECT
        assert decision.reason == "unverified_not_on_allow_list"

        await home.server.federation.edit_partner("far", {"filter": Filter.ALL}, "test")
        b.message(alice, "now verified")
        await got_message(alice_sees.messages, "now verified", bob)
        assert inbound_stream(home, FAR).id == info.id  # no restart, no reconnection
        await alice_sees.messages.nothing(lambda m: m["body"] == "weakly yours", wait=0)
