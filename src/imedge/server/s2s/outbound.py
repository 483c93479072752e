"""An outbound server-to-server stream (RFC 6120 §13): we are the initiating server.

We connect, require TLS, check the peer's certificate against its domain, and prove our
own domain with SASL EXTERNAL when the peer offers it, else with Server Dialback.
A connection opened only to ask an authoritative server about a dialback key skips the
authentication (`authenticate=False`).
"""

from __future__ import annotations

import asyncio
import base64
import logging

from imedge.domain.errors import StreamError
from imedge.policy import AuthMethod, CertStatus
from imedge.protocol import dialback, ns
from imedge.protocol.dialback import DialbackType
from imedge.protocol.element import Element
from imedge.protocol.xml import StreamHeader
from imedge.server.metrics import Metrics
from imedge.server.s2s.certs import describe, verify_peer
from imedge.server.s2s.channel import Channel, TlsSettings
from imedge.server.s2s.info import Direction, S2SStreamInfo
from imedge.server.s2s.link import CLOSE, Link, StreamClosed, header, new_stream_id
from imedge.server.s2s.settings import PeerRules, S2SSettings

log = logging.getLogger(__name__)


class S2SFailure(Exception):
    """A remote domain could not be reached or would not let us in; `step` says where."""

    def __init__(self, step: str, reason: str, *, temporary: bool = False) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason
        self.temporary = temporary


class OutboundStream(Link):
    def __init__(
        self,
        channel: Channel,
        settings: S2SSettings,
        tls: TlsSettings,
        local: str,
        remote: str,
        *,
        metrics: Metrics,
    ) -> None:
        info = S2SStreamInfo(new_stream_id(), Direction.OUTBOUND, local, remote, channel.peer)
        super().__init__(channel, settings, info, metrics)
        self.tls_settings = tls
        self.local = local
        self.remote = remote
        self.peer_stream_id: str | None = None
        self._pending_verify: dict[str, asyncio.Future[bool]] = {}
        self._serving = False  # serve() is reading this stream
        self.last_sent = 0.0

    # --- negotiation ------------------------------------------------------------------
    async def _expect(self) -> StreamHeader | Element:
        try:
            item = await self.next_item(self.settings.negotiation_timeout)
        except TimeoutError:
            raise S2SFailure("negotiation", "the peer stopped answering", temporary=True) from None
        except StreamClosed:
            raise S2SFailure(
                "negotiation", "the peer closed the connection", temporary=True
            ) from None
        except StreamError as err:
            self.fail(err)
            raise S2SFailure("negotiation", f"the peer sent bad XML ({err.text})") from None
        if item is CLOSE:
            raise S2SFailure("negotiation", "the peer closed the stream")
        assert isinstance(item, StreamHeader | Element)
        if isinstance(item, Element) and item.name == "error" and item.ns == ns.STREAMS:
            cond = next(
                (c.name for c in item.elements() if c.name != "text"), "undefined-condition"
            )
            text = item.find_text("text", ns.STREAM_ERRORS)
            self.close()
            raise S2SFailure(
                "negotiation", f"the peer refused us: {cond}" + (f" ({text})" if text else "")
            )
        return item

    async def _open(self) -> tuple[StreamHeader, Element]:
        self.write(header(self.local, self.remote, None))
        h = await self._expect()
        if not isinstance(h, StreamHeader):
            raise S2SFailure("stream", "the peer did not open a stream")
        if h.content_ns != ns.SERVER:
            raise S2SFailure("stream", "the peer did not open a jabber:server stream")
        self.peer_stream_id = h.id
        if not (h.version or "").startswith("1."):
            return h, Element("features", ns.STREAMS)
        feats = await self._expect()
        if not isinstance(feats, Element) or feats.name != "features":
            raise S2SFailure("stream", "the peer sent no stream features")
        return h, feats

    async def negotiate(self, *, authenticate: bool = True, rules: PeerRules | None = None) -> None:
        """Bring the stream to the point where stanzas (or db:verify) may be sent, within
        what the remote domain's partner row allows (`rules`)."""
        rules = rules or PeerRules(
            tls_required=self.settings.require_tls, dialback=self.settings.dialback
        )
        h, feats = await self._open()
        if self.channel.tls is None:
            if feats.find("starttls", ns.TLS) is not None and rules.starttls:
                await self._starttls()
                h, feats = await self._open()
            elif rules.tls_required:
                raise S2SFailure("tls", f"{self.remote} does not offer TLS, and we require it")
        self._record_certificate()
        if not authenticate:
            return
        mechs = feats.find("mechanisms", ns.SASL)
        offered = (
            {m.text.strip() for m in mechs.find_all("mechanism")} if mechs is not None else set()
        )
        have_cert = self.tls_settings.certificate_der is not None
        if (
            "EXTERNAL" in offered
            and have_cert
            and rules.sasl_external
            and await self._sasl_external()
        ):
            return
        if rules.sasl_external_required:
            raise S2SFailure(
                "authentication",
                f"{self.remote} must accept our certificate (SASL EXTERNAL is required for it)",
            )
        # XEP-0220 §2.4: a server that speaks stream features advertises dialback; only a
        # pre-1.0 server (no features at all) is judged by its `db` prefix declaration.
        advertised = feats.find("dialback", ns.DIALBACK_FEATURE) is not None
        pre_features = not (h.version or "").startswith("1.")
        can_dialback = advertised or (pre_features and h.declared_prefixes.get("db") == ns.DIALBACK)
        if self.settings.dialback and rules.dialback and can_dialback:
            await self._dialback(h)
            return
        if "EXTERNAL" in offered:
            raise S2SFailure(
                "authentication", f"{self.remote} did not accept our certificate (SASL EXTERNAL)"
            )
        raise S2SFailure(
            "authentication", f"{self.remote} offers no authentication method we can use"
        )

    async def _starttls(self) -> None:
        self.write(f"<starttls xmlns='{ns.TLS}'/>".encode())
        answer = await self._expect()
        if not (isinstance(answer, Element) and answer.name == "proceed"):
            raise S2SFailure("tls", f"{self.remote} refused STARTTLS")
        self.flush()
        try:
            info = await self.channel.start_tls(
                self.tls_settings,
                server_side=False,
                server_name=self.remote,
                timeout=self.settings.negotiation_timeout,
            )
        except Exception as exc:
            raise S2SFailure("tls", f"TLS handshake with {self.remote} failed: {exc}") from None
        self.info.tls_version = info.version
        self.restart()

    def _record_certificate(self) -> None:
        tls = self.channel.tls
        if tls is None:
            self.info.cert = CertStatus.NO_CERTIFICATE
            return
        self.info.tls_version = tls.version
        status = verify_peer(tls, self.remote)
        self.info.cert = status
        self.info.cert_detail = describe(status, tls, self.remote)
        if status is not CertStatus.VALID:
            self.log.info("certificate of %s: %s", self.remote, self.info.cert_detail)

    async def _sasl_external(self) -> bool:
        authzid = base64.b64encode(self.local.encode()).decode()
        self.write(f"<auth xmlns='{ns.SASL}' mechanism='EXTERNAL'>{authzid}</auth>".encode())
        answer = await self._expect()
        if isinstance(answer, Element) and answer.name == "success" and answer.ns == ns.SASL:
            self.restart()
            await self._open()
            self.info.auth = AuthMethod.SASL_EXTERNAL
            self.info.authenticated.add(self.remote)
            return True
        self.log.info("SASL EXTERNAL refused by %s; trying dialback", self.remote)
        return False

    async def _dialback(self, h: StreamHeader) -> None:
        if not h.id:
            raise S2SFailure("dialback", f"{self.remote} gave no stream id")
        key = dialback.dialback_key(self.settings.secret, self.remote, self.local, h.id)
        self.write(dialback.element("result", self.local, self.remote, key=key))
        while True:
            answer = await self._expect()
            if not isinstance(answer, Element):
                continue
            req = dialback.parse(answer)
            if req is None or req.kind != "result":
                continue
            if req.type is DialbackType.VALID:
                self.info.auth = AuthMethod.DIALBACK
                self.info.authenticated.add(self.remote)
                return
            reason = (
                "rejected our dialback key"
                if req.type is DialbackType.INVALID
                else "dialback error"
            )
            cond = next((e.name for c in answer.elements() for e in c.elements()), None)
            raise S2SFailure("dialback", f"{self.remote} {reason}" + (f" ({cond})" if cond else ""))

    # --- after negotiation ------------------------------------------------------------
    def send(self, el: Element) -> bool:
        if self.closed:
            return False
        self.last_sent = asyncio.get_running_loop().time()
        self.send_stanza(el)
        return True

    async def verify(self, stream_id: str, key: str) -> bool:
        """Ask this (authoritative) server whether `key` is its key (XEP-0220 §2.1.3)."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending_verify[stream_id] = fut
        self.write(dialback.element("verify", self.local, self.remote, id_=stream_id, key=key))
        try:
            async with asyncio.timeout(self.settings.negotiation_timeout):
                if not self._serving:
                    # A connection opened only for this question: nobody else reads it.
                    await self._read_until(fut)
                return await fut
        finally:
            self._pending_verify.pop(stream_id, None)

    async def _read_until(self, fut: asyncio.Future[bool]) -> None:
        while not fut.done() and not self.closed:
            item = await self.next_item(self.settings.negotiation_timeout)
            if item is CLOSE:
                break
            if isinstance(item, Element):
                self._on_element(item)
        if not fut.done():
            raise S2SFailure("dialback", f"{self.remote} ended the stream without answering")

    async def serve(self) -> None:
        """Read what the peer sends on our outbound stream until it ends or idles out."""
        loop = asyncio.get_running_loop()
        self.last_sent = loop.time()
        self._serving = True
        try:
            while not self.closed:
                idle_left = self.settings.idle_timeout - (loop.time() - self.last_sent)
                if idle_left <= 0:
                    self.info.closed = "idle"
                    self.close()
                    break
                try:
                    item = await self.next_item(idle_left)
                except TimeoutError:
                    continue
                if item is CLOSE:
                    self.info.closed = "closed by peer"
                    self.close()
                    break
                if isinstance(item, Element):
                    self._on_element(item)
        except StreamError as err:
            self.fail(err)
        except (StreamClosed, ConnectionError, OSError) as exc:
            self.info.closed = f"connection lost: {exc}"
            self.closed = True
            self.channel.close()
        finally:
            self._serving = False
            for fut in self._pending_verify.values():
                if not fut.done():
                    fut.set_result(False)

    def _on_element(self, el: Element) -> None:
        if el.name == "error" and el.ns == ns.STREAMS:
            cond = next((c.name for c in el.elements() if c.name != "text"), "undefined-condition")
            self.info.closed = f"peer sent stream error {cond}"
            self.log.info("%s closed our stream: %s", self.remote, cond)
            self.close()
            return
        req = dialback.parse(el)
        if req is not None and req.kind == "verify" and req.id in self._pending_verify:
            fut = self._pending_verify[req.id]
            if not fut.done():
                fut.set_result(req.type is DialbackType.VALID)
