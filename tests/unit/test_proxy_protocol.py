"""HAProxy PROXY protocol v1/v2: the pure parser, the listener helper, and real HAProxy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imedge.protocol.proxy import (
    MAX_V1_LENGTH,
    MAX_V2_PAYLOAD,
    V2_SIGNATURE,
    ProxyProtocolError,
    ProxyResult,
    needed_bytes,
    parse_proxy_header,
)
from imedge.server.s2s.proxy_listener import read_proxy_header
from tests.helpers import require_binary, wait_for
from tests.peers.process import free_port, spawn, stop_group, tail, wait_listening

STREAM = b"<?xml version='1.0'?><stream:stream xmlns='jabber:server'>"

# --- building headers -------------------------------------------------------------------

CMD_LOCAL, CMD_PROXY = 0x0, 0x1
TCP4, TCP6, UNIX, UNSPEC = 0x11, 0x21, 0x31, 0x00


def v2(command: int, family: int, payload: bytes = b"", version: int = 2) -> bytes:
    return (
        V2_SIGNATURE + bytes([version << 4 | command, family]) + struct.pack("!H", len(payload))
    ) + payload


def inet4(src: str, dst: str, sport: int, dport: int) -> bytes:
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)


def inet6(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (
        socket.inet_pton(socket.AF_INET6, src)
        + socket.inet_pton(socket.AF_INET6, dst)
        + struct.pack("!HH", sport, dport)
    )


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


# Spec §2.2.7: ALPN, authority (SNI), NOOP padding, a custom (0xE0) one.
TLVS = tlv(0x01, b"xmpp-server") + tlv(0x02, b"a.test") + tlv(0x04, b"\0" * 5) + tlv(0xE0, b"")

LONGEST_V1 = (
    b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
    b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
)

VALID: list[tuple[bytes, ProxyResult]] = [
    (
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 5269\r\n",
        ProxyResult(("192.0.2.1", 56324), ("198.51.100.2", 5269), 46, 1),
    ),
    (
        b"PROXY TCP6 2001:db8::1 2001:db8:0:0::2 0 65535\r\n",
        ProxyResult(("2001:db8::1", 0), ("2001:db8::2", 65535), 48, 1),
    ),
    (b"PROXY UNKNOWN\r\n", ProxyResult(None, None, 15, 1)),
    (LONGEST_V1, ProxyResult(None, None, MAX_V1_LENGTH, 1)),
    (
        v2(CMD_PROXY, TCP4, inet4("192.0.2.1", "198.51.100.2", 40000, 5269) + TLVS),
        ProxyResult(("192.0.2.1", 40000), ("198.51.100.2", 5269), 16 + 12 + len(TLVS), 2),
    ),
    (
        v2(CMD_PROXY, TCP6, inet6("2001:db8::1", "::1", 1, 5270) + TLVS),
        ProxyResult(("2001:db8::1", 1), ("::1", 5270), 16 + 36 + len(TLVS), 2),
    ),
    # LOCAL: a health check by the connector itself; addresses, if any, are ignored.
    (v2(CMD_LOCAL, UNSPEC), ProxyResult(None, None, 16, 2, local=True)),
    (
        v2(CMD_LOCAL, TCP4, inet4("10.0.0.1", "10.0.0.2", 1, 2)),
        ProxyResult(None, None, 28, 2, local=True),
    ),
    (v2(CMD_PROXY, UNSPEC, TLVS), ProxyResult(None, None, 16 + len(TLVS), 2)),
    (v2(CMD_PROXY, UNIX, b"/s".ljust(216, b"\0")), ProxyResult(None, None, 16 + 216, 2)),
]
VALID_IDS = [
    "v1-tcp4",
    "v1-tcp6",
    "v1-unknown",
    "v1-107-bytes",
    "v2-tcp4-tlvs",
    "v2-tcp6-tlvs",
    "v2-local",
    "v2-local-with-addresses",
    "v2-unspec-tlvs",
    "v2-unix",
]


@pytest.mark.parametrize(("header", "expected"), VALID, ids=VALID_IDS)
def test_valid_header_parsed_and_stream_bytes_left(header: bytes, expected: ProxyResult) -> None:
    assert parse_proxy_header(header) == expected
    # What follows the header is the XMPP stream, untouched.
    result = parse_proxy_header(header + STREAM)
    assert result == expected
    assert (header + STREAM)[result.consumed :] == STREAM


@pytest.mark.parametrize(("header", "expected"), VALID, ids=VALID_IDS)
def test_incomplete_header_needs_more_at_every_split(header: bytes, expected: ProxyResult) -> None:
    for cut in range(len(header)):
        assert parse_proxy_header(header[:cut]) is None, cut
        # Reading what needed_bytes asks never reads past the header.
        assert 1 <= needed_bytes(header[:cut]) <= len(header) - cut, cut
    assert parse_proxy_header(header) == expected


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (STREAM, "no PROXY header at all"),
        (b"GET / HTTP/1.1\r\n", "another protocol"),
        (b"\x16\x03\x01\x02\x00", "a TLS ClientHello"),
        (b"PROXX TCP4", "bad v1 signature"),
        (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "unknown v1 protocol"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1111\r\n", "missing field"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "extra field"),
        (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "double space"),
        (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "bad IPv4"),
        (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "IPv4 with a leading zero"),
        (b"PROXY TCP4 ::1 ::1 1 2\r\n", "IPv6 address in a TCP4 line"),
        (b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", "IPv4 address in a TCP6 line"),
        (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "scoped IPv6"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "port out of range"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", "port with a leading zero"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "negative port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "bare LF"),
        (b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n", "CR without LF"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \xc2\xb2\r\n", "non-ASCII digit"),
        (b"PROXY " + b"A" * (MAX_V1_LENGTH - 6), "no CRLF within 107 bytes"),
        (LONGEST_V1[:-2] + b"f\r\n", "108-byte line"),
        (V2_SIGNATURE[:5] + b"X", "bad v2 signature"),
        (v2(CMD_PROXY, TCP4, inet4("1.2.3.4", "5.6.7.8", 1, 2), version=1), "v2 version 1"),
        (v2(0x2, TCP4, inet4("1.2.3.4", "5.6.7.8", 1, 2)), "v2 command 2"),
        (v2(CMD_PROXY, 0x41, b"\0" * 12), "v2 family 4"),
        (v2(CMD_PROXY, 0x13, b"\0" * 12), "v2 transport 3"),
        (v2(CMD_PROXY, TCP4, b"\0" * 11), "v2 length shorter than IPv4 addresses"),
        (v2(CMD_PROXY, TCP6, inet4("1.2.3.4", "5.6.7.8", 1, 2)), "v2 length short of IPv6"),
        (v2(CMD_PROXY, TCP4, inet4("1.2.3.4", "5.6.7.8", 1, 2) + b"\x01\x00"), "TLV cut"),
        (v2(CMD_PROXY, TCP4, inet4("1.2.3.4", "5.6.7.8", 1, 2) + b"\x01\x00\x09ab"), "TLV long"),
        # The oversize length is refused from the 16-byte header alone, before buffering.
        (V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", MAX_V2_PAYLOAD + 1), "v2 oversize"),
        (V2_SIGNATURE + b"\x21\x11\xff\xff", "v2 length 65535"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_invalid_header_refused(data: bytes, why: str) -> None:
    with pytest.raises(ProxyProtocolError) as info:
        parse_proxy_header(data)
    assert info.value.reason


def test_v2_header_up_to_the_cap_is_accepted() -> None:
    padding = tlv(0x04, b"\0" * (MAX_V2_PAYLOAD - 12 - 3))
    header = v2(CMD_PROXY, TCP4, inet4("192.0.2.7", "192.0.2.8", 7, 8) + padding)
    result = parse_proxy_header(header + STREAM)
    assert result is not None
    assert result.source == ("192.0.2.7", 7)
    assert result.consumed == 16 + MAX_V2_PAYLOAD


# --- hostile input ----------------------------------------------------------------------

prefixes = st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=200).map(lambda b: b"PROXY " + b),
    st.binary(max_size=200).map(lambda b: V2_SIGNATURE + b),
    st.binary(min_size=4, max_size=200).map(lambda b: V2_SIGNATURE + b"\x21" + b),
    st.from_regex(rb"\APROXY (TCP4|TCP6|UNKNOWN) [0-9a-f.: ]{0,100}(\r\n)?", fullmatch=True),
)


def _outcome(data: bytes) -> ProxyResult | str | None:
    try:
        return parse_proxy_header(data)
    except ProxyProtocolError as exc:
        return f"error: {exc.reason}"


@settings(max_examples=500, deadline=None)
@given(prefixes)
def test_arbitrary_bytes_only_ever_need_more_parse_or_refuse(data: bytes) -> None:
    outcome = _outcome(data)  # anything but ProxyProtocolError escapes and fails
    if isinstance(outcome, ProxyResult):
        assert 0 < outcome.consumed <= len(data)
        # The header is self-contained: the same result from its own bytes.
        assert parse_proxy_header(data[: outcome.consumed]) == outcome
    elif outcome is None:
        assert needed_bytes(data) >= 1


@settings(max_examples=200, deadline=None)
@given(prefixes, st.integers(min_value=0, max_value=255))
def test_decided_within_a_bounded_number_of_bytes(data: bytes, fill: int) -> None:
    # Never more than the v2 header plus its capped payload (v1: 107 bytes) to decide.
    padded = data + bytes([fill]) * (16 + MAX_V2_PAYLOAD)
    assert _outcome(padded) is not None


addresses4 = st.ip_addresses(v=4).map(str)
addresses6 = st.ip_addresses(v=6).map(str)
ports = st.integers(min_value=0, max_value=65535)
tlv_lists = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=5).map(
    lambda items: b"".join(tlv(k, v) for k, v in items)
)


@settings(max_examples=200, deadline=None)
@given(st.booleans(), addresses4, addresses4, addresses6, addresses6, ports, ports, tlv_lists)
def test_v1_and_v2_round_trip(
    six: bool, s4: str, d4: str, s6: str, d6: str, sport: int, dport: int, tlvs: bytes
) -> None:
    src, dst = (s6, d6) if six else (s4, d4)
    line = f"PROXY {'TCP6' if six else 'TCP4'} {src} {dst} {sport} {dport}\r\n".encode()
    block = (inet6 if six else inet4)(src, dst, sport, dport) + tlvs
    binary = v2(CMD_PROXY, TCP6 if six else TCP4, block)
    for header, version in ((line, 1), (binary, 2)):
        assert len(line) <= MAX_V1_LENGTH
        result = parse_proxy_header(header + STREAM)
        assert result == ProxyResult((src, sport), (dst, dport), len(header), version)


# --- reading from a connection ----------------------------------------------------------


def _reader(*chunks: bytes, eof: bool = False) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    for chunk in chunks:
        reader.feed_data(chunk)
    if eof:
        reader.feed_eof()
    return reader


@pytest.mark.parametrize(("header", "expected"), VALID, ids=VALID_IDS)
async def test_read_proxy_header_stops_exactly_at_the_header(
    header: bytes, expected: ProxyResult
) -> None:
    reader = _reader(header + STREAM)
    result, rest = await read_proxy_header(reader, timeout=1)
    assert result == expected
    # Nothing after the header was consumed: the stream (or a TLS ClientHello) is intact.
    assert rest + await reader.readexactly(len(STREAM)) == STREAM


async def test_read_proxy_header_across_slow_chunks() -> None:
    header = v2(CMD_PROXY, TCP4, inet4("192.0.2.1", "192.0.2.2", 1234, 5269) + TLVS)
    reader = asyncio.StreamReader()
    task = asyncio.create_task(read_proxy_header(reader, timeout=2))
    for byte in header + STREAM:
        reader.feed_data(bytes([byte]))
        await asyncio.sleep(0)
    result, rest = await task
    assert result.source == ("192.0.2.1", 1234)
    assert rest + await reader.readexactly(len(STREAM)) == STREAM


async def test_read_proxy_header_refuses_garbage_and_eof_and_silence() -> None:
    with pytest.raises(ProxyProtocolError):
        await read_proxy_header(_reader(STREAM), timeout=1)
    with pytest.raises(ProxyProtocolError, match="closed"):
        await read_proxy_header(_reader(b"PROXY TCP4 1.2", eof=True), timeout=1)
    with pytest.raises(ProxyProtocolError, match="signature"):
        await read_proxy_header(_reader(b"PROXX", eof=True), timeout=1)
    with pytest.raises(TimeoutError):
        await read_proxy_header(_reader(b"PROXY TCP4 "), timeout=0.05)


# --- real HAProxy in front --------------------------------------------------------------


class EchoApp:
    """A TCP server that reads the PROXY header, then answers with what it saw."""

    def __init__(self) -> None:
        self.seen: list[ProxyResult] = []
        self.errors: list[BaseException] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            result, rest = await read_proxy_header(reader, timeout=5)
            self.seen.append(result)
            if result.local:
                return  # a health check: HAProxy closes it at once
            line = rest + await reader.readline()
            writer.write(
                json.dumps(
                    {
                        "source": result.source,
                        "destination": result.destination,
                        "data": line.decode(),
                    }
                ).encode()
                + b"\n"
            )
            await writer.drain()
        except (ProxyProtocolError, TimeoutError, ConnectionError) as exc:
            self.errors.append(exc)
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def echo_app() -> AsyncIterator[EchoApp]:
    app = EchoApp()
    server = await asyncio.start_server(app.handle, "127.0.0.1", 0)
    app.port = server.sockets[0].getsockname()[1]
    async with server:
        yield app


@contextlib.asynccontextmanager
async def haproxy(directory: Path, config: str, ports: list[int]) -> AsyncIterator[None]:
    """HAProxy in the foreground (-db) with `config`, stopped by its process group."""
    binary = require_binary("haproxy")
    cfg = directory / "haproxy.cfg"
    cfg.write_text(config)
    console = directory / "haproxy.console"
    proc = spawn([binary, "-f", str(cfg), "-db"], console=console)
    try:
        # In a thread: the echo app must keep serving the connections HAProxy opens.
        await asyncio.to_thread(
            wait_listening, "127.0.0.1", ports, proc=proc, what="haproxy", logs=[console]
        )
        yield
    finally:
        await asyncio.to_thread(stop_group, proc)
        assert proc.poll() is not None, tail(console)


HAPROXY_DEFAULTS = """\
global
    maxconn 64
defaults
    mode tcp
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    timeout check 2s
"""


async def _through(port: int, host: str = "127.0.0.1") -> tuple[dict[str, object], tuple[str, int]]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        me = writer.get_extra_info("sockname")
        writer.write(STREAM + b"\n")
        async with asyncio.timeout(5):
            reply = json.loads(await reader.readline())
        return reply, (me[0], me[1])
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.interop
async def test_haproxy_send_proxy_v1_and_v2_report_the_client_address(tmp_path: Path) -> None:
    v1_port, v2_port, v1_port6 = free_port(), free_port(), free_port()
    async with echo_app() as app:
        config = (
            HAPROXY_DEFAULTS
            + f"""\
frontend fe_v1
    bind 127.0.0.1:{v1_port}
    bind [::1]:{v1_port6}
    default_backend be_v1
backend be_v1
    server app 127.0.0.1:{app.port} send-proxy
frontend fe_v2
    bind 127.0.0.1:{v2_port}
    default_backend be_v2
backend be_v2
    server app 127.0.0.1:{app.port} send-proxy-v2
"""
        )
        async with haproxy(tmp_path, config, [v1_port, v2_port]):
            # wait_listening's probes arrive too: judge only our own connections.
            for port, version, host in (
                (v1_port, 1, "127.0.0.1"),
                (v2_port, 2, "127.0.0.1"),
                (v1_port6, 1, "::1"),
            ):
                reply, me = await _through(port, host)
                assert reply["source"] == [me[0], me[1]], (version, reply)
                assert reply["destination"] == [host, port]
                assert reply["data"] == (STREAM + b"\n").decode()
                assert any(r.version == version and r.source == me for r in app.seen)


@pytest.mark.interop
async def test_haproxy_v2_health_check_is_local(tmp_path: Path) -> None:
    # HAProxy needs one listener to run at all; its backend has no server.
    idle_port = free_port()
    async with echo_app() as app:
        config = (
            HAPROXY_DEFAULTS
            + f"""\
frontend fe_idle
    bind 127.0.0.1:{idle_port}
    default_backend be_none
backend be_none
backend be_check
    server app 127.0.0.1:{app.port} send-proxy-v2 check check-send-proxy inter 100ms
"""
        )
        async with haproxy(tmp_path, config, [idle_port]):
            await wait_for(lambda: any(r.local for r in app.seen), what="a LOCAL health check")
        assert all(r.local and r.source is None for r in app.seen)
