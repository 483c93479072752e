"""FEDERATION.md §Words (peer server, directory): the values of the corporate directory.

Peer servers, directory entries, sync plans and reports are defined in
`imedge.store.ports` (the store takes and returns them, and layers point downwards) and
re-exported here; this module adds what only the directory needs: the LDAP record a
fetcher returns, the attribute-template syntax, and the checks of a peer server row.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from imedge.policy import PatternInvalid, Problem, Severity, normalize_domain_pattern
from imedge.store.ports import (
    MAX_REPORTED_ISSUES,
    AttributeMapping,
    DirectoryEntry,
    IssueKind,
    LdapSource,
    PeerServer,
    SyncIssue,
    SyncPlan,
    SyncReport,
    SyncStatus,
)

__all__ = [
    "MAX_REPORTED_ISSUES",
    "AttributeMapping",
    "DirectoryEntry",
    "FieldTemplate",
    "IssueKind",
    "LdapRecord",
    "LdapSource",
    "MappingInvalid",
    "PeerServer",
    "SyncIssue",
    "SyncPlan",
    "SyncReport",
    "SyncStatus",
    "normalize_peer_server",
    "parse_field",
    "validate_peer_server",
]

MAX_NAME = 100
MAX_DOMAINS = 200
MAX_PAGE_SIZE = 10_000
LDAP_SCHEMES = ("ldap", "ldaps")


@dataclass(frozen=True, slots=True)
class LdapRecord:
    """One entry as an LDAP search returned it: its DN and its attributes, each with its
    values in the order the server sent them (RFC 4511 §4.1.7 calls them a set)."""

    dn: str
    attributes: Mapping[str, tuple[str, ...]]


class MappingInvalid(ValueError):
    """A mapping field is neither an attribute name nor a well-formed template."""


# RFC 4512 §1.4: an attribute description is a descr (keystring) or a numericoid, then
# options (`;lang-en`, `;binary`).
_ATTRIBUTE = re.compile(r"(?:[A-Za-z][A-Za-z0-9-]*|\d+(?:\.\d+)+)(?:;[A-Za-z0-9-]+)*\Z")
_TEMPLATE_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


@dataclass(frozen=True, slots=True)
class FieldTemplate:
    """A parsed mapping field: `literals[0] {attributes[0]} literals[1] ...`.

    A plain attribute name `mail` parses as the template `{mail}`. Attribute names are
    kept lowercased: LDAP compares them ignoring case (RFC 4512 §2.5).
    """

    literals: tuple[str, ...]
    attributes: tuple[str, ...]

    def render(self, attributes: Mapping[str, Sequence[str]]) -> str | None:
        """The text, with the first value of each attribute (`attributes` keyed by
        lowercased names); None if one of them has no non-blank value."""
        out = [self.literals[0]]
        for name, literal in zip(self.attributes, self.literals[1:], strict=True):
            value = first_value(attributes.get(name))
            if value is None:
                return None
            out.append(value)
            out.append(literal)
        return "".join(out)

    def missing(self, attributes: Mapping[str, Sequence[str]]) -> list[str]:
        """The attributes `render` lacked, for the sync report."""
        return [name for name in self.attributes if first_value(attributes.get(name)) is None]


def first_value(values: Sequence[str] | None) -> str | None:
    """The first non-blank value, stripped. LDAP returns the values of a multi-valued
    attribute in no defined order; in practice servers keep the stored order."""
    for value in values or ():
        stripped = value.strip()
        if stripped:
            return stripped
    return None


def parse_field(spec: str) -> FieldTemplate:
    """Parse a mapping field (see `AttributeMapping`); `MappingInvalid` says what is wrong."""
    text = spec.strip()
    if not text:
        raise MappingInvalid("empty mapping: give an attribute name or a template")
    if "{" not in text and "}" not in text:
        if not _ATTRIBUTE.match(text):
            raise MappingInvalid(f"{spec!r} is not an LDAP attribute name")
        return FieldTemplate(("", ""), (text.lower(),))
    literals: list[str] = []
    attributes: list[str] = []
    current: list[str] = []
    position = 0
    for token in _TEMPLATE_TOKEN.finditer(text):
        current.append(text[position : token.start()])
        position = token.end()
        if token.group(0) in ("{{", "}}"):
            current.append(token.group(0)[0])
            continue
        name = token.group(1)
        if name is None:
            raise MappingInvalid(f"{spec!r}: unmatched {token.group(0)!r} (write {{{{ or }}}})")
        name = name.strip()
        if not _ATTRIBUTE.match(name):
            raise MappingInvalid(f"{spec!r}: {{{name}}} is not an LDAP attribute name")
        literals.append("".join(current))
        attributes.append(name.lower())
        current = []
    current.append(text[position:])
    literals.append("".join(current))
    if not attributes:
        raise MappingInvalid(f"{spec!r}: a template needs at least one {{attribute}}")
    return FieldTemplate(tuple(literals), tuple(attributes))


# --- checks of a peer server row ---------------------------------------------------------


def normalize_peer_server(peer: PeerServer) -> PeerServer:
    """The row as it should be stored: trimmed name and LDAP texts, canonical domain
    patterns (invalid ones are kept as given, for `validate_peer_server` to name)."""
    domains: list[str] = []
    for domain in peer.domains:
        try:
            canonical = normalize_domain_pattern(domain)
        except PatternInvalid:
            canonical = domain.strip()
        if canonical not in domains:
            domains.append(canonical)
    ldap = replace(
        peer.ldap,
        url=peer.ldap.url.strip(),
        base_dn=peer.ldap.base_dn.strip(),
        bind_dn=peer.ldap.bind_dn.strip(),
        filter=peer.ldap.filter.strip(),
    )
    return replace(peer, name=peer.name.strip(), domains=tuple(domains), ldap=ldap)


def validate_peer_server(peer: PeerServer, others: Iterable[PeerServer] = ()) -> list[Problem]:
    """Check a (normalized) row against itself and the other peer servers (a row with the
    same id is the one being edited and is skipped). Errors block the save."""
    rest = [o for o in others if peer.id is None or o.id != peer.id]
    problems: list[Problem] = []

    def error(field: str, message: str) -> None:
        problems.append(Problem(field, message))

    if not peer.name:
        error("name", "a peer server needs a name")
    elif len(peer.name) > MAX_NAME:
        error("name", f"at most {MAX_NAME} characters")
    elif any(o.name.strip().casefold() == peer.name.casefold() for o in rest):
        error("name", f"another peer server is named {peer.name!r}")

    if not peer.domains:
        error("domains", "list the peer server's XMPP domain(s), e.g. ocs.example")
    elif len(peer.domains) > MAX_DOMAINS:
        error("domains", f"at most {MAX_DOMAINS} domains")
    taken = {d: o.name for o in rest for d in o.domains}
    for domain in peer.domains:
        try:
            normalize_domain_pattern(domain)
        except PatternInvalid as exc:
            error("domains", str(exc))
            continue
        if domain in taken:
            error("domains", f"{domain} is already a domain of peer server {taken[domain]!r}")

    problems.extend(_ldap_problems(peer.ldap))

    for field in ("im_address", "display_name", "email", "phone", "department", "title"):
        spec = getattr(peer.mapping, field)
        if spec is None:
            if field == "im_address":
                error("mapping.im_address", "the IM address mapping is required")
            continue
        try:
            parse_field(spec)
        except MappingInvalid as exc:
            error(f"mapping.{field}", str(exc))

    if peer.schedule_minutes is not None and peer.schedule_minutes < 1:
        error("schedule_minutes", "at least 1 minute, or none for on-demand syncs only")
    return problems


def _ldap_problems(ldap: LdapSource) -> list[Problem]:
    problems: list[Problem] = []
    parts = urlsplit(ldap.url)
    scheme = parts.scheme.lower()
    if scheme not in LDAP_SCHEMES or not parts.hostname:
        problems.append(Problem("ldap.url", "use ldap://host[:port] or ldaps://host[:port]"))
    elif scheme == "ldaps" and ldap.start_tls:
        problems.append(
            Problem("ldap.start_tls", "ldaps:// is TLS already; StartTLS is for ldap://")
        )
    elif scheme == "ldap" and not ldap.start_tls:
        problems.append(
            Problem(
                "ldap.start_tls",
                "without StartTLS the bind password and the directory cross the network in "
                "clear text",
                Severity.WARNING,
            )
        )
    try:
        parts.port  # noqa: B018 -- raises ValueError for a port out of range
    except ValueError:
        problems.append(Problem("ldap.url", "the port must be a number from 1 to 65535"))
    if not ldap.base_dn:
        problems.append(Problem("ldap.base_dn", "the base DN is required, e.g. ou=people,dc=x"))
    if ldap.bind_password and not ldap.bind_dn:
        problems.append(Problem("ldap.bind_dn", "a bind password needs a bind DN"))
    # RFC 4515 §3: a filter is parenthesised; the LDAP library parses the rest at sync time.
    text = ldap.filter
    if not (text.startswith("(") and text.endswith(")") and _balanced(text)):
        problems.append(Problem("ldap.filter", "an LDAP filter like (objectClass=person)"))
    if not 1 <= ldap.page_size <= MAX_PAGE_SIZE:
        problems.append(Problem("ldap.page_size", f"from 1 to {MAX_PAGE_SIZE}"))
    if not ldap.timeout > 0:
        problems.append(Problem("ldap.timeout", "a positive number of seconds"))
    return problems


def _balanced(text: str) -> bool:
    """Parentheses balance (escaped ones are `\\28`/`\\29` in a filter, RFC 4515 §3)."""
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0
