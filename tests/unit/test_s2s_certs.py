"""RFC 6125 identity checks of XMPP server certificates (imedge.server.s2s.certs)."""

from __future__ import annotations

import datetime
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from imedge.server.s2s.certs import (
    ID_ON_DNS_SRV,
    ID_ON_XMPP_ADDR,
    CertStatus,
    describe,
    identities,
    matches_domain,
    verify_peer,
)
from imedge.server.s2s.channel import TlsInfo, verify_error_text

KEY = ec.generate_private_key(ec.SECP256R1())
NOW = datetime.datetime.now(datetime.UTC)
V = SSL.X509VerificationCodes


def _der_string(tag: int, text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) < 0x80:
        return bytes([tag, len(raw)]) + raw
    size = (len(raw).bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + len(raw).to_bytes(size, "big") + raw


def xmpp_addr(text: str) -> x509.OtherName:
    return x509.OtherName(ID_ON_XMPP_ADDR, _der_string(0x0C, text))  # UTF8String


def srv_id(text: str) -> x509.OtherName:
    return x509.OtherName(ID_ON_DNS_SRV, _der_string(0x16, text))  # IA5String


def make_cert(
    *names: x509.GeneralName | str,
    cn: str | None = None,
    issuer_cn: str | None = None,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> bytes:
    """A certificate with the given SAN entries (str = dNSName) and subject CN, as DER."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    issuer = (
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]) if issuer_cn else subject
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - datetime.timedelta(days=1))
        .not_valid_after(not_after or NOW + datetime.timedelta(days=30))
    )
    if names:
        entries = [x509.DNSName(n) if isinstance(n, str) else n for n in names]
        builder = builder.add_extension(x509.SubjectAlternativeName(entries), critical=False)
    return builder.sign(KEY, hashes.SHA256()).public_bytes(Encoding.DER)


def tls_info(
    chain: tuple[bytes, ...], errors: tuple[tuple[int, int], ...] = (), *, server_side: bool = True
) -> TlsInfo:
    return TlsInfo(
        server_side=server_side,
        version="TLSv1.3",
        cipher="TLS_AES_256_GCM_SHA384",
        alpn=None,
        server_name=None,
        peer_chain_der=chain,
        chain_verified=bool(chain) and not errors,
        verify_error=verify_error_text(errors[0][0]) if errors else None,
        verify_errors=errors,
        tls_exporter=None,
        tls_unique=None,
        tls_server_end_point=None,
    )


# --- identities ---------------------------------------------------------------------------


def test_identities_reads_every_kind_of_san_entry() -> None:
    der = make_cert(
        "A.Test",
        "*.a.test",
        xmpp_addr("a.test"),
        srv_id("_xmpp-server.srv.a.test"),
        srv_id("_xmpp-client.client.a.test"),  # a client SRV-ID names no server
        xmpp_addr("juliet@a.test"),  # a user's address names no server
        cn="cn.a.test",
    )
    ids = identities(der)
    assert ids.dns == ("a.test", "*.a.test")
    assert ids.xmpp_addrs == ("a.test",)
    assert ids.srv == ("srv.a.test",)
    # RFC 6125 §6.4.4: the CN is not consulted when the SAN has identifiers.
    assert ids.common_names == ()
    assert ids.names == ("a.test", "*.a.test", "srv.a.test")


def test_cn_is_the_fallback_without_dns_srv_or_xmpp_ids() -> None:
    assert identities(make_cert(cn="Legacy.Test")).common_names == ("legacy.test",)
    # An IP-only SAN is not a DNS-ID: the CN still counts.
    ip_only = make_cert(x509.IPAddress(ipaddress.ip_address("127.0.0.2")), cn="legacy.test")
    assert identities(ip_only).common_names == ("legacy.test",)
    assert matches_domain(ip_only, "legacy.test")


def test_cn_is_ignored_when_san_has_an_xmpp_addr() -> None:
    der = make_cert(xmpp_addr("real.test"), cn="other.test")
    assert not matches_domain(der, "other.test")
    assert matches_domain(der, "real.test")


def test_long_xmpp_addr_uses_the_long_der_length_form() -> None:
    domain = ".".join(["label" + "x" * 50] * 3) + ".test"  # > 127 bytes
    assert matches_domain(make_cert(xmpp_addr(domain)), domain)


# --- matching -----------------------------------------------------------------------------


def test_exact_match_is_case_insensitive_and_ignores_a_trailing_dot() -> None:
    der = make_cert("Server.A.Test")
    assert matches_domain(der, "server.a.test")
    assert matches_domain(der, "SERVER.A.TEST.")
    assert not matches_domain(der, "a.test")


@pytest.mark.parametrize(
    ("presented", "domain", "expected"),
    [
        ("*.a.test", "x.a.test", True),
        ("*.a.test", "X.A.TEST", True),
        ("*.a.test", "a.test", False),  # the wildcard needs a label to stand for
        ("*.a.test", "x.y.a.test", False),  # exactly one label
        ("*.test", "a.test", False),  # a wildcard covering a whole TLD is refused
        ("x*.a.test", "xy.a.test", False),  # only the complete left-most label
        ("*x.a.test", "yx.a.test", False),
        ("x.*.a.test", "x.y.a.test", False),
        ("*.a.test", "xn--bcher-kva.a.test", True),  # an A-label is one label
    ],
)
def test_wildcard_rules(presented: str, domain: str, expected: bool) -> None:
    assert matches_domain(make_cert(presented), domain) is expected


def test_idn_domain_matches_its_a_label() -> None:
    der = make_cert("xn--bcher-kva.test")
    assert matches_domain(der, "bücher.test")
    assert matches_domain(der, "xn--bcher-kva.test")
    assert not matches_domain(der, "bucher.test")


def test_xmpp_addr_in_u_labels_matches_the_a_label_domain() -> None:
    der = make_cert(xmpp_addr("bücher.test"))
    assert identities(der).xmpp_addrs == ("xn--bcher-kva.test",)
    assert matches_domain(der, "xn--bcher-kva.test")
    assert matches_domain(der, "BÜCHER.test")


def test_xmpp_addr_and_srv_id_match_exactly_never_as_wildcards() -> None:
    assert not matches_domain(make_cert(xmpp_addr("*.a.test")), "x.a.test")
    assert not matches_domain(make_cert(srv_id("_xmpp-server.*.a.test")), "x.a.test")
    assert matches_domain(make_cert(srv_id("_xmpp-server.a.test")), "a.test")
    assert not matches_domain(make_cert(srv_id("_xmpp-server.a.test")), "x.a.test")
    assert not matches_domain(make_cert(srv_id("_xmpp-client.a.test")), "a.test")


def test_cn_fallback_follows_the_dns_id_rules() -> None:
    assert matches_domain(make_cert(cn="*.legacy.test"), "x.legacy.test")
    assert not matches_domain(make_cert(cn="*.legacy.test"), "legacy.test")


def test_invalid_reference_domains_never_match() -> None:
    der = make_cert("a.test", "*.a.test")
    for domain in ("", ".", "*.a.test", "a..test", "x" * 64 + ".a.test"):
        assert not matches_domain(der, domain), domain


# --- verify_peer and describe -------------------------------------------------------------


def test_valid_certificate() -> None:
    info = tls_info((make_cert("b.test"),))
    assert verify_peer(info, "b.test") is CertStatus.VALID
    assert describe(CertStatus.VALID, info, "b.test").startswith(
        "the certificate of b.test is valid"
    )


def test_no_certificate() -> None:
    info = tls_info(())
    assert verify_peer(info, "b.test") is CertStatus.NO_CERTIFICATE
    assert describe(CertStatus.NO_CERTIFICATE, info, "b.test") == "b.test presented no certificate"


def test_trusted_certificate_for_another_name_is_a_mismatch() -> None:
    info = tls_info((make_cert("a.test", "*.a.test"),))
    assert verify_peer(info, "b.test") is CertStatus.NAME_MISMATCH
    text = describe(CertStatus.NAME_MISMATCH, info, "b.test")
    assert "other names (a.test, *.a.test)" in text
    assert "not b.test" in text


def test_unknown_issuer_is_untrusted_and_named() -> None:
    leaf = make_cert("b.test", issuer_cn="evil-CA")
    info = tls_info((leaf,), ((V.ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, 0),))
    assert info.verify_error == "unable to get local issuer certificate"
    assert verify_peer(info, "b.test") is CertStatus.UNTRUSTED
    assert describe(CertStatus.UNTRUSTED, info, "b.test") == (
        "the certificate of b.test is issued by an unknown authority (CN=evil-CA)"
    )


def test_self_signed_is_untrusted() -> None:
    info = tls_info((make_cert("b.test", cn="b.test"),), ((V.ERR_DEPTH_ZERO_SELF_SIGNED_CERT, 0),))
    assert verify_peer(info, "b.test") is CertStatus.UNTRUSTED
    assert describe(CertStatus.UNTRUSTED, info, "b.test") == (
        "the certificate of b.test is self-signed (CN=b.test)"
    )


def test_expired_is_its_own_status_when_it_is_the_only_fault() -> None:
    expired = make_cert(
        "b.test",
        cn="b.test",
        not_before=datetime.datetime(2023, 1, 1, tzinfo=datetime.UTC),
        not_after=datetime.datetime(2024, 1, 2, 3, 4, tzinfo=datetime.UTC),
    )
    info = tls_info((expired,), ((V.ERR_CERT_HAS_EXPIRED, 0),))
    assert verify_peer(info, "b.test") is CertStatus.EXPIRED
    assert describe(CertStatus.EXPIRED, info, "b.test") == (
        "the certificate of b.test expired on 2024-01-02 03:04 UTC (CN=b.test)"
    )
    # Expired *and* from an unknown issuer: the issuer matters more.
    both = tls_info(
        (expired,), ((V.ERR_CERT_HAS_EXPIRED, 0), (V.ERR_DEPTH_ZERO_SELF_SIGNED_CERT, 0))
    )
    assert verify_peer(both, "b.test") is CertStatus.UNTRUSTED


def test_not_yet_valid_is_described_as_such() -> None:
    future = make_cert(
        "b.test",
        cn="b.test",
        not_before=datetime.datetime(2999, 1, 1, tzinfo=datetime.UTC),
        not_after=datetime.datetime(3000, 1, 1, tzinfo=datetime.UTC),
    )
    info = tls_info((future,), ((V.ERR_CERT_NOT_YET_VALID, 0),))
    assert verify_peer(info, "b.test") is CertStatus.EXPIRED
    assert "is not valid before 2999-01-01" in describe(CertStatus.EXPIRED, info, "b.test")


def test_untrusted_chain_is_not_rescued_by_a_matching_name() -> None:
    info = tls_info((make_cert("b.test"),), ((V.ERR_CERT_SIGNATURE_FAILURE, 0),))
    assert verify_peer(info, "b.test") is CertStatus.UNTRUSTED
    assert "certificate signature failure" in describe(CertStatus.UNTRUSTED, info, "b.test")


def test_status_values_are_stable_strings() -> None:
    assert [s.value for s in CertStatus] == [
        "valid",
        "no_certificate",
        "untrusted",
        "expired",
        "name_mismatch",
    ]
