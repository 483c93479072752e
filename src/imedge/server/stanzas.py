"""The events a stanza passes through on its way through the server."""

from __future__ import annotations

from dataclasses import dataclass

from imedge.domain.jid import Jid
from imedge.protocol.element import Element
from imedge.server.events import Event
from imedge.server.session import C2SSession


@dataclass(slots=True)
class StanzaEvent(Event):
    stanza: Element
    from_: Jid
    to: Jid
    origin: C2SSession | None  # the local client session that sent it, if any


# --- sent by a local client, before routing --------------------------------------------
@dataclass(slots=True)
class MessageFromClient(StanzaEvent):
    pass


@dataclass(slots=True)
class PresenceFromClient(StanzaEvent):
    """`to` is the sender's bare JID for broadcast presence (no `to` attribute)."""

    broadcast: bool = False


# --- addressed to something on this server ---------------------------------------------
@dataclass(slots=True)
class MessageToBare(StanzaEvent):
    pass


@dataclass(slots=True)
class MessageToFull(StanzaEvent):
    pass


@dataclass(slots=True)
class PresenceToBare(StanzaEvent):
    pass


@dataclass(slots=True)
class PresenceToFull(StanzaEvent):
    pass


@dataclass(slots=True)
class IqToBare(StanzaEvent):
    """Fired before an IQ to an account is answered by the server; True stops it."""


@dataclass(slots=True)
class IqToFull(StanzaEvent):
    """Fired before an IQ is delivered to a resource; True stops it."""


@dataclass(slots=True)
class MessageToHost(StanzaEvent):
    pass


@dataclass(slots=True)
class PresenceToHost(StanzaEvent):
    pass


# --- leaving for another server ---------------------------------------------------------
@dataclass(slots=True)
class StanzaToRemote(StanzaEvent):
    """Handled by the s2s layer; unhandled means no route (`remote-server-not-found`)."""


# --- session life cycle ----------------------------------------------------------------
@dataclass(slots=True)
class SessionBound(Event):
    session: C2SSession


@dataclass(slots=True)
class SessionClosed(Event):
    """The session is gone (its stream closed and it cannot be resumed any more)."""

    session: C2SSession
    reason: str


@dataclass(slots=True)
class InitialPresence(Event):
    """The session sent its first available presence (RFC 6121 §4.2)."""

    session: C2SSession


@dataclass(slots=True)
class RosterRequested(Event):
    session: C2SSession
