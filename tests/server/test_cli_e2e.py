"""`imedge serve` as a real process: start, add a user with the CLI, log in, stop on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import slixmpp

from tests.helpers import PASSWORD, free_port

IMEDGE = (sys.executable, "-m", "imedge")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "IMEDGE_CONFIG"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Ports:
    c2s: int
    c2s_tls: int
    http: int


def write_config(tmp: Path, ports: Ports, domain: str = "localhost") -> Path:
    path = tmp / "imedge.toml"
    path.write_text(
        f"""\
domain = "{domain}"
data_dir = "{tmp / "data"}"

[listen]
c2s = "127.0.0.1:{ports.c2s}"
c2s_tls = "127.0.0.1:{ports.c2s_tls}"
s2s = ""
s2s_tls = ""
http = "127.0.0.1:{ports.http}"
"""
    )
    return path


async def imedge(
    *args: str, input: bytes | None = None, cwd: Path | None = None
) -> tuple[int, str, str]:
    """Run an `imedge` command to its end; return (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *IMEDGE,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=environment(),
    )
    async with asyncio.timeout(START_TIMEOUT):
        out, err = await proc.communicate(input)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def port_open(port: int) -> bool:
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


@dataclass
class Serving:
    proc: asyncio.subprocess.Process

    async def stop(self) -> tuple[int, str, str]:
        """SIGTERM; return (exit status, stdout, stderr) once it has exited."""
        self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(STOP_TIMEOUT):
            out, err = await self.proc.communicate()
        assert self.proc.returncode is not None
        return self.proc.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def serving(*args: str, port: int, cwd: Path | None = None) -> AsyncIterator[Serving]:
    """`imedge serve ARGS`, once `port` accepts connections; killed if the test leaves early."""
    proc = await asyncio.create_subprocess_exec(
        *IMEDGE,
        "serve",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=environment(),
    )
    try:
        async with asyncio.timeout(START_TIMEOUT):
            while not await port_open(port):
                if proc.returncode is not None:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.1):
                        await proc.wait()
        if proc.returncode is not None:
            out, err = await proc.communicate()
            raise StartFailed(proc.returncode, out.decode(), err.decode())
        yield Serving(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()


class StartFailed(Exception):
    def __init__(self, code: int, out: str, err: str) -> None:
        super().__init__(f"imedge serve exited with {code}:\n{out}\n{err}")
        self.code, self.out, self.err = code, out, err


async def login(jid: str, port: int, ca: Path) -> slixmpp.ClientXMPP:
    client = slixmpp.ClientXMPP(jid, PASSWORD)
    client.ca_certs = str(ca)
    client.enable_direct_tls = False
    client.enable_starttls = True
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
    return client


def ports() -> Ports:
    return Ports(free_port(), free_port(), free_port())


async def test_serve_add_user_login_and_stop(tmp_path: Path) -> None:
    p = ports()
    config = write_config(tmp_path, p)
    async with serving("--config", str(config), port=p.c2s) as server:
        code, out, err = await imedge(
            "user",
            "add",
            "alice@localhost",
            "--password-stdin",
            "--config",
            str(config),
            input=f"{PASSWORD}\n".encode(),
        )
        assert code == 0, err
        assert "created account alice@localhost" in out

        # The server made its own self-signed certificate; trust exactly that one.
        cert = tmp_path / "data" / "tls" / "localhost.crt"
        client = await login("alice@localhost", p.c2s, cert)
        disconnected = asyncio.Event()
        client.add_event_handler("disconnected", lambda _: disconnected.set())
        try:
            code, out, err = await server.stop()
            async with asyncio.timeout(STOP_TIMEOUT):
                await disconnected.wait()
        finally:
            client.abort()
    assert code == 0, err
    assert "Traceback" not in err
    assert "IM Edge" in out
    assert f"127.0.0.1:{p.c2s}" in out
    assert f"127.0.0.1:{p.http}" in out
    assert str(tmp_path / "data") in out


async def test_serve_with_a_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "imedge.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n[listen]\nc2s = "127.0.0.1:99999"\n')
    code, _out, err = await imedge("serve", "--config", str(config))
    assert code == 2
    assert "listen.c2s" in err
    assert "Traceback" not in err
    assert not (tmp_path / "data").exists()


async def test_serve_on_a_port_in_use_exits_1_with_one_line(tmp_path: Path) -> None:
    p = ports()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        p.c2s = taken.getsockname()[1]
        code, _out, err = await imedge("serve", "--config", str(write_config(tmp_path, p)))
    assert code == 1
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert f"127.0.0.1', {p.c2s})" in errors[0]
    assert "address already in use" in errors[0]


async def test_serve_with_the_http_port_in_use_exits_1(tmp_path: Path) -> None:
    p = ports()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        p.http = taken.getsockname()[1]
        code, _out, err = await imedge("serve", "--config", str(write_config(tmp_path, p)))
    assert code == 1
    assert "Traceback" not in err
    assert "error: cannot start:" in err
    assert "address already in use" in err


DEFAULT_PORTS = (
    ("0.0.0.0", 5222),
    ("0.0.0.0", 5223),
    ("0.0.0.0", 5269),
    ("0.0.0.0", 5270),
    ("127.0.0.1", 5280),
)


def busy_default_ports() -> list[int]:
    busy = []
    for host, port in DEFAULT_PORTS:
        with socket.socket() as s:
            # As the server does: connections just closed (TIME_WAIT) do not hold a port.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                busy.append(port)
    return busy


async def test_serve_without_any_configuration(tmp_path: Path) -> None:
    busy = busy_default_ports()
    if busy:
        pytest.skip(f"default ports in use on this machine: {busy}")
    try:
        async with serving(port=5222, cwd=tmp_path) as server:
            data = tmp_path / "data"
            assert (data / "imedge.db").is_file()
            assert (data / "tls" / "localhost.crt").is_file()
            assert (data / "tls" / "localhost.key").is_file()
            code, out, err = await server.stop()
    except StartFailed as exc:
        if exc.code == 1 and "already in use" in exc.err:
            pytest.skip(f"a default port was taken meanwhile: {exc.err.strip()}")
        raise
    assert code == 0, err
    assert "built-in defaults" in out
    assert "localhost" in out
    assert ":5222" in out
