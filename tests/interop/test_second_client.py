"""A second, unrelated XMPP client (go-sendxmpp, written in Go) against IM Edge."""

from __future__ import annotations

import asyncio
import os

import pytest

from tests.helpers import PASSWORD, Inbox, RunningServer, require_binary

pytestmark = pytest.mark.interop


async def run_sendxmpp(
    server: RunningServer, *args: str, stdin: bytes | None = None
) -> tuple[int, str]:
    binary = require_binary("go-sendxmpp")
    env = {**os.environ, "SSL_CERT_FILE": str(server.pki.ca_path), "HOME": str(server.tmp)}
    proc = await asyncio.create_subprocess_exec(
        binary,
        "-j",
        f"127.0.0.1:{server.c2s_port}",
        "--timeout",
        "10",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    out, _ = await asyncio.wait_for(proc.communicate(stdin), timeout=30)
    return proc.returncode or 0, out.decode(errors="replace")


async def test_go_sendxmpp_logs_in_and_its_message_arrives(server: RunningServer) -> None:
    alice = await server.add_user("alice")
    bob = await server.add_user("bob")
    client = await server.client(alice)
    inbox = Inbox(client)
    code, out = await run_sendxmpp(
        server, "-u", bob, "-p", PASSWORD, alice, stdin=b"hello from go\n"
    )
    assert code == 0, out
    msg = await inbox.get(timeout=10)
    assert msg["body"].strip() == "hello from go"
    assert str(msg["from"].bare) == bob


async def test_go_sendxmpp_with_a_wrong_password_fails_cleanly(server: RunningServer) -> None:
    alice = await server.add_user("alice")
    code, out = await run_sendxmpp(server, "-u", alice, "-p", "wrong", alice, stdin=b"x\n")
    assert code != 0
    assert "auth" in out.lower() or "not-authorized" in out.lower(), out
