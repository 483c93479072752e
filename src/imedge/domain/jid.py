"""XMPP addresses (RFC 7622), prepared with PRECIS (RFC 8264/8265) and IDNA."""

from __future__ import annotations

import ipaddress
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import idna
import precis_i18n

_LOCAL = precis_i18n.get_profile("UsernameCaseMapped")
_RESOURCE = precis_i18n.get_profile("OpaqueString")
# RFC 7622 §3.3.1: characters the localpart may not contain even though PRECIS allows them.
_LOCAL_FORBIDDEN = frozenset("\"&'/:<>@")
_MAX_PART_BYTES = 1023


class JidMalformed(ValueError):
    """The string is not a valid XMPP address; answer with `jid-malformed`."""


def _utf8_size(text: str) -> int:
    # A str from outside the XML parser may hold lone surrogates, which are no characters
    # at all and cannot be encoded: that is a malformed address, not a crash.
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise JidMalformed("address is not valid Unicode text") from None


def _check_length(part: str, what: str) -> None:
    size = _utf8_size(part)
    if size == 0:
        raise JidMalformed(f"empty {what}")
    if size > _MAX_PART_BYTES:
        raise JidMalformed(f"{what} longer than {_MAX_PART_BYTES} bytes")


def prep_local(local: str) -> str:
    """RFC 7622 §3.3: the UsernameCaseMapped profile, minus the forbidden characters."""
    try:
        out: str = _LOCAL.enforce(local)
    except UnicodeError as exc:
        reason = exc.reason if isinstance(exc, UnicodeEncodeError) else str(exc)
        raise JidMalformed(f"invalid localpart: {reason}") from None
    if _LOCAL_FORBIDDEN.intersection(out):
        raise JidMalformed("localpart contains a forbidden character")
    _check_length(out, "localpart")
    return out


def prep_domain(domain: str) -> str:
    """RFC 7622 §3.2: IPv6 literals canonical, names as lowercase NFC U-labels."""
    if domain.endswith("."):
        domain = domain[:-1]
    if not domain:
        raise JidMalformed("empty domainpart")
    if domain.startswith("[") and domain.endswith("]"):
        return _prep_ip_literal(domain[1:-1])
    text = unicodedata.normalize("NFC", domain.lower())
    if text.isascii():
        labels = text.split(".")
        for label in labels:
            if not label or len(label) > 63:
                raise JidMalformed("invalid domainpart label")
            if not all(c.isalnum() or c in "-_" for c in label):
                raise JidMalformed("invalid character in domainpart")
            if label.startswith("-") or label.endswith("-"):
                raise JidMalformed("domainpart label starts or ends with a hyphen")
        if text.startswith("xn--") or ".xn--" in text:
            try:
                text = idna.decode(text)
            except UnicodeError as exc:  # idna.IDNAError, or a codec error underneath
                raise JidMalformed(f"invalid domainpart: {exc}") from None
    else:
        try:
            text = idna.decode(idna.encode(text, uts46=True))
        except UnicodeError as exc:
            raise JidMalformed(f"invalid domainpart: {exc}") from None
    _check_length(text, "domainpart")
    return text


def _prep_ip_literal(inner: str) -> str:
    """RFC 7622 §3.2: an IP-literal of RFC 3986 §3.2.2, that is an IPv6 address in
    brackets (no zone identifier), compared in its canonical RFC 5952 form."""
    if "%" in inner:
        raise JidMalformed("zone identifier in IP-literal domainpart")
    try:
        address = ipaddress.IPv6Address(inner)
    except ValueError:
        raise JidMalformed("invalid IP-literal domainpart") from None
    return f"[{address.compressed}]"


def prep_resource(resource: str) -> str:
    """RFC 7622 §3.4: the OpaqueString profile."""
    try:
        out: str = _RESOURCE.enforce(resource)
    except UnicodeError as exc:
        raise JidMalformed("invalid resourcepart") from exc
    _check_length(out, "resourcepart")
    return out


@dataclass(frozen=True, slots=True)
class Jid:
    """A prepared XMPP address. Build it with `Jid.parse` or `Jid.of`; fields are canonical."""

    local: str | None
    domain: str
    resource: str | None = None

    @staticmethod
    def parse(text: str) -> Jid:
        """Split and prepare `text` (RFC 7622 §3.1); raise `JidMalformed` if it is not valid."""
        return _parse_cached(text)

    @staticmethod
    def of(local: str | None, domain: str, resource: str | None = None) -> Jid:
        """Prepare each part separately."""
        return Jid(
            prep_local(local) if local is not None else None,
            prep_domain(domain),
            prep_resource(resource) if resource is not None else None,
        )

    @property
    def bare(self) -> Jid:
        return self if self.resource is None else Jid(self.local, self.domain)

    @property
    def host(self) -> Jid:
        return Jid(None, self.domain)

    @property
    def is_bare(self) -> bool:
        return self.resource is None

    @property
    def is_host(self) -> bool:
        return self.local is None and self.resource is None

    def with_resource(self, resource: str) -> Jid:
        return Jid(self.local, self.domain, prep_resource(resource))

    def __str__(self) -> str:
        text = self.domain if self.local is None else f"{self.local}@{self.domain}"
        return text if self.resource is None else f"{text}/{self.resource}"


@lru_cache(maxsize=65536)
def _parse_cached(text: str) -> Jid:
    if not text:
        raise JidMalformed("empty address")
    if _utf8_size(text) > 3071:
        raise JidMalformed("address too long")
    slash = text.find("/")
    if slash >= 0:
        head, resource = text[:slash], text[slash + 1 :]
        if not resource:
            raise JidMalformed("empty resourcepart")
    else:
        head, resource = text, None
    at = head.find("@")
    if at >= 0:
        local, domain = head[:at], head[at + 1 :]
        if not local:
            raise JidMalformed("empty localpart")
    else:
        local, domain = None, head
    return Jid.of(local, domain, resource)
