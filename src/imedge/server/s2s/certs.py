"""RFC 6125 and RFC 6120 §13.7.1.4: is this certificate good for that XMPP server domain?

Pure functions on DER bytes. The chain itself is verified by OpenSSL during the handshake
(`channel.TlsInfo`); this module adds the name check and turns both into a `CertStatus`
with a sentence an operator can act on.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Final

import idna
from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier
from OpenSSL import SSL

from imedge.policy import CertStatus
from imedge.server.s2s.channel import TlsInfo

__all__ = [
    "ID_ON_DNS_SRV",
    "ID_ON_XMPP_ADDR",
    "CertIdentities",
    "CertStatus",
    "describe",
    "identities",
    "matches_domain",
    "verify_peer",
]

# RFC 6120 §13.7.1.4: id-on-xmppAddr, a UTF8String otherName.
ID_ON_XMPP_ADDR: Final = ObjectIdentifier("1.3.6.1.5.5.7.8.5")
# RFC 4985: id-on-dnsSRV, an IA5String otherName "_Service.Name".
ID_ON_DNS_SRV: Final = ObjectIdentifier("1.3.6.1.5.5.7.8.7")
SRV_SERVICE: Final = "_xmpp-server."

_TAG_UTF8STRING: Final = 0x0C
_TAG_IA5STRING: Final = 0x16

_V = SSL.X509VerificationCodes
_DATE_ERRORS: Final = frozenset({_V.ERR_CERT_HAS_EXPIRED, _V.ERR_CERT_NOT_YET_VALID})
_UNKNOWN_ISSUER: Final = frozenset(
    {
        _V.ERR_UNABLE_TO_GET_ISSUER_CERT,
        _V.ERR_SELF_SIGNED_CERT_IN_CHAIN,
        _V.ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
        _V.ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE,
    }
)


@dataclass(frozen=True, slots=True)
class CertIdentities:
    """The identifiers a server certificate presents (RFC 6125 §6.4), A-labels lower-cased."""

    dns: tuple[str, ...]  # SAN dNSName (DNS-IDs), may hold "*." wildcards
    xmpp_addrs: tuple[str, ...]  # SAN otherName id-on-xmppAddr
    srv: tuple[str, ...]  # SAN otherName id-on-dnsSRV for _xmpp-server: the domain part
    common_names: tuple[str, ...]  # subject CN, only when there is none of the above

    @property
    def names(self) -> tuple[str, ...]:
        """Every name presented, for messages (each once, in a stable order)."""
        return tuple(dict.fromkeys((*self.dns, *self.xmpp_addrs, *self.srv, *self.common_names)))


def _der_string(value: bytes, tag: int) -> str | None:
    """Decode one DER string TLV of type `tag` (short or long length form)."""
    if len(value) < 2 or value[0] != tag:
        return None
    length, offset = value[1], 2
    if length & 0x80:
        size = length & 0x7F
        if size == 0 or size > 4 or len(value) < 2 + size:
            return None
        length, offset = int.from_bytes(value[2 : 2 + size], "big"), 2 + size
    if offset + length != len(value):
        return None
    try:
        return value[offset:].decode("utf-8" if tag == _TAG_UTF8STRING else "ascii")
    except UnicodeDecodeError:
        return None


def _a_label(name: str) -> str | None:
    """A domain in lower-case A-labels, trailing dot removed; None if not a valid domain.

    A leading "*" label is kept as is (wildcards are judged by the matcher)."""
    name = name.strip().rstrip(".")
    if not name:
        return None
    wildcard = name.startswith("*.")
    rest = name[2:] if wildcard else name
    if rest.isascii():
        ascii_name = rest.lower()
    else:
        try:
            ascii_name = idna.encode(rest, uts46=True).decode("ascii").lower()
        except idna.IDNAError:
            return None
    labels = ascii_name.split(".")
    if any(not label or len(label) > 63 for label in labels):
        return None
    return f"*.{ascii_name}" if wildcard else ascii_name


def _names(values: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        name = _a_label(value)
        if name is not None and name not in out:
            out.append(name)
    return tuple(out)


def identities(cert_der: bytes) -> CertIdentities:
    """The DNS-IDs, XmppAddrs, SRV-IDs and (as a fallback only) CN of a certificate."""
    cert = x509.load_der_x509_certificate(cert_der)
    dns: list[str] = []
    xmpp: list[str] = []
    srv: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        dns = list(san.get_values_for_type(x509.DNSName))
        for other in san.get_values_for_type(x509.OtherName):
            if other.type_id == ID_ON_XMPP_ADDR:
                addr = _der_string(other.value, _TAG_UTF8STRING)
                # A server certificate's XmppAddr is a bare domain; a JID with a local
                # part or resource names no server.
                if addr is not None and "@" not in addr and "/" not in addr:
                    xmpp.append(addr)
            elif other.type_id == ID_ON_DNS_SRV:
                value = _der_string(other.value, _TAG_IA5STRING)
                if value is not None and value.lower().startswith(SRV_SERVICE):
                    srv.append(value[len(SRV_SERVICE) :])
    common: list[str] = []
    # RFC 6125 §6.4.4: the CN is consulted only without DNS-, SRV- or application-specific
    # identifiers (URI-IDs are not used by XMPP).
    if not (dns or xmpp or srv):
        common = [
            str(attr.value) for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
    return CertIdentities(
        dns=_names(dns),
        xmpp_addrs=tuple(n for n in _names(xmpp) if not n.startswith("*")),
        srv=tuple(n for n in _names(srv) if not n.startswith("*")),
        common_names=_names(common),
    )


def _dns_id_matches(presented: str, reference: str) -> bool:
    """RFC 6125 §6.4.1/§6.4.3: exact, or "*" as the whole left-most label for one label."""
    if not presented.startswith("*."):
        return presented == reference
    suffix = presented[1:]  # ".example.com"
    # At least two labels after the wildcard: "*.com" would cover a whole TLD.
    if suffix.count(".") < 2:
        return False
    head, dot, tail = reference.partition(".")
    return bool(head and dot) and f".{tail}" == suffix


def matches_domain(cert_der: bytes, domain: str) -> bool:
    """Whether the certificate names `domain` (RFC 6125 §6.4, RFC 6120 §13.7.1.4)."""
    reference = _a_label(domain)
    if reference is None or reference.startswith("*"):
        return False
    ids = identities(cert_der)
    if reference in ids.xmpp_addrs or reference in ids.srv:
        return True
    return any(_dns_id_matches(name, reference) for name in (*ids.dns, *ids.common_names))


def _only_dates_wrong(codes: tuple[int, ...]) -> bool:
    return bool(codes) and all(code in _DATE_ERRORS for code in codes)


def verify_peer(info: TlsInfo, domain: str) -> CertStatus:
    """Combine OpenSSL's chain verdict and the RFC 6125 name check for the peer `domain`.

    A chain whose only fault is its validity dates is EXPIRED; any other chain error is
    UNTRUSTED (an unknown or self-signed issuer comes first: anyone can make a certificate
    that has expired). The name is checked only for a chain that verified.
    """
    leaf = info.peer_certificate
    if leaf is None:
        return CertStatus.NO_CERTIFICATE
    if not info.chain_verified:
        return CertStatus.EXPIRED if _only_dates_wrong(info.verify_codes) else CertStatus.UNTRUSTED
    if not matches_domain(leaf, domain):
        return CertStatus.NAME_MISMATCH
    return CertStatus.VALID


def _dn(name: x509.Name) -> str:
    return name.rfc4514_string() or "an empty name"


def describe(status: CertStatus, info: TlsInfo, domain: str) -> str:
    """One sentence for logs, `imedge s2s test` and the admin page."""
    leaf_der = info.peer_certificate
    if status is CertStatus.NO_CERTIFICATE or leaf_der is None:
        return f"{domain} presented no certificate"
    leaf = x509.load_der_x509_certificate(leaf_der)
    subject, issuer = _dn(leaf.subject), _dn(leaf.issuer)
    ids = identities(leaf_der)
    names = ", ".join(ids.names) or "no names"
    if status is CertStatus.VALID:
        return f"the certificate of {domain} is valid (issued by {issuer})"
    if status is CertStatus.NAME_MISMATCH:
        return (
            f"the certificate of {domain} is for other names ({names}), "
            f"not {domain} (issued by {issuer})"
        )
    if status is CertStatus.EXPIRED:
        now = datetime.datetime.now(datetime.UTC)
        if _V.ERR_CERT_NOT_YET_VALID in info.verify_codes and leaf.not_valid_before_utc > now:
            return (
                f"the certificate of {domain} is not valid before "
                f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC ({subject})"
            )
        if leaf.not_valid_after_utc < now:
            return (
                f"the certificate of {domain} expired on "
                f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC ({subject})"
            )
        return f"a certificate in the chain of {domain} has expired or is not yet valid"
    # UNTRUSTED
    code, depth = info.verify_errors[0] if info.verify_errors else (None, 0)
    if code == _V.ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        return f"the certificate of {domain} is self-signed ({subject})"
    if code in _UNKNOWN_ISSUER:
        # The error names the certificate whose issuer is missing; that issuer is unknown.
        chain = info.peer_chain_der
        at = x509.load_der_x509_certificate(chain[min(depth, len(chain) - 1)])
        unknown = _dn(at.subject if code == _V.ERR_SELF_SIGNED_CERT_IN_CHAIN else at.issuer)
        return f"the certificate of {domain} is issued by an unknown authority ({unknown})"
    reason = info.verify_error or "it does not verify"
    return f"the certificate of {domain} is not trusted: {reason} ({subject}, issued by {issuer})"
