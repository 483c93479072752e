"""TLS material: a self-signed certificate when none is configured, and SSL contexts."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import secrets
import ssl
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

CERT_VALIDITY = datetime.timedelta(days=3650)
ALPN_CLIENT = "xmpp-client"
ALPN_SERVER = "xmpp-server"  # XEP-0368 direct TLS between servers
# Forward secret AEAD suites only (TLS 1.2); TLS 1.3 suites are always the modern set.
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS:!SHA1"


class TlsConfigError(Exception):
    """A certificate or key cannot be used; the message names the file and the reason."""


def _san_entries(names: Sequence[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for name in names:
        literal = name[1:-1] if name.startswith("[") and name.endswith("]") else name
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(literal)))
            continue
        except ValueError:
            pass
        for dns in (name, f"*.{name}"):
            entry = x509.DNSName(dns.encode("idna").decode("ascii"))
            if entry not in entries:
                entries.append(entry)
    return entries


def _make_dirs(directory: Path) -> None:
    """Create missing directories with mode 0700 (only those created here)."""
    missing: list[Path] = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        path.mkdir(mode=0o700)
        path.chmod(0o700)


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def ensure_certificate(domain: str, cert: Path, key: Path, extra_names: Sequence[str] = ()) -> bool:
    """Generate a self-signed ECDSA P-256 certificate for `domain` unless both files exist.

    The certificate names `domain`, `*.domain` and each extra name (and its wildcard) and
    is valid for ten years; the key is written with mode 0600, new directories 0700.
    Returns True when it generated.
    """
    if cert.is_file() and key.is_file():
        return False
    for existing in (cert, key):
        if existing.exists():
            log.warning("replacing %s: its certificate/key partner is missing", existing)
    private_key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = datetime.datetime.now(datetime.UTC)
    public_key = private_key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + CERT_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(_san_entries([domain, *extra_names])), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        # clientAuth too: the initiating server presents this certificate for SASL EXTERNAL.
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(private_key, hashes.SHA256())
    )
    key_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _make_dirs(key.parent)
    _make_dirs(cert.parent)
    _write_atomically(key, key_pem, 0o600)
    _write_atomically(cert, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    log.info("generated a self-signed certificate for %s in %s", domain, cert)
    return True


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TlsConfigError(f"TLS {what} {path}: file not found") from None
    except OSError as exc:
        raise TlsConfigError(f"TLS {what} {path}: cannot read ({exc.strerror})") from None


def check_key_pair(cert: Path, key: Path) -> x509.Certificate:
    """Load and cross-check a PEM certificate (chain) and key; return the leaf certificate."""
    try:
        chain = x509.load_pem_x509_certificates(_read(cert, "certificate"))
    except ValueError as exc:
        raise TlsConfigError(f"TLS certificate {cert}: not a PEM certificate ({exc})") from None
    try:
        private_key = serialization.load_pem_private_key(_read(key, "key"), password=None)
    except (ValueError, TypeError) as exc:
        raise TlsConfigError(f"TLS key {key}: not an unencrypted PEM private key ({exc})") from None
    leaf = chain[0]
    pair = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if leaf.public_key().public_bytes(encoding, pair) != private_key.public_key().public_bytes(
        encoding, pair
    ):
        raise TlsConfigError(f"TLS key {key} does not match the certificate {cert}")
    if leaf.not_valid_after_utc < datetime.datetime.now(datetime.UTC):
        log.warning("TLS certificate %s expired on %s", cert, leaf.not_valid_after_utc)
    return leaf


def _load_chain(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    check_key_pair(cert, key)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise TlsConfigError(f"TLS certificate {cert} / key {key}: {exc}") from None


def _load_ca(context: ssl.SSLContext, ca: Path) -> None:
    _read(ca, "trust store")
    try:
        context.load_verify_locations(cafile=ca)
    except (ssl.SSLError, OSError) as exc:
        raise TlsConfigError(f"TLS trust store {ca}: {exc}") from None


def _harden(context: ssl.SSLContext) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_ciphers(CIPHERS)


def server_context(cert: Path, key: Path, ca: Path | None) -> ssl.SSLContext:
    """The context for accepted streams (c2s and s2s, STARTTLS and direct TLS).

    With `ca`, peers are asked for a certificate (CERT_OPTIONAL) and it is verified against
    `ca` and the system CAs, for SASL EXTERNAL. Caveat of OpenSSL: a peer that presents a
    certificate that does not verify fails the handshake; without `ca` none is requested.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(context)
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_SINGLE_ECDH_USE
    _load_chain(context, cert, key)
    context.set_alpn_protocols([ALPN_CLIENT, ALPN_SERVER])
    if ca is not None:
        _load_ca(context, ca)
        context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        context.verify_mode = ssl.CERT_OPTIONAL
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def client_context(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """The context for outgoing s2s streams: verifies the peer against `ca` and the system CAs.

    `cert` and `key` (both or neither) are presented to the peer for SASL EXTERNAL.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(context)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if ca is not None:
        _load_ca(context, ca)
    if (cert is None) != (key is None):
        raise TlsConfigError("a client certificate needs both a certificate and a key")
    if cert is not None and key is not None:
        _load_chain(context, cert, key)
    context.set_alpn_protocols([ALPN_SERVER])
    return context
