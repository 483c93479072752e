"""RFC 7622 addresses: the examples of §3.5, the preparation rules, and round-trips."""
# ruff: noqa: RUF001  # confusable letters are the point of these tests (RFC 7622 §3.5)

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imedge.domain.jid import Jid, JidMalformed

# RFC 7622 §3.5.1: good examples, with the parts each must yield.
GOOD = [
    ("juliet@example.com", "juliet", "example.com", None),
    ("juliet@example.com/foo", "juliet", "example.com", "foo"),
    ("juliet@example.com/foo bar", "juliet", "example.com", "foo bar"),
    ("juliet@example.com/foo@bar", "juliet", "example.com", "foo@bar"),
    ("foo\\20bar@example.com", "foo\\20bar", "example.com", None),
    ("fussball@example.com", "fussball", "example.com", None),
    ("fußball@example.com", "fußball", "example.com", None),
    ("π@example.com", "π", "example.com", None),
    ("Σ@example.com/foo", "σ", "example.com", "foo"),
    ("σ@example.com/foo", "σ", "example.com", "foo"),
    ("ς@example.com/foo", "ς", "example.com", "foo"),
    ("king@example.com/♚", "king", "example.com", "♚"),
    ("example.com", None, "example.com", None),
    ("example.com/foobar", None, "example.com", "foobar"),
    ("a.example.com/b@example.net", None, "a.example.com", "b@example.net"),
]

# RFC 7622 §3.5.2: bad examples, plus other breaches of §3.
BAD = [
    '"juliet"@example.com',  # quotation marks are forbidden in the localpart (§3.3.1)
    "foo bar@example.com",  # spaces are not allowed in the localpart
    "juliet@example.com/",  # empty resourcepart
    "@example.com/",  # empty localpart and resourcepart
    "@example.com",  # empty localpart
    "henryⅣ@example.com",  # compatibility character U+2163 (IdentifierClass)
    "♚@example.com",  # symbol in the localpart
    "juliet@",  # empty domainpart
    "/foobar",  # empty domainpart
    "",
    ".",
    "juliet@example.com.@",
    "j&r@example.com",
    "j'r@example.com",
    "j:r@example.com",
    "j<r@example.com",
    "j>r@example.com",
    "a@b@example.com",  # '@' in the domainpart
    "example..com",
    "-example.com",
    "example-.com",
    "exa mple.com",
    "juliet@example.com/\x00",  # control character in the resourcepart
    "xn--a.example",  # broken A-label
    "[zz]",  # not an IPv6 address
    "[fe80::1%eth0]",  # zone identifiers are not part of an IP-literal
    "juliet\ud800@example.com",  # lone surrogate: not Unicode text
    "example.com/\udfff",
]


@pytest.mark.parametrize(("text", "local", "domain", "resource"), GOOD)
def test_rfc7622_good_examples(
    text: str, local: str | None, domain: str, resource: str | None
) -> None:
    jid = Jid.parse(text)
    assert (jid.local, jid.domain, jid.resource) == (local, domain, resource)


@pytest.mark.parametrize("text", BAD)
def test_rfc7622_bad_examples(text: str) -> None:
    with pytest.raises(JidMalformed):
        Jid.parse(text)


def test_jid_malformed_is_a_value_error() -> None:
    assert issubclass(JidMalformed, ValueError)


def test_localpart_is_case_mapped() -> None:
    assert Jid.parse("Juliet@example.com") == Jid.parse("juliet@example.com")
    # Unicode toLowerCase (RFC 8265 §3.3.1) applies the Final_Sigma rule.
    assert Jid.parse("ΣΑΣ@example.com").local == "σας"


def test_localpart_is_not_case_folded() -> None:
    # UsernameCaseMapped lowercases but does not fold: ß and ς stay distinct.
    assert Jid.parse("fußball@example.com") != Jid.parse("fussball@example.com")
    assert Jid.parse("ς@example.com") != Jid.parse("σ@example.com")


def test_localpart_width_mapping() -> None:
    # RFC 8265 §3.3.1: fullwidth characters map to their decomposition.
    assert Jid.parse("ｊｕｌｉｅｔ@example.com").local == "juliet"


def test_resource_keeps_case_and_spaces() -> None:
    jid = Jid.parse("juliet@example.com/ Balcony Phone ")
    assert jid.resource == " Balcony Phone "
    assert jid != Jid.parse("juliet@example.com/ balcony phone ")


def test_resource_maps_non_ascii_space_and_normalises() -> None:
    # OpaqueString (RFC 8265 §4.2.2): non-ASCII spaces become U+0020, then NFC.
    assert Jid.parse("example.com/a\u00a0b").resource == "a b"
    assert Jid.parse("example.com/\u212b").resource == "\u00c5"


def test_domain_is_lowercased_and_trailing_dot_stripped() -> None:
    assert Jid.parse("juliet@EXAMPLE.Com.") == Jid.parse("juliet@example.com")


def test_idna_a_label_equals_u_label() -> None:
    a_label = Jid.parse("juliet@xn--bcher-kva.example")
    assert a_label == Jid.parse("juliet@bücher.example")
    assert a_label == Jid.parse("juliet@BÜCHER.example")
    assert a_label.domain == "bücher.example"
    assert str(a_label) == "juliet@bücher.example"


def test_idna_width_mapping_of_domain() -> None:
    assert Jid.parse("ｅｘａｍｐｌｅ.com").domain == "example.com"


def test_ip_addresses() -> None:
    assert Jid.parse("juliet@127.0.0.1").domain == "127.0.0.1"
    assert Jid.parse("juliet@[::1]").domain == "[::1]"
    assert Jid.parse("[0:0:0:0:0:0:0:1]") == Jid.parse("[::1]")
    assert Jid.parse("[2001:DB8::1]").domain == "[2001:db8::1]"


def test_parts_of_1023_bytes_are_allowed() -> None:
    jid = Jid.parse(f"{'a' * 1023}@example.com/{'r' * 1023}")
    assert jid.local is not None
    assert len(jid.local) == 1023
    assert jid.resource == "r" * 1023
    # Multi-byte characters count in octets of UTF-8, not in characters.
    assert Jid.parse(f"{'é' * 511}@example.com").local == "é" * 511


@pytest.mark.parametrize(
    "text",
    [
        f"{'a' * 1024}@example.com",
        f"{'é' * 512}@example.com",
        f"example.com/{'r' * 1024}",
        f"{'a' * 64}.example.com",  # a DNS label is at most 63 octets
    ],
)
def test_parts_longer_than_the_limits_are_refused(text: str) -> None:
    with pytest.raises(JidMalformed):
        Jid.parse(text)


def test_domainpart_longer_than_1023_bytes_is_refused() -> None:
    label = "a" * 63
    too_long = ".".join([label] * 17)  # 17 * 64 - 1 = 1087 octets
    with pytest.raises(JidMalformed):
        Jid.parse(too_long)
    assert Jid.parse(".".join([label] * 16)).domain == ".".join([label] * 16)


@pytest.mark.parametrize("char", ['"', "&", "'", "/", ":", "<", ">", "@"])
def test_forbidden_localpart_characters(char: str) -> None:
    # RFC 7622 §3.3.1. '/' and '@' are separators, so they end up elsewhere when parsed,
    # but Jid.of must refuse them in a localpart given on its own.
    with pytest.raises(JidMalformed):
        Jid.of(f"a{char}b", "example.com")


def test_of_prepares_each_part() -> None:
    assert Jid.of("Juliet", "Example.COM", "Balcony") == Jid.parse("juliet@example.com/Balcony")
    assert Jid.of(None, "example.com") == Jid.parse("example.com")


def test_str_and_derived_addresses() -> None:
    full = Jid.parse("Juliet@Example.com/Balcony")
    assert str(full) == "juliet@example.com/Balcony"
    assert full.bare == Jid.parse("juliet@example.com")
    assert full.bare.is_bare
    assert not full.is_bare
    assert full.host == Jid.parse("example.com")
    assert full.host.is_host
    assert not full.bare.is_host
    assert full.bare.with_resource("Balcony") == full
    assert str(Jid.parse("example.com/x")) == "example.com/x"


def test_jid_is_frozen_and_hashable() -> None:
    jid = Jid.parse("juliet@example.com")
    with pytest.raises(AttributeError):
        jid.local = "romeo"  # type: ignore[misc]
    assert {jid, Jid.parse("JULIET@example.com")} == {jid}


# Text made mostly of the characters that matter to the grammar, plus any Unicode.
_JIDISH = st.text(
    alphabet=st.one_of(
        st.sampled_from("@/.-_ \"'&:<>[]%"),
        st.characters(codec="utf-8"),
        st.sampled_from("aAbZ09ßςΣéÅⅣ♚\u00a0\u212bｅ"),
    ),
    max_size=40,
)
_PLAUSIBLE = st.builds(
    lambda local, domain, resource: f"{local}@{domain}/{resource}",
    st.text(alphabet="aBcß.é-_Σ1", min_size=1, max_size=12),
    st.from_regex(r"[a-zA-Z0-9ü]{1,10}(\.[a-z0-9]{1,8}){0,3}", fullmatch=True),
    st.text(min_size=1, max_size=12),
)


def _roundtrips(text: str) -> None:
    try:
        jid = Jid.parse(text)
    except JidMalformed:
        return
    again = Jid.parse(str(jid))
    assert again == jid
    assert str(again) == str(jid)


@settings(max_examples=500, deadline=None)
@given(st.one_of(_JIDISH, st.text(max_size=30)))
def test_parse_roundtrips_and_only_raises_jid_malformed(text: str) -> None:
    _roundtrips(text)


@settings(max_examples=300, deadline=None)
@given(_PLAUSIBLE)
def test_plausible_addresses_roundtrip(text: str) -> None:
    _roundtrips(text)
