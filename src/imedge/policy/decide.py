"""FEDERATION.md §Inbound and §Outbound: the decision steps, as pure functions.

Each function walks the steps of FEDERATION.md in the order the page gives them, records
every rule it evaluates as a `Step`, and stops at the first refusal. Nothing here reads a
clock, a socket or the database: the caller passes the facts (stream authentication, list
memberships, counts) and applies the `Decision` it gets back.

Answers to refused inbound stanzas leak nothing (RFC 6121 §8.5.1, XEP-0191 §3.5): they
are exactly what the server answers for an account that does not exist — `unsubscribed`
to a subscription request, `<service-unavailable/>` to a message or IQ, silence to other
presence and to errors and results — so a stranger cannot tell a refusal from a missing
account, nor a blocked sender from a refused one.
"""

from __future__ import annotations

from dataclasses import dataclass

from imedge.domain.errors import StanzaErrorCondition, StreamErrorCondition
from imedge.policy.decision import (
    Answer,
    AuthMethod,
    CertStatus,
    Decision,
    InboundContext,
    OutboundContext,
    Outcome,
    Reason,
    Route,
    Rule,
    StanzaKind,
    Step,
    StreamFacts,
    Trust,
    Verdict,
)
from imedge.policy.model import (
    FederationConfig,
    Filter,
    Partner,
    Requirement,
    VerifiedSubscriptions,
)

# FEDERATION.md §Global settings: a domain outside the table, under open federation, is
# treated as a partner with `filter = contacts_only` and otherwise default requirements.
DISCOVERED = Partner(name="(open federation)", domains=(), filter=Filter.CONTACTS_ONLY)


@dataclass(frozen=True, slots=True)
class _Refusal:
    reason: Reason
    text: str  # for the other side: the peer server (stream) or the local user (outbound)


class _Trail:
    """Collects the steps of one decision and builds the `Decision` at the end."""

    def __init__(self, subject: str, domain: str) -> None:
        self.subject = subject
        self.domain = domain
        self.steps: list[Step] = []

    def ok(self, rule: Rule, text: str) -> None:
        self.steps.append(Step(rule, Outcome.OK, text))

    def fail(self, rule: Rule, text: str) -> None:
        self.steps.append(Step(rule, Outcome.REFUSED, text))

    def note(self, rule: Rule, text: str) -> None:
        self.steps.append(Step(rule, Outcome.NOTE, text))

    def decide(
        self,
        verdict: Verdict,
        reason: Reason,
        *,
        answer: Answer = Answer.NONE,
        error: StanzaErrorCondition | None = None,
        stream_error: StreamErrorCondition | None = None,
        text: str | None = None,
        partner: Partner | None = None,
        discovered: bool = False,
        trust: Trust | None = None,
        verified: bool | None = None,
        route: Route | None = None,
    ) -> Decision:
        return Decision(
            verdict=verdict,
            reason=reason,
            steps=tuple(self.steps),
            subject=self.subject,
            domain=self.domain,
            answer=answer,
            error=error,
            stream_error=stream_error,
            text=text,
            partner=partner,
            discovered=discovered,
            trust=trust,
            verified=verified,
            route=route,
        )


# ---------------------------------------------------------------- shared steps


def _check_federation(trail: _Trail, cfg: FederationConfig) -> _Refusal | None:
    if not cfg.settings.federation:
        trail.fail(Rule.FEDERATION, "Federation is off: no server-to-server traffic at all.")
        return _Refusal(Reason.FEDERATION_OFF, "federation is disabled on this server")
    trail.ok(Rule.FEDERATION, "Federation is on.")
    return None


def _check_table(
    trail: _Trail, domain: str, cfg: FederationConfig
) -> tuple[Partner | None, _Refusal | None]:
    """Blocked domains, then the partner table; open federation for unlisted domains."""
    pattern = cfg.blocked_by(domain)
    if pattern is not None:
        listed = "" if pattern == domain else f" (listed as {pattern})"
        trail.fail(
            Rule.BLOCKED_DOMAINS,
            f"{domain} is a blocked domain{listed}, refused even under open federation.",
        )
        return None, _Refusal(Reason.DOMAIN_BLOCKED, f"{domain} is a blocked domain")
    trail.ok(Rule.BLOCKED_DOMAINS, f"{domain} is not a blocked domain.")
    partner = cfg.partner_for(domain)
    if partner is None:
        if not cfg.settings.open_federation:
            trail.fail(Rule.PARTNER, f"{domain} matches no partner and open federation is off.")
            return None, _Refusal(Reason.NO_PARTNER, f"{domain} is not a federated partner")
        trail.ok(
            Rule.PARTNER,
            f"{domain} matches no partner; open federation admits it as a discovered partner "
            "with filter contacts_only.",
        )
        return None, None
    if not partner.allowed:
        trail.fail(Rule.PARTNER, f"{domain} belongs to partner {partner.name!r}, which is blocked.")
        return partner, _Refusal(Reason.PARTNER_BLOCKED, f"{domain} is not an allowed partner")
    trail.ok(Rule.PARTNER, f"{domain} belongs to partner {partner.name!r}, which is allowed.")
    return partner, None


def _requirements(partner: Partner) -> str:
    dialback = "allowed" if partner.dialback else "not allowed"
    return f"TLS {partner.tls}, SASL EXTERNAL {partner.sasl_external}, dialback {dialback}"


def _check_auth(
    trail: _Trail, domain: str, partner: Partner | None, facts: StreamFacts
) -> _Refusal | None:
    """FEDERATION.md §Inbound 1: D must authenticate the way its partner row requires."""
    row = partner or DISCOVERED
    whose = f"partner {row.name!r}" if partner is not None else "open federation"
    failure: tuple[Reason, str] | None = None
    if facts.auth is AuthMethod.NONE:
        failure = (Reason.NOT_AUTHENTICATED, f"{domain} did not authenticate")
    elif row.tls is Requirement.REQUIRED and not facts.tls:
        failure = (Reason.TLS_REQUIRED, f"TLS is required for {domain}")
    elif row.sasl_external is Requirement.REQUIRED and not (
        facts.auth is AuthMethod.SASL_EXTERNAL and facts.cert is CertStatus.VALID
    ):
        failure = (
            Reason.SASL_EXTERNAL_REQUIRED,
            f"{domain} must authenticate with SASL EXTERNAL and a valid certificate",
        )
    elif row.sasl_external is Requirement.OFF and facts.auth is AuthMethod.SASL_EXTERNAL:
        failure = (Reason.SASL_EXTERNAL_NOT_ALLOWED, f"SASL EXTERNAL is not allowed for {domain}")
    elif not row.dialback and facts.auth is AuthMethod.DIALBACK:
        failure = (Reason.DIALBACK_NOT_ALLOWED, f"dialback is not allowed for {domain}")
    setting = f"{whose}: {_requirements(row)}"
    if failure is not None:
        trail.fail(
            Rule.AUTHENTICATION, f"The stream {facts.describe()}, but {failure[1]} ({setting})."
        )
        return _Refusal(*failure)
    trail.ok(Rule.AUTHENTICATION, f"The stream {facts.describe()}, which is enough ({setting}).")
    return None


def _stream_refused(trail: _Trail, refusal: _Refusal, partner: Partner | None) -> Decision:
    return trail.decide(
        Verdict.REJECT,
        refusal.reason,
        answer=Answer.STREAM_ERROR,
        stream_error=StreamErrorCondition.POLICY_VIOLATION,
        text=refusal.text,
        partner=partner,
    )


# ---------------------------------------------------------------- §Inbound 1: the stream


def decide_stream(
    domain: str, facts: StreamFacts, cfg: FederationConfig, *, open_streams: int = 0
) -> Decision:
    """FEDERATION.md §Inbound 1: may `domain`, authenticated as `facts` say, use a stream?

    `open_streams` is how many other streams with the same partner are open now (for its
    connection limit). A refusal closes the stream with `<policy-violation/>` and a text
    naming the reason. The same check applies to our outbound streams once authenticated.
    """
    trail = _Trail(f"stream from {domain}", domain)
    refusal = _check_federation(trail, cfg)
    partner: Partner | None = None
    if refusal is None:
        partner, refusal = _check_table(trail, domain, cfg)
    if refusal is None and partner is not None and partner.connection_limit is not None:
        if open_streams >= partner.connection_limit:
            trail.fail(
                Rule.CONNECTION_LIMIT,
                f"Partner {partner.name!r} already has {open_streams} streams open, its limit "
                f"is {partner.connection_limit}.",
            )
            refusal = _Refusal(
                Reason.CONNECTION_LIMIT,
                f"too many streams for {domain} (limit {partner.connection_limit})",
            )
        else:
            trail.ok(
                Rule.CONNECTION_LIMIT,
                f"{open_streams} of at most {partner.connection_limit} streams are open.",
            )
    if refusal is None:
        refusal = _check_auth(trail, domain, partner, facts)
    if refusal is not None:
        return _stream_refused(trail, refusal, partner)
    trust = facts.trust
    trail.note(Rule.VERIFICATION, _trust_sentence(trust))
    return trail.decide(
        Verdict.ACCEPT,
        Reason.PARTNER_ALLOWED if partner is not None else Reason.OPEN_FEDERATION,
        partner=partner,
        discovered=partner is None,
        trust=trust,
    )


# ---------------------------------------------------------------- §Inbound 2: verification


def mark_verified(partner: Partner | None, trust: Trust) -> bool:
    """FEDERATION.md §Inbound 2: `contacts_only` → unverified; `verified` → verified iff the
    trust is strong; `all` → verified. `None` is a partner discovered under open federation,
    which behaves as `contacts_only`."""
    match (partner or DISCOVERED).filter:
        case Filter.CONTACTS_ONLY:
            return False
        case Filter.VERIFIED:
            return trust is Trust.STRONG
        case Filter.ALL:
            return True


def _trust_sentence(trust: Trust) -> str:
    if trust is Trust.STRONG:
        return "Trust is strong: the domain authenticated with a certificate that validated."
    return "Trust is weak: no certificate validated for the domain (dialback alone)."


def _verification_sentence(partner: Partner | None, trust: Trust, verified: bool) -> str:
    mark = "verified" if verified else "unverified"
    if partner is None:
        return f"A discovered partner's stanzas are {mark} (filter contacts_only)."
    why = {
        Filter.CONTACTS_ONLY: "always marks stanzas unverified",
        Filter.VERIFIED: f"trusts its verification, and trust is {trust}",
        Filter.ALL: "marks every stanza verified",
    }[partner.filter]
    return (
        f"The stanza is {mark}: partner {partner.name!r} has filter {partner.filter}, which {why}."
    )


# ---------------------------------------------------------------- §Inbound 3-6


def inbound_refusal(kind: StanzaKind) -> tuple[Answer, StanzaErrorCondition | None]:
    """What a refused inbound stanza gets: what a missing account gets (RFC 6121 §8.5.1)."""
    if kind is StanzaKind.SUBSCRIBE:
        return Answer.UNSUBSCRIBED, None
    if kind in (StanzaKind.MESSAGE, StanzaKind.IQ):
        return Answer.STANZA_ERROR, StanzaErrorCondition.SERVICE_UNAVAILABLE
    return Answer.NONE, None  # presence, subscription answers, errors and results


def decide_inbound(ctx: InboundContext, cfg: FederationConfig) -> Decision:
    """Apply FEDERATION.md §Inbound 1-6 to one stanza from `ctx.sender` to `ctx.recipient`.

    Step 1 is re-checked per stanza so that a change to the table applies to a stanza
    already in flight; its refusal closes the stream. Stanzas to the server itself (no
    localpart) pass once the stream does: steps 3-6 are about users.
    """
    sender, recipient, kind, user = ctx.sender.bare, ctx.recipient.bare, ctx.kind, ctx.user
    domain = sender.domain
    trail = _Trail(f"{kind} from {sender} to {recipient}", domain)

    # 1. Stream.
    refusal = _check_federation(trail, cfg)
    partner: Partner | None = None
    if refusal is None:
        partner, refusal = _check_table(trail, domain, cfg)
    if refusal is None:
        refusal = _check_auth(trail, domain, partner, ctx.stream)
    if refusal is not None:
        return _stream_refused(trail, refusal, partner)

    # 2. Verification.
    trust = ctx.stream.trust
    verified = mark_verified(partner, trust)
    trail.note(Rule.VERIFICATION, _verification_sentence(partner, trust, verified))

    def done(verdict: Verdict, reason: Reason) -> Decision:
        answer, error = inbound_refusal(kind) if verdict is Verdict.REJECT else (Answer.NONE, None)
        return trail.decide(
            verdict,
            reason,
            answer=answer,
            error=error,
            partner=partner,
            discovered=partner is None,
            trust=trust,
            verified=verified,
        )

    def refuse(rule: Rule, reason: Reason, text: str) -> Decision:
        trail.fail(rule, text)
        return done(Verdict.REJECT, reason)

    # Open federation's abuse limit: a discovered domain over its stanza rate.
    if partner is None and ctx.over_rate:
        return refuse(
            Rule.OPEN_FEDERATION_LIMITS,
            Reason.OPEN_FEDERATION_RATE_LIMIT,
            f"{domain} is not a listed partner and sends more than "
            f"{cfg.settings.open_federation_stanza_rate:g} stanzas per second.",
        )

    if recipient.local is None:
        trail.ok(Rule.RECIPIENT, f"The stanza is for the server {recipient} itself, not a user.")
        return done(Verdict.ACCEPT, Reason.TO_SERVER)

    # 3. Recipient.
    if not user.federation:
        return refuse(
            Rule.USER_FEDERATION, Reason.USER_FEDERATION_OFF, f"{recipient} has federation off."
        )
    trail.ok(Rule.USER_FEDERATION, f"{recipient} has federation on.")
    if partner is not None and partner.public:
        if not user.public_im:
            return refuse(
                Rule.PUBLIC_IM,
                Reason.NO_PUBLIC_IM,
                f"Partner {partner.name!r} is a public IM provider and {recipient} has no "
                "public IM rights.",
            )
        trail.ok(
            Rule.PUBLIC_IM,
            f"Partner {partner.name!r} is a public IM provider and {recipient} has public IM.",
        )
    if ctx.on_block_list:
        return refuse(
            Rule.BLOCK_LIST, Reason.ON_BLOCK_LIST, f"{sender} is on {recipient}'s block list."
        )
    trail.ok(Rule.BLOCK_LIST, f"{sender} is not on {recipient}'s block list.")

    allow = "on" if ctx.on_allow_list else "not on"
    mark = "verified" if verified else "unverified"

    # 4. Presence subscription request.
    if kind is StanzaKind.SUBSCRIBE:
        if ctx.on_allow_list:
            trail.ok(
                Rule.SUBSCRIPTION,
                f"{sender} is on {recipient}'s allow list: the server approves the request "
                "as for a known contact.",
            )
            return done(Verdict.APPROVE, Reason.ON_ALLOW_LIST)
        if not verified:
            return refuse(
                Rule.SUBSCRIPTION,
                Reason.UNVERIFIED_NOT_ON_ALLOW_LIST,
                f"The request is unverified and {sender} is not on {recipient}'s allow list: "
                "it is rejected with unsubscribed.",
            )
        choice = user.verified_subscriptions
        head = (
            f"The request is verified, {sender} is not on {recipient}'s allow list, and "
            f"{recipient}'s verified_subscriptions is {choice}"
        )
        if choice is VerifiedSubscriptions.BLOCK:
            return refuse(
                Rule.SUBSCRIPTION,
                Reason.VERIFIED_SUBSCRIPTIONS_BLOCK,
                f"{head}: it is rejected with unsubscribed.",
            )
        if choice is VerifiedSubscriptions.ALLOW:
            trail.ok(Rule.SUBSCRIPTION, f"{head}: the server approves it.")
            return done(Verdict.APPROVE, Reason.VERIFIED_SUBSCRIPTIONS_ALLOW)
        trail.ok(Rule.SUBSCRIPTION, f"{head}: {recipient}'s clients are asked.")
        return done(Verdict.PROMPT, Reason.VERIFIED_SUBSCRIPTIONS_PROMPT)

    # 5. Message and IQ: an IM invitation.
    if kind in (StanzaKind.MESSAGE, StanzaKind.IQ):
        if not verified and not ctx.on_allow_list:
            return refuse(
                Rule.IM,
                Reason.UNVERIFIED_NOT_ON_ALLOW_LIST,
                f"The {kind} is unverified and {sender} is not on {recipient}'s allow list.",
            )
        if verified and user.block_non_allowed_im and not ctx.on_allow_list:
            return refuse(
                Rule.IM,
                Reason.BLOCK_NON_ALLOWED_IM,
                f"{recipient} blocks IM from senders not on the allow list, and {sender} is "
                "not on it.",
            )
        trail.ok(Rule.IM, f"The {kind} is {mark} and {sender} is {allow} {recipient}'s allow list.")
        return done(Verdict.ACCEPT, Reason.ON_ALLOW_LIST if ctx.on_allow_list else Reason.VERIFIED)

    # 6. Other presence, and answers to what the user sent.
    if kind is StanzaKind.RESPONSE:
        trail.ok(Rule.PRESENCE, f"A result or error answers something {recipient} sent.")
        return done(Verdict.ACCEPT, Reason.RESPONSE)
    trail.ok(
        Rule.PRESENCE,
        "Roster rules apply: RFC 6121 subscription state grants nothing beyond the roster.",
    )
    return done(Verdict.ACCEPT, Reason.ROSTER_RULES)


# ---------------------------------------------------------------- §Outbound


def decide_outbound(ctx: OutboundContext, cfg: FederationConfig) -> Decision:
    """Apply FEDERATION.md §Outbound to one stanza from local `ctx.sender` to a remote
    `ctx.recipient`: `not-allowed` with a text the user understands, or the route."""
    sender, recipient, kind, user = ctx.sender.bare, ctx.recipient.bare, ctx.kind, ctx.user
    domain = recipient.domain
    trail = _Trail(f"{kind} from {sender} to {recipient}", domain)
    partner: Partner | None = None
    discovered = False  # past the table check with no row: open federation let it in

    def refuse(refusal: _Refusal) -> Decision:
        if kind is StanzaKind.RESPONSE:  # RFC 6120 §8.3.1: never answer an error or result
            return trail.decide(
                Verdict.REJECT, refusal.reason, partner=partner, discovered=discovered
            )
        return trail.decide(
            Verdict.REJECT,
            refusal.reason,
            answer=Answer.STANZA_ERROR,
            error=StanzaErrorCondition.NOT_ALLOWED,
            text=refusal.text,
            partner=partner,
            discovered=discovered,
        )

    if _check_federation(trail, cfg) is not None:
        return refuse(
            _Refusal(
                Reason.FEDERATION_OFF,
                "Chatting with users on other servers is turned off on this server.",
            )
        )
    if not user.federation:
        trail.fail(Rule.USER_FEDERATION, f"{sender} has federation off.")
        return refuse(
            _Refusal(
                Reason.USER_FEDERATION_OFF,
                "Your account is not allowed to chat with users on other servers.",
            )
        )
    trail.ok(Rule.USER_FEDERATION, f"{sender} has federation on.")
    partner, refusal = _check_table(trail, domain, cfg)
    if refusal is not None:
        return refuse(_Refusal(refusal.reason, _user_text(refusal.reason, domain)))
    discovered = partner is None
    if partner is not None and partner.public:
        if not user.public_im:
            trail.fail(
                Rule.PUBLIC_IM,
                f"Partner {partner.name!r} is a public IM provider and {sender} has no public "
                "IM rights.",
            )
            return refuse(_Refusal(Reason.NO_PUBLIC_IM, _user_text(Reason.NO_PUBLIC_IM, domain)))
        trail.ok(
            Rule.PUBLIC_IM,
            f"Partner {partner.name!r} is a public IM provider and {sender} has public IM.",
        )
    if partner is None and kind is StanzaKind.SUBSCRIBE:
        cap = cfg.settings.open_federation_max_contacts
        if ctx.contacts_at_domain >= cap:
            trail.fail(
                Rule.OPEN_FEDERATION_LIMITS,
                f"Local users already hold {ctx.contacts_at_domain} contacts at the discovered "
                f"domain {domain}; the limit is {cap}.",
            )
            text = (
                f"You cannot add more contacts at {domain}: it is not a listed partner, and "
                "its users already have as many contacts here as your administrator allows."
            )
            return refuse(_Refusal(Reason.OPEN_FEDERATION_CONTACT_LIMIT, text))
        trail.ok(
            Rule.OPEN_FEDERATION_LIMITS,
            f"{ctx.contacts_at_domain} of at most {cap} contacts are held at {domain}.",
        )
    route = Route(domain, partner.edge_address if partner is not None else None)
    trail.note(Rule.ROUTE, f"The stanza goes to {route.describe()}.")
    return trail.decide(
        Verdict.ACCEPT, Reason.ROUTED, partner=partner, discovered=partner is None, route=route
    )


def _user_text(reason: Reason, domain: str) -> str:
    """`not-allowed` texts for a local user: what happened, in their words."""
    texts = {
        Reason.DOMAIN_BLOCKED: f"Your administrator has blocked {domain}.",
        Reason.PARTNER_BLOCKED: f"Chatting with users at {domain} is currently blocked by "
        "your administrator.",
        Reason.NO_PARTNER: f"This server is not set up to chat with users at {domain}; "
        "ask your administrator to add it as a federated partner.",
        Reason.NO_PUBLIC_IM: f"Chatting with users at {domain}, a public IM service, needs "
        "public IM rights, which your account does not have; ask your administrator.",
    }
    return texts[reason]
