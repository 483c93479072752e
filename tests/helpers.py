"""Test helpers: an IM Edge server in the test's event loop, and slixmpp clients for it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import slixmpp
import trustme

from imedge.app import Server, build_server
from imedge.config import load_config
from imedge.policy import Filter, Partner
from imedge.services.accounts import AccountService
from imedge.services.federation import FederationError

DOMAIN = "localhost"
PASSWORD = "correct horse battery staple"
IN_CI = os.environ.get("CI", "").lower() == "true"

# The domains s2s tests use. Transport tests need traffic to flow, so by default every
# instance lists the others as one partner with no filtering; tests of the federation
# policy pass their own partner table.
TEST_DOMAINS = (
    "a.test", "b.test", "c.test", "edge1.test", "edge2.test", "down.test", "slow.test",
    "nosuch.test", "z.test", "elsewhere.test", "wrong.test", "nobody.test", "impostor.test",
)  # fmt: skip


def open_partners(local_domain: str) -> tuple[Partner, ...]:
    others = tuple(d for d in TEST_DOMAINS if d != local_domain)
    return (Partner(name="test peers", domains=others, filter=Filter.ALL),)


@dataclass
class PkiFiles:
    ca: trustme.CA | None
    ca_path: Path
    cert_path: Path
    key_path: Path


def make_pki(tmp: Path, *names: str, ca: trustme.CA | None = None) -> PkiFiles:
    ca = ca or trustme.CA()
    tmp.mkdir(parents=True, exist_ok=True)
    cert = ca.issue_cert(*names)
    ca_path = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    cert_path = tmp / "server.crt"
    key_path = tmp / "server.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_path), append=True)
    cert.private_key_pem.write_to_path(str(key_path))
    key_path.chmod(0o600)
    return PkiFiles(ca, ca_path, cert_path, key_path)


def config_overrides(tmp: Path, pki: PkiFiles | None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "domain": DOMAIN,
        "data_dir": str(tmp / "data"),
        "listen.c2s": "127.0.0.1:0",
        "listen.c2s_tls": "127.0.0.1:0",
        "listen.s2s": "",
        "listen.s2s_tls": "",
        "listen.http": "127.0.0.1:0",
        "accounts.scram_iterations": 4096,
    }
    if pki is not None:
        out["tls.cert"] = str(pki.cert_path)
        out["tls.key"] = str(pki.key_path)
    out.update(extra)
    return out


@dataclass
class RunningServer:
    server: Server
    pki: PkiFiles
    tmp: Path
    clients: list[slixmpp.ClientXMPP] = field(default_factory=list)

    @property
    def c2s_port(self) -> int:
        return self.server.bound["c2s"].port

    @property
    def c2s_tls_port(self) -> int:
        return self.server.bound["c2s_tls"].port

    @property
    def http_port(self) -> int:
        return self.server.bound["http"].port

    @property
    def accounts(self) -> AccountService:
        return AccountService(self.server.store.accounts, self.server.router.hosts, 4096)

    @property
    def domain(self) -> str:
        return self.server.config.domain

    async def add_user(self, local: str, password: str = PASSWORD) -> str:
        jid = await self.accounts.create(f"{local}@{self.domain}", password)
        return str(jid)

    async def client(
        self,
        jid: str,
        password: str = PASSWORD,
        *,
        plugins: tuple[str, ...] = ("xep_0030", "xep_0199"),
        mech: str | None = None,
        direct_tls: bool = False,
        start: bool = True,
        timeout: float = 10,
        setup: Callable[[slixmpp.ClientXMPP], None] | None = None,
    ) -> slixmpp.ClientXMPP:
        """A connected, authenticated slixmpp client that has sent its initial presence."""
        c = slixmpp.ClientXMPP(jid, password, sasl_mech=mech)
        c.ca_certs = str(self.pki.ca_path)
        c.enable_direct_tls = direct_tls
        c.enable_starttls = not direct_tls
        for p in plugins:
            c.register_plugin(p)
        if setup:
            setup(c)
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_start(_: Any) -> None:
            if not started.done():
                started.set_result(None)

        def on_fail(ev: Any) -> None:
            if not started.done():
                started.set_exception(AssertionError(f"login of {jid} failed: {ev}"))

        c.add_event_handler("session_start", on_start)
        c.add_event_handler("failed_all_auth", on_fail)
        c.add_event_handler("connection_failed", on_fail)
        port = self.c2s_tls_port if direct_tls else self.c2s_port
        c.connect(self.server.bound["c2s"].host, port)
        self.clients.append(c)
        async with asyncio.timeout(timeout):
            await started
        if start:
            c.send_presence()
            await c.get_roster()
        return c


@contextlib.asynccontextmanager
async def running_server(
    tmp: Path, *, partners: Sequence[Partner] | None = None, **overrides: Any
) -> AsyncIterator[RunningServer]:
    pki = make_pki(tmp, DOMAIN)
    config = load_config(None, overrides=config_overrides(tmp, pki, **overrides))
    server = await build_server(config)
    await server.start()
    for partner in open_partners(DOMAIN) if partners is None else partners:
        with contextlib.suppress(FederationError):  # a restart on the same data keeps them
            await server.federation.add_partner(partner, "test")
    rs = RunningServer(server, pki, tmp)
    try:
        yield rs
    finally:
        for c in rs.clients:
            with contextlib.suppress(Exception):
                c.abort()
        await server.stop()
        await server.store.close()


@contextlib.asynccontextmanager
async def federated_server(
    tmp: Path,
    domain: str,
    address: str,
    ca: trustme.CA,
    *,
    partners: Sequence[Partner] | None = None,
    **overrides: Any,
) -> AsyncIterator[RunningServer]:
    """An IM Edge for `domain` on `address` (c2s 5222, s2s 5269), its certificate from `ca`,
    trusting `ca` for its peers."""
    pki = make_pki(tmp / "pki", domain, f"*.{domain}", ca=ca)
    async with imedge_instance(tmp, domain, address, pki, partners=partners, **overrides) as rs:
        yield rs


@contextlib.asynccontextmanager
async def imedge_instance(
    tmp: Path,
    domain: str,
    address: str,
    pki: PkiFiles,
    *,
    partners: Sequence[Partner] | None = None,
    **overrides: Any,
) -> AsyncIterator[RunningServer]:
    """An IM Edge for `domain` listening on `address` (c2s 5222, s2s 5269, as real peers
    expect), with the given certificate, trusting `pki.ca_path` for its peers, and the
    given partner table."""
    settings = config_overrides(tmp, pki, domain=domain)
    settings.update(
        {
            "listen.c2s": f"{address}:5222",
            "listen.c2s_tls": f"{address}:0",
            "listen.s2s": f"{address}:5269",
            "listen.http": f"{address}:0",
            "tls.ca": str(pki.ca_path),
            "s2s.connect_timeout": 3,
            "s2s.negotiation_timeout": 10,
        }
    )
    settings.update(overrides)
    server = await build_server(load_config(None, overrides=settings))
    await server.start()
    for partner in open_partners(domain) if partners is None else partners:
        with contextlib.suppress(FederationError):  # a restart on the same data keeps them
            await server.federation.add_partner(partner, "test")
    rs = RunningServer(server, pki, tmp)
    try:
        yield rs
    finally:
        for c in rs.clients:
            with contextlib.suppress(Exception):
                c.abort()
        await server.stop()
        await server.store.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(
    predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition"
) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


class Inbox:
    """Collects what a slixmpp client receives, to await it in tests."""

    def __init__(self, client: slixmpp.ClientXMPP, event: str = "message") -> None:
        self.items: list[Any] = []
        self._cond = asyncio.Condition()
        client.add_event_handler(event, self._on)

    async def _on(self, item: Any) -> None:
        async with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    async def get(self, match: Callable[[Any], bool] = lambda _: True, timeout: float = 5.0) -> Any:
        async with asyncio.timeout(timeout), self._cond:
            while True:
                for i, item in enumerate(self.items):
                    if match(item):
                        return self.items.pop(i)
                await self._cond.wait()

    async def nothing(
        self, match: Callable[[Any], bool] = lambda _: True, wait: float = 0.5
    ) -> None:
        await asyncio.sleep(wait)
        assert not [i for i in self.items if match(i)], f"unexpected: {self.items}"


logging.getLogger("slixmpp").setLevel(logging.WARNING)


class RawClient:
    """A bare-hands XMPP client over asyncio streams, for precise protocol tests."""

    HEADER = (
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams' to='{to}' version='1.0'>"
    )

    opened: list[RawClient] = []  # closed by the autouse fixture in tests/conftest.py

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = b""
        RawClient.opened.append(self)

    @classmethod
    async def connect(cls, port: int, ssl_ctx: Any = None, host: str = "127.0.0.1") -> RawClient:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=ssl_ctx, server_hostname=DOMAIN if ssl_ctx else None
        )
        return cls(reader, writer)

    async def send(self, data: bytes | str) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)
        await self.writer.drain()

    async def open_stream(self, to: str = DOMAIN) -> bytes:
        await self.send(self.HEADER.format(to=to))
        return await self.read_until(b"</stream:features>")

    async def read_until(self, marker: bytes, timeout: float = 5.0) -> bytes:
        """Read until `marker` appears; return everything up to and including it."""
        async with asyncio.timeout(timeout):
            while marker not in self.buf:
                chunk = await self.reader.read(65536)
                if not chunk:
                    raise EOFError(f"closed before {marker!r}; got {self.buf!r}")
                self.buf += chunk
        idx = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:idx], self.buf[idx:]
        return out

    async def read_to_eof(self, timeout: float = 5.0) -> bytes:
        async with asyncio.timeout(timeout):
            while chunk := await self.reader.read(65536):
                self.buf += chunk
        out, self.buf = self.buf, b""
        return out

    async def starttls(self, ca_path: Path) -> None:
        import ssl

        await self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        await self.read_until(b"<proceed")
        await self.read_until(b"/>")
        ctx = ssl.create_default_context(cafile=str(ca_path))
        await self.writer.start_tls(ctx, server_hostname=DOMAIN)

    async def login_plain(self, user: str, password: str) -> None:
        import base64

        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        await self.send(
            f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
        )
        got = await self.read_until(b"</success>")
        assert b"<success" in got, got
        await self.open_stream()

    async def bind(self, resource: str = "raw") -> None:
        await self.send(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>{resource}</resource></bind></iq>"
        )
        await self.read_until(b"</iq>")

    def close(self) -> None:
        self.writer.close()

    @classmethod
    async def close_all(cls) -> None:
        for raw in cls.opened:
            raw.writer.close()
            with contextlib.suppress(Exception):
                await raw.writer.wait_closed()
        cls.opened.clear()


def require_binary(name: str) -> str:
    """The path of a peer program; skip without it, but fail in CI (never silently skip)."""
    import shutil

    import pytest

    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if Path(p).exists()), None
    )
    if path is None:
        msg = f"{name} is not installed (make test installs it when run as root)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return path
