"""The safe incremental XML stream parser (RFC 6120 §4, §11) and the element serialiser."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imedge.domain.errors import StreamError, StreamErrorCondition
from imedge.protocol.element import Element, serialize, stanza_bytes
from imedge.protocol.xml import StreamHeader, XmlStreamParser

HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' to='example.test' version='1.0'>"
)


class Collector:
    def __init__(self, **limits: int) -> None:
        self.headers: list[StreamHeader] = []
        self.elements: list[Element] = []
        self.closed = False
        self.parser = XmlStreamParser(
            self.headers.append, self.elements.append, self._close, **limits
        )

    def _close(self) -> None:
        self.closed = True

    def feed(self, data: bytes, step: int | None = None) -> None:
        if step is None:
            self.parser.feed(data)
        else:
            for i in range(0, len(data), step):
                self.parser.feed(data[i : i + step])


def condition_of(data: bytes, **limits: int) -> StreamErrorCondition:
    c = Collector(**limits)
    with pytest.raises(StreamError) as info:
        c.feed(data)
    return info.value.condition


def test_header_attributes_and_content_namespace() -> None:
    c = Collector()
    c.feed(HEADER)
    (h,) = c.headers
    assert h.to == "example.test"
    assert h.version == "1.0"
    assert h.content_ns == "jabber:client"


def test_stanzas_keep_their_raw_bytes_when_self_contained() -> None:
    stanzas = [
        b"<message to='a@b' type='chat'><body>x &amp; y</body></message>",
        b"<presence/>",
        b"<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>",
        b"<message><x:y xmlns:x='urn:x' x:a='1'/></message>",
        b"<presence></presence >",
    ]
    c = Collector()
    c.feed(HEADER + b" ".join(stanzas) + b"</stream:stream>", step=3)
    assert [e.raw for e in c.elements] == stanzas
    assert c.closed


def test_stanza_declaring_its_own_default_namespace_is_reserialised() -> None:
    c = Collector()
    c.feed(HEADER + b"<message xmlns='jabber:client'><body>hi</body></message>")
    (el,) = c.elements
    assert el.raw is None
    assert stanza_bytes(el, "jabber:server") == b"<message><body>hi</body></message>"


def test_prefix_declared_outside_the_stanza_disables_raw() -> None:
    header = HEADER.replace(b"version='1.0'>", b"version='1.0' xmlns:p='urn:p'>")
    c = Collector()
    c.feed(header + b"<message><p:x/></message>")
    (el,) = c.elements
    assert el.raw is None
    assert el.find("x", "urn:p") is not None


def test_mutation_drops_raw_bytes() -> None:
    c = Collector()
    c.feed(HEADER + b"<message to='a@b'><body>hi</body></message>")
    (el,) = c.elements
    assert el.raw is not None
    el.set("from", "c@d/r")
    assert el.raw is None
    assert b"from='c@d/r'" in stanza_bytes(el, "jabber:client")


def test_client_stanza_is_written_in_the_server_namespace() -> None:
    el = Element("message", "jabber:client", {"to": "x@y"})
    el.sub("body", text="hi")
    el.sub("c", "http://jabber.org/protocol/caps", {"ver": "1"})
    caps = b"<c xmlns='http://jabber.org/protocol/caps' ver='1'/>"
    assert (
        stanza_bytes(el, "jabber:server")
        == b"<message to='x@y'><body>hi</body>" + caps + b"</message>"
    )


@pytest.mark.parametrize(
    ("tail", "condition"),
    [
        (b"<!-- no -->", StreamErrorCondition.RESTRICTED_XML),
        (b"<?php echo 1 ?>", StreamErrorCondition.RESTRICTED_XML),
        (b"<message>&ext;</message>", StreamErrorCondition.NOT_WELL_FORMED),
        (b"<message><a></b></message>", StreamErrorCondition.NOT_WELL_FORMED),
        (b"<message a='1' a='2'/>", StreamErrorCondition.NOT_WELL_FORMED),
        (b"<message>\x00</message>", StreamErrorCondition.NOT_WELL_FORMED),
        (b"<message><p:x/></message>", StreamErrorCondition.NOT_WELL_FORMED),
        (b"text at stream level", StreamErrorCondition.NOT_WELL_FORMED),
        (b"\xff\xfe<message/>", StreamErrorCondition.NOT_WELL_FORMED),
    ],
)
def test_violations_after_the_header(tail: bytes, condition: StreamErrorCondition) -> None:
    assert condition_of(HEADER + tail) == condition


def test_doctype_is_restricted() -> None:
    data = b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaa'>]><stream:stream/>"
    assert condition_of(data) == StreamErrorCondition.RESTRICTED_XML


def test_billion_laughs_never_expands() -> None:
    lol = (
        b"<!DOCTYPE l [<!ENTITY l0 'lol'>"
        + b"".join(
            b"<!ENTITY l%d '%s'>" % (i, b"".join(b"&l%d;" % (i - 1) for _ in range(10)))
            for i in range(1, 10)
        )
        + b"]>"
    )
    assert condition_of(lol) == StreamErrorCondition.RESTRICTED_XML


def test_root_must_be_stream_in_the_streams_namespace() -> None:
    assert condition_of(b"<stream xmlns='jabber:client'>") == StreamErrorCondition.INVALID_NAMESPACE


def test_stanza_size_limit_while_streaming() -> None:
    c = Collector(max_stanza_bytes=1000)
    c.feed(HEADER + b"<message><body>" + b"a" * 900 + b"</body></message>")
    assert len(c.elements) == 1
    with pytest.raises(StreamError) as info:
        c.feed(b"<message><body>" + b"a" * 5000)
    assert info.value.condition == StreamErrorCondition.POLICY_VIOLATION


def test_stanza_size_limit_on_a_complete_stanza_in_one_chunk() -> None:
    data = HEADER + b"<message><body>" + b"b" * 2000 + b"</body></message>"
    assert condition_of(data, max_stanza_bytes=1000) == StreamErrorCondition.POLICY_VIOLATION


def test_whitespace_between_stanzas_does_not_count_towards_size() -> None:
    c = Collector(max_stanza_bytes=100)
    c.feed(HEADER + b" " * 100000 + b"<presence/>")
    assert [e.name for e in c.elements] == ["presence"]


def test_depth_limit() -> None:
    assert (
        condition_of(HEADER + b"<message>" + b"<a>" * 70, max_depth=64)
        == StreamErrorCondition.POLICY_VIOLATION
    )
    c = Collector(max_depth=64)
    c.feed(HEADER + b"<message>" + b"<a>" * 30 + b"</a>" * 30 + b"</message>")
    assert len(c.elements) == 1


def test_oversized_header_is_refused() -> None:
    data = b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' x='" + b"a" * 10000
    assert condition_of(data) == StreamErrorCondition.POLICY_VIOLATION


def test_reset_starts_a_new_stream() -> None:
    c = Collector()
    c.feed(HEADER + b"<presence/>")
    c.parser.reset()
    c.feed(HEADER + b"<message/>")
    assert len(c.headers) == 2
    assert [e.name for e in c.elements] == ["presence", "message"]


# --- properties ---------------------------------------------------------------------------
names = st.sampled_from(["message", "presence", "iq", "body", "x", "item"])
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20)
attr_maps = st.dictionaries(st.sampled_from(["to", "from", "id", "type", "a"]), texts, max_size=3)


@st.composite
def elements(draw: st.DrawFn, depth: int = 0) -> Element:
    el = Element(draw(names), "jabber:client", draw(attr_maps))
    if depth < 3:
        for child in draw(st.lists(st.one_of(texts, elements(depth + 1)), max_size=3)):
            if isinstance(child, str):
                if child:
                    el.children.append(child)
            else:
                el.children.append(child)
    return el


def canonical(el: Element) -> tuple[object, ...]:
    merged: list[object] = []
    for c in el.children:
        if isinstance(c, str):
            if merged and isinstance(merged[-1], str):
                merged[-1] = str(merged[-1]) + c
            else:
                merged.append(c)
        else:
            merged.append(canonical(c))
    return (el.name, el.ns, tuple(sorted(el.attrs.items())), tuple(merged))


@settings(max_examples=200, deadline=None)
@given(st.lists(elements(), min_size=1, max_size=4), st.integers(min_value=1, max_value=64))
def test_serialise_then_parse_round_trips_in_any_chunking(els: list[Element], step: int) -> None:
    data = HEADER + b"".join(serialize(e, "jabber:client").encode() for e in els)
    c = Collector()
    c.feed(data, step=step)
    assert [canonical(e) for e in c.elements] == [canonical(e) for e in els]
    for parsed in c.elements:
        assert parsed.raw is not None
        again = Collector()
        again.feed(HEADER + parsed.raw)
        assert canonical(again.elements[0]) == canonical(parsed)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=50))
def test_arbitrary_bytes_only_ever_raise_stream_errors(junk: bytes, step: int) -> None:
    c = Collector(max_stanza_bytes=200, max_depth=8)
    with contextlib.suppress(StreamError):
        c.feed(HEADER + junk, step=step)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="<>/='\"&;!?-[]abx: \n", max_size=120))
def test_xml_like_junk_only_ever_raises_stream_errors(junk: str) -> None:
    c = Collector(max_stanza_bytes=200, max_depth=8)
    with contextlib.suppress(StreamError):
        c.feed(HEADER + junk.encode())
