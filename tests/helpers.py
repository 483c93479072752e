"""Test helpers: an IM Edge server in the test's event loop, and slixmpp clients for it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import slixmpp
import trustme

from imedge.app import Server, build_server
from imedge.config import load_config
from imedge.services.accounts import AccountService

DOMAIN = "localhost"
PASSWORD = "correct horse battery staple"
IN_CI = os.environ.get("CI", "").lower() == "true"


@dataclass
class TestPki:
    ca: trustme.CA
    ca_path: Path
    cert_path: Path
    key_path: Path


def make_pki(tmp: Path, *names: str) -> TestPki:
    ca = trustme.CA()
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
    return TestPki(ca, ca_path, cert_path, key_path)


def config_overrides(tmp: Path, pki: TestPki | None, **extra: Any) -> dict[str, Any]:
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
    pki: TestPki
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

    async def add_user(self, local: str, password: str = PASSWORD) -> str:
        jid = await self.accounts.create(f"{local}@{DOMAIN}", password)
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
        c.connect("127.0.0.1", port)
        self.clients.append(c)
        async with asyncio.timeout(timeout):
            await started
        if start:
            c.send_presence()
            await c.get_roster()
        return c


@contextlib.asynccontextmanager
async def running_server(tmp: Path, **overrides: Any) -> AsyncIterator[RunningServer]:
    pki = make_pki(tmp, DOMAIN)
    config = load_config(None, overrides=config_overrides(tmp, pki, **overrides))
    server = await build_server(config)
    await server.start()
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


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
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

    async def nothing(self, match: Callable[[Any], bool] = lambda _: True, wait: float = 0.5) -> None:
        await asyncio.sleep(wait)
        assert not [i for i in self.items if match(i)], f"unexpected: {self.items}"


logging.getLogger("slixmpp").setLevel(logging.WARNING)
