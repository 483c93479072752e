"""A safe, incremental XML stream parser for XMPP (RFC 6120 §4 and §11).

It refuses what RFC 6120 §11.1 restricts (DTDs, entity declarations, processing
instructions, comments), bounds the size of the stream header, of each stanza and of the
nesting depth, and reports each violation as a `StreamError` with the condition the RFC
asks for. Each complete top-level element is handed over as an `Element`; when its bytes
can be forwarded unchanged (its namespaces are all declared within it, and it relies only
on the stream's default namespace), they are kept in `Element.raw`.
"""

from __future__ import annotations

import xml.parsers.expat
from collections.abc import Callable
from dataclasses import dataclass

from imedge.domain.errors import StreamError, StreamErrorCondition
from imedge.protocol.element import XML_NS, Element

STREAM_NS = "http://etherx.jabber.org/streams"
_SEP = "\x01"
_FEED_SLICE = 16384
_MAX_HEADER_BYTES = 8192


@dataclass(frozen=True, slots=True)
class StreamHeader:
    """The attributes of an opening `<stream:stream>` tag and its content namespace."""

    attrs: dict[str, str]
    content_ns: str | None
    declared_prefixes: dict[str, str]

    @property
    def to(self) -> str | None:
        return self.attrs.get("to")

    @property
    def from_(self) -> str | None:
        return self.attrs.get("from")

    @property
    def version(self) -> str | None:
        return self.attrs.get("version")

    @property
    def lang(self) -> str | None:
        return self.attrs.get("{" + XML_NS + "}lang")

    @property
    def id(self) -> str | None:
        return self.attrs.get("id")


def _split(name: str) -> tuple[str, str, str | None]:
    """expat's `ns\x01local\x01prefix` into (ns, local, prefix)."""
    parts = name.split(_SEP)
    if len(parts) == 1:
        return "", parts[0], None
    if len(parts) == 2:
        return parts[0], parts[1], None
    return parts[0], parts[1], parts[2]


def _attr_key(name: str) -> tuple[str, str | None]:
    if _SEP not in name:
        return name, None
    ns, local, prefix = _split(name)
    return "{" + ns + "}" + local, prefix


def _tag_end(buf: bytes | bytearray, pos: int) -> int:
    """Index just past the `>` closing the tag that starts at or after `pos` (quote-aware)."""
    quote = 0
    n = len(buf)
    while pos < n:
        c = buf[pos]
        if quote:
            if c == quote:
                quote = 0
        elif c in (0x22, 0x27):
            quote = c
        elif c == 0x3E:
            return pos + 1
        pos += 1
    return n


class XmlStreamParser:
    """Feed bytes in; get `on_open(header)`, `on_element(element)`, `on_close()` calls out.

    Raises `StreamError` from `feed` on any violation; the caller sends the stream error
    and closes. After a stream restart (STARTTLS, SASL) call `reset()`.
    """

    def __init__(
        self,
        on_open: Callable[[StreamHeader], None],
        on_element: Callable[[Element], None],
        on_close: Callable[[], None],
        *,
        max_stanza_bytes: int = 262144,
        max_depth: int = 64,
        server_as_client: bool = False,
    ) -> None:
        self._on_open = on_open
        # s2s streams: read `jabber:server` stanzas as `jabber:client` ones, so features see
        # one namespace (RFC 6120 §4.8.3: they are the same stanzas).
        self._alias = "jabber:server" if server_as_client else None
        self._on_element = on_element
        self._on_close = on_close
        self.max_stanza_bytes = max_stanza_bytes
        self.max_depth = max_depth
        self.reset()

    def reset(self) -> None:
        p = xml.parsers.expat.ParserCreate("UTF-8", _SEP)
        p.namespace_prefixes = True
        p.buffer_text = True
        p.buffer_size = 65536
        p.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._text
        p.StartNamespaceDeclHandler = self._ns_decl
        p.StartDoctypeDeclHandler = self._restricted_doctype
        p.EntityDeclHandler = self._restricted_entity
        p.ProcessingInstructionHandler = self._restricted_pi
        p.CommentHandler = self._restricted_comment
        p.ExternalEntityRefHandler = self._restricted_external
        p.SkippedEntityHandler = self._restricted_skipped
        self._parser = p
        self._depth = 0
        self._stack: list[Element] = []
        self._fed = 0  # bytes fed to this parser so far
        self._buf = bytearray()  # bytes fed since _base
        self._base = 0
        self._stanza_start = -1
        self._raw_ok = True
        self._stanza_prefixes: set[str] = set()
        self._pending_decls: dict[str, str] = {}
        self._content_ns: str | None = None
        self._header_decls: dict[str, str] = {}
        self._closed = False

    @property
    def is_closed(self) -> bool:
        """The peer closed the stream (`</stream:stream>`)."""
        return self._closed

    # --- input ----------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        if self._closed:
            return
        for off in range(0, len(data), _FEED_SLICE):
            chunk = data[off : off + _FEED_SLICE]
            self._buf += chunk
            self._fed += len(chunk)
            try:
                self._parser.Parse(chunk, False)
            except xml.parsers.expat.ExpatError as exc:
                raise StreamError(
                    StreamErrorCondition.NOT_WELL_FORMED,
                    xml.parsers.expat.ErrorString(exc.code),
                ) from None
            if self.is_closed:
                return
            self._check_size()
            if self._depth < 2:
                # Between stanzas: keep only a tag that may have started but not finished.
                lt = self._buf.rfind(b"<")
                if lt < 0:
                    self._buf.clear()
                    self._base = self._fed
                elif lt > 0:
                    del self._buf[:lt]
                    self._base += lt

    def _check_size(self) -> None:
        if self._depth == 0 and self._fed > _MAX_HEADER_BYTES:
            raise StreamError(StreamErrorCondition.POLICY_VIOLATION, "stream header too large")
        if self._depth >= 2 and self._fed - self._stanza_start > self.max_stanza_bytes:
            raise StreamError(
                StreamErrorCondition.POLICY_VIOLATION,
                f"stanza larger than {self.max_stanza_bytes} bytes",
            )

    # --- restricted XML (RFC 6120 §11.1) --------------------------------------------
    def _restricted(self, what: str) -> None:
        raise StreamError(StreamErrorCondition.RESTRICTED_XML, f"{what} not allowed")

    def _restricted_doctype(self, *_: object) -> None:
        self._restricted("DTD")

    def _restricted_entity(self, *_: object) -> None:
        self._restricted("entity declaration")

    def _restricted_pi(self, *_: object) -> None:
        self._restricted("processing instruction")

    def _restricted_comment(self, *_: object) -> None:
        self._restricted("comment")

    def _restricted_external(self, *_: object) -> int:
        self._restricted("external entity")
        return 0

    def _restricted_skipped(self, *_: object) -> None:
        self._restricted("entity reference")

    # --- events ---------------------------------------------------------------------
    def _ns_decl(self, prefix: str | None, uri: str | None) -> None:
        if self._depth == 0:
            if prefix is None:
                self._content_ns = uri
            else:
                self._header_decls[prefix] = uri or ""
        elif self._depth >= 1:
            self._pending_decls[prefix or ""] = uri or ""

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        ns, local, prefix = _split(name)
        depth = self._depth
        if depth == 0:
            if ns != STREAM_NS or local != "stream":
                raise StreamError(
                    StreamErrorCondition.INVALID_NAMESPACE, "expected a stream:stream element"
                )
            header_attrs = {(_attr_key(k)[0]): v for k, v in attrs.items()}
            self._depth = 1
            self._on_open(StreamHeader(header_attrs, self._content_ns, dict(self._header_decls)))
            return
        if depth >= self.max_depth:
            raise StreamError(StreamErrorCondition.POLICY_VIOLATION, "XML nested too deeply")
        decls = self._pending_decls
        if depth == 1:
            idx = self._parser.CurrentByteIndex
            self._stanza_start = idx
            # Keep only the bytes of this stanza.
            del self._buf[: idx - self._base]
            self._base = idx
            self._stanza_prefixes = set()
            self._raw_ok = ns == self._content_ns and "" not in decls
        if decls:
            self._stanza_prefixes.update(decls)
            self._pending_decls = {}
        if prefix is not None and prefix not in self._stanza_prefixes:
            self._raw_ok = False
        if ns == self._alias:
            ns = "jabber:client"
        el_attrs: dict[str, str] = {}
        for k, v in attrs.items():
            key, aprefix = _attr_key(k)
            if aprefix is not None and aprefix != "xml" and aprefix not in self._stanza_prefixes:
                self._raw_ok = False
            el_attrs[key] = v
        el = Element(local, ns, el_attrs)
        if self._stack:
            self._stack[-1].children.append(el)
        self._stack.append(el)
        self._depth = depth + 1

    def _end(self, name: str) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._closed = True
            self._on_close()
            return
        el = self._stack.pop()
        if self._depth == 1:
            if self._parser.CurrentByteIndex - self._stanza_start > self.max_stanza_bytes:
                raise StreamError(
                    StreamErrorCondition.POLICY_VIOLATION,
                    f"stanza larger than {self.max_stanza_bytes} bytes",
                )
            if self._raw_ok:
                end = self._parser.CurrentByteIndex - self._base
                buf = self._buf
                if el.children or buf[end - 2 : end] != b"/>":
                    end = _tag_end(buf, end)
                el.raw = bytes(buf[self._stanza_start - self._base : end])
            self._on_element(el)

    def _text(self, data: str) -> None:
        if self._stack:
            self._stack[-1].children.append(data)
        elif self._depth == 1 and data.strip():
            raise StreamError(StreamErrorCondition.NOT_WELL_FORMED, "text outside a stanza")
