"""FEDERATION.md §Inbound 1-6 and §Outbound, row by row: the pure decision functions."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imedge.domain.errors import StanzaErrorCondition, StreamErrorCondition
from imedge.domain.jid import Jid
from imedge.policy import (
    Answer,
    AuthMethod,
    CertStatus,
    Decision,
    EdgeAddress,
    FederationConfig,
    Filter,
    GlobalSettings,
    InboundContext,
    OutboundContext,
    Outcome,
    Partner,
    Reason,
    Requirement,
    RouteKind,
    StanzaKind,
    StreamFacts,
    Trust,
    UserSettings,
    Verdict,
    VerifiedSubscriptions,
    decide_inbound,
    decide_outbound,
    decide_stream,
    inbound_refusal,
    mark_verified,
    stanza_kind,
    trust_of,
)

A = AuthMethod
C = CertStatus
K = StanzaKind
R = Reason
V = Verdict
F = Filter
VS = VerifiedSubscriptions
Req = Requirement

# Streams, by how the remote domain authenticated (FEDERATION.md §Inbound 2).
EXTERNAL = StreamFacts(A.SASL_EXTERNAL, C.VALID, tls=True)  # strong
DIALBACK_VALID_CERT = StreamFacts(A.DIALBACK, C.VALID, tls=True)  # strong
DIALBACK_UNTRUSTED = StreamFacts(A.DIALBACK, C.UNTRUSTED, tls=True)  # weak
DIALBACK_NO_TLS = StreamFacts(A.DIALBACK, C.NO_CERTIFICATE, tls=False)  # weak
STRONG, WEAK = EXTERNAL, DIALBACK_UNTRUSTED

LOCAL_USER = Jid.parse("r@edge.example")
SENDER = Jid.parse("s@partner.example/laptop")
DOMAIN = "partner.example"


def partner(**fields: object) -> Partner:
    row = Partner(name="Partner", domains=(DOMAIN,))
    return replace(row, **fields)  # type: ignore[arg-type]


def config(*partners: Partner, **settings: object) -> FederationConfig:
    return FederationConfig(GlobalSettings(**settings), partners)  # type: ignore[arg-type]


def inbound(
    kind: StanzaKind,
    *,
    filter: Filter = F.VERIFIED,
    stream: StreamFacts = STRONG,
    allow: bool = False,
    block: bool = False,
    user: UserSettings | None = None,
    public: bool = False,
) -> Decision:
    ctx = InboundContext(
        sender=SENDER,
        recipient=LOCAL_USER,
        kind=kind,
        stream=stream,
        user=user or UserSettings(),
        on_allow_list=allow,
        on_block_list=block,
    )
    return decide_inbound(ctx, config(partner(filter=filter, public=public)))


def assert_well_formed(decision: Decision) -> None:
    """Every decision explains itself: steps in order, a refusal is the last step."""
    assert decision.steps
    refused = [s for s in decision.steps if s.outcome is Outcome.REFUSED]
    if decision.verdict is V.REJECT:
        assert refused == [decision.steps[-1]]
    else:
        assert not refused
    assert all(s.text.endswith(".") for s in decision.steps)


# ---------------------------------------------------------------- §Inbound 2: trust


@pytest.mark.parametrize(
    ("auth", "cert", "trust"),
    [
        # "strong when D authenticated with a certificate that validated"
        (A.SASL_EXTERNAL, C.VALID, Trust.STRONG),
        (A.DIALBACK, C.VALID, Trust.STRONG),  # "or dialback over TLS with a valid certificate"
        # "else weak (dialback alone)"
        (A.DIALBACK, C.NO_CERTIFICATE, Trust.WEAK),
        (A.DIALBACK, C.UNTRUSTED, Trust.WEAK),
        (A.DIALBACK, C.EXPIRED, Trust.WEAK),
        (A.DIALBACK, C.NAME_MISMATCH, Trust.WEAK),
        (A.SASL_EXTERNAL, C.UNTRUSTED, Trust.WEAK),  # inconsistent facts: never strong
        (A.NONE, C.VALID, Trust.WEAK),  # a certificate alone proves nothing
    ],
)
def test_trust_of(auth: AuthMethod, cert: CertStatus, trust: Trust) -> None:
    assert trust_of(auth, cert) is trust
    assert StreamFacts(auth, cert, tls=True).trust is trust


@pytest.mark.parametrize(
    ("filter_", "trust", "verified"),
    [
        (F.CONTACTS_ONLY, Trust.STRONG, False),  # "contacts_only → unverified"
        (F.CONTACTS_ONLY, Trust.WEAK, False),
        (F.VERIFIED, Trust.STRONG, True),  # "verified → verified if trust is strong,"
        (F.VERIFIED, Trust.WEAK, False),  # "else unverified"
        (F.ALL, Trust.STRONG, True),  # "all → verified"
        (F.ALL, Trust.WEAK, True),
    ],
)
def test_mark_verified(filter_: Filter, trust: Trust, verified: bool) -> None:
    assert mark_verified(partner(filter=filter_), trust) is verified


@pytest.mark.parametrize("trust", list(Trust))
def test_a_discovered_partner_behaves_as_contacts_only(trust: Trust) -> None:
    assert mark_verified(None, trust) is False


# ---------------------------------------------------------------- §Inbound 1: the stream

OPEN = {"open_federation": True}


@pytest.mark.parametrize(
    ("case", "table", "settings", "domain", "facts", "reason"),
    [
        ("federation is off", [partner()], {"federation": False}, DOMAIN, STRONG, R.FEDERATION_OFF),
        ("D is a blocked domain", [partner()], {"blocked_domains": (DOMAIN,)}, DOMAIN, STRONG,
         R.DOMAIN_BLOCKED),
        ("... even in open federation", [], {**OPEN, "blocked_domains": ("spam.example",)},
         "spam.example", STRONG, R.DOMAIN_BLOCKED),
        ("... by a wildcard", [], {**OPEN, "blocked_domains": ("*.spam.example",)},
         "a.b.spam.example", STRONG, R.DOMAIN_BLOCKED),
        ("D's partner is not allowed", [partner(allowed=False)], {}, DOMAIN, STRONG,
         R.PARTNER_BLOCKED),
        ("... even under open federation", [partner(allowed=False)], OPEN, DOMAIN, STRONG,
         R.PARTNER_BLOCKED),
        ("D matches no partner and open federation is off", [partner()], {}, "other.example",
         STRONG, R.NO_PARTNER),
        ("sasl_external = required and its certificate did not validate",
         [partner(sasl_external=Req.REQUIRED)], {}, DOMAIN, DIALBACK_UNTRUSTED,
         R.SASL_EXTERNAL_REQUIRED),
        ("sasl_external = required and it used dialback, even with a valid certificate",
         [partner(sasl_external=Req.REQUIRED)], {}, DOMAIN, DIALBACK_VALID_CERT,
         R.SASL_EXTERNAL_REQUIRED),
        ("tls = required and no TLS", [partner(tls=Req.REQUIRED)], {}, DOMAIN, DIALBACK_NO_TLS,
         R.TLS_REQUIRED),
        ("dialback not allowed and it used dialback", [partner(dialback=False)], {}, DOMAIN,
         DIALBACK_VALID_CERT, R.DIALBACK_NOT_ALLOWED),
        ("sasl_external = off and it used SASL EXTERNAL", [partner(sasl_external=Req.OFF)], {},
         DOMAIN, EXTERNAL, R.SASL_EXTERNAL_NOT_ALLOWED),
        ("it did not authenticate at all", [partner()], {}, DOMAIN,
         StreamFacts(A.NONE, C.NO_CERTIFICATE, tls=True), R.NOT_AUTHENTICATED),
        ("a discovered domain without TLS (open federation requires it)", [], OPEN,
         "other.example", DIALBACK_NO_TLS, R.TLS_REQUIRED),
    ],
)  # fmt: skip
def test_stream_refused(
    case: str,
    table: list[Partner],
    settings: dict[str, object],
    domain: str,
    facts: StreamFacts,
    reason: Reason,
) -> None:
    decision = decide_stream(domain, facts, config(*table, **settings))
    assert (decision.verdict, decision.reason) == (V.REJECT, reason), case
    # "refused with a <policy-violation/> stream error (and a text naming the reason)"
    assert decision.answer is Answer.STREAM_ERROR
    assert decision.stream_error is StreamErrorCondition.POLICY_VIOLATION
    assert decision.text
    error = decision.as_stream_error()
    assert error is not None
    assert error.condition is StreamErrorCondition.POLICY_VIOLATION
    assert_well_formed(decision)


@pytest.mark.parametrize(
    ("case", "row", "facts", "trust"),
    [
        ("SASL EXTERNAL, defaults", partner(), EXTERNAL, Trust.STRONG),
        ("dialback over TLS with a valid certificate", partner(), DIALBACK_VALID_CERT,
         Trust.STRONG),
        ("dialback alone", partner(), DIALBACK_UNTRUSTED, Trust.WEAK),
        ("SASL EXTERNAL required and used", partner(sasl_external=Req.REQUIRED), EXTERNAL,
         Trust.STRONG),
        ("TLS optional, dialback without TLS", partner(tls=Req.OPTIONAL), DIALBACK_NO_TLS,
         Trust.WEAK),
        ("TLS off does not refuse a stream that used TLS anyway",
         partner(tls=Req.OFF, sasl_external=Req.OFF), DIALBACK_UNTRUSTED, Trust.WEAK),
        ("dialback not allowed, SASL EXTERNAL used", partner(dialback=False), EXTERNAL,
         Trust.STRONG),
    ],
)  # fmt: skip
def test_stream_accepted(case: str, row: Partner, facts: StreamFacts, trust: Trust) -> None:
    decision = decide_stream(DOMAIN, facts, config(row))
    assert (decision.verdict, decision.reason) == (V.ACCEPT, R.PARTNER_ALLOWED), case
    assert decision.partner == row
    assert decision.trust is trust
    assert decision.answer is Answer.NONE
    assert decision.as_stream_error() is None
    assert_well_formed(decision)


def test_open_federation_admits_an_unlisted_domain() -> None:
    decision = decide_stream("other.example", STRONG, config(partner(), **OPEN))
    assert (decision.verdict, decision.reason) == (V.ACCEPT, R.OPEN_FEDERATION)
    assert decision.partner is None
    assert decision.discovered
    assert decision.partner_label == "(open federation)"


@pytest.mark.parametrize(
    ("limit", "open_streams", "verdict"),
    [(None, 50, V.ACCEPT), (2, 0, V.ACCEPT), (2, 1, V.ACCEPT), (2, 2, V.REJECT), (1, 5, V.REJECT)],
)
def test_connection_limit(limit: int | None, open_streams: int, verdict: Verdict) -> None:
    decision = decide_stream(
        DOMAIN, STRONG, config(partner(connection_limit=limit)), open_streams=open_streams
    )
    assert decision.verdict is verdict
    if verdict is V.REJECT:
        assert decision.reason is R.CONNECTION_LIMIT


# ---------------------------------------------------------------- §Inbound 3: recipient

REFUSAL_BY_KIND = [
    # RFC 6121 §8.5.1: exactly what an account that does not exist answers.
    (K.SUBSCRIBE, Answer.UNSUBSCRIBED, None),
    (K.MESSAGE, Answer.STANZA_ERROR, StanzaErrorCondition.SERVICE_UNAVAILABLE),
    (K.IQ, Answer.STANZA_ERROR, StanzaErrorCondition.SERVICE_UNAVAILABLE),
    (K.PRESENCE, Answer.NONE, None),
    (K.SUBSCRIPTION_ANSWER, Answer.NONE, None),
    (K.RESPONSE, Answer.NONE, None),  # RFC 6120 §8.3.1: never an error for an error
]


@pytest.mark.parametrize(("kind", "answer", "error"), REFUSAL_BY_KIND)
@pytest.mark.parametrize(
    ("case", "user", "public", "allow", "block", "reason"),
    [
        ("r has federation off", UserSettings(federation=False), False, True, False,
         R.USER_FEDERATION_OFF),
        ("the partner is public and r has no public IM", UserSettings(), True, True, False,
         R.NO_PUBLIC_IM),
        ("s is on r's block list", UserSettings(), False, False, True, R.ON_BLOCK_LIST),
        ("... even when also on the allow list", UserSettings(), False, True, True,
         R.ON_BLOCK_LIST),
        ("... even for a public partner and a user with public IM",
         UserSettings(public_im=True), True, True, True, R.ON_BLOCK_LIST),
    ],
)  # fmt: skip
def test_recipient_refused(
    kind: StanzaKind,
    answer: Answer,
    error: StanzaErrorCondition | None,
    case: str,
    user: UserSettings,
    public: bool,
    allow: bool,
    block: bool,
    reason: Reason,
) -> None:
    decision = inbound(kind, filter=F.ALL, user=user, public=public, allow=allow, block=block)
    assert (decision.verdict, decision.reason) == (V.REJECT, reason), case
    assert (decision.answer, decision.error) == (answer, error)
    assert decision.text is None  # leak nothing
    assert_well_formed(decision)


@pytest.mark.parametrize("kind", list(K))
def test_public_partner_with_public_im_passes_step_3(kind: StanzaKind) -> None:
    decision = inbound(
        kind, filter=F.ALL, public=True, allow=True, user=UserSettings(public_im=True)
    )
    assert decision.allowed


# ---------------------------------------------------------------- §Inbound 4: subscribe


@pytest.mark.parametrize(
    ("filter_", "stream", "allow", "verified_subscriptions", "verdict", "reason"),
    [
        # "s on r's allow list → answered by the server as for a known contact (approve)"
        (F.CONTACTS_ONLY, STRONG, True, VS.PROMPT, V.APPROVE, R.ON_ALLOW_LIST),
        (F.CONTACTS_ONLY, WEAK, True, VS.BLOCK, V.APPROVE, R.ON_ALLOW_LIST),
        (F.VERIFIED, WEAK, True, VS.BLOCK, V.APPROVE, R.ON_ALLOW_LIST),
        (F.VERIFIED, STRONG, True, VS.BLOCK, V.APPROVE, R.ON_ALLOW_LIST),
        (F.ALL, WEAK, True, VS.BLOCK, V.APPROVE, R.ON_ALLOW_LIST),
        # "unverified, not on the allow list → rejected: unsubscribed is sent back"
        (F.CONTACTS_ONLY, STRONG, False, VS.ALLOW, V.REJECT, R.UNVERIFIED_NOT_ON_ALLOW_LIST),
        (F.CONTACTS_ONLY, WEAK, False, VS.ALLOW, V.REJECT, R.UNVERIFIED_NOT_ON_ALLOW_LIST),
        (F.VERIFIED, WEAK, False, VS.ALLOW, V.REJECT, R.UNVERIFIED_NOT_ON_ALLOW_LIST),
        (F.VERIFIED, StreamFacts(A.DIALBACK, C.EXPIRED, tls=True), False, VS.PROMPT, V.REJECT,
         R.UNVERIFIED_NOT_ON_ALLOW_LIST),
        # "verified, not on the allow list → by r's verified_subscriptions:"
        # "allow → approved by the server"
        (F.VERIFIED, STRONG, False, VS.ALLOW, V.APPROVE, R.VERIFIED_SUBSCRIPTIONS_ALLOW),
        (F.VERIFIED, DIALBACK_VALID_CERT, False, VS.ALLOW, V.APPROVE,
         R.VERIFIED_SUBSCRIPTIONS_ALLOW),
        (F.ALL, WEAK, False, VS.ALLOW, V.APPROVE, R.VERIFIED_SUBSCRIPTIONS_ALLOW),
        # "block → unsubscribed"
        (F.VERIFIED, STRONG, False, VS.BLOCK, V.REJECT, R.VERIFIED_SUBSCRIPTIONS_BLOCK),
        (F.ALL, WEAK, False, VS.BLOCK, V.REJECT, R.VERIFIED_SUBSCRIPTIONS_BLOCK),
        # "prompt → delivered to r's clients (stored while r is offline), who decide"
        (F.VERIFIED, STRONG, False, VS.PROMPT, V.PROMPT, R.VERIFIED_SUBSCRIPTIONS_PROMPT),
        (F.ALL, WEAK, False, VS.PROMPT, V.PROMPT, R.VERIFIED_SUBSCRIPTIONS_PROMPT),
    ],
)  # fmt: skip
def test_subscribe(
    filter_: Filter,
    stream: StreamFacts,
    allow: bool,
    verified_subscriptions: VerifiedSubscriptions,
    verdict: Verdict,
    reason: Reason,
) -> None:
    user = UserSettings(verified_subscriptions=verified_subscriptions)
    decision = inbound(K.SUBSCRIBE, filter=filter_, stream=stream, allow=allow, user=user)
    assert (decision.verdict, decision.reason) == (verdict, reason)
    if verdict is V.REJECT:
        assert decision.answer is Answer.UNSUBSCRIBED
    else:
        assert decision.answer is Answer.NONE
    assert_well_formed(decision)


def test_subscribe_default_is_prompt() -> None:
    assert inbound(K.SUBSCRIBE, filter=F.ALL).verdict is V.PROMPT


# ---------------------------------------------------------------- §Inbound 5: message and IQ


@pytest.mark.parametrize("kind", [K.MESSAGE, K.IQ])
@pytest.mark.parametrize(
    ("filter_", "stream", "allow", "block_non_allowed_im", "verdict", "reason"),
    [
        # "unverified and s not on the allow list → rejected"
        (F.CONTACTS_ONLY, STRONG, False, False, V.REJECT, R.UNVERIFIED_NOT_ON_ALLOW_LIST),
        (F.VERIFIED, WEAK, False, False, V.REJECT, R.UNVERIFIED_NOT_ON_ALLOW_LIST),
        # unverified but on the allow list: delivered, whatever block_non_allowed_im says
        (F.CONTACTS_ONLY, WEAK, True, False, V.ACCEPT, R.ON_ALLOW_LIST),
        (F.CONTACTS_ONLY, WEAK, True, True, V.ACCEPT, R.ON_ALLOW_LIST),
        (F.VERIFIED, WEAK, True, True, V.ACCEPT, R.ON_ALLOW_LIST),
        # "verified → delivered,"
        (F.VERIFIED, STRONG, False, False, V.ACCEPT, R.VERIFIED),
        (F.VERIFIED, DIALBACK_VALID_CERT, False, False, V.ACCEPT, R.VERIFIED),
        (F.ALL, WEAK, False, False, V.ACCEPT, R.VERIFIED),
        (F.VERIFIED, STRONG, True, False, V.ACCEPT, R.ON_ALLOW_LIST),
        # "unless r has block_non_allowed_im and s is not on the allow list"
        (F.VERIFIED, STRONG, False, True, V.REJECT, R.BLOCK_NON_ALLOWED_IM),
        (F.ALL, WEAK, False, True, V.REJECT, R.BLOCK_NON_ALLOWED_IM),
        (F.VERIFIED, STRONG, True, True, V.ACCEPT, R.ON_ALLOW_LIST),
        (F.ALL, WEAK, True, True, V.ACCEPT, R.ON_ALLOW_LIST),
    ],
)  # fmt: skip
def test_message_and_iq(
    kind: StanzaKind,
    filter_: Filter,
    stream: StreamFacts,
    allow: bool,
    block_non_allowed_im: bool,
    verdict: Verdict,
    reason: Reason,
) -> None:
    user = UserSettings(block_non_allowed_im=block_non_allowed_im)
    decision = inbound(kind, filter=filter_, stream=stream, allow=allow, user=user)
    assert (decision.verdict, decision.reason) == (verdict, reason)
    if verdict is V.REJECT:
        # RFC 6121 §8.5.1 / XEP-0191 §3.5: what a missing account answers, and no text.
        assert decision.answer is Answer.STANZA_ERROR
        assert decision.error is StanzaErrorCondition.SERVICE_UNAVAILABLE
        assert decision.text is None
        error = decision.as_stanza_error()
        assert error is not None
        assert error.condition is StanzaErrorCondition.SERVICE_UNAVAILABLE
    else:
        assert decision.as_stanza_error() is None
    assert_well_formed(decision)


# ---------------------------------------------------------------- §Inbound 6: other presence


@pytest.mark.parametrize("kind", [K.PRESENCE, K.SUBSCRIPTION_ANSWER])
@pytest.mark.parametrize("filter_", list(F))
@pytest.mark.parametrize("stream", [STRONG, WEAK])
@pytest.mark.parametrize("allow", [False, True])
def test_other_presence_follows_roster_rules(
    kind: StanzaKind, filter_: Filter, stream: StreamFacts, allow: bool
) -> None:
    """ "Other presence follows RFC 6121 subscription state: nothing beyond what the roster
    grants" - so the policy accepts it and leaves the rest to the roster."""
    user = UserSettings(verified_subscriptions=VS.BLOCK, block_non_allowed_im=True)
    decision = inbound(kind, filter=filter_, stream=stream, allow=allow, user=user)
    assert (decision.verdict, decision.reason) == (V.ACCEPT, R.ROSTER_RULES)


def test_a_response_to_the_user_is_accepted_even_when_unverified() -> None:
    decision = inbound(
        K.RESPONSE, filter=F.CONTACTS_ONLY, user=UserSettings(block_non_allowed_im=True)
    )
    assert (decision.verdict, decision.reason) == (V.ACCEPT, R.RESPONSE)


def test_a_stanza_to_the_server_itself_needs_only_the_stream() -> None:
    ctx = InboundContext(
        sender=SENDER,
        recipient=Jid.parse("edge.example"),
        kind=K.IQ,
        stream=WEAK,
        user=UserSettings(federation=False),
    )
    decision = decide_inbound(ctx, config(partner(filter=F.CONTACTS_ONLY)))
    assert (decision.verdict, decision.reason) == (V.ACCEPT, R.TO_SERVER)


# ---------------------------------------------------------------- §Inbound: step 1 per stanza


def test_blocking_a_partner_mid_conversation_refuses_its_next_stanza() -> None:
    row = partner(filter=F.ALL, comment="kept", edge_address=EdgeAddress("edge.partner.example"))
    ctx = InboundContext(sender=SENDER, recipient=LOCAL_USER, kind=K.MESSAGE, stream=WEAK)
    before = decide_inbound(ctx, config(row))
    assert before.verdict is V.ACCEPT

    blocked = decide_inbound(ctx, config(replace(row, allowed=False)))
    assert (blocked.verdict, blocked.reason) == (V.REJECT, R.PARTNER_BLOCKED)
    assert blocked.answer is Answer.STREAM_ERROR  # the gate closes the stream at once

    # "unblocking restores it exactly"
    restored = replace(replace(row, allowed=False), allowed=True)
    assert restored == row
    assert decide_inbound(ctx, config(restored)) == before


def test_federation_off_refuses_every_inbound_stanza() -> None:
    ctx = InboundContext(sender=SENDER, recipient=LOCAL_USER, kind=K.PRESENCE, stream=STRONG)
    decision = decide_inbound(ctx, config(partner(), federation=False))
    assert (decision.verdict, decision.reason) == (V.REJECT, R.FEDERATION_OFF)


@pytest.mark.parametrize(
    ("kind", "allow", "verdict", "reason"),
    [
        # "accept domains not in the table, as if a partner with filter = contacts_only"
        (K.SUBSCRIBE, False, V.REJECT, R.UNVERIFIED_NOT_ON_ALLOW_LIST),
        (K.SUBSCRIBE, True, V.APPROVE, R.ON_ALLOW_LIST),
        (K.MESSAGE, False, V.REJECT, R.UNVERIFIED_NOT_ON_ALLOW_LIST),
        (K.MESSAGE, True, V.ACCEPT, R.ON_ALLOW_LIST),
    ],
)
def test_open_federation_inbound(
    kind: StanzaKind, allow: bool, verdict: Verdict, reason: Reason
) -> None:
    ctx = InboundContext(
        sender=Jid.parse("x@discovered.example"),
        recipient=LOCAL_USER,
        kind=kind,
        stream=STRONG,
        user=UserSettings(verified_subscriptions=VS.ALLOW),
        on_allow_list=allow,
    )
    decision = decide_inbound(ctx, config(partner(), open_federation=True))
    assert (decision.verdict, decision.reason) == (verdict, reason)
    assert decision.discovered
    assert decision.verified is False


@pytest.mark.parametrize("listed", [False, True])
def test_open_federation_stanza_rate_applies_to_discovered_domains_only(listed: bool) -> None:
    sender = Jid.parse("x@partner.example" if listed else "x@discovered.example")
    ctx = InboundContext(
        sender=sender,
        recipient=LOCAL_USER,
        kind=StanzaKind.MESSAGE,
        stream=STRONG,
        on_allow_list=True,
        over_rate=True,
    )
    decision = decide_inbound(ctx, config(partner(filter=F.ALL), open_federation=True))
    if listed:
        assert decision.allowed
    else:
        assert (decision.verdict, decision.reason) == (
            Verdict.REJECT,
            Reason.OPEN_FEDERATION_RATE_LIMIT,
        )
        assert decision.error is StanzaErrorCondition.SERVICE_UNAVAILABLE
        assert decision.steps[-1].rule == "open_federation_limits"


# ---------------------------------------------------------------- leak nothing


@pytest.mark.parametrize(("kind", "answer", "error"), REFUSAL_BY_KIND)
def test_every_inbound_refusal_answers_as_a_missing_account_would(
    kind: StanzaKind, answer: Answer, error: StanzaErrorCondition | None
) -> None:
    """RFC 6121 §8.5.1: a stranger cannot tell a refusal (of any reason) from an account
    that does not exist, nor one refusal from another."""
    scenarios = [
        inbound(kind, user=UserSettings(federation=False)),
        inbound(kind, public=True),
        inbound(kind, block=True),
        inbound(kind, filter=F.CONTACTS_ONLY),
        inbound(kind, user=UserSettings(verified_subscriptions=VS.BLOCK)),
        inbound(kind, user=UserSettings(block_non_allowed_im=True)),
    ]
    refused = [d for d in scenarios if d.verdict is V.REJECT]
    assert refused
    assert {(d.answer, d.error, d.text) for d in refused} == {(answer, error, None)}
    assert inbound_refusal(kind) == (answer, error)


@given(
    filter_=st.sampled_from(F),
    stream=st.sampled_from([EXTERNAL, DIALBACK_VALID_CERT, DIALBACK_UNTRUSTED, DIALBACK_NO_TLS]),
    kind=st.sampled_from(K),
    allow=st.booleans(),
    block=st.booleans(),
    public=st.booleans(),
    user=st.builds(
        UserSettings,
        federation=st.booleans(),
        public_im=st.booleans(),
        verified_subscriptions=st.sampled_from(VS),
        block_non_allowed_im=st.booleans(),
    ),
    tls=st.sampled_from(Req),
)
def test_every_inbound_decision_explains_itself(
    filter_: Filter,
    stream: StreamFacts,
    kind: StanzaKind,
    allow: bool,
    block: bool,
    public: bool,
    user: UserSettings,
    tls: Requirement,
) -> None:
    row = partner(filter=filter_, public=public, tls=tls)
    ctx = InboundContext(
        sender=SENDER,
        recipient=LOCAL_USER,
        kind=kind,
        stream=stream,
        user=user,
        on_allow_list=allow,
        on_block_list=block,
    )
    decision = decide_inbound(ctx, config(row))
    assert_well_formed(decision)
    assert decision.partner == row
    if decision.verdict in (V.APPROVE, V.PROMPT):
        assert kind is K.SUBSCRIBE
    if block and decision.answer is not Answer.STREAM_ERROR:
        assert decision.verdict is V.REJECT  # the block list always wins
    if decision.verdict is V.REJECT and decision.answer is not Answer.STREAM_ERROR:
        assert (decision.answer, decision.error) == inbound_refusal(kind)
        assert decision.text is None


# ---------------------------------------------------------------- §Outbound

PUBLIC = partner(name="Public", domains=("public.example",), public=True)


def outbound(
    to: str = "s@partner.example",
    *,
    table: tuple[Partner, ...] = (partner(),),
    user: UserSettings | None = None,
    kind: StanzaKind = K.MESSAGE,
    contacts: int = 0,
    **settings: object,
) -> Decision:
    ctx = OutboundContext(
        sender=Jid.parse("r@edge.example/phone"),
        recipient=Jid.parse(to),
        kind=kind,
        user=user or UserSettings(),
        contacts_at_domain=contacts,
    )
    return decide_outbound(ctx, config(*table, **settings))


@pytest.mark.parametrize(
    ("case", "decision", "reason"),
    [
        ("federation is off", outbound(federation=False), R.FEDERATION_OFF),
        ("r has federation off", outbound(user=UserSettings(federation=False)),
         R.USER_FEDERATION_OFF),
        ("D is blocked", outbound(blocked_domains=("partner.example",)), R.DOMAIN_BLOCKED),
        ("D is blocked, even in open federation",
         outbound("s@spam.example", blocked_domains=("spam.example",), open_federation=True),
         R.DOMAIN_BLOCKED),
        ("D's partner is not allowed", outbound(table=(partner(allowed=False),)),
         R.PARTNER_BLOCKED),
        ("D matches no partner and open federation is off", outbound("s@other.example"),
         R.NO_PARTNER),
        ("the partner is public and r has no public IM",
         outbound("s@public.example", table=(PUBLIC,)), R.NO_PUBLIC_IM),
        ("a discovered domain already holds the most contacts allowed",
         outbound("s@other.example", kind=K.SUBSCRIBE, contacts=3, open_federation=True,
                  open_federation_max_contacts=3), R.OPEN_FEDERATION_CONTACT_LIMIT),
    ],
)  # fmt: skip
def test_outbound_refused(case: str, decision: Decision, reason: Reason) -> None:
    assert (decision.verdict, decision.reason) == (V.REJECT, reason), case
    # "refused with a stanza error (not-allowed, with a text an end user understands)"
    assert decision.answer is Answer.STANZA_ERROR
    assert decision.error is StanzaErrorCondition.NOT_ALLOWED
    assert decision.text
    assert decision.text[0].isupper()
    assert "_" not in decision.text  # words, not reason codes
    assert decision.route is None
    assert_well_formed(decision)


@pytest.mark.parametrize(
    ("case", "decision", "route", "edge"),
    [
        ("an allowed partner without edge address: DNS", outbound(), RouteKind.DNS, None),
        ("an allowed partner with an edge address",
         outbound(table=(partner(edge_address=EdgeAddress("edge.partner.example", 5270)),)),
         RouteKind.EDGE, EdgeAddress("edge.partner.example", 5270)),
        ("a public partner and r has public IM",
         outbound("s@public.example", table=(PUBLIC,), user=UserSettings(public_im=True)),
         RouteKind.DNS, None),
        ("open federation, unlisted domain", outbound("s@other.example", open_federation=True),
         RouteKind.DNS, None),
        ("open federation, under the contact cap",
         outbound("s@other.example", kind=K.SUBSCRIBE, contacts=2, open_federation=True,
                  open_federation_max_contacts=3), RouteKind.DNS, None),
        ("the contact cap counts subscriptions only",
         outbound("s@other.example", contacts=9, open_federation=True,
                  open_federation_max_contacts=3), RouteKind.DNS, None),
        ("a listed partner has no contact cap",
         outbound(kind=K.SUBSCRIBE, contacts=9, open_federation_max_contacts=3),
         RouteKind.DNS, None),
    ],
)  # fmt: skip
def test_outbound_routed(
    case: str, decision: Decision, route: RouteKind, edge: EdgeAddress | None
) -> None:
    assert (decision.verdict, decision.reason) == (V.ACCEPT, R.ROUTED), case
    assert decision.route is not None
    assert decision.route.kind is route
    assert decision.route.edge == edge
    assert decision.route.domain == decision.domain
    assert_well_formed(decision)


def test_outbound_refusal_of_a_response_is_silent() -> None:
    decision = outbound(kind=K.RESPONSE, federation=False)
    assert decision.verdict is V.REJECT
    assert decision.answer is Answer.NONE
    assert decision.as_stanza_error() is None


# ---------------------------------------------------------------- stanza kinds


@pytest.mark.parametrize(
    ("name", "type_", "kind"),
    [
        ("presence", "subscribe", K.SUBSCRIBE),
        ("message", None, K.MESSAGE),
        ("message", "chat", K.MESSAGE),
        ("message", "groupchat", K.MESSAGE),
        ("message", "error", K.RESPONSE),
        ("iq", "get", K.IQ),
        ("iq", "set", K.IQ),
        ("iq", "result", K.RESPONSE),
        ("iq", "error", K.RESPONSE),
        ("iq", None, K.IQ),  # malformed: the stricter rules
        ("iq", "bogus", K.IQ),
        ("presence", None, K.PRESENCE),
        ("presence", "unavailable", K.PRESENCE),
        ("presence", "probe", K.PRESENCE),
        ("presence", "bogus", K.PRESENCE),
        ("presence", "subscribed", K.SUBSCRIPTION_ANSWER),
        ("presence", "unsubscribe", K.SUBSCRIPTION_ANSWER),
        ("presence", "unsubscribed", K.SUBSCRIPTION_ANSWER),
        ("presence", "error", K.RESPONSE),
    ],
)
def test_stanza_kind(name: str, type_: str | None, kind: StanzaKind) -> None:
    assert stanza_kind(name, type_) is kind


def test_stanza_kind_rejects_a_non_stanza() -> None:
    with pytest.raises(ValueError, match="not a stanza"):
        stanza_kind("stream", None)
