"""FEDERATION.md §The partner table, §Global settings, §Per user: the values policy reads.

Every value here is a frozen dataclass of plain fields and StrEnums, so the store can keep
it in a row, the API can show and edit it, and `dataclasses.replace` makes a changed copy.
Defaults are those of a fresh install (FEDERATION.md: federation on, open federation off;
per user federation on, public IM off, `verified_subscriptions = prompt`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from imedge.domain.jid import Jid, JidMalformed
from imedge.policy.domains import PatternInvalid, candidate_keys, normalize_domain_pattern

DEFAULT_S2S_PORT = 5269  # RFC 6120 §14.7


class Filter(StrEnum):
    """FEDERATION.md §Inbound 2: how a partner's stanzas are marked."""

    CONTACTS_ONLY = "contacts_only"  # always unverified: only the allow list gets through
    VERIFIED = "verified"  # verified iff the stream's trust is strong
    ALL = "all"  # always verified: the user's own settings decide


class Requirement(StrEnum):
    """How a partner's servers must use TLS or SASL EXTERNAL."""

    REQUIRED = "required"
    OPTIONAL = "optional"
    # For SASL EXTERNAL: neither offered nor accepted. For TLS: not required and not started
    # on our outbound streams (a gateway that cannot do it); an inbound stream that uses TLS
    # anyway is not refused, because refusing encryption protects nothing.
    OFF = "off"


class OriginKind(StrEnum):
    MANUAL = "manual"  # added by an administrator
    PEER_SERVER = "peer-server"  # created by the directory sync of a peer server
    DEFAULT = "default"  # listed by a fresh install


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a partner row came from: `manual`, `peer-server:<id>` or `default`."""

    kind: OriginKind = OriginKind.MANUAL
    peer_server: str | None = None  # the peer server's id, only for PEER_SERVER

    def __post_init__(self) -> None:
        if (self.kind is OriginKind.PEER_SERVER) != bool(self.peer_server):
            raise ValueError("a peer-server origin, and only it, names its peer server")

    @staticmethod
    def parse(text: str) -> Origin:
        """`manual` | `default` | `peer-server:<id>`; `ValueError` otherwise."""
        kind, sep, ident = text.strip().partition(":")
        try:
            origin_kind = OriginKind(kind)
        except ValueError:
            raise ValueError(f"unknown origin {text!r}") from None
        return Origin(origin_kind, ident if sep else None)

    def __str__(self) -> str:
        if self.kind is OriginKind.PEER_SERVER:
            return f"{self.kind}:{self.peer_server}"
        return str(self.kind)


MANUAL = Origin(OriginKind.MANUAL)
DEFAULT = Origin(OriginKind.DEFAULT)


@dataclass(frozen=True, slots=True)
class EdgeAddress:
    """Where outbound s2s connections to a partner go instead of its SRV records."""

    host: str
    port: int = DEFAULT_S2S_PORT

    @staticmethod
    def parse(text: str) -> EdgeAddress:
        """`host`, `host:port`, `[v6]` or `[v6]:port`; `ValueError` when malformed."""
        text = text.strip()
        if text.startswith("["):
            end = text.find("]")
            if end < 0:
                raise ValueError(f"{text!r}: unterminated IPv6 address")
            host, rest = text[1:end], text[end + 1 :]
            if rest and not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected ':port' after the IPv6 address")
            port_text = rest[1:] if rest else None
        elif text.count(":") == 1:
            host, port_text = text.split(":")
        else:
            host, port_text = text, None
        if not host:
            raise ValueError(f"{text!r}: empty host")
        if port_text is None:
            return EdgeAddress(host)
        if not port_text.isdigit():
            raise ValueError(f"{text!r}: the port must be a number")
        return EdgeAddress(host, int(port_text))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Partner:
    """One row of the partner table (FEDERATION.md §The partner table).

    `domains` are canonical patterns (see `imedge.policy.domains`); `validate_partner`
    checks a row before it is saved. Blocking is `replace(p, allowed=False)`: the row keeps
    its configuration, so unblocking restores it exactly.
    """

    name: str
    domains: tuple[str, ...]
    id: int | None = None  # assigned by the store
    comment: str = ""
    edge_address: EdgeAddress | None = None
    allowed: bool = True
    public: bool = False
    filter: Filter = Filter.VERIFIED
    # RFC 7590 and the 2014 XMPP manifesto: s2s TLS is the norm, so it is required unless
    # an administrator says otherwise for a partner that cannot do it.
    tls: Requirement = Requirement.REQUIRED
    sasl_external: Requirement = Requirement.OPTIONAL
    dialback: bool = True  # XEP-0220 allowed
    connection_limit: int | None = None  # simultaneous s2s streams; None: no limit
    origin: Origin = MANUAL

    @property
    def label(self) -> str:
        """How logs, metrics and explanations name this partner."""
        return self.name


@dataclass(frozen=True, slots=True, kw_only=True)
class GlobalSettings:
    """FEDERATION.md §Global settings and the open-federation abuse limits."""

    federation: bool = True  # off: no s2s at all, in or out
    open_federation: bool = False  # accept domains not in the table, as `contacts_only`
    # Abuse limits for domains discovered under open federation (FEDERATION.md §Every
    # decision is explainable): how many roster contacts local users may hold at one
    # discovered domain, and how many stanzas per second one discovered domain may send.
    open_federation_max_contacts: int = 100
    open_federation_stanza_rate: float = 10.0
    blocked_domains: tuple[str, ...] = ()  # patterns; refused even under open federation
    public_im_licences: int = 0


class VerifiedSubscriptions(StrEnum):
    """FEDERATION.md §Inbound 4: a verified request from outside the allow list."""

    ALLOW = "allow"  # approved by the server
    BLOCK = "block"  # answered `unsubscribed`
    PROMPT = "prompt"  # delivered to the user's clients, who decide


@dataclass(frozen=True, slots=True, kw_only=True)
class UserSettings:
    """FEDERATION.md §Per user. The block list is the user's XEP-0191 list, kept elsewhere.

    A user that does not exist is decided with the defaults (`UserSettings()`), so that no
    decision depends on whether the account exists (RFC 6121 §8.5).
    """

    federation: bool = True
    public_im: bool = False  # counts a licence
    verified_subscriptions: VerifiedSubscriptions = VerifiedSubscriptions.PROMPT
    block_non_allowed_im: bool = False
    allow_list: tuple[str, ...] = ()  # explicit entries: bare JIDs or domain patterns


def on_allow_list(sender: Jid, *, roster: Iterable[Jid], allow: Iterable[str]) -> bool:
    """FEDERATION.md §Words: the allow list is every roster contact (in any subscription
    state) plus the explicit entries; an entry is a bare JID or a domain pattern."""
    bare = sender.bare
    if any(item.bare == bare for item in roster):
        return True
    return any(allow_entry_covers(entry, bare) for entry in allow)


def allow_entry_covers(entry: str, sender: Jid) -> bool:
    """Whether one explicit allow-list entry covers `sender`; malformed entries cover none."""
    try:
        if "@" in entry:
            return Jid.parse(entry.strip()).bare == sender.bare
        pattern = normalize_domain_pattern(entry)
    except (JidMalformed, PatternInvalid):
        return False
    return any(key == pattern for key in candidate_keys(sender.domain))


@dataclass(frozen=True, slots=True)
class FederationConfig:
    """The administrator's whole configuration: global settings and the partner table.

    Built once per change and shared by every decision; the lookups below are indexed, so
    a decision costs a few dict probes whatever the size of the table.
    """

    settings: GlobalSettings = field(default_factory=GlobalSettings)
    partners: tuple[Partner, ...] = ()
    _by_pattern: Mapping[str, Partner] = field(init=False, repr=False, compare=False)
    _blocked: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_pattern", _index(self.partners))
        object.__setattr__(
            self, "_blocked", frozenset(_canonical(p) for p in self.settings.blocked_domains)
        )

    def partner_for(self, domain: str) -> Partner | None:
        """The partner covering `domain`: exact beats wildcard, nearer wildcard beats
        farther; between rows listing the same pattern, the blocked one, then by name."""
        for key in candidate_keys(domain):
            partner = self._by_pattern.get(key)
            if partner is not None:
                return partner
        return None

    def blocked_by(self, domain: str) -> str | None:
        """The blocked-domains pattern that covers `domain`, if any."""
        for key in candidate_keys(domain):
            if key in self._blocked:
                return key
        return None


def match_partner(domain: str, partners: Iterable[Partner]) -> Partner | None:
    """`FederationConfig.partner_for` without building a config (for one-off lookups)."""
    by_pattern = _index(tuple(partners))
    for key in candidate_keys(domain):
        partner = by_pattern.get(key)
        if partner is not None:
            return partner
    return None


def _canonical(pattern: str) -> str:
    try:
        return normalize_domain_pattern(pattern)
    except PatternInvalid:
        return pattern.strip().lower()  # never matches a prepared domain, but stays listed


def _tie_order(partner: Partner) -> tuple[bool, str, str]:
    # Validation forbids two rows with one pattern, but should it happen (an import, a
    # race) the outcome must not depend on row order: fail closed, then go by name.
    return (partner.allowed, partner.name.casefold(), str(partner.id))


def _index(partners: tuple[Partner, ...]) -> dict[str, Partner]:
    index: dict[str, Partner] = {}
    for partner in sorted(partners, key=_tie_order):
        for pattern in partner.domains:
            index.setdefault(_canonical(pattern), partner)
    return index
