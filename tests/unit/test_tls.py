from __future__ import annotations

import ssl
import stat
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from imedge.server.tls import (
    TlsConfigError,
    check_key_pair,
    client_context,
    ensure_certificate,
    server_context,
)


def _handshake(client: ssl.SSLContext, server: ssl.SSLContext, hostname: str) -> ssl.SSLObject:
    """Run a TLS handshake over memory BIOs; return the server side."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname=hostname)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for name, obj in (("c", c), ("s", s)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return s
    raise AssertionError("handshake did not finish")


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "tls" / "a.test.crt", tmp_path / "tls" / "a.test.key"
    assert ensure_certificate("a.test", cert, key, ["b.test"]) is True
    return cert, key


def test_generates_certificate_with_names_and_modes(pair: tuple[Path, Path]) -> None:
    cert, key = pair
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert.parent.stat().st_mode) == 0o700
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["a.test", "*.a.test", "b.test", "*.b.test"]
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime.days >= 3650
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in usage


def test_reuses_existing_pair(pair: tuple[Path, Path]) -> None:
    cert, key = pair
    before = cert.read_bytes()
    assert ensure_certificate("a.test", cert, key) is False
    assert cert.read_bytes() == before


def test_regenerates_when_key_missing(pair: tuple[Path, Path]) -> None:
    cert, key = pair
    key.unlink()
    assert ensure_certificate("a.test", cert, key) is True
    check_key_pair(cert, key)


def test_self_signed_pair_handshakes_with_hostname_check(pair: tuple[Path, Path]) -> None:
    cert, key = pair
    server = server_context(cert, key, None)
    client = client_context(cert, None, None)
    client.set_alpn_protocols(["xmpp-client"])
    side = _handshake(client, server, "a.test")
    assert side.version() in {"TLSv1.2", "TLSv1.3"}
    assert side.selected_alpn_protocol() == "xmpp-client"
    assert side.compression() is None


def test_wrong_hostname_is_refused(pair: tuple[Path, Path]) -> None:
    cert, key = pair
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(client_context(cert, None, None), server_context(cert, key, None), "x.test")


def test_contexts_enforce_tls12_minimum(pair: tuple[Path, Path]) -> None:
    cert, key = pair
    server = server_context(cert, key, None)
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2
    assert server.verify_mode == ssl.CERT_NONE
    assert server.options & ssl.OP_NO_COMPRESSION
    assert client_context(None, None, None).minimum_version == ssl.TLSVersion.TLSv1_2


def test_server_with_ca_accepts_peer_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_cert = ca.issue_cert("a.test")
    peer_cert = ca.issue_cert("b.test")
    s_cert, s_key = tmp_path / "a.crt", tmp_path / "a.key"
    p_cert, p_key = tmp_path / "b.crt", tmp_path / "b.key"
    server_cert.cert_chain_pems[0].write_to_path(str(s_cert))
    server_cert.private_key_pem.write_to_path(str(s_key))
    peer_cert.cert_chain_pems[0].write_to_path(str(p_cert))
    peer_cert.private_key_pem.write_to_path(str(p_key))

    server = server_context(s_cert, s_key, ca_file)
    assert server.verify_mode == ssl.CERT_OPTIONAL
    # With a client certificate: verified and visible for SASL EXTERNAL.
    side = _handshake(client_context(ca_file, p_cert, p_key), server, "a.test")
    assert side.getpeercert() is not None
    # Without one: still accepted.
    side = _handshake(client_context(ca_file, None, None), server, "a.test")
    assert not side.getpeercert()


def test_mismatched_key_is_named(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    cert, _ = pair
    other_cert, other_key = tmp_path / "o.crt", tmp_path / "o.key"
    ensure_certificate("o.test", other_cert, other_key)
    with pytest.raises(TlsConfigError, match=r"o\.key does not match the certificate"):
        server_context(cert, other_key, None)


def test_missing_and_garbage_files_are_named(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    cert, key = pair
    with pytest.raises(TlsConfigError, match=r"nope\.crt: file not found"):
        server_context(tmp_path / "nope.crt", key, None)
    junk = tmp_path / "junk.key"
    junk.write_text("hello")
    with pytest.raises(TlsConfigError, match=r"junk\.key: not an unencrypted PEM private key"):
        server_context(cert, junk, None)
    with pytest.raises(TlsConfigError, match=r"trust store .*missing\.pem: file not found"):
        server_context(cert, key, tmp_path / "missing.pem")
    with pytest.raises(TlsConfigError, match="both a certificate and a key"):
        client_context(None, cert, None)


def test_unreadable_key_is_named(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    cert, _ = pair
    with pytest.raises(TlsConfigError, match=r"TLS key .*: cannot read"):
        server_context(cert, tmp_path, None)  # a directory: readable by nobody, even root
