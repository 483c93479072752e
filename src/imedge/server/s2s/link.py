"""The XML stream machinery shared by inbound and outbound server links (RFC 6120 §4)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from typing import TYPE_CHECKING

from imedge.domain.errors import StreamError, StreamErrorCondition
from imedge.protocol import ns
from imedge.protocol.element import Element, stanza_bytes
from imedge.protocol.stanza import stream_error
from imedge.protocol.xml import StreamHeader, XmlStreamParser
from imedge.server.metrics import Metrics
from imedge.server.s2s.info import S2SStreamInfo
from imedge.server.s2s.settings import S2SSettings

if TYPE_CHECKING:
    from imedge.server.s2s.channel import Channel

log = logging.getLogger(__name__)


class StreamClosed(Exception):
    """The peer closed the stream or the connection."""


class _Close:
    pass


CLOSE = _Close()
Item = StreamHeader | Element | _Close


def header(local: str, remote: str | None, stream_id: str | None) -> bytes:
    """An s2s stream header declaring the dialback prefix (XEP-0220 §2.1)."""
    to = f" to='{remote}'" if remote else ""
    sid = f" id='{stream_id}'" if stream_id else ""
    return (
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
        "xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' "
        f"from='{local}'{to}{sid} version='1.0'>"
    ).encode()


def new_stream_id() -> str:
    return secrets.token_urlsafe(16)


class Link:
    """One TCP connection carrying an s2s XML stream: parse, write, close with errors."""

    def __init__(
        self, channel: Channel, settings: S2SSettings, info: S2SStreamInfo, metrics: Metrics
    ) -> None:
        self.channel = channel
        self.settings = settings
        self.info = info
        self.metrics = metrics
        self.log = logging.LoggerAdapter(log, {"stream": info.id, "peer": info.peer})
        self.inbox: deque[Item] = deque()
        self.parser = self._new_parser()
        self.closed = False
        self._out: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self._tokens = float(settings.max_stanzas_per_second)

    def _new_parser(self) -> XmlStreamParser:
        return XmlStreamParser(
            self.inbox.append,
            self.inbox.append,
            lambda: self.inbox.append(CLOSE),
            max_stanza_bytes=self.settings.max_stanza_bytes,
            max_depth=self.settings.max_depth,
            server_as_client=True,
        )

    def restart(self) -> None:
        """RFC 6120 §4.3.3: after TLS or SASL, both sides start a new stream."""
        self.parser.reset()
        self.inbox.clear()

    # --- reading --------------------------------------------------------------------
    async def next_item(self, timeout: float) -> Item:  # noqa: ASYNC109 -- idle deadline
        """The next header, element or close, reading as needed; TimeoutError when idle."""
        while not self.inbox:
            async with asyncio.timeout(timeout):
                data = await self.channel.read()
            if not data:
                raise StreamClosed("connection closed by peer")
            self.parser.feed(data)
        return self.inbox.popleft()

    async def throttle(self) -> None:
        """A per-stream token bucket: a peer over its rate is read more slowly, not cut."""
        rate = self.settings.max_stanzas_per_second
        loop = asyncio.get_running_loop()
        now = loop.time()
        last = getattr(self, "_last_refill", now)
        self._last_refill = now
        self._tokens = min(rate * 2.0, self._tokens + (now - last) * rate)
        if self._tokens < 1.0:
            self.info.throttled += 1
            await asyncio.sleep((1.0 - self._tokens) / rate)
            # The sleep earned the token: refill from now on, or it is counted twice.
            self._last_refill = loop.time()
            self._tokens = 1.0
        self._tokens -= 1.0

    # --- writing --------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.closed:
            return
        self._out.append(data)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_handle = None
        if self._out and not self.closed:
            data = b"".join(self._out)
            self._out.clear()
            self.channel.write(data)

    def send_stanza(self, el: Element) -> None:
        self.info.stanzas_out += 1
        self.metrics.stanzas_out.labels(el.name, "s2s").inc()
        self.write(stanza_bytes(el, ns.SERVER))

    def close(self, condition: StreamErrorCondition | None = None, text: str | None = None) -> None:
        if self.closed:
            return
        if condition is not None:
            self.metrics.stream_errors.labels(str(condition), "s2s").inc()
            self.info.closed = f"stream error {condition}" + (f": {text}" if text else "")
            self.write(stream_error(condition, text))
        elif self.info.closed is None:
            self.info.closed = "closed"
        self.write(b"</stream:stream>")
        self.flush()
        self.closed = True
        with contextlib.suppress(Exception):
            self.channel.close()

    def fail(self, err: StreamError) -> None:
        self.log.info("stream error %s: %s", err.condition, err.text)
        self.close(err.condition, err.text)
