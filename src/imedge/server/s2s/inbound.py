"""An inbound server-to-server stream (RFC 6120 §13): we are the receiving server.

Negotiation: STARTTLS (required by default), then the peer proves its domain with SASL
EXTERNAL and its certificate (XEP-0178) or with Server Dialback (XEP-0220), for which we
ask the domain's authoritative server to confirm the key. Only then are its stanzas
accepted, and only with `from` addresses of domains it proved.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Awaitable, Callable

from imedge.domain.errors import StreamError, StreamErrorCondition
from imedge.domain.jid import Jid, JidMalformed, prep_domain
from imedge.policy import AuthMethod, CertStatus
from imedge.protocol import dialback, ns
from imedge.protocol.dialback import DialbackType
from imedge.protocol.element import Element, escape_attr, escape_text
from imedge.protocol.stanza import STANZA_KINDS
from imedge.protocol.xml import StreamHeader
from imedge.server.metrics import Metrics
from imedge.server.router import Router
from imedge.server.s2s.certs import describe, verify_peer
from imedge.server.s2s.channel import Channel, TlsInfo, TlsSettings
from imedge.server.s2s.info import Direction, S2SStreamInfo
from imedge.server.s2s.link import CLOSE, Link, StreamClosed, header, new_stream_id
from imedge.server.s2s.settings import FederationPolicy, PeerRules, S2SSettings

log = logging.getLogger(__name__)

# Asks the authoritative server of `remote` whether `key` is valid (XEP-0220 §2.3).
Verifier = Callable[[str, str, str, str], Awaitable[bool]]


class InboundStream(Link):
    def __init__(
        self,
        channel: Channel,
        settings: S2SSettings,
        tls: TlsSettings,
        router: Router,
        *,
        verifier: Verifier,
        metrics: Metrics,
        policy: FederationPolicy,
        tls_info: TlsInfo | None = None,
    ) -> None:
        info = S2SStreamInfo(new_stream_id(), Direction.INBOUND, "", None, channel.peer)
        super().__init__(channel, settings, info, metrics)
        self.tls_settings = tls
        self.router = router
        self.policy = policy
        self.verifier = verifier
        self.tls_info = tls_info
        self.peer_domain: str | None = None  # the header's `from`
        self._tasks: set[asyncio.Task[None]] = set()
        if tls_info is not None:
            self.info.tls_version = tls_info.version

    @property
    def tls(self) -> bool:
        return self.tls_info is not None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.negotiation_timeout
        try:
            while not self.closed:
                authenticated = bool(self.info.authenticated)
                timeout = self.settings.idle_timeout if authenticated else deadline - loop.time()
                if timeout <= 0:
                    raise StreamError(
                        StreamErrorCondition.CONNECTION_TIMEOUT, "authentication took too long"
                    )
                try:
                    item = await self.next_item(timeout)
                except TimeoutError:
                    if authenticated:
                        self.info.closed = "idle"
                        self.close()
                        break
                    raise StreamError(
                        StreamErrorCondition.CONNECTION_TIMEOUT, "authentication took too long"
                    ) from None
                if item is CLOSE:
                    self.info.closed = "closed by peer"
                    self.close()
                    break
                if isinstance(item, StreamHeader):
                    self._on_header(item)
                elif isinstance(item, Element):
                    await self._on_element(item)
        except StreamError as err:
            self.fail(err)
        except StreamClosed as exc:
            self.info.closed = str(exc)
        except (ConnectionError, OSError) as exc:
            self.info.closed = f"connection lost: {exc}"
        except Exception:
            self.log.exception("internal error on inbound s2s stream")
            self.close(StreamErrorCondition.INTERNAL_SERVER_ERROR)
        finally:
            for task in list(self._tasks):
                task.cancel()
            if not self.closed:
                self.closed = True
                self.channel.close()
            self.log.info(
                "inbound stream from %s ended: %s",
                self.info.remote or self.peer_domain,
                self.info.closed,
            )

    # --- header and features ----------------------------------------------------------
    def _on_header(self, h: StreamHeader) -> None:
        to = h.to
        try:
            local = prep_domain(to) if to else None
        except JidMalformed:
            local = None
        self.write(header(local or sorted(self.settings.hosts)[0], None, self.info.id))
        if h.content_ns != ns.SERVER:
            raise StreamError(StreamErrorCondition.INVALID_NAMESPACE, "expected jabber:server")
        if local is None or local not in self.settings.hosts:
            raise StreamError(StreamErrorCondition.HOST_UNKNOWN, f"this server does not serve {to}")
        if self.info.local and local != self.info.local:
            raise StreamError(
                StreamErrorCondition.HOST_UNKNOWN, "stream restarted for another domain"
            )
        self.info.local = local
        if h.from_:
            try:
                self.peer_domain = prep_domain(h.from_)
            except JidMalformed:
                raise StreamError(
                    StreamErrorCondition.INVALID_FROM, "invalid 'from' in the header"
                ) from None
            # What the peer claims to be, shown to operators until it proves it.
            self.info.remote = self.info.remote or self.peer_domain
        version = h.version or ""
        if not version.startswith("1."):
            # A pre-RFC 3920 server: no features, dialback straight away.
            if self.settings.require_tls:
                raise StreamError(StreamErrorCondition.POLICY_VIOLATION, "TLS is required")
            return
        self.write(self._features())

    def _features(self) -> bytes:
        parts: list[str] = []
        if not self.tls:
            required = "<required/>" if self.settings.require_tls else ""
            parts.append(f"<starttls xmlns='{ns.TLS}'>{required}</starttls>")
        if self.tls or not self.settings.require_tls:
            # The partner row may forbid a method (FEDERATION.md §The partner table).
            rules = self.policy.rules(self.peer_domain) if self.peer_domain else PeerRules()
            if not self.info.authenticated and rules.sasl_external and self._external_possible():
                parts.append(
                    f"<mechanisms xmlns='{ns.SASL}'><mechanism>EXTERNAL</mechanism></mechanisms>"
                )
            dialback = self.settings.dialback and rules.dialback
            if dialback and self.info.auth is not AuthMethod.SASL_EXTERNAL:
                parts.append(f"<dialback xmlns='{ns.DIALBACK_FEATURE}'><errors/></dialback>")
        return ("<stream:features>" + "".join(parts) + "</stream:features>").encode()

    def _cert_for(self, domain: str) -> CertStatus:
        if self.tls_info is None:
            return CertStatus.NO_CERTIFICATE
        return verify_peer(self.tls_info, domain)

    def _external_possible(self) -> bool:
        # XEP-0178 §3: offer EXTERNAL only when the certificate proves the claimed domain.
        return self.peer_domain is not None and self._cert_for(self.peer_domain) is CertStatus.VALID

    # --- elements ---------------------------------------------------------------------
    async def _on_element(self, el: Element) -> None:
        if el.ns == ns.CLIENT and el.name in STANZA_KINDS:
            await self._on_stanza(el)
        elif el.ns == ns.DIALBACK:
            self._on_dialback(el)
        elif el.ns == ns.TLS and el.name == "starttls":
            await self._starttls()
        elif el.ns == ns.SASL:
            self._on_sasl(el)
        else:
            raise StreamError(
                StreamErrorCondition.UNSUPPORTED_STANZA_TYPE, f"unexpected <{el.name}/>"
            )

    async def _starttls(self) -> None:
        if self.tls:
            raise StreamError(StreamErrorCondition.POLICY_VIOLATION, "TLS is already on")
        self.write(f"<proceed xmlns='{ns.TLS}'/>".encode())
        self.flush()
        try:
            async with asyncio.timeout(self.settings.negotiation_timeout):
                self.tls_info = await self.channel.start_tls(
                    self.tls_settings, server_side=True, server_name=None
                )
        except Exception as exc:
            self.closed = True
            self.info.closed = f"TLS handshake failed: {exc}"
            self.channel.close()
            raise StreamClosed(self.info.closed) from None
        self.info.tls_version = self.tls_info.version
        self.restart()

    def _on_sasl(self, el: Element) -> None:
        if not self.tls or self.info.authenticated or el.name != "auth":
            raise StreamError(StreamErrorCondition.POLICY_VIOLATION, "SASL not possible now")
        if el.get("mechanism") != "EXTERNAL":
            self.write(f"<failure xmlns='{ns.SASL}'><invalid-mechanism/></failure>".encode())
            return
        text = el.text.strip()
        try:
            authzid = (
                base64.b64decode(text, validate=True).decode() if text not in ("", "=") else ""
            )
            domain = prep_domain(authzid) if authzid else self.peer_domain
        except (binascii.Error, UnicodeDecodeError, JidMalformed):
            self.write(f"<failure xmlns='{ns.SASL}'><incorrect-encoding/></failure>".encode())
            return
        if domain is None or self._cert_for(domain) is not CertStatus.VALID:
            self.write(f"<failure xmlns='{ns.SASL}'><not-authorized/></failure>".encode())
            return
        refusal = self._admit(domain, AuthMethod.SASL_EXTERNAL)
        if refusal:
            text = f"<text>{escape_text(refusal)}</text>"
            self.write(f"<failure xmlns='{ns.SASL}'><not-authorized/>{text}</failure>".encode())
            raise StreamError(StreamErrorCondition.POLICY_VIOLATION, refusal)
        self.write(f"<success xmlns='{ns.SASL}'/>".encode())
        self.restart()

    def _admit(self, domain: str, method: AuthMethod) -> str | None:
        """Record `domain` as proven on this stream, unless policy refuses it."""
        status = self._cert_for(domain)
        self.info.cert = status
        if self.tls_info is not None:
            self.info.cert_detail = describe(status, self.tls_info, domain)
        if self.info.auth is AuthMethod.NONE:
            self.info.auth = method
        if not self.info.authenticated:
            self.info.remote = domain
        refusal = self.policy.admit(self.info, domain)
        if refusal:
            return refusal
        self.info.authenticated.add(domain)
        self.log.info("%s authenticated with %s (certificate %s)", domain, method, status)
        return None

    def _on_dialback(self, el: Element) -> None:
        req = dialback.parse(el)
        if req is None:
            raise StreamError(StreamErrorCondition.INVALID_XML, "malformed dialback element")
        if req.kind == "verify":
            self._answer_verify(req)
            return
        if req.type is not None or not req.key:
            raise StreamError(StreamErrorCondition.INVALID_XML, "unexpected dialback result")
        if not self.settings.dialback:
            self._dialback_error(req, "not-allowed")
            return
        if self.settings.require_tls and not self.tls:
            raise StreamError(
                StreamErrorCondition.POLICY_VIOLATION, "TLS is required before dialback"
            )
        try:
            local, remote = prep_domain(req.to), prep_domain(req.from_)
        except JidMalformed:
            self._dialback_error(req, "item-not-found")
            return
        if local not in self.settings.hosts:
            self._dialback_error(req, "item-not-found")
            return
        task = asyncio.get_running_loop().create_task(self._verify_result(local, remote, req.key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _dialback_error(self, req: dialback.DialbackRequest, condition: str) -> None:
        # XEP-0220 §2.4: a dialback error answers the request without closing the stream.
        error = f"<error type='cancel'><{condition} xmlns='{ns.STANZA_ERRORS}'/></error>"
        from_, to = escape_attr(req.to), escape_attr(req.from_)
        self.write(f"<db:result from='{from_}' to='{to}' type='error'>{error}</db:result>".encode())

    async def _verify_result(self, local: str, remote: str, key: str) -> None:
        # A certificate that proves the domain makes the round-trip unnecessary (XEP-0344).
        if self._cert_for(remote) is CertStatus.VALID:
            valid, outcome = True, "certificate"
        else:
            try:
                valid = await self.verifier(local, remote, self.info.id, key)
                outcome = "valid" if valid else "invalid"
            except Exception as exc:  # the authoritative server could not be asked
                self.log.info("dialback verification of %s failed: %s", remote, exc)
                valid, outcome = False, "error"
        self.metrics.s2s_dialback.labels(outcome).inc()
        if self.closed:
            return
        refusal = self._admit(remote, AuthMethod.DIALBACK) if valid else None
        result = DialbackType.VALID if valid and not refusal else DialbackType.INVALID
        self.write(dialback.element("result", local, remote, type_=result))
        if refusal:
            self.close(StreamErrorCondition.POLICY_VIOLATION, refusal)
        elif not valid:
            self.log.info("dialback key from %s is invalid", remote)

    def _answer_verify(self, req: dialback.DialbackRequest) -> None:
        # We are the authoritative server (XEP-0220 §2.1.4): is this key ours?
        try:
            originating, receiving = prep_domain(req.to), prep_domain(req.from_)
        except JidMalformed:
            self.close(StreamErrorCondition.INVALID_XML, "bad addresses in db:verify")
            return
        valid = (
            originating in self.settings.hosts
            and req.id is not None
            and dialback.keys_equal(
                dialback.dialback_key(self.settings.secret, receiving, originating, req.id), req.key
            )
        )
        typ = DialbackType.VALID if valid else DialbackType.INVALID
        self.write(dialback.element("verify", originating, receiving, id_=req.id, type_=typ))

    # --- stanzas ----------------------------------------------------------------------
    async def _on_stanza(self, el: Element) -> None:
        if not self.info.authenticated:
            raise StreamError(StreamErrorCondition.NOT_AUTHORIZED, "authenticate first")
        await self.throttle()
        self.info.stanzas_in += 1
        self.metrics.stanzas_in.labels(el.name, "s2s").inc()
        try:
            from_ = Jid.parse(el.attrs.get("from", ""))
        except JidMalformed:
            raise StreamError(
                StreamErrorCondition.INVALID_FROM, "missing or invalid 'from'"
            ) from None
        if from_.domain not in self.info.authenticated:
            # RFC 6120 §4.9.3.9: a 'from' this stream did not prove.
            raise StreamError(
                StreamErrorCondition.INVALID_FROM,
                f"{from_.domain} is not authenticated on this stream",
            )
        try:
            to = Jid.parse(el.attrs.get("to", ""))
        except JidMalformed:
            raise StreamError(
                StreamErrorCondition.IMPROPER_ADDRESSING, "missing or invalid 'to'"
            ) from None
        if to.domain not in self.settings.hosts:
            raise StreamError(
                StreamErrorCondition.HOST_UNKNOWN, f"this server does not serve {to.domain}"
            )
        if await self.policy.inbound(el, from_, to, self.info):
            await self.router.route(el, from_, to)
