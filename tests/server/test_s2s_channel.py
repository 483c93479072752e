"""The s2s byte channel over real loopback sockets: STARTTLS/direct TLS with pyOpenSSL,
certificate verification that records instead of aborting, and interop with `openssl`."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from imedge.policy import CertStatus
from imedge.server.s2s.certs import describe, verify_peer
from imedge.server.s2s.channel import (
    Channel,
    ChannelError,
    TlsHandshakeError,
    TlsInfo,
    TlsSettings,
    TlsVersion,
)
from imedge.server.tls import ensure_certificate
from tests.helpers import require_binary

HOST = "127.0.0.1"
TIMEOUT = 5.0


@dataclass
class Pki:
    """A trusted CA and an unknown one, and certificate files (chain + key in one PEM)."""

    dir: Path
    ca: trustme.CA = field(default_factory=trustme.CA)
    evil: trustme.CA = field(default_factory=lambda: trustme.CA(organization_name="evil-CA"))

    @property
    def ca_path(self) -> Path:
        path = self.dir / "ca.pem"
        if not path.exists():
            self.ca.cert_pem.write_to_path(str(path))
        return path

    def cert(
        self,
        file: str,
        *names: str,
        ca: trustme.CA | None = None,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> Path:
        path = self.dir / f"{file}.pem"
        leaf = (ca or self.ca).issue_cert(*names, not_before=not_before, not_after=not_after)
        leaf.private_key_and_cert_chain_pem.write_to_path(str(path))
        return path

    def settings(self, cert: Path | None, maximum: TlsVersion | None = None) -> TlsSettings:
        # No system store: only our test CA is trusted, so "unknown CA" is deterministic.
        return TlsSettings.create(cert, cert, self.ca_path, system_ca=False, maximum=maximum)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def leaf_der(pem: Path) -> bytes:
    return x509.load_pem_x509_certificates(pem.read_bytes())[0].public_bytes(Encoding.DER)


class Loopback:
    """Accepts connections on 127.0.0.1 and closes every channel and server at the end."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[Channel] = asyncio.Queue()
        self.channels: list[Channel] = []
        self.servers: list[asyncio.Server] = []
        self.port = 0

    async def start(self) -> None:
        async def on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self.accepted.put(self.track(Channel(reader, writer)))

        server = await asyncio.start_server(on_accept, HOST, 0)
        self.servers.append(server)
        self.port = server.sockets[0].getsockname()[1]

    def track(self, channel: Channel) -> Channel:
        self.channels.append(channel)
        return channel

    async def connect(self, port: int | None = None) -> Channel:
        return self.track(await Channel.connect(HOST, port or self.port, timeout=TIMEOUT))

    async def accept(self) -> Channel:
        return await asyncio.wait_for(self.accepted.get(), TIMEOUT)

    async def tls_pair(
        self,
        server: TlsSettings,
        client: TlsSettings,
        server_name: str | None = "a.test",
    ) -> tuple[Channel, TlsInfo, Channel, TlsInfo]:
        """Direct TLS (XEP-0368): connect and handshake on both ends at once."""
        outgoing = await self.connect()
        incoming = await self.accept()
        s_info, c_info = await asyncio.gather(
            incoming.start_tls(server, server_side=True, timeout=TIMEOUT),
            outgoing.start_tls(client, server_side=False, server_name=server_name, timeout=TIMEOUT),
        )
        return incoming, s_info, outgoing, c_info

    async def close(self) -> None:
        for channel in self.channels:
            await channel.aclose(timeout=1.0)
        for server in self.servers:
            server.close()
            await server.wait_closed()


@pytest.fixture
async def net() -> AsyncIterator[Loopback]:
    loop = Loopback()
    await loop.start()
    try:
        yield loop
    finally:
        await loop.close()


async def read_exactly(channel: Channel, size: int) -> bytes:
    data = bytearray()
    async with asyncio.timeout(TIMEOUT):
        while len(data) < size:
            chunk = await channel.read()
            assert chunk, f"EOF after {len(data)} of {size} bytes"
            data += chunk
    return bytes(data)


async def exchange(a: Channel, b: Channel) -> None:
    """One message each way."""
    a.write(b"<ping/>")
    await a.drain()
    assert await read_exactly(b, 7) == b"<ping/>"
    b.write(b"<pong/>")
    await b.drain()
    assert await read_exactly(a, 7) == b"<pong/>"


# --- trust outcomes -----------------------------------------------------------------------


async def test_trusted_both_ways_tls13_with_identical_channel_bindings(
    pki: Pki, net: Loopback
) -> None:
    a, b = pki.cert("a", "a.test"), pki.cert("b", "b.test")
    srv, s_info, cli, c_info = await net.tls_pair(pki.settings(a), pki.settings(b))

    for info in (s_info, c_info):
        assert info.version == TlsVersion.TLS1_3
        assert info.chain_verified
        assert info.verify_error is None
        assert info.verify_errors == ()
        assert info.alpn == "xmpp-server"  # XEP-0368 §3
        assert info.server_name == "a.test"  # SNI, sent and received
        assert info.tls_unique is None  # RFC 9266 §3: not for TLS 1.3
    assert s_info.server_side and not c_info.server_side
    assert s_info.peer_chain_der[0] == leaf_der(b)
    assert c_info.peer_chain_der[0] == leaf_der(a)
    assert verify_peer(s_info, "b.test") is CertStatus.VALID
    assert verify_peer(c_info, "a.test") is CertStatus.VALID
    # The channel-binding data of RFC 9266 / RFC 5929 §4 agree on both ends.
    assert s_info.tls_exporter is not None and len(s_info.tls_exporter) == 32
    assert s_info.tls_exporter == c_info.tls_exporter
    assert s_info.tls_server_end_point == c_info.tls_server_end_point
    assert s_info.tls_server_end_point == hashlib.sha256(leaf_der(a)).digest()
    await exchange(cli, srv)


async def test_forced_tls12_gives_tls_unique_on_both_sides(pki: Pki, net: Loopback) -> None:
    a, b = pki.cert("a", "a.test"), pki.cert("b", "b.test")
    client = pki.settings(b, maximum=TlsVersion.TLS1_2)
    srv, s_info, cli, c_info = await net.tls_pair(pki.settings(a), client)

    assert s_info.version == c_info.version == TlsVersion.TLS1_2
    assert s_info.cipher.startswith("ECDHE-")  # forward secret AEAD only
    assert s_info.chain_verified and c_info.chain_verified
    assert s_info.tls_exporter is None and c_info.tls_exporter is None
    assert s_info.tls_unique is not None and len(s_info.tls_unique) >= 12
    assert s_info.tls_unique == c_info.tls_unique
    assert s_info.tls_server_end_point == c_info.tls_server_end_point
    assert s_info.peer_chain_der[0] == leaf_der(b)
    await exchange(cli, srv)


async def test_untrusted_client_certificate_completes_and_is_recorded(
    pki: Pki, net: Loopback
) -> None:
    a = pki.cert("a", "a.test")
    evil = pki.cert("evil", "b.test", ca=pki.evil)
    srv, s_info, cli, c_info = await net.tls_pair(pki.settings(a), pki.settings(evil))

    assert c_info.chain_verified  # the client trusts us
    assert not s_info.chain_verified
    assert s_info.peer_chain_der[0] == leaf_der(evil)
    assert s_info.verify_error == "unable to get local issuer certificate"
    assert verify_peer(s_info, "b.test") is CertStatus.UNTRUSTED
    text = describe(CertStatus.UNTRUSTED, s_info, "b.test")
    assert text.startswith("the certificate of b.test is issued by an unknown authority (")
    assert "O=evil-CA" in text
    # The stream goes on: the peer may still authenticate with dialback.
    await exchange(cli, srv)


async def test_self_signed_client_certificate_is_recorded(
    pki: Pki, net: Loopback, tmp_path: Path
) -> None:
    cert, key = tmp_path / "self" / "b.crt", tmp_path / "self" / "b.key"
    ensure_certificate("b.test", cert, key)
    client = TlsSettings.create(cert, key, None, system_ca=False)
    srv, s_info, cli, _ = await net.tls_pair(pki.settings(pki.cert("a", "a.test")), client)

    assert verify_peer(s_info, "b.test") is CertStatus.UNTRUSTED
    assert describe(CertStatus.UNTRUSTED, s_info, "b.test") == (
        "the certificate of b.test is self-signed (CN=b.test)"
    )
    await exchange(cli, srv)


async def test_client_without_certificate(pki: Pki, net: Loopback) -> None:
    client = TlsSettings.create(None, None, pki.ca_path, system_ca=False)
    srv, s_info, cli, c_info = await net.tls_pair(pki.settings(pki.cert("a", "a.test")), client)

    assert s_info.peer_chain_der == ()
    assert s_info.peer_certificate is None
    assert not s_info.chain_verified
    assert verify_peer(s_info, "b.test") is CertStatus.NO_CERTIFICATE
    assert verify_peer(c_info, "a.test") is CertStatus.VALID
    await exchange(cli, srv)


async def test_trusted_certificate_for_another_name(pki: Pki, net: Loopback) -> None:
    a = pki.cert("a", "a.test")
    other = pki.cert("c", "c.test")
    _, s_info, _, c_info = await net.tls_pair(
        pki.settings(a), pki.settings(other), server_name="z.test"
    )
    # The chains verify; the names do not (the client claims b.test, we dialled z.test).
    assert s_info.chain_verified and c_info.chain_verified
    assert verify_peer(s_info, "b.test") is CertStatus.NAME_MISMATCH
    assert verify_peer(s_info, "c.test") is CertStatus.VALID
    assert verify_peer(c_info, "z.test") is CertStatus.NAME_MISMATCH
    assert "other names (c.test)" in describe(CertStatus.NAME_MISMATCH, s_info, "b.test")


async def test_expired_client_certificate(pki: Pki, net: Loopback) -> None:
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    old = pki.cert("old", "b.test", not_before=past, not_after=past + datetime.timedelta(days=1))
    _, s_info, _, _ = await net.tls_pair(pki.settings(pki.cert("a", "a.test")), pki.settings(old))
    assert s_info.verify_error == "certificate has expired"
    assert verify_peer(s_info, "b.test") is CertStatus.EXPIRED
    assert "expired on 2020-01-02" in describe(CertStatus.EXPIRED, s_info, "b.test")


async def test_client_records_an_untrusted_server_instead_of_failing(
    pki: Pki, net: Loopback
) -> None:
    evil = pki.cert("evil", "a.test", ca=pki.evil)
    srv, _, cli, c_info = await net.tls_pair(
        pki.settings(evil), pki.settings(pki.cert("b", "b.test"))
    )
    assert verify_peer(c_info, "a.test") is CertStatus.UNTRUSTED
    await exchange(cli, srv)


# --- STARTTLS and data --------------------------------------------------------------------


async def test_starttls_switches_mid_stream(pki: Pki, net: Loopback) -> None:
    """RFC 6120 §5.4.2: plaintext, <proceed/>, then TLS on the same connection."""
    cli = await net.connect()
    srv = await net.accept()
    cli.write(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    await cli.drain()
    assert (await read_exactly(srv, 51)).startswith(b"<starttls")
    srv.write(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")  # not drained here:
    server_tls = asyncio.create_task(  # start_tls sends it in the clear before TLS starts
        srv.start_tls(pki.settings(pki.cert("a", "a.test")), server_side=True, timeout=TIMEOUT)
    )
    assert (await read_exactly(cli, 50)).startswith(b"<proceed")
    c_info = await cli.start_tls(
        pki.settings(pki.cert("b", "b.test")), server_side=False, server_name="a.test"
    )
    s_info = await server_tls
    assert srv.tls is s_info and cli.tls is c_info
    assert verify_peer(s_info, "b.test") is CertStatus.VALID
    await exchange(cli, srv)
    with pytest.raises(ChannelError, match="already on"):
        await cli.start_tls(pki.settings(None), server_side=False)


async def test_megabyte_both_ways_in_chunks(pki: Pki, net: Loopback) -> None:
    srv, _, cli, _ = await net.tls_pair(
        pki.settings(pki.cert("a", "a.test")), pki.settings(pki.cert("b", "b.test"))
    )
    payload = os.urandom(1 << 20)

    async def send(channel: Channel, data: bytes) -> None:
        for i in range(0, len(data), 10_000):  # many writes, not aligned to records
            channel.write(data[i : i + 10_000])
            if i % 200_000 == 0:
                await channel.drain()
        await channel.drain()

    async def echo() -> None:
        remaining = len(payload)
        while remaining:
            chunk = await srv.read()
            assert chunk
            remaining -= len(chunk)
            srv.write(chunk)
            await srv.drain()

    async def receive() -> bytes:
        return await read_exactly(cli, len(payload))

    # Client -> server -> client concurrently, through both directions' TLS at once.
    _, _, back = await asyncio.gather(send(cli, payload), echo(), receive())
    assert back == payload
    # And each direction alone, in one write.
    srv.write(payload)
    got, _ = await asyncio.gather(read_exactly(cli, len(payload)), srv.drain())
    assert got == payload
    cli.write(payload)
    got, _ = await asyncio.gather(read_exactly(srv, len(payload)), cli.drain())
    assert got == payload


async def test_many_small_writes_arrive_in_order(pki: Pki, net: Loopback) -> None:
    srv, _, cli, _ = await net.tls_pair(
        pki.settings(pki.cert("a", "a.test")), pki.settings(pki.cert("b", "b.test"))
    )
    for i in range(2000):
        cli.write(b"<m n='%d'/>" % i)
    await cli.drain()
    expected = b"".join(b"<m n='%d'/>" % i for i in range(2000))
    assert await read_exactly(srv, len(expected)) == expected
    cli.close()
    assert await asyncio.wait_for(srv.read(), TIMEOUT) == b""


@pytest.mark.parametrize("graceful", [True, False])
async def test_peer_closing_mid_stream_reads_eof(pki: Pki, net: Loopback, graceful: bool) -> None:
    srv, _, cli, _ = await net.tls_pair(
        pki.settings(pki.cert("a", "a.test")), pki.settings(pki.cert("b", "b.test"))
    )
    srv.write(b"<message>partial")
    await srv.drain()
    assert await read_exactly(cli, 16) == b"<message>partial"
    if graceful:
        await srv.aclose()  # close_notify, then FIN
    else:
        srv._writer.transport.abort()  # RST/FIN without close_notify
    assert await asyncio.wait_for(cli.read(), TIMEOUT) == b""
    assert await asyncio.wait_for(cli.read(), TIMEOUT) == b""  # and stays at EOF


async def test_plain_channel_reads_eof(net: Loopback) -> None:
    cli = await net.connect()
    srv = await net.accept()
    assert srv.peer.startswith("127.0.0.1:")
    await exchange(cli, srv)
    await cli.aclose()
    assert await asyncio.wait_for(srv.read(), TIMEOUT) == b""


# --- failures -----------------------------------------------------------------------------


async def test_garbage_instead_of_client_hello_fails_fast(pki: Pki, net: Loopback) -> None:
    cli = await net.connect()
    srv = await net.accept()
    cli.write(b"<?xml version='1.0'?><stream:stream to='a.test' xmlns='jabber:server'>")
    await cli.drain()
    started = time.monotonic()
    with pytest.raises(TlsHandshakeError, match=r"TLS handshake with 127\.0\.0\.1:\d+ failed"):
        await srv.start_tls(
            pki.settings(pki.cert("a", "a.test")), server_side=True, timeout=TIMEOUT
        )
    assert time.monotonic() - started < TIMEOUT / 2
    assert srv.is_closing
    # The peer sees the connection end (after our alert), not a hang.
    with contextlib.suppress(ConnectionError):
        async with asyncio.timeout(TIMEOUT):
            while await cli.read():
                pass


async def test_garbage_instead_of_server_hello_fails_fast(pki: Pki, net: Loopback) -> None:
    cli = await net.connect()
    srv = await net.accept()

    async def answer_with_http() -> None:
        await srv.read()  # the ClientHello
        srv.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await srv.drain()

    answering = asyncio.create_task(answer_with_http())
    with pytest.raises(TlsHandshakeError, match="failed"):
        await cli.start_tls(
            pki.settings(pki.cert("b", "b.test")), server_side=False, server_name="a.test"
        )
    await answering


async def test_silent_peer_times_out(pki: Pki, net: Loopback) -> None:
    await net.connect()
    srv = await net.accept()
    with pytest.raises(TlsHandshakeError, match=r"timed out after 0\.3s"):
        await srv.start_tls(pki.settings(pki.cert("a", "a.test")), server_side=True, timeout=0.3)


async def test_peer_closing_during_handshake(pki: Pki, net: Loopback) -> None:
    cli = await net.connect()
    srv = await net.accept()
    await cli.aclose()
    with pytest.raises(TlsHandshakeError, match="closed the connection during the TLS handshake"):
        await srv.start_tls(
            pki.settings(pki.cert("a", "a.test")), server_side=True, timeout=TIMEOUT
        )


async def test_connect_refused_is_a_channel_error(net: Loopback) -> None:
    closed = net.port
    await net.close()
    with pytest.raises(ChannelError, match=rf"cannot connect to 127\.0\.0\.1:{closed}"):
        await Channel.connect(HOST, closed, timeout=TIMEOUT)


# --- interop with the openssl command-line tool -------------------------------------------


Spawn = Callable[..., Awaitable[asyncio.subprocess.Process]]


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    """Start child processes in their own process group; kill the group on teardown."""
    procs: list[asyncio.subprocess.Process] = []

    async def start(*args: str) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


async def read_line_matching(proc: asyncio.subprocess.Process, pattern: str) -> re.Match[str]:
    assert proc.stdout is not None
    seen: list[str] = []
    async with asyncio.timeout(TIMEOUT):
        while line := (await proc.stdout.readline()).decode(errors="replace"):
            seen.append(line)
            if match := re.search(pattern, line):
                return match
    raise AssertionError(f"no line matching {pattern!r} in {''.join(seen)!r}")


@pytest.mark.interop
@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
async def test_client_against_openssl_s_server(
    pki: Pki, net: Loopback, spawn: Spawn, version: str
) -> None:
    openssl = require_binary("openssl")
    a, b = pki.cert("a", "a.test"), pki.cert("b", "b.test")
    server = await spawn(
        openssl, "s_server", "-accept", f"{HOST}:0", "-cert", str(a), "-key", str(a),
        "-CAfile", str(pki.ca_path), "-verify", "1", "-rev", version,
    )  # fmt: skip
    port = int((await read_line_matching(server, r"^ACCEPT .*:(\d+)")).group(1))

    cli = await net.connect(port)
    info = await cli.start_tls(pki.settings(b), server_side=False, server_name="a.test")
    assert info.version == ("TLSv1.3" if version == "-tls1_3" else "TLSv1.2")
    assert verify_peer(info, "a.test") is CertStatus.VALID
    assert info.peer_chain_der[0] == leaf_der(a)
    cli.write(b"hello from imedge\n")  # -rev: s_server answers each line reversed
    await cli.drain()
    assert await read_exactly(cli, 18) == b"egdemi morf olleh\n"
    # s_server verified our client certificate against the same CA.
    await read_line_matching(server, r"^Verification: OK")


@pytest.mark.interop
async def test_server_against_openssl_s_client(pki: Pki, net: Loopback, spawn: Spawn) -> None:
    openssl = require_binary("openssl")
    a, b = pki.cert("a", "a.test"), pki.cert("b", "b.test")
    client = await spawn(
        openssl, "s_client", "-connect", f"{HOST}:{net.port}", "-servername", "a.test",
        "-CAfile", str(pki.ca_path), "-verify_return_error", "-cert", str(b), "-key", str(b),
        "-alpn", "xmpp-server", "-nocommands",
        "-keymatexport", "EXPORTER-Channel-Binding", "-keymatexportlen", "32",
    )  # fmt: skip
    srv = await net.accept()
    info = await srv.start_tls(pki.settings(a), server_side=True, timeout=TIMEOUT)
    assert info.server_name == "a.test"
    assert info.alpn == "xmpp-server"
    assert verify_peer(info, "b.test") is CertStatus.VALID

    await read_line_matching(client, r"Verify return code: 0 \(ok\)")
    exported = (await read_line_matching(client, r"Keying material: ([0-9A-F]+)")).group(1)
    assert info.tls_exporter is not None
    assert bytes.fromhex(exported) == info.tls_exporter  # RFC 9266 agrees with OpenSSL's tool

    srv.write(b"<from-imedge/>\n")
    await srv.drain()
    await read_line_matching(client, r"<from-imedge/>")
    assert client.stdin is not None
    client.stdin.write(b"<from-openssl/>\n")
    await client.stdin.drain()
    assert await read_exactly(srv, 16) == b"<from-openssl/>\n"
    client.stdin.close()  # s_client ends the session on EOF
    assert await asyncio.wait_for(srv.read(), TIMEOUT) == b""
    assert await asyncio.wait_for(client.wait(), TIMEOUT) == 0
