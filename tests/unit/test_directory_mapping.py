"""FEDERATION.md §Words (peer server): LDAP records to directory entries, and the checks of a
peer server row. Pure: no LDAP, no event loop."""

from __future__ import annotations

from dataclasses import replace

import pytest

from imedge.directory.mapping import map_records, prepare_im_address, requested_attributes
from imedge.directory.model import (
    AttributeMapping,
    DirectoryEntry,
    IssueKind,
    LdapRecord,
    LdapSource,
    MappingInvalid,
    PeerServer,
    SyncIssue,
    normalize_peer_server,
    parse_field,
    validate_peer_server,
)
from imedge.domain.jid import JidMalformed
from imedge.policy import Severity

LDAP = LdapSource(
    url="ldap://ldap.ocs.example",
    base_dn="ou=people,dc=ocs,dc=example",
    bind_dn="cn=reader,dc=ocs,dc=example",
    bind_password="s3cret",
)


def peer(im_address: str = "mail", *domains: str, **mapping: str | None) -> PeerServer:
    return PeerServer(
        id=7,
        name="OCS",
        domains=domains or ("ocs.example",),
        ldap=LDAP,
        mapping=AttributeMapping(im_address=im_address, **mapping),  # type: ignore[arg-type]
    )


def record(dn: str, **attributes: str | tuple[str, ...]) -> LdapRecord:
    return LdapRecord(
        dn=dn,
        attributes={k: (v,) if isinstance(v, str) else v for k, v in attributes.items()},
    )


def kinds(issues: list[SyncIssue]) -> list[tuple[IssueKind, str]]:
    return [(i.kind, i.dn) for i in issues]


# --- the IM address ---------------------------------------------------------------------


def test_attribute_mapping_fills_every_field() -> None:
    rec = record(
        "uid=john,ou=people",
        mail="John.Smith@OCS.example",
        cn="John Smith",
        telephoneNumber="+1 555 0100",
        departmentNumber="Sales",
        title="Buyer",
    )
    entries, issues = map_records([rec], peer("mail"))
    assert issues == []
    assert entries == [
        DirectoryEntry(
            peer_server_id=7,
            im_address="john.smith@ocs.example",  # prepared: lowercased (RFC 7622 §3.3)
            dn="uid=john,ou=people",
            display_name="John Smith",
            email="John.Smith@OCS.example",
            phone="+1 555 0100",
            department="Sales",
            title="Buyer",
        )
    ]


def test_template_builds_the_address_from_several_attributes() -> None:
    rec = record("uid=js", uid="john_smith", givenName="John", sn="Smith")
    mapping = {"display_name": "{givenName} {sn}", "email": None}
    entries, issues = map_records([rec], peer("{uid}@ocs.example", **mapping))
    assert issues == []
    assert [(e.im_address, e.display_name, e.email) for e in entries] == [
        ("john_smith@ocs.example", "John Smith", None)
    ]


def test_missing_attribute_is_reported_and_names_it() -> None:
    records = [
        record("uid=a", uid="a"),
        record("uid=b", cn="No uid"),
        record("uid=c", uid="   "),  # blank counts as missing
    ]
    entries, issues = map_records(records, peer("{uid}@ocs.example"))
    assert [e.im_address for e in entries] == ["a@ocs.example"]
    assert kinds(issues) == [
        (IssueKind.MISSING_IM_ADDRESS, "uid=b"),
        (IssueKind.MISSING_IM_ADDRESS, "uid=c"),
    ]
    assert "uid" in issues[0].detail


def test_missing_optional_fields_are_none() -> None:
    entries, _ = map_records([record("uid=a", uid="a")], peer("{uid}@ocs.example"))
    assert entries[0] == DirectoryEntry(peer_server_id=7, im_address="a@ocs.example", dn="uid=a")


@pytest.mark.parametrize(
    "value",
    [
        "no-at-sign",
        "@ocs.example",
        "a b@ocs.example",  # a space is not allowed in a localpart (RFC 7622 §3.3)
        "a@ocs.example/desk",  # a resource
        "a@bad..example",
        "a@b@ocs.example",
    ],
)
def test_invalid_addresses_are_reported(value: str) -> None:
    entries, issues = map_records([record("uid=x", mail=value)], peer())
    assert entries == []
    assert kinds(issues) == [(IssueKind.INVALID_IM_ADDRESS, "uid=x")]
    assert value in issues[0].detail


def test_sip_and_xmpp_uris_lose_their_scheme() -> None:
    records = [
        record("uid=a", addr="sip:Alice@ocs.example"),
        record("uid=b", addr="xmpp:bob@ocs.example"),
    ]
    entries, issues = map_records(records, peer("addr"))
    assert issues == []
    assert [e.im_address for e in entries] == ["alice@ocs.example", "bob@ocs.example"]


def test_addresses_outside_the_domains_are_refused() -> None:
    records = [
        record("uid=a", mail="a@ocs.example"),
        record("uid=b", mail="b@elsewhere.example"),
        record("uid=c", mail="c@sub.ocs.example"),  # not covered by "ocs.example"
        record("uid=d", mail="d@eu.lync.example"),  # covered by "*.lync.example"
        record("uid=e", mail="e@OCS.EXAMPLE."),  # the same domain, prepared
    ]
    entries, issues = map_records(records, peer("mail", "ocs.example", "*.lync.example"))
    assert [e.im_address for e in entries] == [
        "a@ocs.example",
        "d@eu.lync.example",
        "e@ocs.example",
    ]
    assert kinds(issues) == [
        (IssueKind.OUTSIDE_DOMAINS, "uid=b"),
        (IssueKind.OUTSIDE_DOMAINS, "uid=c"),
    ]


def test_duplicates_keep_none_and_report_every_claimant() -> None:
    records = [
        record("uid=a1", mail="a@ocs.example", cn="First"),
        record("uid=b", mail="b@ocs.example"),
        record("uid=a2", mail="A@ocs.example", cn="Second"),  # the same address, prepared
        record("uid=a3", mail="a@ocs.example"),
    ]
    entries, issues = map_records(records, peer())
    assert [e.im_address for e in entries] == ["b@ocs.example"]
    assert kinds(issues) == [
        (IssueKind.DUPLICATE_IM_ADDRESS, "uid=a1"),
        (IssueKind.DUPLICATE_IM_ADDRESS, "uid=a2"),
        (IssueKind.DUPLICATE_IM_ADDRESS, "uid=a3"),
    ]
    assert "uid=a2" in issues[0].detail and "uid=a3" in issues[0].detail


def test_attribute_names_ignore_case_both_ways() -> None:
    rec = LdapRecord(
        dn="uid=a",
        attributes={"MAIL": ("a@ocs.example",), "CN": ("Ann",), "telephonenumber": ("1",)},
    )
    entries, issues = map_records([rec], peer("Mail", display_name="cN"))
    assert issues == []
    assert (entries[0].im_address, entries[0].display_name, entries[0].phone) == (
        "a@ocs.example",
        "Ann",
        "1",
    )


def test_multi_valued_attributes_give_their_first_non_blank_value() -> None:
    rec = record(
        "uid=a",
        mail=("", "first@ocs.example", "second@ocs.example"),
        cn=("  Ann Lee ", "Ann"),
    )
    entries, _ = map_records([rec], peer())
    assert (entries[0].im_address, entries[0].display_name) == ("first@ocs.example", "Ann Lee")


def test_overlong_display_texts_are_cut() -> None:
    entries, _ = map_records([record("uid=a", mail="a@ocs.example", cn="x" * 5000)], peer())
    assert entries[0].display_name == "x" * 1024


def test_prepare_im_address() -> None:
    assert str(prepare_im_address(" Ünïcode@Bücher.example ")) == "ünïcode@bücher.example"
    with pytest.raises(JidMalformed):
        prepare_im_address("ocs.example")


def test_a_peer_without_id_or_with_a_bad_mapping_cannot_map() -> None:
    with pytest.raises(ValueError, match="no id"):
        map_records([], replace(peer(), id=None))
    with pytest.raises(MappingInvalid):
        map_records([], peer("{uid@ocs.example"))
    assert map_records([], peer()) == ([], [])


def test_requested_attributes() -> None:
    assert requested_attributes(peer("{uid}@ocs.example", title=None)) == [
        "cn",
        "departmentnumber",
        "mail",
        "telephonenumber",
        "uid",
    ]


# --- the template syntax ----------------------------------------------------------------


def test_parse_field() -> None:
    assert parse_field("mail").attributes == ("mail",)
    template = parse_field("{{{uid}}}@{ Domain-Part;lang-en }")
    assert template.attributes == ("uid", "domain-part;lang-en")
    assert template.render({"uid": ("x",), "domain-part;lang-en": ("y",)}) == "{x}@y"
    assert parse_field("{2.5.4.3}").attributes == ("2.5.4.3",)  # a numeric OID


@pytest.mark.parametrize(
    "spec",
    ["", "  ", "{uid", "uid}", "{}", "{ui d}", "plain text", "x@ocs.example", "{{literal}}"],
)
def test_bad_fields_are_refused(spec: str) -> None:
    with pytest.raises(MappingInvalid):
        parse_field(spec)


# --- the checks of a peer server row ------------------------------------------------------


def test_a_good_peer_server_has_no_problems() -> None:
    assert validate_peer_server(peer("{uid}@ocs.example")) == []


def test_normalize_trims_and_canonicalises() -> None:
    raw = replace(
        peer(),
        name="  OCS ",
        domains=("OCS.Example.", "ocs.example", "*.Lync.example"),
        ldap=replace(LDAP, url=" ldaps://x ", base_dn=" dc=x "),
    )
    norm = normalize_peer_server(raw)
    assert norm.name == "OCS"
    assert norm.domains == ("ocs.example", "*.lync.example")
    assert (norm.ldap.url, norm.ldap.base_dn) == ("ldaps://x", "dc=x")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": ""}, "name"),
        ({"domains": ()}, "domains"),
        ({"domains": ("bad domain",)}, "domains"),
        ({"ldap": replace(LDAP, url="http://x")}, "ldap.url"),
        ({"ldap": replace(LDAP, url="ldap://x:99999")}, "ldap.url"),
        ({"ldap": replace(LDAP, url="ldaps://x", start_tls=True)}, "ldap.start_tls"),
        ({"ldap": replace(LDAP, base_dn="")}, "ldap.base_dn"),
        ({"ldap": replace(LDAP, bind_dn="")}, "ldap.bind_dn"),
        ({"ldap": replace(LDAP, filter="objectClass=person")}, "ldap.filter"),
        ({"ldap": replace(LDAP, filter="(&(a=b)(c=d)))")}, "ldap.filter"),
        ({"ldap": replace(LDAP, page_size=0)}, "ldap.page_size"),
        ({"ldap": replace(LDAP, timeout=0)}, "ldap.timeout"),
        ({"mapping": AttributeMapping(im_address="{uid")}, "mapping.im_address"),
        ({"mapping": AttributeMapping(im_address="mail", title="{")}, "mapping.title"),
        ({"schedule_minutes": 0}, "schedule_minutes"),
    ],
)
def test_each_error_names_its_field(change: dict[str, object], field: str) -> None:
    problems = validate_peer_server(replace(peer(), **change))  # type: ignore[arg-type]
    assert [(p.field, p.severity) for p in problems] == [(field, Severity.ERROR)]


def test_plain_ldap_without_starttls_is_a_warning() -> None:
    problems = validate_peer_server(replace(peer(), ldap=replace(LDAP, start_tls=False)))
    assert [(p.field, p.severity) for p in problems] == [("ldap.start_tls", Severity.WARNING)]


def test_name_and_domains_must_be_free_among_other_peer_servers() -> None:
    other = replace(peer(), id=1, name="ocs ", domains=("ocs.example",))
    problems = validate_peer_server(replace(peer(), id=2), [other])
    assert [p.field for p in problems] == ["name", "domains"]
    # The row being edited does not clash with itself.
    assert validate_peer_server(replace(peer(), id=1), [other]) == []


def test_the_password_never_shows_in_repr() -> None:
    assert "s3cret" not in repr(peer())
