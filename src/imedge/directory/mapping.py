"""FEDERATION.md §Words (peer server): LDAP records to directory entries, as a pure function.

`map_records` applies a peer server's `AttributeMapping` to what its LDAP search returned.
An entry that cannot be used is left out and reported as a `SyncIssue`; nothing here
raises for bad data, only for a bad mapping (`MappingInvalid`).

Decisions:
- Attribute names are matched ignoring case (RFC 4512 §2.5); a multi-valued attribute
  gives its first non-blank value.
- The IM address is prepared as a bare JID (RFC 7622) and must have a localpart and lie in
  one of the peer server's domains (a covering `*.` pattern counts).
- Two or more entries mapping to one IM address: none of them is kept, and each is
  reported. Keeping "the first" would depend on the order the LDAP server returns entries
  in, which is not defined, so the directory could flip between people from one sync to
  the next; leaving the address out until the administrator fixes the data is stable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from imedge.directory.model import (
    DirectoryEntry,
    FieldTemplate,
    IssueKind,
    LdapRecord,
    MappingInvalid,
    PeerServer,
    SyncIssue,
    parse_field,
)
from imedge.domain.jid import Jid, JidMalformed
from imedge.policy import PatternInvalid, covers, normalize_domain_pattern

# COMPAT: Microsoft OCS/Lync/Skype keep the IM address as `sip:user@domain` (attribute
# msRTCSIP-PrimaryUserAddress); an XMPP URI (RFC 5122) may appear too. The scheme is dropped.
_URI_SCHEMES = ("sip:", "xmpp:")
MAX_FIELD_CHARS = 1024  # display texts longer than this are cut: a directory is no archive

_OPTIONAL_FIELDS = ("display_name", "email", "phone", "department", "title")


def map_records(
    records: Iterable[LdapRecord], peer: PeerServer
) -> tuple[list[DirectoryEntry], list[SyncIssue]]:
    """The directory entries of `records` (in their order) and the issues of those left out.

    Raise `MappingInvalid` if the peer server's mapping or domains cannot be used at all.
    """
    if peer.id is None:
        raise ValueError("the peer server has no id: store it before syncing")
    im_rule = parse_field(peer.mapping.im_address)
    optional = {
        name: parse_field(spec)
        for name in _OPTIONAL_FIELDS
        if (spec := getattr(peer.mapping, name)) is not None
    }
    try:
        domains = tuple(normalize_domain_pattern(d) for d in peer.domains)
    except PatternInvalid as exc:
        raise MappingInvalid(f"peer server domains: {exc}") from None

    issues: list[SyncIssue] = []
    claims: dict[str, list[DirectoryEntry]] = {}
    for record in records:
        attributes = _lowercased(record.attributes)
        address = _im_address(record.dn, attributes, im_rule, domains, issues)
        if address is None:
            continue
        fields = {name: _text(rule, attributes) for name, rule in optional.items()}
        entry = DirectoryEntry(peer_server_id=peer.id, im_address=address, dn=record.dn, **fields)
        claims.setdefault(address, []).append(entry)

    entries: list[DirectoryEntry] = []
    for address, claimants in claims.items():
        if len(claimants) == 1:
            entries.append(claimants[0])
            continue
        dns = [c.dn for c in claimants]
        for claimant in claimants:
            others = "; ".join(dn for dn in dns if dn != claimant.dn) or claimant.dn
            issues.append(
                SyncIssue(
                    IssueKind.DUPLICATE_IM_ADDRESS,
                    claimant.dn,
                    f"{address} is also the IM address of {others}; none of them is imported",
                )
            )
    return entries, issues


def _lowercased(attributes: Mapping[str, Sequence[str]]) -> dict[str, Sequence[str]]:
    """Keys lowercased. Should a server send one attribute under two spellings, the
    values are joined in the order received."""
    out: dict[str, Sequence[str]] = {}
    for name, values in attributes.items():
        key = name.lower()
        out[key] = (*out[key], *values) if key in out else values
    return out


def _im_address(
    dn: str,
    attributes: Mapping[str, Sequence[str]],
    rule: FieldTemplate,
    domains: tuple[str, ...],
    issues: list[SyncIssue],
) -> str | None:
    raw = rule.render(attributes)
    if raw is None:
        missing = ", ".join(rule.missing(attributes))
        issues.append(SyncIssue(IssueKind.MISSING_IM_ADDRESS, dn, f"no value for {missing}"))
        return None
    try:
        jid = prepare_im_address(raw)
    except JidMalformed as exc:
        issues.append(SyncIssue(IssueKind.INVALID_IM_ADDRESS, dn, f"{raw!r}: {exc}"))
        return None
    if not any(covers(pattern, jid.domain) for pattern in domains):
        issues.append(
            SyncIssue(
                IssueKind.OUTSIDE_DOMAINS,
                dn,
                f"{jid} is not in the peer server's domains ({', '.join(domains)})",
            )
        )
        return None
    return str(jid)


def prepare_im_address(text: str) -> Jid:
    """`text` as a prepared bare JID with a localpart (RFC 7622 §3); `JidMalformed` if not.

    Parts are prepared with `Jid.of`, not `Jid.parse`, so that a sync of 100,000 people
    does not flush the server's cache of parsed addresses.
    """
    text = text.strip()
    lowered = text.lower()
    for scheme in _URI_SCHEMES:
        if lowered.startswith(scheme):
            text = text[len(scheme) :]
            break
    if "/" in text:
        raise JidMalformed("an IM address has no resource ('/...')")
    local, at, domain = text.partition("@")
    if not at or not local:
        raise JidMalformed("an IM address needs a localpart: user@domain")
    return Jid.of(local, domain)


def _text(rule: FieldTemplate, attributes: Mapping[str, Sequence[str]]) -> str | None:
    value = rule.render(attributes)
    if value is None:
        return None
    value = value.strip()
    return value[:MAX_FIELD_CHARS] or None


def requested_attributes(peer: PeerServer) -> list[str]:
    """The LDAP attributes the mapping reads, lowercased and sorted: what a search asks for
    (RFC 4511 §4.5.1.8), so that photos and other large values stay on the server."""
    names: set[str] = set()
    for spec in (peer.mapping.im_address, *(getattr(peer.mapping, f) for f in _OPTIONAL_FIELDS)):
        if spec is not None:
            names.update(parse_field(spec).attributes)
    return sorted(names)
