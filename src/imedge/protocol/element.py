"""A small, namespace-aware XML element tree for stanzas, and its serialiser.

Names are `(namespace, local)`: `Element("message", "jabber:client")`. Attributes without
a namespace use their local name as key; namespaced attributes use `{ns}name` (so
`xml:lang` is `"{http://www.w3.org/XML/1998/namespace}lang"`, see `XML_LANG`).

The serialiser writes a default-namespace declaration (`xmlns='...'`) wherever an element's
namespace differs from its parent's, so a stanza serialised with `parent_ns` set to the
stream's content namespace carries no redundant declaration.

`raw` keeps the exact bytes a stanza arrived as, when they can be forwarded unchanged
(see `imedge.protocol.xml`); any mutation through the methods below drops it.
"""

from __future__ import annotations

from collections.abc import Iterator

XML_NS = "http://www.w3.org/XML/1998/namespace"
XML_LANG = "{" + XML_NS + "}lang"

_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_ATTR_ESCAPES = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        "'": "&apos;",
        '"': "&quot;",
        "\n": "&#10;",
        "\r": "&#13;",
        "\t": "&#9;",
    }
)


def escape_text(text: str) -> str:
    return text.translate(_TEXT_ESCAPES)


def escape_attr(text: str) -> str:
    return text.translate(_ATTR_ESCAPES)


class Element:
    """One XML element: name, namespace, attributes, and children (elements and text)."""

    __slots__ = ("attrs", "children", "name", "ns", "raw")

    def __init__(
        self,
        name: str,
        ns: str,
        attrs: dict[str, str] | None = None,
        children: list[Element | str] | None = None,
    ) -> None:
        self.name = name
        self.ns = ns
        self.attrs: dict[str, str] = attrs if attrs is not None else {}
        self.children: list[Element | str] = children if children is not None else []
        self.raw: bytes | None = None

    # --- building -------------------------------------------------------------------
    def add(self, child: Element | str) -> Element:
        """Append a child and return it when it is an element (for chaining), else self."""
        self.raw = None
        self.children.append(child)
        return child if isinstance(child, Element) else self

    def sub(
        self,
        name: str,
        ns: str | None = None,
        attrs: dict[str, str] | None = None,
        text: str | None = None,
    ) -> Element:
        """Append and return a new child element; its namespace defaults to this one's."""
        child = Element(name, self.ns if ns is None else ns, attrs)
        if text is not None:
            child.children.append(text)
        self.raw = None
        self.children.append(child)
        return child

    def set(self, key: str, value: str | None) -> None:
        """Set an attribute, or remove it when `value` is None."""
        self.raw = None
        if value is None:
            self.attrs.pop(key, None)
        else:
            self.attrs[key] = value

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.attrs.get(key, default)

    def remove(self, child: Element) -> None:
        self.raw = None
        self.children.remove(child)

    def clear_children(self) -> None:
        self.raw = None
        self.children.clear()

    # --- reading --------------------------------------------------------------------
    @property
    def text(self) -> str:
        """The concatenated direct text children."""
        return "".join(c for c in self.children if isinstance(c, str))

    def elements(self) -> Iterator[Element]:
        for c in self.children:
            if isinstance(c, Element):
                yield c

    def find(self, name: str, ns: str | None = None) -> Element | None:
        """The first direct child with this name (and namespace, when given)."""
        for c in self.children:
            if isinstance(c, Element) and c.name == name and (ns is None or c.ns == ns):
                return c
        return None

    def find_all(self, name: str, ns: str | None = None) -> list[Element]:
        return [
            c
            for c in self.children
            if isinstance(c, Element) and c.name == name and (ns is None or c.ns == ns)
        ]

    def find_ns(self, ns: str) -> Element | None:
        """The first direct child in namespace `ns`, whatever its name."""
        for c in self.children:
            if isinstance(c, Element) and c.ns == ns:
                return c
        return None

    def find_text(self, name: str, ns: str | None = None) -> str | None:
        child = self.find(name, ns)
        return None if child is None else child.text

    def copy(self) -> Element:
        """A deep copy (without `raw`)."""
        return Element(
            self.name,
            self.ns,
            dict(self.attrs),
            [c.copy() if isinstance(c, Element) else c for c in self.children],
        )

    # --- writing --------------------------------------------------------------------
    def to_bytes(self, parent_ns: str | None = None) -> bytes:
        return serialize(self, parent_ns).encode("utf-8")

    def __str__(self) -> str:
        return serialize(self, None)

    def __repr__(self) -> str:
        return f"<Element {{{self.ns}}}{self.name} {self.attrs!r}>"


def serialize(el: Element, parent_ns: str | None = None) -> str:
    """Serialise `el` as it would appear inside an element whose namespace is `parent_ns`."""
    out: list[str] = []
    _write(el, parent_ns, out)
    return "".join(out)


_CONTENT_NAMESPACES = ("jabber:client", "jabber:server")


def stanza_bytes(el: Element, content_ns: str) -> bytes:
    """The bytes of a stanza for a stream whose default namespace is `content_ns`.

    Stanzas in `jabber:client` and `jabber:server` are the same stanzas (RFC 6120 §4.8.3):
    either is written in the stream's own content namespace, without a declaration. Bytes
    kept from the wire (`raw`) already rely on the stream's default namespace.
    """
    if el.raw is not None:
        return el.raw
    if el.ns in _CONTENT_NAMESPACES and el.ns != content_ns:
        out: list[str] = []
        _write(_renamespaced(el, content_ns), content_ns, out)
        return "".join(out).encode("utf-8")
    return serialize(el, content_ns).encode("utf-8")


def _renamespaced(el: Element, content_ns: str) -> Element:
    ns = content_ns if el.ns in _CONTENT_NAMESPACES else el.ns
    return Element(
        el.name,
        ns,
        el.attrs,
        [_renamespaced(c, content_ns) if isinstance(c, Element) else c for c in el.children],
    )


def _write(el: Element, parent_ns: str | None, out: list[str]) -> None:
    out.append("<")
    out.append(el.name)
    if el.ns != parent_ns:
        out.append(" xmlns='")
        out.append(escape_attr(el.ns))
        out.append("'")
    prefixes = 0
    for key, value in el.attrs.items():
        if key[0] == "{":
            ns, _, local = key[1:].partition("}")
            if ns == XML_NS:
                out.append(f" xml:{local}='{escape_attr(value)}'")
            else:
                prefixes += 1
                prefix = f"a{prefixes}"
                out.append(
                    f" xmlns:{prefix}='{escape_attr(ns)}' {prefix}:{local}='{escape_attr(value)}'"
                )
        else:
            out.append(f" {key}='{escape_attr(value)}'")
    if not el.children:
        out.append("/>")
        return
    out.append(">")
    for child in el.children:
        if isinstance(child, str):
            out.append(child.translate(_TEXT_ESCAPES))
        else:
            _write(child, el.ns, out)
    out.append("</")
    out.append(el.name)
    out.append(">")
