"""RFC 6120 §4.8.3: reading back one stanza kept as bytes (offline storage, queues).

A stored stanza is written the way it travels inside a stream whose default namespace is
`jabber:client` (see `imedge.protocol.element.stanza_bytes`), so it is not a document of its
own: it is read through the same safe parser as the wire, behind a synthetic stream
header. The result keeps the stored bytes in `Element.raw`, so delivering it costs no
re-serialisation.
"""

from __future__ import annotations

from imedge.domain.errors import StreamError
from imedge.protocol import ns
from imedge.protocol.element import Element
from imedge.protocol.xml import StreamHeader, XmlStreamParser

_HEADER = "<stream:stream xmlns='{content}' xmlns:stream='" + ns.STREAMS + "'>"


class FragmentError(ValueError):
    """The bytes are not exactly one well-formed stanza."""


def parse_stanza(data: bytes, content_ns: str = ns.CLIENT, *, max_bytes: int = 1 << 20) -> Element:
    """Parse `data`, the bytes of one stanza in `content_ns`; raise FragmentError if it is not."""
    found: list[Element] = []

    def on_open(_: StreamHeader) -> None:
        return None

    def on_close() -> None:
        return None

    parser = XmlStreamParser(on_open, found.append, on_close, max_stanza_bytes=max_bytes)
    try:
        parser.feed(_HEADER.format(content=content_ns).encode())
        parser.feed(data)
    except StreamError as exc:
        raise FragmentError(f"stored stanza is not valid XML: {exc}") from None
    if len(found) != 1:
        raise FragmentError(f"expected one stanza, found {len(found)} (or an unfinished one)")
    return found[0]
