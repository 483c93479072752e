"""FEDERATION.md §The partner table: the save-time validation matrix, licences, settings."""

from __future__ import annotations

from dataclasses import replace

import pytest

from imedge.policy import (
    EdgeAddress,
    Filter,
    GlobalSettings,
    Partner,
    Problem,
    Requirement,
    Severity,
    UserSettings,
    has_errors,
    normalize_allow_entry,
    normalize_partner,
    normalize_settings,
    validate_licences,
    validate_partner,
    validate_settings,
    validate_user_settings,
)

Req = Requirement
ERROR, WARNING = Severity.ERROR, Severity.WARNING
BASE = Partner(name="OCS", domains=("ocs.example",), filter=Filter.ALL)


def fields(problems: list[Problem], severity: Severity) -> set[str]:
    return {p.field for p in problems if p.severity is severity}


# ---------------------------------------------------------------- authentication matrix


@pytest.mark.parametrize(
    ("tls", "sasl_external", "dialback", "errors", "warnings"),
    [
        # tls required
        (Req.REQUIRED, Req.REQUIRED, True, set(), {"dialback"}),  # dialback never accepted
        (Req.REQUIRED, Req.REQUIRED, False, set(), set()),
        (Req.REQUIRED, Req.OPTIONAL, True, set(), set()),
        (Req.REQUIRED, Req.OPTIONAL, False, set(), set()),
        (Req.REQUIRED, Req.OFF, True, set(), set()),
        (Req.REQUIRED, Req.OFF, False, {"dialback"}, set()),  # nothing left to authenticate
        # tls optional
        (Req.OPTIONAL, Req.REQUIRED, True, set(), {"dialback", "tls"}),  # TLS needed in effect
        (Req.OPTIONAL, Req.REQUIRED, False, set(), {"tls"}),
        (Req.OPTIONAL, Req.OPTIONAL, True, set(), set()),
        (Req.OPTIONAL, Req.OPTIONAL, False, set(), set()),
        (Req.OPTIONAL, Req.OFF, True, set(), set()),
        (Req.OPTIONAL, Req.OFF, False, {"dialback"}, set()),
        # tls off: "SASL without TLS" cannot work
        (Req.OFF, Req.REQUIRED, True, {"sasl_external"}, {"dialback"}),
        (Req.OFF, Req.REQUIRED, False, {"sasl_external"}, set()),
        (Req.OFF, Req.OPTIONAL, True, {"sasl_external"}, set()),
        (Req.OFF, Req.OPTIONAL, False, {"sasl_external"}, set()),
        (Req.OFF, Req.OFF, True, set(), set()),  # dialback alone: weak trust, but it works
        (Req.OFF, Req.OFF, False, {"dialback"}, set()),
    ],
)
def test_authentication_matrix(
    tls: Requirement,
    sasl_external: Requirement,
    dialback: bool,
    errors: set[str],
    warnings: set[str],
) -> None:
    partner = replace(BASE, tls=tls, sasl_external=sasl_external, dialback=dialback)
    problems = validate_partner(partner)
    assert fields(problems, ERROR) == errors
    assert fields(problems, WARNING) == warnings
    assert has_errors(problems) is bool(errors)


def test_the_errors_say_what_to_change() -> None:
    [sasl] = validate_partner(replace(BASE, tls=Req.OFF))
    assert "TLS" in sasl.message
    assert "sasl_external to off" in sasl.message
    [nothing] = validate_partner(replace(BASE, sasl_external=Req.OFF, dialback=False))
    assert "nothing is left to authenticate with" in nothing.message


@pytest.mark.parametrize(
    ("filter_", "tls", "warned"),
    [
        (Filter.VERIFIED, Req.OFF, True),  # trust is never strong: behaves as contacts_only
        (Filter.VERIFIED, Req.OPTIONAL, False),
        (Filter.CONTACTS_ONLY, Req.OFF, False),
        (Filter.ALL, Req.OFF, False),
    ],
)
def test_filter_verified_without_tls_is_warned(
    filter_: Filter, tls: Requirement, warned: bool
) -> None:
    partner = replace(BASE, filter=filter_, tls=tls, sasl_external=Req.OFF)
    problems = validate_partner(partner)
    assert ("filter" in fields(problems, WARNING)) is warned
    assert not has_errors(problems)


# ---------------------------------------------------------------- the other fields

OTHER = Partner(name="Sametime", domains=("st.example", "*.st.example"), id=7)


@pytest.mark.parametrize(
    ("case", "change", "field", "message"),
    [
        ("name empty", {"name": "  "}, "name", "needs a name"),
        ("name too long", {"name": "x" * 101}, "name", "at most"),
        ("name with a control character", {"name": "O\x00CS"}, "name", "control"),
        ("name taken (case-insensitive)", {"name": " sametime"}, "name", "already named"),
        ("comment too long", {"comment": "x" * 2001}, "comment", "at most"),
        ("no domain", {"domains": ()}, "domains", "at least one"),
        ("invalid domain", {"domains": ("ocs example",)}, "domains", "invalid"),
        ("wildcard in the middle", {"domains": ("a.*.example",)}, "domains", "leading"),
        ("domain listed twice", {"domains": ("ocs.example", "OCS.example.")}, "domains",
         "listed twice"),
        ("domain of another partner", {"domains": ("ST.example",)}, "domains",
         "already listed by partner 'Sametime'"),
        ("wildcard of another partner", {"domains": ("*.st.example",)}, "domains",
         "already listed"),
        ("a local domain", {"domains": ("edge.example",)}, "domains", "this server serves"),
        ("a wildcard covering a local domain", {"domains": ("*.example",)}, "domains",
         "covers edge.example"),
        ("connection limit 0", {"connection_limit": 0}, "connection_limit", "at least 1"),
        ("edge port 0", {"edge_address": EdgeAddress("edge.ocs.example", 0)}, "edge_address",
         "port"),
        ("edge port too large", {"edge_address": EdgeAddress("edge.ocs.example", 70000)},
         "edge_address", "port"),
        ("edge host invalid", {"edge_address": EdgeAddress("edge ocs", 5269)}, "edge_address",
         "not a host"),
        ("edge host a wildcard", {"edge_address": EdgeAddress("*.ocs.example", 5269)},
         "edge_address", "not a host"),
    ],
)  # fmt: skip
def test_partner_field_errors(
    case: str, change: dict[str, object], field: str, message: str
) -> None:
    partner = replace(BASE, **change)  # type: ignore[arg-type]
    problems = validate_partner(partner, [OTHER], local_domains=["edge.example"])
    errors = [p for p in problems if p.severity is ERROR]
    assert [p.field for p in errors] == [field], case
    assert message in errors[0].message, case


@pytest.mark.parametrize(
    ("case", "change"),
    [
        ("a subdomain of another partner's exact domain", {"domains": ("chat.st.example",)}),
        ("the defaults", {}),
        ("an edge address by IPv4", {"edge_address": EdgeAddress("192.0.2.1", 5269)}),
        ("an edge address by IPv6", {"edge_address": EdgeAddress("2001:db8::1", 5270)}),
        ("no connection limit", {"connection_limit": None}),
        ("a connection limit of 1", {"connection_limit": 1}),
        ("editing a row keeps its own name", {"id": 7, "name": "Sametime"}),
        ("editing a row keeps its own domains", {"id": 7, "domains": ("st.example",)}),
    ],
)
def test_partner_accepted(case: str, change: dict[str, object]) -> None:
    partner = replace(BASE, **change)  # type: ignore[arg-type]
    problems = validate_partner(partner, [OTHER], local_domains=["edge.example"])
    assert problems == [], case


@pytest.mark.parametrize(
    ("domains", "blocked", "message"),
    [
        (("*.com",), (), "every domain under .com"),
        (("spam.example",), ("spam.example",), "blocked domain"),
        (("a.spam.example",), ("*.spam.example",), "blocked domain"),
        (("*.a.spam.example",), ("*.spam.example",), "blocked domain"),
        (("*.spam.example",), ("*.spam.example",), "blocked domain"),
    ],
)
def test_partner_warnings(domains: tuple[str, ...], blocked: tuple[str, ...], message: str) -> None:
    problems = validate_partner(replace(BASE, domains=domains), blocked_domains=blocked)
    assert not has_errors(problems)
    [warning] = problems
    assert (warning.field, warning.severity) == ("domains", WARNING)
    assert message in warning.message


@pytest.mark.parametrize(
    ("domains", "blocked"),
    [(("*.spam.example",), ("spam.example",)), (("spam.example",), ("*.spam.example",))],
)
def test_partner_not_covered_by_a_block_is_not_warned(
    domains: tuple[str, ...], blocked: tuple[str, ...]
) -> None:
    assert validate_partner(replace(BASE, domains=domains), blocked_domains=blocked) == []


def test_normalize_partner() -> None:
    raw = replace(
        BASE, name="  OCS ", comment=" c ", domains=("OCS.Example.", "*.X.example", "bad domain")
    )
    clean = normalize_partner(raw)
    assert (clean.name, clean.comment) == ("OCS", "c")
    assert clean.domains == ("ocs.example", "*.x.example", "bad domain")  # left for validate


# ---------------------------------------------------------------- licences


@pytest.mark.parametrize(
    ("holders_after_grant", "licences", "message"),
    [
        (5, 5, None),
        (0, 0, None),
        (6, 5, "all 5 public IM licences are in use"),  # "granting one more is refused"
        (2, 1, "the only public IM licence is in use"),
        (1, 0, "no public IM licences are available"),
    ],
)
def test_validate_licences(holders_after_grant: int, licences: int, message: str | None) -> None:
    problems = validate_licences(holders_after_grant, licences)
    if message is None:
        assert problems == []
    else:
        [problem] = problems
        assert problem.field == "public_im"
        assert message in problem.message


# ---------------------------------------------------------------- global and user settings


@pytest.mark.parametrize(
    ("settings", "holders", "field", "message"),
    [
        (GlobalSettings(blocked_domains=("spam example",)), None, "blocked_domains", "invalid"),
        (GlobalSettings(blocked_domains=("a.*.example",)), None, "blocked_domains", "leading"),
        (GlobalSettings(blocked_domains=("x.example", "X.example")), None, "blocked_domains",
         "twice"),
        (GlobalSettings(public_im_licences=-1), None, "public_im_licences", "negative"),
        (GlobalSettings(public_im_licences=3), 5, "public_im_licences",
         "revoke it from 2 of them"),
        (GlobalSettings(open_federation_max_contacts=-1), None, "open_federation_max_contacts",
         "negative"),
        (GlobalSettings(open_federation_stanza_rate=0), None, "open_federation_stanza_rate",
         "above zero"),
        (GlobalSettings(open_federation_stanza_rate=float("nan")), None,
         "open_federation_stanza_rate", "above zero"),
    ],
)  # fmt: skip
def test_settings_errors(
    settings: GlobalSettings, holders: int | None, field: str, message: str
) -> None:
    [problem] = validate_settings(settings, users_with_public_im=holders)
    assert problem.field == field
    assert message in problem.message


def test_settings_accepted() -> None:
    settings = GlobalSettings(
        blocked_domains=("spam.example", "*.spam.example"), public_im_licences=5
    )
    assert validate_settings(settings, users_with_public_im=5) == []
    assert validate_settings(GlobalSettings()) == []


def test_normalize_settings() -> None:
    settings = normalize_settings(GlobalSettings(blocked_domains=("Spam.Example.", "*.X.example")))
    assert settings.blocked_domains == ("spam.example", "*.x.example")


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (("john@ocs.example/desktop",), "bare address"),
        (("@ocs.example",), "empty localpart"),
        (("john@",), "empty domainpart"),
        (("a.*.example",), "leading"),
        (("john@ocs.example", "John@OCS.example"), "listed twice"),
    ],
)
def test_user_allow_list_errors(entries: tuple[str, ...], message: str) -> None:
    [problem] = validate_user_settings(UserSettings(allow_list=entries))
    assert problem.field == "allow_list"
    assert message in problem.message


def test_user_allow_list_accepted() -> None:
    user = UserSettings(allow_list=("john_smith@ocs.example", "ocs.example", "*.partner.example"))
    assert validate_user_settings(user) == []
    assert normalize_allow_entry(" John_Smith@OCS.Example ") == "john_smith@ocs.example"
    assert normalize_allow_entry("*.Partner.example") == "*.partner.example"
