"""HAProxy PROXY protocol v1/v2 on a listener: read the header before the stream.

The parsing is pure (`imedge.protocol.proxy`); this module only reads the socket, under a
deadline, and never reads past the header: the bytes after it (a stream header, or a
direct-TLS ClientHello) stay in the reader for whoever takes the connection next.
"""

from __future__ import annotations

import asyncio
import logging

from imedge.protocol.proxy import (
    ProxyProtocolError,
    ProxyResult,
    needed_bytes,
    parse_proxy_header,
)

__all__ = ["ProxyProtocolError", "ProxyResult", "read_proxy_header"]

log = logging.getLogger(__name__)


async def read_proxy_header(
    reader: asyncio.StreamReader,
    timeout: float,  # noqa: ASYNC109 -- one deadline for the whole header, not per read
) -> tuple[ProxyResult, bytes]:
    """Read one PROXY header from `reader` within `timeout` seconds.

    Returns the parsed header and the bytes read after it (always b"" here, since reads
    stop exactly at the header's end; kept so a caller never has to care). Raises
    ProxyProtocolError for an invalid header or one cut short by EOF, and TimeoutError
    when the connector is too slow: in every case close the connection without a reply.
    """
    buf = b""
    async with asyncio.timeout(timeout):
        while True:
            result = parse_proxy_header(buf)
            if result is not None:
                log.debug(
                    "PROXY v%s header: source %s, destination %s",
                    result.version,
                    result.source,
                    result.destination,
                )
                return result, buf[result.consumed :]
            try:
                buf += await reader.readexactly(needed_bytes(buf))
            except asyncio.IncompleteReadError as exc:
                # Name the real fault when the partial bytes already show one.
                buf += exc.partial
                if buf:
                    parse_proxy_header(buf)
                raise ProxyProtocolError(
                    f"connection closed inside the PROXY header after {len(buf)} bytes"
                ) from None
