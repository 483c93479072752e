"""RFC 6120 §4.6: idle timeouts, whitespace keepalives, and the per-address connection limit."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.helpers import PASSWORD, RawClient, RunningServer, running_server

CONNECTION_TIMEOUT = b"<connection-timeout xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
PING = "<iq type='get' id='{id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"


async def bound_client(srv: RunningServer, local: str) -> RawClient:
    """A raw client that has done STARTTLS, PLAIN and bound a resource."""
    await srv.add_user(local)
    raw = await RawClient.connect(srv.c2s_port)
    await raw.open_stream()
    await raw.starttls(srv.pki.ca_path)
    await raw.open_stream()
    await raw.login_plain(local, PASSWORD)
    await raw.bind()
    return raw


async def read_iq(raw: RawClient, id_: str) -> bytes:
    """Everything up to the end of the start tag of the IQ with this id."""
    head = await raw.read_until(id_.encode(), timeout=2)
    return head + await raw.read_until(b">", timeout=2)


async def test_silent_client_is_disconnected_after_the_idle_timeout(tmp_path: Path) -> None:
    async with running_server(tmp_path, **{"limits.c2s_idle_timeout": 2}) as srv:
        raw = await bound_client(srv, "alice")
        loop = asyncio.get_running_loop()
        started = loop.time()
        out = await raw.read_to_eof(timeout=5)
        assert CONNECTION_TIMEOUT in out
        assert b"</stream:stream>" in out
        # Not before the timeout, and not only at the (much longer) keepalive interval.
        assert 1.5 <= loop.time() - started < 4


async def test_client_sending_whitespace_keepalives_stays_connected(tmp_path: Path) -> None:
    async with running_server(tmp_path, **{"limits.c2s_idle_timeout": 2}) as srv:
        raw = await bound_client(srv, "alice")
        # RFC 6120 §4.6.1: a single space between stanzas is traffic too. Keep it up
        # for one and a half idle timeouts.
        for _ in range(6):
            await raw.send(b" ")
            await asyncio.sleep(0.5)
        await raw.send(PING.format(id="still-there"))
        reply = await read_iq(raw, "still-there")
        assert b"<stream:error" not in reply
        assert b"result" in reply


async def test_server_sends_whitespace_keepalive_to_an_idle_client(tmp_path: Path) -> None:
    async with running_server(
        tmp_path, **{"limits.c2s_keepalive_interval": 1, "limits.c2s_idle_timeout": 30}
    ) as srv:
        raw = await bound_client(srv, "alice")
        async with asyncio.timeout(3):
            chunk = await raw.reader.read(65536)
        assert chunk == b" "
        # The keepalive does not end the stream: the session still answers.
        await raw.send(PING.format(id="after-keepalive"))
        reply = await read_iq(raw, "after-keepalive")
        assert b"<stream:error" not in reply
        assert b"result" in reply


async def test_connections_per_address_are_limited(tmp_path: Path) -> None:
    async with running_server(tmp_path, **{"limits.max_c2s_connections_per_ip": 3}) as srv:
        first = [await RawClient.connect(srv.c2s_port) for _ in range(3)]
        for raw in first:
            assert b"<starttls" in await raw.open_stream()
        extra = await RawClient.connect(srv.c2s_port)
        # The fourth is closed at once, before any stream is opened.
        assert await extra.read_to_eof(timeout=2) == b""
        # The others carry on: they can still negotiate.
        for raw in first:
            await raw.starttls(srv.pki.ca_path)
            assert b"<mechanisms" in await raw.open_stream()
        # A closed connection frees its slot.
        first[0].close()
        await first[0].writer.wait_closed()
        async with asyncio.timeout(5):
            while True:
                again = await RawClient.connect(srv.c2s_port)
                try:
                    await again.open_stream()
                    break
                except EOFError:
                    again.close()  # the server has not yet seen the close
                    await asyncio.sleep(0.05)
