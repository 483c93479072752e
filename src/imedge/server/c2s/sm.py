"""XEP-0198: Stream Management (urn:xmpp:sm:3): acknowledgements and resumption.

Per stream, `SmState` counts the stanzas the client sent (`h`, answered on `<r/>`) and
keeps the stanzas sent to it until the client acknowledges them. When the connection of a
resumable session is lost, the session stays bound ("hibernates"): stanzas for it are
queued, and a new stream of the same user can take it over with `<resume/>` and receive
what the client had not acknowledged. When the session ends for good, what was never
acknowledged is handed back to the router (XEP-0198 §5): messages go to the user's other
resources or offline storage, IQ requests are answered with an error, presence is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

from imedge.domain.errors import (
    StanzaError,
    StanzaErrorCondition,
    StreamError,
    StreamErrorCondition,
)
from imedge.domain.jid import Jid, JidMalformed
from imedge.protocol import ns
from imedge.protocol.element import Element, stanza_bytes
from imedge.server.c2s.stream import C2SContext, C2SStream, end_session
from imedge.server.context import ServerContext
from imedge.server.session import C2SSession

log = logging.getLogger(__name__)

MAX_SEQ = 2**32  # XEP-0198 §4: the counters wrap at 2^32
# Ask the client for an acknowledgement after this many stanzas, or this many seconds
# after a smaller burst: often enough to keep the queue short, not once per stanza.
ACK_EVERY = 5
ACK_DELAY = 1.0

_R = b"<r xmlns='urn:xmpp:sm:3'/>"


def parse_h(text: str | None) -> int | None:
    """An `h` attribute: an xs:unsignedInt (XEP-0198 §4)."""
    if text is None or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value < MAX_SEQ else None


def acked_count(h: int, acked: int) -> int:
    """How many more stanzas the client acknowledges with `h`, the counters wrapping."""
    return (h - acked) % MAX_SEQ


def failed(condition: StanzaErrorCondition) -> bytes:
    return f"<failed xmlns='{ns.SM}'><{condition} xmlns='{ns.STANZA_ERRORS}'/></failed>".encode()


def with_delay(stanza: Element, stamp: float, by: str) -> Element:
    """A copy of `stanza` with a XEP-0203 delay stamp, unless it has one already."""
    out = stanza.copy()
    if out.find("delay", ns.DELAY) is None:
        when = datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        out.sub("delay", ns.DELAY, {"from": by, "stamp": when})
    return out


class SmState:
    """Stream management of one session, kept across the streams that resume it."""

    def __init__(
        self,
        manager: StreamManager,
        stream: C2SStream,
        session: C2SSession,
        sm_id: str | None,
        timeout: int,
    ) -> None:
        self.manager = manager
        self.stream: C2SStream | None = stream  # None while hibernating
        self.session = session
        self.id = sm_id  # None: not resumable
        self.timeout = timeout
        self.handled = 0  # stanzas received from the client, mod 2^32
        self.acked = 0  # the client's last `h`
        self.queue: deque[tuple[float, Element]] = deque()  # sent, not acknowledged
        self.unrequested = 0  # stanzas sent since the last <r/>
        self.ended = False
        self._request_timer: asyncio.TimerHandle | None = None
        self.expiry: asyncio.TimerHandle | None = None

    # --- called by the stream -------------------------------------------------------
    def inbound(self) -> None:
        self.handled = (self.handled + 1) % MAX_SEQ

    def outbound(self, el: Element) -> None:
        """After a stanza was written to the client (or queued while hibernating)."""
        if self.ended:
            # The session is over but someone still held it: hand the stanza back.
            self.manager.redeliver_later(self.session, time.time(), el)
            return
        self.queue.append((time.time(), el))
        if len(self.queue) > self.manager.max_unacked:
            self._overflow()
            return
        stream = self.stream
        if stream is None:
            return
        self.unrequested += 1
        if self.unrequested >= ACK_EVERY:
            self.request_ack()
        elif self._request_timer is None:
            self._request_timer = asyncio.get_running_loop().call_later(
                ACK_DELAY, self._request_later
            )

    def _overflow(self) -> None:
        # The client does not acknowledge (or, hibernating, does not come back): a bounded
        # queue is the point of XEP-0198 §4 acknowledgements.
        log.warning(
            "%s: %d stanzas unacknowledged; ending the session", self.session.jid, len(self.queue)
        )
        if self.stream is not None:
            self.stream.close(
                StreamErrorCondition.POLICY_VIOLATION, "too many unacknowledged stanzas"
            )
        else:
            self.manager.end_later(self, "too many stanzas queued while disconnected")

    def request_ack(self) -> None:
        self.cancel_request()
        self.unrequested = 0
        if self.stream is not None:
            self.stream.write(_R)

    def _request_later(self) -> None:
        self._request_timer = None
        if self.unrequested and self.stream is not None:
            self.request_ack()

    def cancel_request(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    # --- acknowledgements -----------------------------------------------------------
    def ack(self, h: int) -> bool:
        """Drop what the client acknowledged; False if `h` counts more than was sent."""
        n = acked_count(h, self.acked)
        if n > len(self.queue):
            return False
        for _ in range(n):
            self.queue.popleft()
        self.acked = h
        return True

    @property
    def sent(self) -> int:
        return (self.acked + len(self.queue)) % MAX_SEQ

    # --- while hibernating ----------------------------------------------------------
    def hibernated_send(self, el: Element) -> None:
        self.outbound(el)

    def hibernated_close(self, condition: StreamErrorCondition, text: str | None) -> None:
        # The session is replaced by a new login on its resource, or the server stops.
        self.manager.end_later(self, f"{condition}" + (f": {text}" if text else ""))


class StreamManager:
    """XEP-0198 for all client streams; keeps the resumable sessions by their id."""

    def __init__(self, c2s: C2SContext, ctx: ServerContext) -> None:
        self.c2s = c2s
        self.ctx = ctx
        self._resumable: dict[str, SmState] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def max_unacked(self) -> int:
        return self.c2s.settings.sm_max_unacked

    def hibernating(self) -> list[SmState]:
        return [s for s in self._resumable.values() if s.stream is None and not s.ended]

    # --- the elements ---------------------------------------------------------------
    async def handle(self, stream: C2SStream, el: Element) -> None:
        name = el.name
        if name == "r":
            if stream.sm is not None:
                stream.write(f"<a xmlns='{ns.SM}' h='{stream.sm.handled}'/>".encode())
        elif name == "a":
            self._on_ack(stream, el)
        elif name == "enable":
            self._enable(stream, el)
        elif name == "resume":
            self._resume(stream, el)
        else:
            raise StreamError(StreamErrorCondition.UNSUPPORTED_STANZA_TYPE, f"unexpected <{name}/>")

    def _on_ack(self, stream: C2SStream, el: Element) -> None:
        state: SmState | None = stream.sm
        if state is None:
            return  # not enabled: nothing to acknowledge
        h = parse_h(el.get("h"))
        if h is None:
            raise StreamError(StreamErrorCondition.BAD_FORMAT, "<a/> needs an 'h' counter")
        if not state.ack(h):
            # XEP-0198 §4: acknowledging more than was sent is a protocol violation.
            raise StreamError(
                StreamErrorCondition.UNDEFINED_CONDITION,
                f"handled-count-too-high: h={h}, sent {state.sent}",
            )

    def _enable(self, stream: C2SStream, el: Element) -> None:
        session = stream.session
        if session is None or stream.sm is not None:
            # XEP-0198 §3: only after binding, and only once.
            stream.write(failed(StanzaErrorCondition.UNEXPECTED_REQUEST))
            return
        timeout = self.c2s.settings.sm_resume_timeout
        wanted = parse_h(el.get("max"))  # the client's preferred maximum, in seconds
        if wanted:
            timeout = min(timeout, wanted)
        resumable = el.get("resume") in ("true", "1") and not self._closing
        sm_id = secrets.token_urlsafe(18) if resumable else None
        state = SmState(self, stream, session, sm_id, timeout)
        reply = Element("enabled", ns.SM)
        if sm_id is not None:
            self._resumable[sm_id] = state
            reply.attrs.update({"id": sm_id, "resume": "true", "max": str(timeout)})
        stream.send_element(reply)
        stream.sm = state
        session.sm = state
        stream.log.debug("stream management enabled%s", " (resumable)" if sm_id else "")

    def _resume(self, stream: C2SStream, el: Element) -> None:
        if stream.session is not None or stream.sm is not None or stream.user is None:
            stream.write(failed(StanzaErrorCondition.UNEXPECTED_REQUEST))
            return
        h = parse_h(el.get("h"))
        previd = el.get("previd") or ""
        state = self._resumable.get(previd)
        # The same answer for an unknown, expired or foreign id (XEP-0198 §5).
        if state is None or state.ended or self._closing or state.session.bare != stream.user:
            stream.log.info("resumption of an unknown session refused")
            stream.write(failed(StanzaErrorCondition.ITEM_NOT_FOUND))
            return
        if h is None:
            stream.write(failed(StanzaErrorCondition.BAD_REQUEST))
            return
        if not state.ack(h):
            raise StreamError(
                StreamErrorCondition.UNDEFINED_CONDITION,
                f"handled-count-too-high: h={h}, sent {state.sent}",
            )
        old = state.stream
        if old is not None:
            # The old connection is still open as far as we know: the client is gone
            # from it, so it ends without ending the session.
            old.sm = None
            old.session = None
            old.close(StreamErrorCondition.CONFLICT, "session resumed on another connection")
        if state.expiry is not None:
            state.expiry.cancel()
            state.expiry = None
        session = state.session
        session.rebind(stream.send_stanza, stream.close)
        session.peer = stream.peer
        state.stream = stream
        stream.session = session
        stream.sm = state
        stream.send_element(Element("resumed", ns.SM, {"previd": previd, "h": str(state.handled)}))
        # XEP-0198 §5: what the client has not acknowledged, in order, exactly once more.
        for _, stanza in state.queue:
            stream.write(stanza_bytes(stanza, ns.CLIENT))
        if state.queue:
            state.request_ack()
        stream.log.info("resumed %s with %d stanzas to resend", session.jid, len(state.queue))

    # --- connection loss and the end of a session -----------------------------------
    def hibernate(self, stream: C2SStream, session: C2SSession) -> bool:
        """The stream of `session` is gone; True if stream management takes the session
        over (to resume it later, or to end it and hand back what was unacknowledged)."""
        state: SmState | None = stream.sm
        if state is None or state.session is not session or state.ended:
            return False
        stream.sm = None
        state.stream = None
        state.cancel_request()
        # Only a lost connection can be resumed: a client that closed its stream, or a
        # stream the server closed with an error, has ended the session (XEP-0198 §5).
        lost = stream.close_reason.startswith("connection lost")
        resumable = (
            state.id is not None
            and lost
            and not self._closing
            and self.c2s.sessions.get(session.jid) is session
        )
        if not resumable and not state.queue:
            self._forget(state)
            return False
        # From now on stanzas for the session wait in its queue.
        session.rebind(state.hibernated_send, state.hibernated_close)
        if resumable:
            loop = asyncio.get_running_loop()
            state.expiry = loop.call_later(
                state.timeout, self.end_later, state, "resumption timed out"
            )
            log.info(
                "%s hibernating for %d s (%d unacknowledged)",
                session.jid,
                state.timeout,
                len(state.queue),
            )
        else:
            self.end_later(state, stream.close_reason)
        return True

    def end_later(self, state: SmState, reason: str) -> None:
        """End the session for good (soon, in a task: this may be called from a send)."""
        if state.ended:
            return
        self._forget(state)
        self._spawn(self._end(state, reason))

    def redeliver_later(self, session: C2SSession, stamp: float, el: Element) -> None:
        self._spawn(self._redeliver(session, stamp, el))

    def _forget(self, state: SmState) -> None:
        state.ended = True
        if state.id is not None:
            self._resumable.pop(state.id, None)
        if state.expiry is not None:
            state.expiry.cancel()
            state.expiry = None

    async def _end(self, state: SmState, reason: str) -> None:
        session = state.session
        await end_session(self.c2s, session, reason)
        pending = list(state.queue)
        state.queue.clear()
        if pending:
            log.info("%s: handing back %d unacknowledged stanzas", session.jid, len(pending))
        for stamp, el in pending:
            await self._redeliver(session, stamp, el)

    async def _redeliver(self, session: C2SSession, stamp: float, el: Element) -> None:
        """XEP-0198 §5: the session is gone; route what it did not acknowledge again."""
        kind = el.name
        kind_type = el.get("type")
        try:
            if kind == "message":
                if kind_type == "error" or el.find_ns(ns.CARBONS) is not None:
                    return  # errors are not redelivered; carbon copies went elsewhere too
                from_ = _jid(el.get("from")) or Jid(None, session.jid.domain)
                to = _jid(el.get("to")) or session.jid
                # To the now unavailable address: the message rules (RFC 6121 §8.5.3.2.1)
                # pick another resource or offline storage.
                await self.ctx.router.route(with_delay(el, stamp, session.jid.domain), from_, to)
            elif kind == "iq" and kind_type in ("get", "set"):
                requester = _jid(el.get("from"))
                if requester is not None:
                    unavailable = StanzaError(StanzaErrorCondition.SERVICE_UNAVAILABLE)
                    await self.ctx.router.bounce(el, requester, session.jid, unavailable)
            # Presence, IQ results and errors: stale once the session is gone.
        except Exception:
            log.exception("could not hand back a %s for %s", kind, session.jid)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("stream management task failed", exc_info=task.exception())

    async def shutdown(self) -> None:
        """End every hibernating session; what they hold goes to offline storage."""
        self._closing = True
        for state in self.hibernating():
            self.end_later(state, "server shutting down")
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _jid(text: str | None) -> Jid | None:
    if text is None:
        return None
    try:
        return Jid.parse(text)
    except JidMalformed:
        return None
