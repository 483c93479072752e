"""FEDERATION.md §Inbound, §Outbound, §Every decision is explainable: inputs and decisions.

The facts about one stanza that a decision needs (how its stream authenticated, what
kind of stanza it is, who sent it to whom) come in; a `Decision` comes out, carrying its
verdict, what to answer, one reason code, and every step that led there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from imedge.domain.errors import (
    StanzaError,
    StanzaErrorCondition,
    StreamError,
    StreamErrorCondition,
)
from imedge.domain.jid import Jid
from imedge.policy.model import EdgeAddress, Partner, UserSettings

# ---------------------------------------------------------------- stream facts (§Inbound 2)


class AuthMethod(StrEnum):
    """How the peer proved its domain (the s2s layer records it on each stream)."""

    NONE = "none"
    SASL_EXTERNAL = "sasl-external"  # RFC 6120 §6.3.4 with a certificate (XEP-0178)
    DIALBACK = "dialback"  # XEP-0220


class CertStatus(StrEnum):
    """The peer certificate for the domain it claims (`imedge.server.s2s.certs`)."""

    VALID = "valid"
    NO_CERTIFICATE = "no_certificate"
    UNTRUSTED = "untrusted"
    EXPIRED = "expired"
    NAME_MISMATCH = "name_mismatch"


class Trust(StrEnum):
    STRONG = "strong"  # a certificate that validated
    WEAK = "weak"  # dialback alone


def trust_of(auth: AuthMethod, cert: CertStatus) -> Trust:
    """FEDERATION.md §Inbound 2: strong when the domain authenticated with a certificate that
    validated, by SASL EXTERNAL or by dialback over TLS with a valid certificate; weak
    otherwise. A valid certificate implies TLS, so TLS needs no argument of its own."""
    if auth is not AuthMethod.NONE and cert is CertStatus.VALID:
        return Trust.STRONG
    return Trust.WEAK


@dataclass(frozen=True, slots=True)
class StreamFacts:
    """What the s2s stream carrying a stanza established (`S2SStreamInfo`, reduced)."""

    auth: AuthMethod
    cert: CertStatus
    tls: bool

    @property
    def trust(self) -> Trust:
        return trust_of(self.auth, self.cert)

    def describe(self) -> str:
        how = {
            AuthMethod.NONE: "did not authenticate",
            AuthMethod.SASL_EXTERNAL: "authenticated with SASL EXTERNAL",
            AuthMethod.DIALBACK: "authenticated with dialback",
        }[self.auth]
        cert = {
            CertStatus.VALID: "a valid certificate",
            CertStatus.NO_CERTIFICATE: "no certificate",
            CertStatus.UNTRUSTED: "an untrusted certificate",
            CertStatus.EXPIRED: "an expired certificate",
            CertStatus.NAME_MISMATCH: "a certificate for another name",
        }[self.cert]
        if not self.tls:
            return f"{how}, without TLS"
        return f"{how} over TLS, presenting {cert}"


# ---------------------------------------------------------------- stanza kinds


class StanzaKind(StrEnum):
    """The rows of FEDERATION.md §Inbound 4-6, plus answers to what the user sent."""

    SUBSCRIBE = "subscribe"  # presence type=subscribe (§4)
    MESSAGE = "message"  # any message but type=error (§5)
    IQ = "iq"  # iq get/set (§5)
    PRESENCE = "presence"  # available, unavailable, probe (§6)
    SUBSCRIPTION_ANSWER = "subscription_answer"  # subscribed, unsubscribe, unsubscribed (§6)
    # iq result/error, message and presence type=error: they answer something the local
    # user sent, so they are not "IM invitations"; RFC 6120 §8.3.1 forbids answering them
    # with an error, and refusing them would only hide failures from the user.
    RESPONSE = "response"


_PRESENCE_KINDS = {
    "subscribe": StanzaKind.SUBSCRIBE,
    "subscribed": StanzaKind.SUBSCRIPTION_ANSWER,
    "unsubscribe": StanzaKind.SUBSCRIPTION_ANSWER,
    "unsubscribed": StanzaKind.SUBSCRIPTION_ANSWER,
    "error": StanzaKind.RESPONSE,
}


def stanza_kind(name: str, type_: str | None) -> StanzaKind:
    """Classify a stanza by element name (`message`, `presence`, `iq`) and `type`."""
    if name == "iq":
        # Only a real answer passes as one; a missing or bogus type gets the IQ rules.
        return StanzaKind.RESPONSE if type_ in ("result", "error") else StanzaKind.IQ
    if name == "message":
        return StanzaKind.RESPONSE if type_ == "error" else StanzaKind.MESSAGE
    if name == "presence":
        # None, "unavailable", "probe", and unknown types (RFC 6121 §4.7.1: treated as
        # available or ignored by the roster rules), so no type escapes the policy.
        return _PRESENCE_KINDS.get(type_ or "", StanzaKind.PRESENCE)
    raise ValueError(f"not a stanza: {name!r}")


# ---------------------------------------------------------------- per-stanza inputs


@dataclass(frozen=True, slots=True, kw_only=True)
class InboundContext:
    """A stanza from `sender` (at a remote domain) to `recipient` (local user or host).

    The caller computes the list memberships (roster or explicit allow entry; XEP-0191
    block list) and passes `UserSettings()` for a user that does not exist: the decision
    never depends on whether the account exists.
    """

    sender: Jid
    recipient: Jid
    kind: StanzaKind
    stream: StreamFacts
    user: UserSettings = field(default_factory=UserSettings)
    on_allow_list: bool = False
    on_block_list: bool = False
    # Open federation: the sender's domain is a discovered one that has sent more than
    # `open_federation_stanza_rate` stanzas per second (the gate keeps the clock).
    over_rate: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboundContext:
    """A stanza from local user `sender` to `recipient` at a remote domain."""

    sender: Jid
    recipient: Jid
    kind: StanzaKind
    user: UserSettings = field(default_factory=UserSettings)
    # Only for a SUBSCRIBE to a domain discovered under open federation: how many roster
    # contacts local users already hold at that domain (the open-federation contact cap).
    contacts_at_domain: int = 0


# ---------------------------------------------------------------- decisions


class Reason(StrEnum):
    """One code per rule of FEDERATION.md; what logs, metrics, audit and explain show."""

    # refusals: stream (§Inbound 1 and §Outbound)
    FEDERATION_OFF = "federation_off"
    DOMAIN_BLOCKED = "domain_blocked"
    PARTNER_BLOCKED = "partner_blocked"
    NO_PARTNER = "no_partner"  # not in the table and open federation off
    CONNECTION_LIMIT = "connection_limit"
    NOT_AUTHENTICATED = "not_authenticated"
    TLS_REQUIRED = "tls_required"
    SASL_EXTERNAL_REQUIRED = "sasl_external_required"
    SASL_EXTERNAL_NOT_ALLOWED = "sasl_external_not_allowed"
    DIALBACK_NOT_ALLOWED = "dialback_not_allowed"
    # refusals: recipient and stanza (§Inbound 3-5, §Outbound)
    USER_FEDERATION_OFF = "user_federation_off"
    NO_PUBLIC_IM = "no_public_im"
    ON_BLOCK_LIST = "on_block_list"
    UNVERIFIED_NOT_ON_ALLOW_LIST = "unverified_not_on_allow_list"
    VERIFIED_SUBSCRIPTIONS_BLOCK = "verified_subscriptions_block"
    BLOCK_NON_ALLOWED_IM = "block_non_allowed_im"
    OPEN_FEDERATION_CONTACT_LIMIT = "open_federation_contact_limit"
    # Applied by the server's gate with a clock (a rate needs one); listed here so that
    # every refusal code lives in one enum.
    OPEN_FEDERATION_RATE_LIMIT = "open_federation_rate_limit"
    # acceptances
    PARTNER_ALLOWED = "partner_allowed"  # stream from an allowed partner
    OPEN_FEDERATION = "open_federation"  # stream from a discovered domain
    ON_ALLOW_LIST = "on_allow_list"
    VERIFIED = "verified"
    VERIFIED_SUBSCRIPTIONS_ALLOW = "verified_subscriptions_allow"
    VERIFIED_SUBSCRIPTIONS_PROMPT = "verified_subscriptions_prompt"
    ROSTER_RULES = "roster_rules"  # other presence: RFC 6121 subscription state decides
    RESPONSE = "response"  # a result or error answering the local user
    TO_SERVER = "to_server"  # addressed to the server itself, not a user
    ROUTED = "routed"  # outbound, on its way


class Rule(StrEnum):
    """The rule a step applies; the part of FEDERATION.md it comes from."""

    FEDERATION = "federation"
    BLOCKED_DOMAINS = "blocked_domains"
    PARTNER = "partner"
    CONNECTION_LIMIT = "connection_limit"
    AUTHENTICATION = "authentication"
    VERIFICATION = "verification"
    RECIPIENT = "recipient"
    USER_FEDERATION = "user_federation"
    PUBLIC_IM = "public_im"
    BLOCK_LIST = "block_list"
    SUBSCRIPTION = "subscription"
    IM = "im"
    PRESENCE = "presence"
    OPEN_FEDERATION_LIMITS = "open_federation_limits"
    ROUTE = "route"


class Outcome(StrEnum):
    OK = "ok"  # the rule let the stanza on
    REFUSED = "refused"  # the rule refused it: always the last step
    NOTE = "note"  # a fact established (verification, route) or the final disposition


@dataclass(frozen=True, slots=True)
class Step:
    rule: Rule
    outcome: Outcome
    text: str  # one sentence, for an administrator


class Verdict(StrEnum):
    ACCEPT = "accept"  # deliver or route as usual (RFC 6121 rules still apply)
    APPROVE = "approve"  # subscribe: the server approves it itself (pre-approval, §3.4)
    PROMPT = "prompt"  # subscribe: deliver to the user's clients (stored while offline)
    REJECT = "reject"


class Answer(StrEnum):
    """What the server sends back for a rejected stanza or stream."""

    NONE = "none"  # drop silently
    STANZA_ERROR = "stanza_error"  # `Decision.error`, with `Decision.text` when outbound
    UNSUBSCRIBED = "unsubscribed"  # presence type=unsubscribed on the user's behalf
    STREAM_ERROR = "stream_error"  # close the stream: `Decision.stream_error`, `.text`


class RouteKind(StrEnum):
    EDGE = "edge"  # the partner's edge address
    DNS = "dns"  # _xmpp-server._tcp SRV records, else the domain on port 5269


@dataclass(frozen=True, slots=True)
class Route:
    domain: str
    edge: EdgeAddress | None = None

    @property
    def kind(self) -> RouteKind:
        return RouteKind.EDGE if self.edge is not None else RouteKind.DNS

    def describe(self) -> str:
        if self.edge is not None:
            return f"the edge address {self.edge}"
        return f"the SRV records of _xmpp-server._tcp.{self.domain}, else {self.domain}:5269"


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The outcome of one decision, with every step evaluated, in order."""

    verdict: Verdict
    reason: Reason
    steps: tuple[Step, ...]
    subject: str  # what was decided: "subscribe from s@D to r@L", "stream from D"
    domain: str  # the remote domain
    answer: Answer = Answer.NONE
    error: StanzaErrorCondition | None = None
    stream_error: StreamErrorCondition | None = None
    # For the other side to read: the stream error text naming the reason, or the stanza
    # error text for a local user's refused outbound stanza. None for inbound stanza errors,
    # which must leak nothing.
    text: str | None = None
    partner: Partner | None = None  # the row covering `domain`, if any
    discovered: bool = False  # no row, but open federation let the domain in
    trust: Trust | None = None
    verified: bool | None = None  # inbound stanzas past step 2
    route: Route | None = None  # accepted outbound stanzas

    @property
    def allowed(self) -> bool:
        return self.verdict is not Verdict.REJECT

    @property
    def partner_label(self) -> str:
        """For metrics and audit (bounded: never the domain of a discovered partner)."""
        if self.partner is not None:
            return self.partner.label
        return "(open federation)" if self.discovered else "(none)"

    def as_stanza_error(self) -> StanzaError | None:
        if self.answer is not Answer.STANZA_ERROR or self.error is None:
            return None
        return StanzaError(self.error, self.text)

    def as_stream_error(self) -> StreamError | None:
        if self.answer is not Answer.STREAM_ERROR or self.stream_error is None:
            return None
        return StreamError(self.stream_error, self.text)
