"""FEDERATION.md: the JSON shapes of the federation admin API (`/api/v1`).

Plain Pydantic models that mirror `imedge.policy`'s values field for field; the routers
convert between them. Only the shape and the size of input is checked here (types, enums,
bounds that keep hostile input away from the store); whether a value makes sense — a
domain pattern, SASL EXTERNAL without TLS, a name already taken — is `imedge.policy`'s
to say, so the API, the CLI and the web console give the same answers.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from imedge.api.s2s import LinkOut, StreamOut
from imedge.directory.model import (
    AttributeMapping,
    LdapSource,
    PeerServer,
    SyncReport,
)
from imedge.domain.jid import Jid, JidMalformed
from imedge.policy import (
    EdgeAddress,
    Filter,
    GlobalSettings,
    Partner,
    Requirement,
    UserSettings,
    VerifiedSubscriptions,
)

# Bounds against abuse, well above what the policy accepts (it names the real limits).
MAX_TEXT = 10_000
MAX_ITEMS = 20_000
MAX_COUNT = 1_000_000_000  # stays inside a 64-bit column on every engine


def _clean_text(value: str) -> str:
    # NUL is refused by PostgreSQL text columns, and lone surrogates cannot be encoded in
    # UTF-8 at all: both would otherwise fail in the store, far from the field at fault.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


Text = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_clean_text)]
clean_text = _clean_text  # for query parameters, which take the validator on its own
Count = Annotated[int, Field(ge=-MAX_COUNT, le=MAX_COUNT)]


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def _optional(description: str, **constraints: Any) -> Any:
    """A PATCH field: may be left out, but when given must have the field's type (a
    `null` name is refused rather than taken as "no change")."""
    return Field(
        default=None, description=description, json_schema_extra=_no_default, **constraints
    )


def _default(cls: type[object], name: str) -> Any:
    """A policy value's default, so the API's defaults cannot drift from the policy's."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return fields[name].default


# --- partners ----------------------------------------------------------------------------

_DESCRIPTIONS = {
    "name": "How administrators, logs and explanations name the partner (unique)",
    "comment": "Free text for administrators",
    "domains": (
        "The partner's XMPP domains; `*.example.org` covers every subdomain of example.org "
        "(but not example.org itself)"
    ),
    "edge_address": (
        "`host[:port]` where outbound s2s connections go instead of the DNS SRV lookup; "
        "null: look the domain up"
    ),
    "allowed": "false: blocked (the row keeps its configuration; its streams are closed)",
    "public": "A public IM provider: its users are reachable only by users with public IM",
    "filter": (
        "How inbound stanzas are marked: contacts_only (always unverified), verified "
        "(verified when the stream's certificate validated), all (always verified)"
    ),
    "tls": "Whether the partner's servers must use TLS",
    "sasl_external": "Whether they must authenticate with SASL EXTERNAL (their certificate)",
    "dialback": "Whether Server Dialback (XEP-0220) is accepted from them",
    "connection_limit": "Simultaneous inbound s2s streams allowed; null: no limit",
}


def _edge(value: str | None) -> str | None:
    if value is None:
        return None
    return str(EdgeAddress.parse(value))  # ValueError names the trouble


class PartnerIn(BaseModel):
    """A new row of the partner table (FEDERATION.md §The partner table)."""

    model_config = ConfigDict(extra="forbid")

    name: Text = Field(description=_DESCRIPTIONS["name"])
    comment: Text = Field(default="", description=_DESCRIPTIONS["comment"])
    domains: list[Text] = Field(max_length=MAX_ITEMS, description=_DESCRIPTIONS["domains"])
    edge_address: Text | None = Field(default=None, description=_DESCRIPTIONS["edge_address"])
    allowed: bool = Field(
        default=_default(Partner, "allowed"), description=_DESCRIPTIONS["allowed"]
    )
    public: bool = Field(default=_default(Partner, "public"), description=_DESCRIPTIONS["public"])
    filter: Filter = Field(default=_default(Partner, "filter"), description=_DESCRIPTIONS["filter"])
    tls: Requirement = Field(default=_default(Partner, "tls"), description=_DESCRIPTIONS["tls"])
    sasl_external: Requirement = Field(
        default=_default(Partner, "sasl_external"), description=_DESCRIPTIONS["sasl_external"]
    )
    dialback: bool = Field(
        default=_default(Partner, "dialback"), description=_DESCRIPTIONS["dialback"]
    )
    connection_limit: Count | None = Field(
        default=None, description=_DESCRIPTIONS["connection_limit"]
    )

    @field_validator("edge_address")
    @classmethod
    def _edge_address(cls, value: str | None) -> str | None:
        return _edge(value)

    def to_partner(self) -> Partner:
        values = self.model_dump()
        values["domains"] = tuple(values["domains"])
        values["edge_address"] = (
            EdgeAddress.parse(self.edge_address) if self.edge_address is not None else None
        )
        return Partner(**values)


class PartnerPatch(BaseModel):
    """Any subset of a partner's fields; those left out keep their value."""

    model_config = ConfigDict(extra="forbid")

    name: Text = _optional(_DESCRIPTIONS["name"])
    comment: Text = _optional(_DESCRIPTIONS["comment"])
    domains: list[Text] = _optional(_DESCRIPTIONS["domains"], max_length=MAX_ITEMS)
    # null is a value here: "no edge address, use DNS".
    edge_address: Text | None = _optional(_DESCRIPTIONS["edge_address"])
    allowed: bool = _optional(_DESCRIPTIONS["allowed"])
    public: bool = _optional(_DESCRIPTIONS["public"])
    filter: Filter = _optional(_DESCRIPTIONS["filter"])
    tls: Requirement = _optional(_DESCRIPTIONS["tls"])
    sasl_external: Requirement = _optional(_DESCRIPTIONS["sasl_external"])
    dialback: bool = _optional(_DESCRIPTIONS["dialback"])
    # null is a value here: "no limit".
    connection_limit: Count | None = _optional(_DESCRIPTIONS["connection_limit"])

    @field_validator("edge_address")
    @classmethod
    def _edge_address(cls, value: str | None) -> str | None:
        return _edge(value)

    def changes(self) -> dict[str, object]:
        """The fields given, as `Partner` field values."""
        out: dict[str, object] = dict(self.model_dump(exclude_unset=True))
        if "domains" in out:
            out["domains"] = tuple(self.domains)
        if "edge_address" in out:
            out["edge_address"] = (
                EdgeAddress.parse(self.edge_address) if self.edge_address is not None else None
            )
        return out


class PartnerOut(BaseModel):
    """One row of the partner table."""

    id: int
    name: str = Field(description=_DESCRIPTIONS["name"])
    comment: str = Field(description=_DESCRIPTIONS["comment"])
    domains: list[str] = Field(description=_DESCRIPTIONS["domains"])
    edge_address: str | None = Field(description=_DESCRIPTIONS["edge_address"])
    allowed: bool = Field(description=_DESCRIPTIONS["allowed"])
    public: bool = Field(description=_DESCRIPTIONS["public"])
    filter: Filter = Field(description=_DESCRIPTIONS["filter"])
    tls: Requirement = Field(description=_DESCRIPTIONS["tls"])
    sasl_external: Requirement = Field(description=_DESCRIPTIONS["sasl_external"])
    dialback: bool = Field(description=_DESCRIPTIONS["dialback"])
    connection_limit: int | None = Field(description=_DESCRIPTIONS["connection_limit"])
    origin: str = Field(
        description="Where the row came from: manual, default (a fresh install's list) or "
        "peer-server:<id> (a peer server's directory sync)"
    )

    @classmethod
    def of(cls, partner: Partner) -> PartnerOut:
        assert partner.id is not None
        return cls(
            id=partner.id,
            name=partner.name,
            comment=partner.comment,
            domains=list(partner.domains),
            edge_address=str(partner.edge_address) if partner.edge_address else None,
            allowed=partner.allowed,
            public=partner.public,
            filter=partner.filter,
            tls=partner.tls,
            sasl_external=partner.sasl_external,
            dialback=partner.dialback,
            connection_limit=partner.connection_limit,
            origin=str(partner.origin),
        )


class DecisionCount(BaseModel):
    verdict: str
    reason: str
    count: int


class PartnerStatusOut(BaseModel):
    """A partner's live streams, our links to it, and its decisions so far."""

    partner: str
    allowed: bool
    streams: list[StreamOut] = Field(description="Live s2s streams with the partner's domains")
    links: list[LinkOut] = Field(description="Our outbound links to its domains")
    last_success: float | None = Field(description="Unix time of the last connection")
    last_failure: float | None = Field(description="Unix time of the last failed connection")
    last_failure_reason: str | None = Field(description="Where and why it failed")
    decisions: list[DecisionCount] = Field(
        description="Federation decisions on its traffic since the server started"
    )


class PartnerTestIn(BaseModel):
    # Not a test class, whatever pytest's collector may think of the name.
    __test__ = False
    model_config = ConfigDict(extra="forbid")

    domain: Text | None = Field(
        default=None,
        description="The domain to try (default: the partner's first domain that is not a "
        "wildcard); it must be one the partner covers",
    )


# --- global settings --------------------------------------------------------------------

_SETTINGS = {
    "federation": "Server-to-server federation at all; false closes every s2s stream",
    "open_federation": (
        "Accept domains not in the partner table, as partners with filter contacts_only"
    ),
    "open_federation_max_contacts": (
        "Roster contacts local users may hold at one domain discovered by open federation"
    ),
    "open_federation_stanza_rate": "Stanzas per second one discovered domain may send",
    "blocked_domains": "Domains (patterns) refused always, even under open federation",
    "public_im_licences": "How many users may have public IM",
}


class SettingsOut(BaseModel):
    """FEDERATION.md §Global settings."""

    federation: bool = Field(description=_SETTINGS["federation"])
    open_federation: bool = Field(description=_SETTINGS["open_federation"])
    open_federation_max_contacts: int = Field(description=_SETTINGS["open_federation_max_contacts"])
    open_federation_stanza_rate: float = Field(description=_SETTINGS["open_federation_stanza_rate"])
    blocked_domains: list[str] = Field(description=_SETTINGS["blocked_domains"])
    public_im_licences: int = Field(description=_SETTINGS["public_im_licences"])
    public_im_in_use: int = Field(description="How many users have public IM now")

    @classmethod
    def of(cls, settings: GlobalSettings, in_use: int) -> SettingsOut:
        return cls(
            federation=settings.federation,
            open_federation=settings.open_federation,
            open_federation_max_contacts=settings.open_federation_max_contacts,
            open_federation_stanza_rate=settings.open_federation_stanza_rate,
            blocked_domains=list(settings.blocked_domains),
            public_im_licences=settings.public_im_licences,
            public_im_in_use=in_use,
        )


class SettingsPatch(BaseModel):
    """Any subset of the global settings."""

    model_config = ConfigDict(extra="forbid")

    federation: bool = _optional(_SETTINGS["federation"])
    open_federation: bool = _optional(_SETTINGS["open_federation"])
    open_federation_max_contacts: Count = _optional(_SETTINGS["open_federation_max_contacts"])
    open_federation_stanza_rate: float = _optional(
        _SETTINGS["open_federation_stanza_rate"], allow_inf_nan=False, le=1e9
    )
    blocked_domains: list[Text] = _optional(_SETTINGS["blocked_domains"], max_length=MAX_ITEMS)
    public_im_licences: Count = _optional(_SETTINGS["public_im_licences"])

    def changes(self) -> dict[str, object]:
        out: dict[str, object] = dict(self.model_dump(exclude_unset=True))
        if "blocked_domains" in out:
            out["blocked_domains"] = tuple(self.blocked_domains)
        return out


class FederationStatusOut(BaseModel):
    """Federation at a glance."""

    federation: bool
    open_federation: bool
    partners: int = Field(description="Rows in the partner table")
    allowed: int = Field(description="Partners allowed")
    blocked: int = Field(description="Partners blocked")
    live_streams: int = Field(description="Live s2s streams, both directions")
    links: list[LinkOut] = Field(description="Our outbound links per remote domain")


# --- users ----------------------------------------------------------------------------------

_USER = {
    "federation": "Whether the user may exchange anything with other servers",
    "public_im": "Whether the user may reach public IM providers (takes a licence)",
    "verified_subscriptions": (
        "A verified subscription request from outside the allow list: allow (approved by "
        "the server), block (refused) or prompt (the user decides)"
    ),
    "block_non_allowed_im": "Refuse messages from senders outside the allow list",
    "allow_list": (
        "Explicit allow-list entries: bare JIDs or domain patterns (roster contacts are on "
        "the allow list anyway)"
    ),
}


class UserFederationOut(BaseModel):
    """FEDERATION.md §Per user (the block list is the user's XEP-0191 list)."""

    user: str = Field(description="The user's bare JID")
    federation: bool = Field(description=_USER["federation"])
    public_im: bool = Field(description=_USER["public_im"])
    verified_subscriptions: VerifiedSubscriptions = Field(
        description=_USER["verified_subscriptions"]
    )
    block_non_allowed_im: bool = Field(description=_USER["block_non_allowed_im"])
    allow_list: list[str] = Field(description=_USER["allow_list"])

    @classmethod
    def of(cls, user: str, settings: UserSettings) -> UserFederationOut:
        return cls(
            user=user,
            federation=settings.federation,
            public_im=settings.public_im,
            verified_subscriptions=settings.verified_subscriptions,
            block_non_allowed_im=settings.block_non_allowed_im,
            allow_list=list(settings.allow_list),
        )


class UserFederationPatch(BaseModel):
    """Any subset of a user's federation settings."""

    model_config = ConfigDict(extra="forbid")

    federation: bool = _optional(_USER["federation"])
    public_im: bool = _optional(_USER["public_im"])
    verified_subscriptions: VerifiedSubscriptions = _optional(_USER["verified_subscriptions"])
    block_non_allowed_im: bool = _optional(_USER["block_non_allowed_im"])
    allow_list: list[Text] = _optional(_USER["allow_list"], max_length=MAX_ITEMS)

    def changes(self) -> dict[str, object]:
        out: dict[str, object] = dict(self.model_dump(exclude_unset=True))
        if "allow_list" in out:
            out["allow_list"] = tuple(self.allow_list)
        return out


# --- audit -------------------------------------------------------------------------------


class AuditEntryOut(BaseModel):
    """One federation decision kept in the audit log."""

    id: int | None
    at: float = Field(description="Unix time")
    direction: str = Field(description="in, out or stream")
    domain: str = Field(description="The remote domain")
    partner: str | None = Field(description="The partner's name; null for an unlisted domain")
    sender: str
    recipient: str
    kind: str = Field(description="subscribe, message, iq, presence, ... or stream")
    verdict: str
    reason: str = Field(description="The reason code")
    text: str = Field(description="The decision explained in one paragraph")


class ChangeEntryOut(BaseModel):
    """One administrative change: who did what to which object."""

    id: int | None
    at: float = Field(description="Unix time")
    actor: str = Field(description="api:token, cli:<user>, admin:<jid>, directory-sync, ...")
    action: str = Field(description="partner.add, partner.block, settings.update, ...")
    target: str = Field(description="The partner's name, settings, or a user's JID")
    detail: str = Field(description="The change as JSON text")


# --- explain -----------------------------------------------------------------------------


def _address(value: str) -> str:
    try:
        return str(Jid.parse(value.strip()))
    except JidMalformed as exc:
        raise ValueError(f"not a valid XMPP address: {exc}") from None


Address = Annotated[str, Field(min_length=1, max_length=3071), AfterValidator(_address)]


class ExplainIn(BaseModel):
    """A stanza to decide on, without sending anything."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    sender: Address = Field(alias="from", description="Who sends it: s@D (or a local user)")
    recipient: Address = Field(alias="to", description="Who receives it: r@local (or remote)")
    kind: Literal["subscribe", "message", "iq", "presence", "subscription_answer"] = Field(
        description="What it is: a subscription request, a message, an IQ, other presence, "
        "or an answer to a subscription"
    )
    trust: Literal["strong", "weak"] | None = Field(
        default=None,
        description="Inbound only: the trust of the stream carrying it (strong: a certificate "
        "that validated; weak: dialback alone). null: that of a live stream from the sender's "
        "domain, or weak when there is none",
    )


class ExplainOut(BaseModel):
    """The decision, and every step that led to it."""

    verdict: str = Field(description="accept, approve, prompt or reject")
    reason: str = Field(description="The reason code")
    paragraph: str = Field(description="The decision in one paragraph")
    steps: list[str] = Field(description="One line per rule evaluated, in order")
    decision: dict[str, Any] = Field(description="The whole decision, machine-readable")
    assumed: str | None = Field(
        default=None, description="What was assumed for want of a live stream, if anything"
    )


# --- peer servers and the corporate directory (issue 5) ----------------------------------

# A network wait longer than an hour is a typo, and would hold a sync (or a test) that long.
MAX_LDAP_TIMEOUT = 3600.0

_PEER = {
    "name": "How administrators and reports name the peer server (unique)",
    "domains": "The peer server's XMPP domains; its people's IM addresses must be in them",
    "edge_address": (
        "`host[:port]` where s2s traffic to its domains goes (its edge); null: DNS SRV"
    ),
    "schedule_minutes": "Sync automatically this often; null: on demand only",
    "enabled": "false: the scheduler leaves it alone (an on-demand sync still runs)",
}
_LDAP = {
    "url": "`ldap://host[:port]` (with start_tls) or `ldaps://host[:port]`",
    "start_tls": "Upgrade an ldap:// connection with StartTLS (RFC 4513 §3)",
    "bind_dn": "The DN to bind as; empty: anonymous",
    "bind_password": "The bind password; write-only, kept encrypted, never returned",
    "base_dn": "Where the people are searched, e.g. ou=people,dc=ocs,dc=example",
    "filter": "The RFC 4515 search filter, e.g. (objectClass=inetOrgPerson)",
    "page_size": "Entries per page of the paged search (RFC 2696)",
    "timeout": "Seconds allowed for each network wait",
    "ca_file": "A PEM file of the CAs that sign the LDAP server's certificate; null: system",
}
_MAPPING = "An LDAP attribute name (`mail`) or a template (`{uid}@ocs.example`); null: left empty"


class LdapIn(BaseModel):
    """Where a peer server's people come from."""

    model_config = ConfigDict(extra="forbid")

    url: Text = Field(description=_LDAP["url"])
    start_tls: bool = Field(
        default=_default(LdapSource, "start_tls"), description=_LDAP["start_tls"]
    )
    bind_dn: Text = Field(default="", description=_LDAP["bind_dn"])
    bind_password: Text = Field(default="", description=_LDAP["bind_password"])
    base_dn: Text = Field(description=_LDAP["base_dn"])
    filter: Text = Field(default=_default(LdapSource, "filter"), description=_LDAP["filter"])
    page_size: Count = Field(
        default=_default(LdapSource, "page_size"), description=_LDAP["page_size"]
    )
    timeout: float = Field(
        default=_default(LdapSource, "timeout"),
        allow_inf_nan=False,
        ge=-MAX_LDAP_TIMEOUT,
        le=MAX_LDAP_TIMEOUT,
        description=_LDAP["timeout"],
    )
    ca_file: Text | None = Field(default=None, description=_LDAP["ca_file"])

    def to_source(self) -> LdapSource:
        return LdapSource(**self.model_dump())


class LdapPatch(BaseModel):
    """Any subset of the LDAP source; `bind_password` left out keeps the stored one."""

    model_config = ConfigDict(extra="forbid")

    url: Text = _optional(_LDAP["url"])
    start_tls: bool = _optional(_LDAP["start_tls"])
    bind_dn: Text = _optional(_LDAP["bind_dn"])
    bind_password: Text = _optional(_LDAP["bind_password"] + "; left out: unchanged")
    base_dn: Text = _optional(_LDAP["base_dn"])
    filter: Text = _optional(_LDAP["filter"])
    page_size: Count = _optional(_LDAP["page_size"])
    timeout: float = _optional(
        _LDAP["timeout"], allow_inf_nan=False, ge=-MAX_LDAP_TIMEOUT, le=MAX_LDAP_TIMEOUT
    )
    ca_file: Text | None = _optional(_LDAP["ca_file"])


class LdapOut(BaseModel):
    """The LDAP source as stored, without its password."""

    url: str = Field(description=_LDAP["url"])
    start_tls: bool = Field(description=_LDAP["start_tls"])
    bind_dn: str = Field(description=_LDAP["bind_dn"])
    has_password: bool = Field(description="Whether a bind password is stored")
    base_dn: str = Field(description=_LDAP["base_dn"])
    filter: str = Field(description=_LDAP["filter"])
    page_size: int = Field(description=_LDAP["page_size"])
    timeout: float = Field(description=_LDAP["timeout"])
    ca_file: str | None = Field(description=_LDAP["ca_file"])


class MappingIn(BaseModel):
    """Which LDAP attributes (or templates) fill which directory fields."""

    model_config = ConfigDict(extra="forbid")

    im_address: Text = Field(description="The IM address: an attribute or a template")
    display_name: Text | None = Field(
        default=_default(AttributeMapping, "display_name"), description=_MAPPING
    )
    email: Text | None = Field(default=_default(AttributeMapping, "email"), description=_MAPPING)
    phone: Text | None = Field(default=_default(AttributeMapping, "phone"), description=_MAPPING)
    department: Text | None = Field(
        default=_default(AttributeMapping, "department"), description=_MAPPING
    )
    title: Text | None = Field(default=_default(AttributeMapping, "title"), description=_MAPPING)


class MappingPatch(BaseModel):
    """Any subset of the attribute mapping."""

    model_config = ConfigDict(extra="forbid")

    im_address: Text = _optional(_MAPPING)
    display_name: Text | None = _optional(_MAPPING)
    email: Text | None = _optional(_MAPPING)
    phone: Text | None = _optional(_MAPPING)
    department: Text | None = _optional(_MAPPING)
    title: Text | None = _optional(_MAPPING)


class MappingOut(BaseModel):
    im_address: str
    display_name: str | None
    email: str | None
    phone: str | None
    department: str | None
    title: str | None


class PeerServerIn(BaseModel):
    """A new peer server (FEDERATION.md §Words: peer server)."""

    model_config = ConfigDict(extra="forbid")

    name: Text = Field(description=_PEER["name"])
    domains: list[Text] = Field(max_length=MAX_ITEMS, description=_PEER["domains"])
    edge_address: Text | None = Field(default=None, description=_PEER["edge_address"])
    schedule_minutes: Count | None = Field(default=None, description=_PEER["schedule_minutes"])
    enabled: bool = Field(default=True, description=_PEER["enabled"])
    ldap: LdapIn
    mapping: MappingIn

    @field_validator("edge_address")
    @classmethod
    def _edge_address(cls, value: str | None) -> str | None:
        return _edge(value)

    def to_peer_server(self) -> PeerServer:
        return PeerServer(
            name=self.name,
            domains=tuple(self.domains),
            edge_address=EdgeAddress.parse(self.edge_address) if self.edge_address else None,
            schedule_minutes=self.schedule_minutes,
            enabled=self.enabled,
            ldap=self.ldap.to_source(),
            mapping=AttributeMapping(**self.mapping.model_dump()),
        )


class PeerServerPatch(BaseModel):
    """Any subset of a peer server's fields, nested ones included; those left out keep
    their value (the bind password above all)."""

    model_config = ConfigDict(extra="forbid")

    name: Text = _optional(_PEER["name"])
    domains: list[Text] = _optional(_PEER["domains"], max_length=MAX_ITEMS)
    # null is a value here: "no edge address, use DNS".
    edge_address: Text | None = _optional(_PEER["edge_address"])
    # null is a value here: "on demand only".
    schedule_minutes: Count | None = _optional(_PEER["schedule_minutes"])
    enabled: bool = _optional(_PEER["enabled"])
    ldap: LdapPatch = _optional("Changes to the LDAP source")
    mapping: MappingPatch = _optional("Changes to the attribute mapping")

    @field_validator("edge_address")
    @classmethod
    def _edge_address(cls, value: str | None) -> str | None:
        return _edge(value)

    def apply(self, peer: PeerServer) -> PeerServer:
        """`peer` with the fields given replaced."""
        top: dict[str, Any] = self.model_dump(exclude_unset=True, exclude={"ldap", "mapping"})
        if "domains" in top:
            top["domains"] = tuple(self.domains)
        if "edge_address" in top:
            top["edge_address"] = (
                EdgeAddress.parse(self.edge_address) if self.edge_address else None
            )
        if "ldap" in self.model_fields_set and self.ldap is not None:
            top["ldap"] = dataclasses.replace(peer.ldap, **self.ldap.model_dump(exclude_unset=True))
        if "mapping" in self.model_fields_set and self.mapping is not None:
            top["mapping"] = dataclasses.replace(
                peer.mapping, **self.mapping.model_dump(exclude_unset=True)
            )
        return dataclasses.replace(peer, **top)


class PeerServerOut(BaseModel):
    """A peer server as stored; its bind password is never returned."""

    id: int
    name: str = Field(description=_PEER["name"])
    domains: list[str] = Field(description=_PEER["domains"])
    edge_address: str | None = Field(description=_PEER["edge_address"])
    schedule_minutes: int | None = Field(description=_PEER["schedule_minutes"])
    enabled: bool = Field(description=_PEER["enabled"])
    ldap: LdapOut
    mapping: MappingOut

    @classmethod
    def of(cls, peer: PeerServer) -> PeerServerOut:
        assert peer.id is not None
        source = peer.ldap
        return cls(
            id=peer.id,
            name=peer.name,
            domains=list(peer.domains),
            edge_address=str(peer.edge_address) if peer.edge_address else None,
            schedule_minutes=peer.schedule_minutes,
            enabled=peer.enabled,
            ldap=LdapOut(
                url=source.url,
                start_tls=source.start_tls,
                bind_dn=source.bind_dn,
                has_password=bool(source.bind_password),
                base_dn=source.base_dn,
                filter=source.filter,
                page_size=source.page_size,
                timeout=source.timeout,
                ca_file=source.ca_file,
            ),
            mapping=MappingOut.model_validate(dataclasses.asdict(peer.mapping)),
        )


class LdapTestOut(BaseModel):
    ok: bool = Field(description="Whether the bind, the base DN and the filter worked")
    summary: str = Field(description="What was found, or what went wrong and what to do")


class SyncIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dry_run: bool = Field(
        default=False, description="Compute the plan and report it, but change nothing"
    )


class SyncStartedOut(BaseModel):
    sync: Literal["started"] = "started"


# A report lists the first issues; `issue_count` counts them all.
MAX_ISSUES_OUT = 100


class SyncIssueOut(BaseModel):
    kind: str = Field(
        description="missing_im_address, invalid_im_address, duplicate_im_address or "
        "outside_domains"
    )
    dn: str = Field(description="The LDAP entry left out")
    detail: str


class SyncReportOut(BaseModel):
    """What one sync did (or, for a dry run, would do)."""

    started: float = Field(description="Unix time")
    finished: float = Field(description="Unix time")
    status: str = Field(description="ok, failed (nothing changed) or interrupted")
    added: int
    changed: int
    removed: int
    unchanged: int
    issues: list[SyncIssueOut] = Field(description=f"The first {MAX_ISSUES_OUT} issues")
    issue_count: int = Field(description="All entries left out, and why")
    error: str | None = Field(description="Why it failed or stopped, or a note on the partner")
    dry_run: bool = Field(default=False, description="A dry run: nothing was applied")

    @classmethod
    def of(cls, report: SyncReport, *, dry_run: bool = False) -> SyncReportOut:
        return cls(
            started=report.started,
            finished=report.finished,
            status=str(report.status),
            added=report.added,
            changed=report.changed,
            removed=report.removed,
            unchanged=report.unchanged,
            issues=[
                SyncIssueOut(kind=str(i.kind), dn=i.dn, detail=i.detail)
                for i in report.issues[:MAX_ISSUES_OUT]
            ],
            issue_count=report.issue_count,
            error=report.error,
            dry_run=dry_run,
        )


class SyncProgressOut(BaseModel):
    running: bool = Field(description="Whether a sync of the peer server is running now")
    fetched: int = Field(description="Entries fetched from LDAP so far (or by the last sync)")
    started: float | None = Field(description="Unix time the running or last sync started")
    last_report: SyncReportOut | None = Field(description="The last finished sync")


class DirectoryPersonOut(BaseModel):
    """One person of the corporate directory: a local user or a peer server's entry."""

    jid: str = Field(description="The IM address")
    name: str | None = Field(description="The display name")
    email: str | None
    phone: str | None
    department: str | None
    title: str | None
    local: bool = Field(description="A user of this server")
    peer_server: str | None = Field(description="The peer server's name; null for local users")
    peer_server_id: int | None
    reachable: bool = Field(
        description="Whether federation with the person's domain is possible now"
    )
