"""Crash durability: what the server accepted survives `kill -9` (SQLite and PostgreSQL).

`imedge serve` runs as a real process. Alice and Bob subscribe to each other, Bob goes
offline, Alice sends him messages and then a ping: the server handles a client's stanzas
in order, so when the ping's result arrives every message before it has been accepted.
The server is then killed with SIGKILL (no shutdown, no flush), started again on the same
store, and Bob gets every message exactly once, in order, with both subscriptions intact.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import slixmpp

from tests.helpers import DOMAIN, PASSWORD, Inbox, wait_for
from tests.server.test_cli_e2e import (
    IMEDGE,
    START_TIMEOUT,
    Ports,
    environment,
    imedge,
    port_open,
    ports,
    write_config,
)
from tests.server.test_postgres_server import fresh_database

MESSAGES = 50
ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN}"


@dataclass
class Process:
    """One `imedge serve`, its output going to a file (a full pipe would stall it)."""

    proc: asyncio.subprocess.Process
    log: Path

    async def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        assert self.proc.returncode == -signal.SIGKILL


@contextlib.asynccontextmanager
async def serving(config: Path, port: int, log: Path) -> AsyncIterator[Process]:
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            *IMEDGE,
            "serve",
            "--config",
            str(config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=environment(),
        )
    try:
        async with asyncio.timeout(START_TIMEOUT):
            while proc.returncode is None and not await port_open(port):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.1):
                        await proc.wait()
        if proc.returncode is not None:
            raise AssertionError(f"imedge serve exited with {proc.returncode}:\n{output(log)}")
        yield Process(proc, log)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def output(log: Path) -> str:
    return log.read_text() if log.exists() else "(no output)"


async def login(jid: str, port: int, ca: Path, inbox: str | None = None) -> Any:
    """A logged-in slixmpp client that answers subscriptions only when told to; with
    `inbox`, (client, Inbox) listening from before the initial presence."""
    client = slixmpp.ClientXMPP(jid, PASSWORD)
    client.ca_certs = str(ca)
    client.enable_direct_tls = False
    client.enable_starttls = True
    client.auto_authorize = None
    client.auto_subscribe = False
    for plugin in ("xep_0030", "xep_0199", "xep_0203"):
        client.register_plugin(plugin)
    started: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_start(_: Any) -> None:
        if not started.done():
            started.set_result(None)

    def on_fail(event: Any) -> None:
        if not started.done():
            started.set_exception(AssertionError(f"login of {jid} failed: {event}"))

    client.add_event_handler("session_start", on_start)
    client.add_event_handler("failed_all_auth", on_fail)
    client.add_event_handler("connection_failed", on_fail)
    client.connect("127.0.0.1", port)
    async with asyncio.timeout(10):
        await started
    box = Inbox(client, inbox) if inbox else None
    await client.get_roster()
    client.send_presence()
    await sync(client)
    return (client, box) if inbox else client


async def sync(client: slixmpp.ClientXMPP) -> None:
    """A ping to the server: everything the client sent before has been handled."""
    await client.plugin["xep_0199"].send_ping(DOMAIN, timeout=5)


def kind(type_: str, sender: str) -> Any:
    return lambda p: p["type"] == type_ and p["from"].bare == sender


async def add_user(config: Path, jid: str) -> None:
    code, _out, err = await imedge(
        "user",
        "add",
        jid,
        "--password-stdin",
        "--config",
        str(config),
        input=f"{PASSWORD}\n".encode(),
    )
    assert code == 0, err


def roster_of(client: slixmpp.ClientXMPP) -> dict[str, str]:
    """The roster the client fetched at login (a second fetch would be an empty
    "unchanged" answer to its roster version, RFC 6121 §2.6.3)."""
    roster, me = client.client_roster, client.boundjid.bare
    return {str(jid): roster[jid]["subscription"] for jid in roster if jid != me}


async def crash_and_recover(tmp: Path, config: Path, p: Ports) -> None:
    log = tmp / "serve.log"
    ca = tmp / "data" / "tls" / f"{DOMAIN}.crt"  # made by the server at its first start
    clients: list[slixmpp.ClientXMPP] = []
    try:
        async with serving(config, p.c2s, log) as server:
            await asyncio.gather(add_user(config, ALICE), add_user(config, BOB))
            alice, alice_in = await login(ALICE, p.c2s, ca, "presence")
            bob, bob_in = await login(BOB, p.c2s, ca, "presence")
            clients += [alice, bob]

            # Roster changes: a mutual subscription (RFC 6121 §3.1).
            alice.send_presence(pto=BOB, ptype="subscribe")
            await bob_in.get(kind("subscribe", ALICE))
            bob.send_presence(pto=ALICE, ptype="subscribed")
            bob.send_presence(pto=ALICE, ptype="subscribe")
            await alice_in.get(kind("subscribe", BOB))
            alice.send_presence(pto=BOB, ptype="subscribed")
            await bob_in.get(kind("subscribed", ALICE))
            await wait_for(lambda: alice.client_roster[BOB]["subscription"] == "both")
            await wait_for(lambda: bob.client_roster[ALICE]["subscription"] == "both")

            # Bob goes offline; his unavailable presence says the server saw it.
            bob.disconnect()
            await alice_in.get(kind("unavailable", BOB))

            for i in range(MESSAGES):
                alice.send_message(mto=BOB, mbody=f"message {i}", mtype="chat")
            await sync(alice)  # every message before the ping has been accepted
            await server.kill()
            alice.abort()

        async with serving(config, p.c2s, log):
            bob, bob_in = await login(BOB, p.c2s, ca, "message")
            clients.append(bob)
            got = [(await bob_in.get())["body"] for _ in range(MESSAGES)]
            assert got == [f"message {i}" for i in range(MESSAGES)]
            await bob_in.nothing()  # exactly once
            assert roster_of(bob) == {ALICE: "both"}
            alice = await login(ALICE, p.c2s, ca)
            clients.append(alice)
            assert roster_of(alice) == {BOB: "both"}
    except BaseException:
        print(output(log))  # the server's log, shown by pytest for a failed test
        raise
    finally:
        for c in clients:
            with contextlib.suppress(Exception):
                c.abort()


async def test_accepted_messages_and_roster_survive_kill_9_on_sqlite(tmp_path: Path) -> None:
    p = ports()
    config = write_config(tmp_path, p)
    await crash_and_recover(tmp_path, config, p)
    assert (tmp_path / "data" / "imedge.db").exists()


@pytest.mark.postgres
async def test_accepted_messages_and_roster_survive_kill_9_on_postgresql(tmp_path: Path) -> None:
    p = ports()
    config = write_config(tmp_path, p)
    async with fresh_database() as url:
        with config.open("a") as f:
            f.write(f'\n[database]\nurl = "{url}"\n')
        await crash_and_recover(tmp_path, config, p)
    assert not (tmp_path / "data" / "imedge.db").exists()
