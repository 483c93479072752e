"""FEDERATION.md §The partner table: domain patterns, partner matching, the stored values."""

from __future__ import annotations

import pytest

from imedge.domain.jid import Jid
from imedge.policy import (
    DEFAULT,
    EdgeAddress,
    FederationConfig,
    Filter,
    GlobalSettings,
    Origin,
    OriginKind,
    Partner,
    PatternInvalid,
    Requirement,
    UserSettings,
    VerifiedSubscriptions,
    covers,
    default_partners,
    has_errors,
    match_partner,
    normalize_domain_pattern,
    on_allow_list,
    validate_partner,
)


def row(name: str, *domains: str, allowed: bool = True, id: int | None = None) -> Partner:
    return Partner(name=name, domains=domains, allowed=allowed, id=id)


# ---------------------------------------------------------------- patterns


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("example.org", "example.org"),
        ("Example.ORG.", "example.org"),
        ("  example.org ", "example.org"),
        ("*.example.org", "*.example.org"),
        ("*.Example.Org", "*.example.org"),
        ("xn--bcher-kva.example", "bücher.example"),  # RFC 7622 §3.2: U-labels
        ("*.BÜCHER.example", "*.bücher.example"),
        ("localhost", "localhost"),
        ("[::1]", "[::1]"),
    ],
)
def test_pattern_normalized(text: str, canonical: str) -> None:
    assert normalize_domain_pattern(text) == canonical


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("*.", "empty"),
        ("*", "wildcard"),
        ("**.example.org", "wildcard"),
        ("a.*.example.org", "wildcard"),
        ("*example.org", "wildcard"),
        ("example.*", "wildcard"),
        ("exa mple.org", "invalid"),
        ("example..org", "invalid"),
        ("-example.org", "hyphen"),
        ("user@example.org", "invalid"),
        ("*.[::1]", "IP address"),
    ],
)
def test_pattern_invalid(text: str, why: str) -> None:
    with pytest.raises(PatternInvalid, match=why):
        normalize_domain_pattern(text)


@pytest.mark.parametrize(
    ("pattern", "domain", "covered"),
    [
        ("example.org", "example.org", True),
        ("example.org", "chat.example.org", False),
        # "*.example covers subdomains" - at any depth, and not the bare domain
        ("*.example.org", "chat.example.org", True),
        ("*.example.org", "a.b.example.org", True),
        ("*.example.org", "example.org", False),
        ("*.example.org", "badexample.org", False),
        ("*.example.org", "CHAT.Example.org.", True),
    ],
)
def test_covers(pattern: str, domain: str, covered: bool) -> None:
    assert covers(pattern, domain) is covered


# ---------------------------------------------------------------- matching

WILD = row("Wild", "*.example.org")
CHAT = row("Chat", "chat.example.org")
EU = row("EU", "*.eu.example.org")
BARE = row("Bare", "example.org")
TABLE = (WILD, CHAT, EU, BARE)


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("chat.example.org", CHAT),  # exact beats wildcard
        ("upload.example.org", WILD),
        ("x.y.example.org", WILD),
        ("paris.eu.example.org", EU),  # the nearest wildcard wins
        ("a.paris.eu.example.org", EU),
        ("eu.example.org", WILD),  # *.eu.example.org does not cover eu.example.org
        ("example.org", BARE),
        ("Chat.Example.ORG.", CHAT),
        ("example.com", None),
        ("org", None),
    ],
)
def test_match_partner(domain: str, expected: Partner | None) -> None:
    assert match_partner(domain, TABLE) == expected
    assert match_partner(domain, reversed(TABLE)) == expected
    assert FederationConfig(partners=TABLE).partner_for(domain) == expected


def test_without_a_bare_row_the_wildcard_does_not_cover_the_domain() -> None:
    assert match_partner("example.org", (WILD,)) is None


def test_match_idna() -> None:
    partner = row("Books", "xn--bcher-kva.example")
    assert match_partner("bücher.example", (partner,)) == partner


def test_same_pattern_in_two_rows_is_decided_the_same_way_whatever_the_order() -> None:
    """Validation forbids it; should it happen anyway, fail closed, not by row order."""
    open_row = row("Alpha", "dup.example", id=1)
    blocked_row = row("Beta", "dup.example", allowed=False, id=2)
    assert match_partner("dup.example", (open_row, blocked_row)) == blocked_row
    assert match_partner("dup.example", (blocked_row, open_row)) == blocked_row
    twin = row("Alpha2", "dup.example", id=3)
    assert match_partner("dup.example", (twin, open_row)) == open_row  # then by name


@pytest.mark.parametrize(
    ("blocked", "domain", "pattern"),
    [
        (("spam.example",), "spam.example", "spam.example"),
        (("spam.example",), "a.spam.example", None),
        (("*.spam.example",), "a.b.spam.example", "*.spam.example"),
        (("*.spam.example",), "spam.example", None),
        (("Spam.Example.",), "spam.example", "spam.example"),
        ((), "spam.example", None),
    ],
)
def test_blocked_domains(blocked: tuple[str, ...], domain: str, pattern: str | None) -> None:
    cfg = FederationConfig(GlobalSettings(blocked_domains=blocked))
    assert cfg.blocked_by(domain) == pattern


# ---------------------------------------------------------------- values


def test_fresh_install_defaults() -> None:
    """FEDERATION.md §Global settings, §Per user, §The partner table."""
    settings = GlobalSettings()
    assert settings.federation is True
    assert settings.open_federation is False
    user = UserSettings()
    assert (user.federation, user.public_im, user.block_non_allowed_im) == (True, False, False)
    assert user.verified_subscriptions is VerifiedSubscriptions.PROMPT
    partner = Partner(name="P", domains=("p.example",))
    assert partner.filter is Filter.VERIFIED
    assert partner.origin == Origin(OriginKind.MANUAL)


def test_default_partners_are_public_and_not_allowed() -> None:
    partners = default_partners()
    assert 3 <= len(partners) <= 5
    for partner in partners:
        assert partner.public
        assert not partner.allowed
        assert partner.origin == DEFAULT
        assert not has_errors(validate_partner(partner, [p for p in partners if p != partner]))
    assert match_partner("jabber.org", partners) is not None
    assert match_partner("conference.jabber.org", partners) is not None


@pytest.mark.parametrize(
    ("text", "origin"),
    [
        ("manual", Origin(OriginKind.MANUAL)),
        ("default", Origin(OriginKind.DEFAULT)),
        ("peer-server:42", Origin(OriginKind.PEER_SERVER, "42")),
    ],
)
def test_origin_round_trip(text: str, origin: Origin) -> None:
    assert Origin.parse(text) == origin
    assert str(origin) == text


@pytest.mark.parametrize("text", ["peer-server", "peer-server:", "manual:3", "ldap:1", ""])
def test_origin_invalid(text: str) -> None:
    with pytest.raises(ValueError, match=r"origin|peer server"):
        Origin.parse(text)


@pytest.mark.parametrize(
    ("text", "edge", "shown"),
    [
        ("edge.ocs.example", EdgeAddress("edge.ocs.example", 5269), "edge.ocs.example:5269"),
        ("edge.ocs.example:5270", EdgeAddress("edge.ocs.example", 5270), "edge.ocs.example:5270"),
        ("192.0.2.7:443", EdgeAddress("192.0.2.7", 443), "192.0.2.7:443"),
        ("[2001:db8::1]", EdgeAddress("2001:db8::1", 5269), "[2001:db8::1]:5269"),
        ("[2001:db8::1]:5270", EdgeAddress("2001:db8::1", 5270), "[2001:db8::1]:5270"),
        ("2001:db8::1", EdgeAddress("2001:db8::1", 5269), "[2001:db8::1]:5269"),  # no port
    ],
)
def test_edge_address(text: str, edge: EdgeAddress, shown: str) -> None:
    assert EdgeAddress.parse(text) == edge
    assert str(edge) == shown
    assert EdgeAddress.parse(shown) == edge


@pytest.mark.parametrize("text", ["", ":5269", "host:port", "[::1", "[::1]5269", "[::1]:", "[]"])
def test_edge_address_invalid(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        EdgeAddress.parse(text)


def test_partner_values_are_hashable_and_comparable() -> None:
    """Stored, compared and used as dict keys by the store and the gate."""
    a = Partner(name="P", domains=("p.example",), tls=Requirement.OPTIONAL)
    b = Partner(name="P", domains=("p.example",), tls=Requirement.OPTIONAL)
    assert a == b
    assert len({a, b}) == 1
    assert FederationConfig(partners=(a,)) == FederationConfig(partners=(b,))


# ---------------------------------------------------------------- the allow list

SENDER = Jid.parse("john_smith@ocs.example/desktop")


@pytest.mark.parametrize(
    ("roster", "allow", "listed"),
    [
        # "the allow list = explicit allow entries plus every contact in the user's roster"
        ((Jid.parse("john_smith@ocs.example"),), (), True),
        ((Jid.parse("john_smith@ocs.example/other"),), (), True),
        ((Jid.parse("jane@ocs.example"),), (), False),
        ((), ("john_smith@ocs.example",), True),
        ((), ("John_Smith@OCS.example",), True),
        ((), ("ocs.example",), True),
        ((), ("*.example",), True),
        ((), ("*.ocs.example",), False),
        ((), ("other.example", "jane@ocs.example"), False),
        ((), ("not a jid@@", "*.*"), False),  # malformed entries cover nobody
        ((), (), False),
    ],
)
def test_on_allow_list(roster: tuple[Jid, ...], allow: tuple[str, ...], listed: bool) -> None:
    assert on_allow_list(SENDER, roster=roster, allow=allow) is listed
