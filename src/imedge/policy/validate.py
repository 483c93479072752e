"""FEDERATION.md §The partner table: what is checked before a change is saved.

Every check returns `Problem`s naming the field and the trouble, in words an
administrator acts on; the API turns them into a 4xx body, the CLI prints them. Errors
block the save; warnings are shown and the save goes on.

Decisions taken here (FEDERATION.md is silent on them):
- `sasl_external = required` with dialback allowed is saved, with a warning: dialback is
  then never accepted (`decide_stream` asks for SASL EXTERNAL first), which is harmless,
  and an administrator switching EXTERNAL back to optional gets dialback back as it was.
- `tls = off` with `filter = verified` is saved, with a warning: without TLS no certificate
  validates, trust is always weak, and the partner behaves as `contacts_only`.
- One domain pattern belongs to one partner; `example.org` in one row and `*.example.org`
  in another is fine (the exact domain wins for `example.org`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from imedge.domain.jid import Jid, JidMalformed, prep_domain
from imedge.policy.domains import (
    PatternInvalid,
    candidate_keys,
    is_wildcard,
    normalize_domain_pattern,
)
from imedge.policy.model import Filter, GlobalSettings, Partner, Requirement, UserSettings

MAX_NAME = 100
MAX_COMMENT = 2000
MAX_DOMAINS = 200
MAX_ALLOW_ENTRIES = 10_000


class Severity(StrEnum):
    ERROR = "error"  # the change is refused
    WARNING = "warning"  # the change is saved; the administrator should know


@dataclass(frozen=True, slots=True)
class Problem:
    field: str  # the field's name as the API and the CLI spell it
    message: str
    severity: Severity = Severity.ERROR


def has_errors(problems: Iterable[Problem]) -> bool:
    return any(p.severity is Severity.ERROR for p in problems)


# ---------------------------------------------------------------- normalisation


def normalize_partner(partner: Partner) -> Partner:
    """The row as it should be stored: trimmed name and comment, canonical domain patterns.
    Invalid patterns are kept as given, for `validate_partner` to report."""
    return replace(
        partner,
        name=partner.name.strip(),
        comment=partner.comment.strip(),
        domains=tuple(_canonical_or_same(d) for d in partner.domains),
    )


def normalize_settings(settings: GlobalSettings) -> GlobalSettings:
    return replace(
        settings, blocked_domains=tuple(_canonical_or_same(d) for d in settings.blocked_domains)
    )


def _canonical_or_same(pattern: str) -> str:
    try:
        return normalize_domain_pattern(pattern)
    except PatternInvalid:
        return pattern


# ---------------------------------------------------------------- partners


def validate_partner(
    partner: Partner,
    others: Iterable[Partner] = (),
    *,
    local_domains: Iterable[str] = (),
    blocked_domains: Iterable[str] = (),
) -> list[Problem]:
    """Check one partner row against itself and the rest of the table (`others`; a row
    with the same `id` as `partner` is the row being edited and is skipped)."""
    rest = [o for o in others if partner.id is None or o.id != partner.id]
    problems: list[Problem] = []
    problems += _check_name(partner, rest)
    if len(partner.comment) > MAX_COMMENT:
        problems.append(Problem("comment", f"a comment has at most {MAX_COMMENT} characters"))
    problems += _check_domains(partner, rest, local_domains, blocked_domains)
    problems += _check_edge_address(partner)
    problems += _check_authentication(partner)
    if partner.connection_limit is not None and partner.connection_limit < 1:
        problems.append(
            Problem("connection_limit", "the connection limit is at least 1 (or none at all)")
        )
    return problems


def _check_name(partner: Partner, rest: list[Partner]) -> list[Problem]:
    name = partner.name.strip()
    if not name:
        return [Problem("name", "a partner needs a name")]
    if len(name) > MAX_NAME:
        return [Problem("name", f"a name has at most {MAX_NAME} characters")]
    if not name.isprintable():
        return [Problem("name", "a name cannot hold control characters")]
    if any(o.name.strip().casefold() == name.casefold() for o in rest):
        return [Problem("name", f"another partner is already named {name!r}")]
    return []


def _check_domains(
    partner: Partner,
    rest: list[Partner],
    local_domains: Iterable[str],
    blocked_domains: Iterable[str],
) -> list[Problem]:
    if not partner.domains:
        return [Problem("domains", "list at least one domain")]
    if len(partner.domains) > MAX_DOMAINS:
        return [Problem("domains", f"a partner lists at most {MAX_DOMAINS} domains")]
    problems: list[Problem] = []
    local = {_canonical_or_same(d) for d in local_domains}
    blocked = {_canonical_or_same(d) for d in blocked_domains}
    taken = {_canonical_or_same(d): o.name for o in rest for d in o.domains}
    seen: set[str] = set()
    for given in partner.domains:
        try:
            pattern = normalize_domain_pattern(given)
        except PatternInvalid as exc:
            problems.append(Problem("domains", str(exc)))
            continue
        if pattern in seen:
            problems.append(Problem("domains", f"{pattern} is listed twice"))
            continue
        seen.add(pattern)
        if pattern in taken:
            problems.append(
                Problem("domains", f"{pattern} is already listed by partner {taken[pattern]!r}")
            )
        served = sorted(d for d in local if pattern in candidate_keys(d))
        if served:
            problems.append(
                Problem("domains", f"{pattern} covers {served[0]}, which this server serves")
            )
        if is_wildcard(pattern) and "." not in pattern[2:]:
            problems.append(
                Problem(
                    "domains",
                    f"{pattern} covers every domain under .{pattern[2:]}",
                    Severity.WARNING,
                )
            )
        if _blocked_keys(pattern) & blocked:
            problems.append(
                Problem(
                    "domains",
                    f"{pattern} is also a blocked domain, and the block wins",
                    Severity.WARNING,
                )
            )
    return problems


def _blocked_keys(pattern: str) -> set[str]:
    """The blocked-domain patterns that would cover every domain `pattern` covers."""
    if not is_wildcard(pattern):
        return set(candidate_keys(pattern))
    parent = pattern[2:]
    return {pattern} | (set(candidate_keys(parent)) - {parent})


def _check_edge_address(partner: Partner) -> list[Problem]:
    edge = partner.edge_address
    if edge is None:
        return []
    problems: list[Problem] = []
    if not is_valid_host(edge.host):
        problems.append(Problem("edge_address", f"{edge.host!r} is not a host name or address"))
    if not 1 <= edge.port <= 65535:
        problems.append(Problem("edge_address", "the port is between 1 and 65535"))
    return problems


def is_valid_host(host: str) -> bool:
    """A DNS name or an IP address (IPv6 without brackets), as an edge address host."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return True
    if not host or "*" in host or host.startswith("["):
        return False
    try:
        prep_domain(host)
    except JidMalformed:
        return False
    return True


def _check_authentication(partner: Partner) -> list[Problem]:
    """Combinations of tls / sasl_external / dialback that cannot work, or do less than
    they seem to."""
    tls, sasl, dialback = partner.tls, partner.sasl_external, partner.dialback
    problems: list[Problem] = []
    if tls is Requirement.OFF and sasl is not Requirement.OFF:
        # RFC 6120 §6.4 / XEP-0178: EXTERNAL authenticates with the TLS client certificate.
        problems.append(
            Problem(
                "sasl_external",
                "SASL EXTERNAL uses the TLS certificate, so it cannot work with tls off: "
                "set tls to required or optional, or sasl_external to off",
            )
        )
    if sasl is Requirement.OFF and not dialback:
        problems.append(
            Problem(
                "dialback",
                "nothing is left to authenticate with: allow dialback or SASL EXTERNAL",
            )
        )
    if sasl is Requirement.REQUIRED and dialback:
        problems.append(
            Problem(
                "dialback",
                "SASL EXTERNAL is required, so dialback is never accepted from this partner",
                Severity.WARNING,
            )
        )
    if sasl is Requirement.REQUIRED and tls is Requirement.OPTIONAL:
        problems.append(
            Problem(
                "tls",
                "SASL EXTERNAL is required and needs TLS, so TLS is required in effect",
                Severity.WARNING,
            )
        )
    if tls is Requirement.OFF and partner.filter is Filter.VERIFIED:
        problems.append(
            Problem(
                "filter",
                "without TLS no certificate validates, so trust is always weak and filter "
                "verified marks every stanza unverified, as contacts_only does",
                Severity.WARNING,
            )
        )
    return problems


# ---------------------------------------------------------------- global and user settings


def validate_settings(
    settings: GlobalSettings, *, users_with_public_im: int | None = None
) -> list[Problem]:
    """Check the global settings; `users_with_public_im` (when given) guards lowering the
    licence count below what is granted."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for given in settings.blocked_domains:
        try:
            pattern = normalize_domain_pattern(given)
        except PatternInvalid as exc:
            problems.append(Problem("blocked_domains", str(exc)))
            continue
        if pattern in seen:
            problems.append(Problem("blocked_domains", f"{pattern} is listed twice"))
        seen.add(pattern)
    if settings.public_im_licences < 0:
        problems.append(Problem("public_im_licences", "the licence count cannot be negative"))
    elif users_with_public_im is not None and users_with_public_im > settings.public_im_licences:
        excess = users_with_public_im - settings.public_im_licences
        problems.append(
            Problem(
                "public_im_licences",
                f"{users_with_public_im} users have public IM: revoke it from {excess} of them "
                f"before lowering the licences to {settings.public_im_licences}",
            )
        )
    if settings.open_federation_max_contacts < 0:
        problems.append(
            Problem("open_federation_max_contacts", "the contact limit cannot be negative")
        )
    if not settings.open_federation_stanza_rate > 0:  # also refuses NaN
        problems.append(
            Problem("open_federation_stanza_rate", "the stanza rate must be above zero")
        )
    return problems


def validate_licences(users_with_public_im: int, licences: int) -> list[Problem]:
    """Granting public IM: `users_with_public_im` counts the holders once the grant is made.
    One more than there are licences is refused, with an error that says so."""
    if users_with_public_im <= licences:
        return []
    if licences <= 0:
        message = "no public IM licences are available: the licence count is 0"
    elif licences == 1:
        message = "the only public IM licence is in use"
    else:
        message = f"all {licences} public IM licences are in use"
    return [Problem("public_im", message)]


def validate_user_settings(user: UserSettings) -> list[Problem]:
    """Allow-list entries: bare JIDs (`john@ocs.example`) or domain patterns."""
    if len(user.allow_list) > MAX_ALLOW_ENTRIES:
        return [Problem("allow_list", f"an allow list holds at most {MAX_ALLOW_ENTRIES} entries")]
    problems: list[Problem] = []
    seen: set[str] = set()
    for entry in user.allow_list:
        try:
            canonical = _allow_entry(entry)
        except ValueError as exc:
            problems.append(Problem("allow_list", str(exc)))
            continue
        if canonical in seen:
            problems.append(Problem("allow_list", f"{canonical} is listed twice"))
        seen.add(canonical)
    return problems


def normalize_allow_entry(entry: str) -> str:
    """The canonical form of an allow-list entry; `ValueError` naming the problem."""
    return _allow_entry(entry)


def _allow_entry(entry: str) -> str:
    text = entry.strip()
    if "@" not in text:
        return normalize_domain_pattern(text)
    try:
        jid = Jid.parse(text)
    except JidMalformed as exc:
        raise ValueError(f"{entry!r}: {exc}") from None
    if not jid.is_bare:
        raise ValueError(f"{entry!r}: list a bare address, without a resource")
    return str(jid)
