"""XEP-0220 Server Dialback: keys (XEP-0185) and the elements exchanged."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum

from imedge.protocol import ns
from imedge.protocol.element import Element, escape_attr, escape_text


class DialbackType(StrEnum):
    VALID = "valid"
    INVALID = "invalid"
    ERROR = "error"


def dialback_key(secret: bytes, receiving: str, originating: str, stream_id: str) -> str:
    """XEP-0185 §3: HMAC-SHA256(SHA256(secret), receiving ' ' originating ' ' stream id)."""
    key = hashlib.sha256(secret).hexdigest().encode()
    msg = f"{receiving} {originating} {stream_id}".encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def keys_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True, slots=True)
class DialbackRequest:
    """A `<db:result/>` or `<db:verify/>` read off the wire."""

    kind: str  # "result" or "verify"
    from_: str
    to: str
    key: str
    id: str | None
    type: DialbackType | None


def parse(el: Element) -> DialbackRequest | None:
    """Read a dialback element; None if it is not one or lacks its addresses."""
    if el.ns != ns.DIALBACK or el.name not in ("result", "verify"):
        return None
    from_, to = el.get("from"), el.get("to")
    if not from_ or not to:
        return None
    t = el.get("type")
    try:
        typ = DialbackType(t) if t else None
    except ValueError:
        typ = DialbackType.ERROR
    return DialbackRequest(el.name, from_, to, el.text.strip(), el.get("id"), typ)


def element(
    kind: str,
    from_: str,
    to: str,
    *,
    key: str | None = None,
    id_: str | None = None,
    type_: DialbackType | None = None,
) -> bytes:
    """Serialise a `db:` element with the `db:` prefix the stream header declares."""
    attrs = f" from='{escape_attr(from_)}' to='{escape_attr(to)}'"
    if id_ is not None:
        attrs += f" id='{escape_attr(id_)}'"
    if type_ is not None:
        attrs += f" type='{type_}'"
    if key:
        return f"<db:{kind}{attrs}>{escape_text(key)}</db:{kind}>".encode()
    return f"<db:{kind}{attrs}/>".encode()
