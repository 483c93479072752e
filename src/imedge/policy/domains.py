"""FEDERATION.md §The partner table: domain patterns (`example.org`, `*.example.org`).

One syntax serves partner domains, blocked domains and domain entries of a user's allow
list. A pattern is either an exact domain or a leading `*.` and a domain:

- `example.org` covers exactly `example.org`;
- `*.example.org` covers every subdomain at any depth (`a.example.org`, `x.a.example.org`)
  but NOT `example.org` itself. An administrator who means both lists both. This follows
  RFC 6125 §6.4.3 in refusing to let `*.` stand for the bare name, so a partner row reads
  the same way as the certificates its servers present, and it lets the bare domain and
  its subdomains (its MUC and upload components) be different partners when needed.

Patterns are stored in canonical form (RFC 7622 §3.2 domainpart preparation: lowercase,
NFC, U-labels, no trailing dot) so that matching is plain string comparison.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

from imedge.domain.jid import JidMalformed, prep_domain

WILDCARD = "*."


class PatternInvalid(ValueError):
    """The text is not a domain or a `*.`-domain pattern; the message says why."""


@lru_cache(maxsize=4096)  # allow-list entries are re-read for every stanza
def normalize_domain_pattern(text: str) -> str:
    """Canonical form of a pattern, or `PatternInvalid` naming the problem."""
    body = text.strip()
    wildcard = body.startswith(WILDCARD)
    if wildcard:
        body = body[len(WILDCARD) :]
    if "*" in body:
        raise PatternInvalid(f"{text!r}: a wildcard is only allowed as a leading '*.'")
    if not body:
        raise PatternInvalid(f"{text!r}: empty domain")
    if wildcard and body.startswith("["):
        raise PatternInvalid(f"{text!r}: an IP address has no subdomains")
    try:
        domain = prep_domain(body)
    except JidMalformed as exc:
        raise PatternInvalid(f"{text!r}: {exc}") from None
    return WILDCARD + domain if wildcard else domain


def is_wildcard(pattern: str) -> bool:
    return pattern.startswith(WILDCARD)


def canonical_domain(domain: str) -> str:
    """Cheap canonical form of an already prepared domain (e.g. `Jid.domain`) for lookups."""
    return domain.lower().removesuffix(".")


def candidate_keys(domain: str) -> Iterator[str]:
    """The patterns that could cover `domain`, most specific first: the domain itself, then
    `*.` + each parent, nearest first (`a.b.example` → `a.b.example`, `*.b.example`,
    `*.example`). Looking these up in a dict makes matching O(labels)."""
    domain = canonical_domain(domain)
    yield domain
    if domain.startswith("["):
        return
    rest = domain
    while "." in rest:
        rest = rest.split(".", 1)[1]
        yield WILDCARD + rest


def covers(pattern: str, domain: str) -> bool:
    """Whether the canonical `pattern` covers `domain` (see the module docstring)."""
    domain = canonical_domain(domain)
    if is_wildcard(pattern):
        return domain.endswith(pattern[1:])  # "*.x" → ".x": a proper subdomain only
    return domain == pattern
