"""One client connection (RFC 6120): negotiation (STARTTLS, SASL, bind), then stanzas.

The stream reads, feeds the safe parser, and handles the parsed elements in order; it
writes through a per-connection buffer flushed once per event-loop turn, so a burst of
stanzas for one client costs one system call.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import secrets
import ssl
from dataclasses import dataclass
from typing import Any, Protocol

from imedge.domain.errors import (
    StanzaErrorCondition,
    StreamError,
    StreamErrorCondition,
)
from imedge.domain.jid import Jid, JidMalformed
from imedge.protocol import ns
from imedge.protocol.element import Element, serialize, stanza_bytes
from imedge.protocol.sasl import (
    Challenge,
    Failure,
    NeedKeys,
    SaslExchange,
    SaslFailure,
    SaslStep,
    Success,
    offered_mechanisms,
)
from imedge.protocol.stanza import STANZA_KINDS, error_reply, iq_result, stream_error
from imedge.protocol.xml import StreamHeader, XmlStreamParser
from imedge.server.c2s.auth import Authenticator
from imedge.server.c2s.settings import C2SSettings
from imedge.server.events import EventBus
from imedge.server.metrics import Metrics
from imedge.server.registry import SessionRegistry
from imedge.server.router import Router
from imedge.server.session import C2SSession
from imedge.server.stanzas import SessionBound, SessionClosed

log = logging.getLogger(__name__)

_CLOSE = object()


@dataclass(slots=True)
class C2SContext:
    """Everything a client stream uses, shared by all of them."""

    settings: C2SSettings
    auth: Authenticator
    router: Router
    sessions: SessionRegistry
    bus: EventBus
    metrics: Metrics
    sm: Any = None  # server.c2s.sm.StreamManager when stream management is installed
    registration: PreAuthRegistration | None = None  # XEP-0077, when accounts.registration


class PreAuthRegistration(Protocol):
    """XEP-0077 before authentication (features.register): its stream feature and IQs."""

    def stream_feature(self) -> Element: ...

    async def handle(self, iq: Element, address: str, domain: str) -> Element | None: ...


class _Restart(Exception):
    """The stream restarts (after STARTTLS or SASL success): drop what was parsed after."""


class C2SStream:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ctx: C2SContext,
        *,
        direct_tls: bool = False,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.ctx = ctx
        self.s = ctx.settings
        peer = writer.get_extra_info("peername")
        self.address = str(peer[0]) if peer else "unknown"
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "unknown"
        self.id = secrets.token_urlsafe(12)
        self.log = logging.LoggerAdapter(log, {"stream": self.id, "peer": self.peer})
        self.tls = direct_tls
        self.parser = XmlStreamParser(
            self._on_open,
            self._inbox_append,
            self._on_close,
            max_stanza_bytes=self.s.max_stanza_bytes,
            max_depth=self.s.max_depth,
        )
        self._inbox: list[object] = []
        self._out: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self._opened = False
        self._closed = False
        self.domain = self.s.domain
        self.user: Jid | None = None  # authenticated bare JID
        self.session: C2SSession | None = None
        self._sasl: SaslExchange | None = None
        self._sasl_account: Jid | None = None
        self._sasl_failures = 0
        self.close_reason = "connection closed"
        self.sm: Any = None  # per-stream XEP-0198 state

    # --- parser callbacks -----------------------------------------------------------
    def _on_open(self, header: StreamHeader) -> None:
        self._inbox.append(header)

    def _inbox_append(self, el: Element) -> None:
        self._inbox.append(el)

    def _on_close(self) -> None:
        self._inbox.append(_CLOSE)

    # --- output ---------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self._closed:
            return
        self._out.append(data)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if not self._out or self._closed:
            self._out.clear()
            return
        data = b"".join(self._out)
        self._out.clear()
        transport = self.writer.transport
        if transport.is_closing():
            return
        self.writer.write(data)
        if transport.get_write_buffer_size() > self.s.max_write_buffer:
            self.log.warning("client is not reading; closing")
            self.close(
                StreamErrorCondition.POLICY_VIOLATION, "output buffer full: you are not reading"
            )

    def send_element(self, el: Element) -> None:
        self.write(stanza_bytes(el, ns.CLIENT))

    def send_stanza(self, el: Element) -> None:
        """The outbound path of the bound session: counts, and goes through XEP-0198."""
        self.ctx.metrics.stanzas_out.labels(el.name, "c2s").inc()
        self.write(stanza_bytes(el, ns.CLIENT))
        if self.sm is not None:
            # After the write: XEP-0198 may follow the stanza with an <r/>.
            self.sm.outbound(el)

    def close(self, condition: StreamErrorCondition | None = None, text: str | None = None) -> None:
        """Send a stream error (if any) and the closing tag, then close the connection."""
        if self._closed:
            return
        if condition is not None:
            self.ctx.metrics.stream_errors.labels(str(condition), "c2s").inc()
            self.close_reason = f"stream error {condition}" + (f": {text}" if text else "")
            if not self._opened:
                self._open_reply(None)
            self.write(stream_error(condition, text))
        self.write(b"</stream:stream>")
        self._flush()
        self._closed = True
        with contextlib.suppress(Exception):
            self.writer.close()

    # --- main loop ------------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.ctx.metrics.c2s_connections.inc()
        deadline = loop.time() + self.s.negotiation_timeout
        last_rx = loop.time()
        try:
            while not self._closed:
                now = loop.time()
                if self.session is None and now >= deadline:
                    raise StreamError(
                        StreamErrorCondition.CONNECTION_TIMEOUT, "negotiation took too long"
                    )
                # Wake for the next keepalive or the idle deadline, whichever is first.
                wait = min(self.s.keepalive_interval, last_rx + self.s.idle_timeout - now)
                if self.session is None:
                    wait = min(wait, deadline - now)
                try:
                    async with asyncio.timeout(wait):
                        data = await self.reader.read(65536)
                except TimeoutError:
                    if loop.time() - last_rx >= self.s.idle_timeout:
                        raise StreamError(
                            StreamErrorCondition.CONNECTION_TIMEOUT, "idle too long"
                        ) from None
                    if self.session is not None:
                        self.write(b" ")  # RFC 6120 §4.6.1 whitespace keepalive
                    continue
                if not data:
                    if not self._closed:  # else the reason we closed it stands (XEP-0198)
                        self.close_reason = "connection lost"
                    break
                last_rx = loop.time()
                self.parser.feed(data)
                await self._drain_inbox()
        except StreamError as err:
            self.log.info("stream error %s: %s", err.condition, err.text)
            self.close(err.condition, err.text)
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            if not self._closed:
                self.close_reason = f"connection lost: {exc}"
            self.log.debug("connection lost: %s", exc)
        except Exception:
            self.log.exception("internal error on client stream")
            self.close(StreamErrorCondition.INTERNAL_SERVER_ERROR)
        finally:
            self.ctx.metrics.c2s_connections.dec()
            await self._finish()

    async def _drain_inbox(self) -> None:
        while self._inbox:
            item = self._inbox.pop(0)
            try:
                if isinstance(item, StreamHeader):
                    self._on_header(item)
                elif item is _CLOSE:
                    self.close_reason = "closed by client"
                    self.close()
                    return
                else:
                    assert isinstance(item, Element)
                    await self._on_element(item)
            except _Restart:
                self._inbox.clear()
                return
            if self._closed:
                return

    async def _finish(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                self.writer.close()
        session = self.session
        if session is None:
            return
        self.session = None
        if self.sm is not None and self.ctx.sm is not None and self.ctx.sm.hibernate(self, session):
            return
        await end_session(self.ctx, session, self.close_reason)

    # --- stream header --------------------------------------------------------------
    def _open_reply(self, header: StreamHeader | None) -> None:
        self._opened = True
        lang = (header.lang if header else None) or "en"
        to = f" to='{header.from_}'" if header and header.from_ and self.user else ""
        self.write(
            (
                "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                "xmlns:stream='http://etherx.jabber.org/streams' "
                f"id='{self.id}' from='{self.domain}'{to} version='1.0' xml:lang='{lang}'>"
            ).encode()
        )

    def _on_header(self, header: StreamHeader) -> None:
        # RFC 6120 §4.7: check the header, answer with ours, then the features.
        to = header.to
        self._open_reply(header)
        if header.content_ns != ns.CLIENT:
            raise StreamError(StreamErrorCondition.INVALID_NAMESPACE, "expected jabber:client")
        if to is None:
            raise StreamError(StreamErrorCondition.HOST_UNKNOWN, "no 'to' in the stream header")
        try:
            domain = Jid.parse(to)
        except JidMalformed:
            raise StreamError(StreamErrorCondition.HOST_UNKNOWN, "invalid 'to'") from None
        if not domain.is_host or domain.domain not in self.s.hosts:
            raise StreamError(StreamErrorCondition.HOST_UNKNOWN, f"this server does not serve {to}")
        if self.user is not None and domain.domain != self.user.domain:
            raise StreamError(
                StreamErrorCondition.HOST_UNKNOWN, "stream restarted for another domain"
            )
        if header.version is None or not header.version.startswith("1."):
            raise StreamError(StreamErrorCondition.UNSUPPORTED_VERSION, "version 1.0 required")
        self.domain = domain.domain
        inner = "".join(serialize(c, ns.STREAMS) for c in self._features().elements())
        self.write(f"<stream:features>{inner}</stream:features>".encode())

    def _features(self) -> Element:
        feats = Element("features", ns.STREAMS)
        can_tls = not self.tls and self.s.tls is not None
        if self.user is None:
            if can_tls:
                st = feats.sub("starttls", ns.TLS)
                if self.s.require_tls:
                    st.sub("required")
            if self.tls or not self.s.require_tls:
                mechs = feats.sub("mechanisms", ns.SASL)
                bindings = self._bindings()
                for m in offered_mechanisms(tls=self.tls, channel_binding=bool(bindings)):
                    mechs.sub("mechanism", text=m)
                if bindings:
                    # XEP-0440: tell clients which channel-binding types -PLUS can use.
                    cb = feats.sub("sasl-channel-binding", ns.SASL_CB)
                    for binding in bindings:
                        cb.sub("channel-binding", attrs={"type": str(binding.type)})
                if self.ctx.registration is not None:
                    feats.add(self.ctx.registration.stream_feature())
        else:
            feats.sub("bind", ns.BIND)
            feats.sub("session", ns.SESSION).sub("optional")
            feats.sub("ver", ns.ROSTER_VER)
            feats.sub("sub", ns.PRE_APPROVAL)
            if self.ctx.sm is not None:
                feats.sub("sm", ns.SM)
        return feats

    def _bindings(self) -> list[Any]:
        if not self.tls:
            return []
        sslobj = self.writer.get_extra_info("ssl_object")
        return self.s.bindings_for(sslobj)

    # --- elements -------------------------------------------------------------------
    async def _on_element(self, el: Element) -> None:
        if self.session is not None:
            if el.name in STANZA_KINDS and el.ns == ns.CLIENT:
                if self.sm is not None:
                    self.sm.inbound()
                self.ctx.metrics.stanzas_in.labels(el.name, "c2s").inc()
                await self.ctx.router.from_client(self.session, el)
                return
            if el.ns == ns.SM and self.ctx.sm is not None:
                await self.ctx.sm.handle(self, el)
                return
            raise StreamError(
                StreamErrorCondition.UNSUPPORTED_STANZA_TYPE, f"unexpected <{el.name}/>"
            )
        if el.ns == ns.TLS and el.name == "starttls":
            await self._starttls()
        elif el.ns == ns.SASL:
            await self._on_sasl(el)
        elif self.user is not None and el.name == "iq" and el.ns == ns.CLIENT:
            self._on_pre_session_iq(el)
        elif self.user is not None and el.ns == ns.SM and self.ctx.sm is not None:
            await self.ctx.sm.handle(self, el)
        elif self.user is None and not self.tls and self.s.require_tls and self.s.tls is not None:
            raise StreamError(StreamErrorCondition.POLICY_VIOLATION, "STARTTLS is required")
        elif (
            self.user is None
            and el.name == "iq"
            and el.ns == ns.CLIENT
            and el.find_ns(ns.REGISTER) is not None
        ):
            await self._on_register(el)
        else:
            raise StreamError(StreamErrorCondition.NOT_AUTHORIZED, "authenticate first")

    async def _starttls(self) -> None:
        if self.tls or self.s.tls is None or self.user is not None:
            raise StreamError(StreamErrorCondition.POLICY_VIOLATION, "STARTTLS not possible now")
        self.write(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self._flush()
        await self.writer.drain()
        try:
            async with asyncio.timeout(self.s.negotiation_timeout):
                await self.writer.start_tls(self.s.tls)
        except (ssl.SSLError, TimeoutError, ConnectionError, OSError) as exc:
            self._closed = True
            self.close_reason = f"TLS handshake failed: {exc}"
            self.log.info("TLS handshake failed: %s", exc)
            raise _Restart from None
        self.tls = True
        self.parser.reset()
        raise _Restart

    async def _on_register(self, iq: Element) -> None:
        # XEP-0077 §3.1: in-band registration is the one IQ allowed before authentication;
        # switched off, it is service-unavailable (the stream goes on).
        if self.ctx.registration is None:
            if iq.get("type") in ("get", "set"):
                self.send_element(error_reply(iq, StanzaErrorCondition.SERVICE_UNAVAILABLE))
            return
        reply = await self.ctx.registration.handle(iq, self.address, self.domain)
        if reply is not None:
            self.send_element(reply)

    # --- SASL (RFC 6120 §6) ---------------------------------------------------------
    async def _on_sasl(self, el: Element) -> None:
        if self.user is not None:
            raise StreamError(StreamErrorCondition.POLICY_VIOLATION, "already authenticated")
        if self.s.require_tls and not self.tls and self.s.tls is not None:
            self._sasl_fail(Failure(SaslFailure.ENCRYPTION_REQUIRED, "use STARTTLS first"))
            return
        if el.name == "auth":
            mechanism = el.get("mechanism") or ""
            wait = self.ctx.auth.retry_after(self.address, None)
            if wait > 0:
                self._sasl_fail(
                    Failure(
                        SaslFailure.TEMPORARY_AUTH_FAILURE,
                        f"too many failed logins; retry in {int(wait) + 1} s",
                    )
                )
                return
            self._sasl = SaslExchange(
                mechanism,
                domain=self.domain,
                tls=self.tls,
                channel_bindings=self._bindings(),
                fake_iterations=self.s.scram_iterations,
            )
            self._sasl_account = None
            data = self._decode_sasl(el)
            if data is None:
                return
            await self._sasl_result(self._sasl.step(data), mechanism)
        elif el.name == "response" and self._sasl is not None:
            data = self._decode_sasl(el)
            if data is None:
                return
            await self._sasl_result(self._sasl.step(data), self._sasl.mechanism)
        elif el.name == "abort":
            self._sasl = None
            self._sasl_fail(Failure(SaslFailure.ABORTED))
        else:
            raise StreamError(
                StreamErrorCondition.POLICY_VIOLATION, f"unexpected SASL <{el.name}/>"
            )

    def _decode_sasl(self, el: Element) -> bytes | None:
        text = el.text.strip()
        if text in ("", "="):
            return b""
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            self._sasl = None
            self._sasl_fail(Failure(SaslFailure.INCORRECT_ENCODING))
            return None

    async def _sasl_result(self, step: SaslStep, mechanism: str) -> None:
        assert self._sasl is not None
        if isinstance(step, NeedKeys):
            account = Authenticator.account_jid(step.username, self.domain)
            self._sasl_account = account
            wait = self.ctx.auth.retry_after(self.address, account)
            if wait > 0:
                self._sasl = None
                self._sasl_fail(
                    Failure(
                        SaslFailure.TEMPORARY_AUTH_FAILURE,
                        f"too many failed logins; retry in {int(wait) + 1} s",
                    )
                )
                return
            keys = await self.ctx.auth.keys(account, step.mechanism) if account else None
            step = self._sasl.provide_keys(keys)
        if isinstance(step, Challenge):
            data = base64.b64encode(step.data).decode()
            self.write(f"<challenge xmlns='{ns.SASL}'>{data}</challenge>".encode())
        elif isinstance(step, Success):
            account = self._sasl_account or Authenticator.account_jid(step.username, self.domain)
            if account is None:
                self._sasl_fail(Failure(SaslFailure.NOT_AUTHORIZED))
                return
            self.ctx.auth.succeeded(self.address, account)
            self.ctx.metrics.auth.labels(mechanism, "success").inc()
            self.user = account
            self._sasl = None
            extra = base64.b64encode(step.additional_data).decode() if step.additional_data else ""
            self.write(f"<success xmlns='{ns.SASL}'>{extra}</success>".encode())
            self.log.info("authenticated as %s with %s", account, mechanism)
            self.parser.reset()
            raise _Restart
        elif isinstance(step, Failure):
            self._sasl = None
            if step.condition == SaslFailure.NOT_AUTHORIZED:
                self.ctx.auth.failed(self.address, self._sasl_account)
                self.log.info("failed login for %s", self._sasl_account or "unknown account")
            self.ctx.metrics.auth.labels(
                mechanism if mechanism in _KNOWN_MECHS else "other", "failure"
            ).inc()
            self._sasl_fail(step)

    def _sasl_fail(self, failure: Failure) -> None:
        self._sasl_failures += 1
        text = f"<text xml:lang='en'>{failure.text}</text>" if failure.text else ""
        self.write(f"<failure xmlns='{ns.SASL}'><{failure.condition}/>{text}</failure>".encode())
        # RFC 6120 §6.4.5: the server may limit retries; after that the stream ends.
        if self._sasl_failures >= 5:
            self.close(StreamErrorCondition.POLICY_VIOLATION, "too many authentication attempts")

    # --- resource binding (RFC 6120 §7) ---------------------------------------------
    def _on_pre_session_iq(self, iq: Element) -> None:
        bind = iq.find("bind", ns.BIND)
        if iq.get("type") == "set" and bind is not None:
            self._bind(iq, bind)
            return
        if iq.get("type") in ("get", "set"):
            # Only binding is possible before a resource is bound.
            self.send_element(
                error_reply(iq, StanzaErrorCondition.NOT_AUTHORIZED, "bind a resource first")
            )

    def _bind(self, iq: Element, bind: Element) -> None:
        assert self.user is not None
        requested = bind.find_text("resource", ns.BIND)
        try:
            if requested and requested.strip():
                full = self.user.with_resource(requested.strip())
            else:
                full = self.user.with_resource(secrets.token_hex(6))
        except JidMalformed as exc:
            self.send_element(error_reply(iq, StanzaErrorCondition.BAD_REQUEST, str(exc)))
            return
        session = C2SSession(self.id, full, self.peer, self.send_stanza, self._close_session_stream)
        old = self.ctx.sessions.bind(session)
        if old is not None:
            # RFC 6120 §7.7.2.2: the newer session wins; the older one ends with <conflict/>.
            old.close(StreamErrorCondition.CONFLICT, "replaced by a new connection")
        self.session = session
        self.ctx.metrics.c2s_sessions.inc()
        payload = Element("bind", ns.BIND)
        payload.sub("jid", text=str(full))
        self.send_element(iq_result(iq, payload))
        self.log.info("bound %s", full)
        task = asyncio.get_running_loop().create_task(self.ctx.bus.fire(SessionBound(session)))
        task.add_done_callback(_log_task_error)

    def _close_session_stream(self, condition: StreamErrorCondition, text: str | None) -> None:
        self.close(condition, text)


def _log_task_error(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("event handler failed", exc_info=task.exception())


_KNOWN_MECHS = frozenset(
    {"SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS", "PLAIN"}
)


async def end_session(ctx: C2SContext, session: C2SSession, reason: str) -> None:
    """Unbind a session for good and tell the features (unavailable presence etc.)."""
    if ctx.sessions.unbind(session):
        ctx.metrics.c2s_sessions.dec()
    log.info("session %s ended: %s", session.jid, reason)
    await ctx.bus.fire(SessionClosed(session, reason))
