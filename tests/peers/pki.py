"""RFC 6125 test identities: a private CA issuing per-domain certificates for the peers.

Each certificate names `DNS:d` and `DNS:*.d` and carries EKU serverAuth AND clientAuth:
an initiating server presents its certificate as a TLS client, and Prosody/ejabberd refuse
SASL EXTERNAL without clientAuth (PEERS.md). Files are world-readable (mode 0644) because
ejabberd runs as its own user; they are test keys, never secrets.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True, slots=True)
class CertFiles:
    """One domain's credentials on disk.

    `cert` is the leaf (plus any chain), `key` its private key, `combined` cert+key in
    one PEM (what ejabberd's `certfiles` wants), `ca` the issuing CA's certificate.
    """

    domain: str
    names: tuple[str, ...]
    cert: Path
    key: Path
    combined: Path
    ca: Path


class PrivateCA:
    """A self-signed test CA that writes its certificate to `directory/ca.pem`.

    Built with `cryptography` to the letter of PEERS.md rather than with trustme: trustme
    marks extendedKeyUsage critical, which Erlang's path validation (ejabberd) rejects as
    `unknown_critical_extension`.
    """

    def __init__(self, directory: Path, name: str = "IM Edge test CA") -> None:
        self.directory = directory
        self.name = name
        directory.mkdir(parents=True, exist_ok=True)
        _readable_dir(directory)
        now = _now()
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        self.ca_pem = self._cert.public_bytes(Encoding.PEM)
        self.ca_path = directory / "ca.pem"
        self.ca_path.write_bytes(self.ca_pem)
        _readable(self.ca_path)

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    def issue(
        self,
        domain: str,
        *,
        names: Sequence[str] | None = None,
        directory: Path | None = None,
        stem: str | None = None,
        ip_addresses: Sequence[str] = (),
    ) -> CertFiles:
        """Issue a certificate for `domain` (SAN DNS:domain, DNS:*.domain by default).

        `names` replaces the SAN list (a wrong-name certificate: files named for
        `domain`, certificate for something else). Files go to `directory` (default:
        `<ca dir>/<domain>/`) as `<stem>.crt`, `<stem>.key`, `<stem>.pem` and `ca.pem`;
        `stem` defaults to `domain`, which is the layout Prosody's `certificates` expects.
        `ip_addresses` adds iPAddress SANs (RFC 6125 §1.7.2: a server reached by its IP
        address, such as slapd on ldap://127.0.0.1).
        """
        sans = tuple(names) if names is not None else (domain, f"*.{domain}")
        out = directory if directory is not None else self.directory / domain
        out.mkdir(parents=True, exist_ok=True)
        _readable_dir(out)
        base = stem or domain
        now = _now()
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sans[0])]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            # COMPAT: ejabberd 23.01's pkix arms an Erlang timer for the expiry date and
            # crashes (badarg) when it is more than 2^32 ms (~49 days) away.
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            # RFC 6125 §6.4: DNS-IDs in subjectAltName (not critical: the subject is set).
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName(n) for n in sans]
                    + [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
                ),
                critical=False,
            )
            # clientAuth: the initiating server is the TLS client of the s2s stream.
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        cert_pem = leaf.public_bytes(Encoding.PEM)
        key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        cert = out / f"{base}.crt"
        key_path = out / f"{base}.key"
        combined = out / f"{base}.pem"
        ca = out / "ca.pem"
        cert.write_bytes(cert_pem)
        key_path.write_bytes(key_pem)
        combined.write_bytes(cert_pem + key_pem)
        ca.write_bytes(self.ca_pem)
        for path in (cert, key_path, combined, ca):
            _readable(path)
        return CertFiles(domain, sans, cert, key_path, combined, ca)

    def issue_wrong_name(
        self, domain: str, wrong: str = "wrong.test", *, directory: Path | None = None
    ) -> CertFiles:
        """Files for `domain` holding a certificate that names only `wrong` (RFC 6125 miss)."""
        return self.issue(
            domain,
            names=(wrong, f"*.{wrong}"),
            directory=directory or self.directory / f"{domain}-wrong-name",
        )


def issue_untrusted(domain: str, directory: Path) -> CertFiles:
    """A certificate for `domain` from a throw-away CA that no peer trusts.

    The returned `ca` is that rogue CA, not the test CA: use it only to check the chain.
    """
    rogue = PrivateCA(directory / "rogue-ca", name="Untrusted rogue CA")
    return rogue.issue(domain, directory=directory / f"{domain}-untrusted")


def _readable(path: Path) -> None:
    path.chmod(0o644)


def _readable_dir(path: Path) -> None:
    path.chmod(0o755)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
