"""RFC 6120 §8.3.3.14: a remote server that does not answer in time is reported as
`remote-server-timeout` (temporary), one that refuses as `remote-server-not-found`.

Nothing drops packets on loopback, so "no answer" is made with a listener whose accept
queue is full (Linux then drops the SYNs: the connect hangs) and with one that accepts
connections but never speaks.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from imedge.server.s2s.channel import Channel, ChannelError
from tests.helpers import Inbox, running_server


@contextlib.contextmanager
def full_backlog() -> Iterator[int]:
    """A port where TCP connects hang: the only accept-queue slot is taken, never accepted."""
    listener = socket.socket()
    filler: socket.socket | None = None
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # Linux queues backlog + 1 = one connection
        port = int(listener.getsockname()[1])
        filler = socket.create_connection(("127.0.0.1", port), timeout=2)
        yield port
    finally:
        if filler is not None:
            filler.close()
        listener.close()


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A port that completes TCP connects (in the kernel) and never sends a byte."""
    listener = socket.socket()
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])
    finally:
        listener.close()


async def test_channel_connect_marks_timeouts() -> None:
    with (
        full_backlog() as port,
        pytest.raises(ChannelError, match=r"timed out after 0\.3s") as hung,
    ):
        await Channel.connect("127.0.0.1", port, timeout=0.3)
    assert hung.value.timed_out is True
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = int(s.getsockname()[1])  # bound, not listening: refused
        with pytest.raises(ChannelError, match="connection refused") as refused:
            await Channel.connect("127.0.0.1", closed, timeout=2)
    assert refused.value.timed_out is False


def overrides(port: int) -> dict[str, object]:
    return {
        "s2s.edge_addresses": {"slow.test": f"127.0.0.1:{port}"},
        "s2s.connect_timeout": 1,
        "s2s.negotiation_timeout": 1,
    }


async def bounce_and_diagnose(tmp_path: Path, port: int) -> tuple[str, str, dict[str, object]]:
    """Message slow.test, then test it through the API: (condition, text, diagnosis)."""
    async with running_server(tmp_path, **overrides(port)) as rs:
        alice = await rs.add_user("alice")
        client = await rs.client(alice)
        errors = Inbox(client, "message_error")
        client.send_message(mto="bob@slow.test", mbody="are you there?", mtype="chat")
        err = await errors.get(timeout=10)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{rs.http_port}",
            headers={"Authorization": f"Bearer {rs.server.admin_token}"},
            timeout=10,
        ) as http:
            r = await http.post("/api/v1/s2s/test", json={"domain": "slow.test"})
            links = (await http.get("/api/v1/s2s/links")).json()
    assert links[0]["state"] == "failed"
    assert r.status_code == 200
    return str(err["error"]["condition"]), str(err["error"]["text"]), r.json()


async def test_a_connect_that_hangs_bounces_remote_server_timeout(tmp_path: Path) -> None:
    with full_backlog() as port:
        condition, text, d = await bounce_and_diagnose(tmp_path, port)
    assert condition == "remote-server-timeout"
    assert text.startswith(f"cannot reach slow.test: connecting to 127.0.0.1:{port} timed out")
    assert d["failed_step"] == "connect"
    assert d["steps"] == [
        {"step": "dns", "ok": True, "detail": d["steps"][0]["detail"]},  # type: ignore[index]
        {"step": "connect", "ok": False, "detail": f"127.0.0.1:{port}: no answer within 1 s"},
    ]
    summary = str(d["summary"])
    assert "no connection could be made" in summary
    assert "Nothing answered: check that the address is right" in summary


async def test_a_peer_that_never_speaks_bounces_remote_server_timeout(tmp_path: Path) -> None:
    with silent_listener() as port:
        condition, text, d = await bounce_and_diagnose(tmp_path, port)
    assert condition == "remote-server-timeout"
    assert "slow.test" in text
    assert d["failed_step"] == "negotiation"
    summary = str(d["summary"])
    assert f"127.0.0.1:{port} accepted the connection, but the negotiation step failed" in summary
    assert "did not speak XMPP in time" in summary
