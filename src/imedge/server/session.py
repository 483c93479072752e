"""A bound client session: the resource's address, presence state and outbound path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from imedge.domain.errors import StreamErrorCondition
from imedge.domain.jid import Jid
from imedge.protocol.element import Element


class Origin(Protocol):
    """Where a stanza came from, for logs and for answering on the same path."""

    @property
    def peer(self) -> str: ...


class C2SSession:
    """What the router and features know of one connected, bound client resource."""

    __slots__ = (
        "_close",
        "_send",
        "available",
        "carbons",
        "directed",
        "id",
        "interested",
        "jid",
        "peer",
        "presence",
        "priority",
        "sm",
    )

    def __init__(
        self,
        session_id: str,
        jid: Jid,
        peer: str,
        send: Callable[[Element], None],
        close: Callable[[StreamErrorCondition, str | None], None],
    ) -> None:
        self.id = session_id
        self.jid = jid
        self.peer = peer
        self._send = send
        self._close = close
        self.priority = 0
        self.available = False  # sent initial presence and not unavailable since
        self.presence: Element | None = None  # last broadcast available presence
        self.interested = False  # requested the roster (RFC 6121 §2.1.6)
        self.carbons = False  # XEP-0280 enabled
        self.directed: set[Jid] = set()  # directed presence targets (RFC 6121 §4.6)
        self.sm: object | None = None  # stream-management state, owned by server.sm

    @property
    def bare(self) -> Jid:
        return self.jid.bare

    def deliver(self, stanza: Element) -> None:
        """Queue a stanza for this client."""
        self._send(stanza)

    def rebind(
        self,
        send: Callable[[Element], None],
        close: Callable[[StreamErrorCondition, str | None], None],
    ) -> None:
        """Attach the session to a new stream (XEP-0198 resumption)."""
        self._send = send
        self._close = close

    def close(self, condition: StreamErrorCondition, text: str | None = None) -> None:
        self._close(condition, text)

    def __repr__(self) -> str:
        return f"<C2SSession {self.jid} {self.id}>"
