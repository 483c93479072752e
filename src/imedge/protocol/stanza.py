"""Stanza helpers: kinds and types, error replies (RFC 6120 §8), stream errors (§4.9)."""

from __future__ import annotations

from enum import StrEnum

from imedge.domain.errors import (
    DEFAULT_ERROR_TYPE,
    ErrorType,
    StanzaErrorCondition,
    StreamErrorCondition,
)
from imedge.protocol import ns
from imedge.protocol.element import Element


class StanzaKind(StrEnum):
    MESSAGE = "message"
    PRESENCE = "presence"
    IQ = "iq"


class IqType(StrEnum):
    GET = "get"
    SET = "set"
    RESULT = "result"
    ERROR = "error"


class MessageType(StrEnum):
    """RFC 6121 §5.2.2; an absent or unknown type is treated as `normal`."""

    CHAT = "chat"
    ERROR = "error"
    GROUPCHAT = "groupchat"
    HEADLINE = "headline"
    NORMAL = "normal"

    @staticmethod
    def of(stanza: Element) -> MessageType:
        try:
            return MessageType(stanza.attrs.get("type", "normal"))
        except ValueError:
            return MessageType.NORMAL


STANZA_KINDS = frozenset(k.value for k in StanzaKind)


def error_element(
    condition: StanzaErrorCondition,
    type_: ErrorType,
    text: str | None = None,
    content_ns: str = ns.CLIENT,
    by: str | None = None,
) -> Element:
    err = Element("error", content_ns, {"type": str(type_)})
    if by:
        err.attrs["by"] = by
    err.sub(str(condition), ns.STANZA_ERRORS)
    if text:
        err.sub(
            "text", ns.STANZA_ERRORS, {"{http://www.w3.org/XML/1998/namespace}lang": "en"}, text
        )
    return err


def error_reply(
    stanza: Element,
    condition: StanzaErrorCondition,
    text: str | None = None,
    type_: ErrorType | None = None,
    by: str | None = None,
) -> Element:
    """The error answer to `stanza`: addresses swapped, same id, one `<error/>` child.

    The original payload is not echoed back (RFC 6120 §8.3.1 makes it optional), so an
    error never amplifies what a sender sent.
    """
    reply = Element(stanza.name, stanza.ns, {"type": "error"})
    if "id" in stanza.attrs:
        reply.attrs["id"] = stanza.attrs["id"]
    if "from" in stanza.attrs:
        reply.attrs["to"] = stanza.attrs["from"]
    if "to" in stanza.attrs:
        reply.attrs["from"] = stanza.attrs["to"]
    reply.children.append(
        error_element(condition, type_ or DEFAULT_ERROR_TYPE[condition], text, stanza.ns, by)
    )
    return reply


def is_error(stanza: Element) -> bool:
    return stanza.attrs.get("type") == "error"


def may_bounce(stanza: Element) -> bool:
    """RFC 6120 §8.3.1: never answer an error with an error; results are not answered either."""
    t = stanza.attrs.get("type")
    if t == "error":
        return False
    return not (stanza.name == "iq" and t == "result")


def iq_result(iq: Element, payload: Element | None = None) -> Element:
    reply = Element("iq", iq.ns, {"type": "result"})
    if "id" in iq.attrs:
        reply.attrs["id"] = iq.attrs["id"]
    if "from" in iq.attrs:
        reply.attrs["to"] = iq.attrs["from"]
    if "to" in iq.attrs:
        reply.attrs["from"] = iq.attrs["to"]
    if payload is not None:
        reply.children.append(payload)
    return reply


def stream_error(condition: StreamErrorCondition, text: str | None = None) -> bytes:
    err = Element("error", ns.STREAMS)
    err.sub(str(condition), ns.STREAM_ERRORS)
    if text:
        err.sub(
            "text", ns.STREAM_ERRORS, {"{http://www.w3.org/XML/1998/namespace}lang": "en"}, text
        )
    return ("<stream:error>" + "".join(str(c) for c in err.elements()) + "</stream:error>").encode()
