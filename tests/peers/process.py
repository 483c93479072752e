"""Child-process plumbing shared by the peers: free ports, waiting for listeners, stopping.

Every peer is started with `start_new_session=True`, so its process group id is its PID
and teardown can signal the whole group by that id (never by a program name).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


class PeerError(RuntimeError):
    """A peer failed to start or to do what it was asked; the message quotes its log."""


def free_port(address: str = "127.0.0.1", *, udp: bool = False) -> int:
    """A port free for TCP (and for UDP too when `udp`) on `address`."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((address, 0))
            port = int(s.getsockname()[1])
        if not udp or port_is_free(address, port, udp=True):
            return port
    raise PeerError(f"no free port on {address}")


def port_is_free(address: str, port: int, *, udp: bool = False) -> bool:
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as s:
        if not udp:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def ensure_free(address: str, ports: Iterable[int], what: str) -> None:
    """Fail loudly when another process (another test's peer?) holds one of our ports."""
    busy = [p for p in ports if not port_is_free(address, p)]
    if busy:
        raise PeerError(f"{what}: {address} port(s) {busy} already in use")


def is_listening(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((address, port)) == 0


def wait_listening(
    address: str,
    ports: Iterable[int],
    *,
    proc: subprocess.Popen[bytes],
    what: str,
    logs: Iterable[Path] = (),
    timeout: float = 15.0,
) -> None:
    """Block until every port accepts TCP connections; raise with the logs if it dies."""
    wanted = list(ports)
    deadline = time.monotonic() + timeout
    while True:
        if all(is_listening(address, p) for p in wanted):
            return
        if proc.poll() is not None:
            raise PeerError(f"{what} exited with {proc.returncode}\n{tail(*logs)}")
        if time.monotonic() > deadline:
            raise PeerError(f"{what} not listening on {address}:{wanted}\n{tail(*logs)}")
        time.sleep(0.05)


def spawn(
    argv: list[str], *, console: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session (process group = its PID), output to `console`."""
    with console.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )


def stop_group(proc: subprocess.Popen[bytes], *, timeout: float = 10.0) -> None:
    """SIGTERM the process group led by `proc`, then SIGKILL what is left."""
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("pid %s ignored SIGTERM; killing its group", proc.pid)
    # Members of the group may outlive the leader (e.g. a shell's children).
    _signal_group(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0): treat it as gone.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def pids_with_arg(marker: str) -> list[int]:
    """PIDs whose command line contains `marker` (a unique per-instance token we chose)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


def tail(*paths: Path, lines: int = 40) -> str:
    out = []
    for p in paths:
        try:
            text = p.read_text(errors="replace").splitlines()
        except OSError:
            continue
        out.append(f"--- {p} (last {lines} lines) ---")
        out.extend(text[-lines:])
    return "\n".join(out)


def run_checked(
    argv: list[str], *, what: str, timeout: float = 30.0, env: dict[str, str] | None = None
) -> str:
    """Run a short command (prosodyctl, ejabberdctl); raise PeerError with its output."""
    res = subprocess.run(  # noqa: PLW1510 - checked by hand to include the output
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        env=env,
    )
    out = (res.stdout + res.stderr).decode(errors="replace")
    if res.returncode != 0:
        raise PeerError(f"{what} failed ({res.returncode}): {' '.join(argv)}\n{out}")
    return out


def rotate_log(path: Path) -> None:
    """Move an earlier run's log aside (`name.1`, `name.2`, ...) so a log holds one run."""
    if not path.exists():
        return
    n = 1
    while path.with_name(f"{path.name}.{n}").exists():
        n += 1
    path.rename(path.with_name(f"{path.name}.{n}"))


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def log_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


async def wait_log(path: Path, text: str, *, since: int = 0, timeout: float = 5.0) -> str:
    """Poll `path` until `text` appears after byte offset `since`; raise with its tail."""
    deadline = time.monotonic() + timeout
    while True:
        got = log_from(path, since)
        if text in got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in {path} after {timeout} s\n{tail(path)}")
        await asyncio.sleep(0.05)
