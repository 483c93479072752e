"""RFC 6120 peer: Prosody 0.12 on its own loopback address, as in PEERS.md.

Runs `prosody -F` (foreground, its own process group) with a config written here; logs
go to `<dir>/prosody.log` at debug level so tests can assert how streams authenticated
("Accepting SASL EXTERNAL identity", "db:verify"). Certificate mode: `s2s_secure_auth`
and `cafile` = the test CA (SASL EXTERNAL both ways). Dialback mode: no `cafile` (the
system store, which lacks the test CA) and `s2s_secure_auth = false` (XEP-0220).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.peers.common import PEER_PASSWORD, S2SMode, unique_local
from tests.peers.dns import DEFAULT_ZONE, Zone, write_hosts_file
from tests.peers.pki import CertFiles, PrivateCA
from tests.peers.process import (
    PeerError,
    ensure_free,
    log_from,
    log_size,
    rotate_log,
    run_checked,
    spawn,
    stop_group,
    tail,
    wait_listening,
    wait_log,
)

MODULES = (
    "roster",
    "saslauth",
    "tls",
    "dialback",
    "disco",
    "posix",
    "ping",
    "presence",
    "carbons",
    "offline",
)


def _lua(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Prosody:
    """One Prosody process serving `domain` on `address` (c2s 5222, s2s 5269 by default)."""

    def __init__(
        self,
        directory: Path,
        *,
        domain: str,
        address: str,
        ca: PrivateCA,
        mode: S2SMode = S2SMode.CERTIFICATE,
        zone: Zone = DEFAULT_ZONE,
        dns_port: int | None = None,
        c2s_port: int = 5222,
        s2s_port: int = 5269,
        cert: CertFiles | None = None,
        extra_config: Sequence[str] = (),
        binary: str = "prosody",
        ctl_binary: str = "prosodyctl",
    ) -> None:
        self.directory = directory
        self.domain = domain
        self.address = address
        self.mode = mode
        self.zone = zone
        self.dns_port = dns_port
        self.c2s_port = c2s_port
        self.s2s_port = s2s_port
        self.extra_config = tuple(extra_config)
        self.binary = binary
        self.ctl_binary = ctl_binary
        # The CA Prosody trusts for s2s in certificate mode (its `cafile`).
        self.trust_path = ca.ca_path
        directory.mkdir(parents=True, exist_ok=True)
        # `cert` lets a negative test hand Prosody an untrusted or wrong-name identity.
        self.cert = cert or ca.issue(domain, directory=directory / "certs")
        # The CA a client trusts to log in: the one that issued Prosody's certificate.
        self.ca_path = self.cert.ca
        self.config_path = directory / "prosody.cfg.lua"
        self.log_path = directory / "prosody.log"
        self.console_path = directory / "console.log"
        self.hosts_path = directory / "hosts"
        self.pid_path = directory / "prosody.pid"
        self._proc: subprocess.Popen[bytes] | None = None
        self._generation = 0

    # -- configuration ---------------------------------------------------------------

    def _config(self, data_path: Path) -> str:
        ssl_fields = [
            f"certificate = {_lua(str(self.cert.cert))}",
            f"key = {_lua(str(self.cert.key))}",
        ]
        if self.mode is S2SMode.CERTIFICATE:
            ssl_fields.append(f"cafile = {_lua(str(self.trust_path))}")
        forward = f'forward = "127.0.0.1@{self.dns_port}"; ' if self.dns_port else ""
        modules = ", ".join(_lua(m) for m in MODULES)
        lines = [
            "run_as_root = true",
            "daemonize = false",
            f"pidfile = {_lua(str(self.pid_path))}",
            f"data_path = {_lua(str(data_path))}",
            f"admin_socket = {_lua(str(self.directory / 'prosody.sock'))}",
            f"interfaces = {{ {_lua(self.address)} }}",
            "local_interfaces = { }",
            f"c2s_ports = {{ {self.c2s_port} }}",
            f"s2s_ports = {{ {self.s2s_port} }}",
            "c2s_direct_tls_ports = { }",
            "s2s_direct_tls_ports = { }",
            "http_ports = { }",
            "https_ports = { }",
            # libunbound answers NXDOMAIN for `.test` itself: names come from this file,
            # read once at start (PEERS.md).
            f"unbound = {{ resolvconf = false; hoststxt = {_lua(str(self.hosts_path))}; "
            f"{forward}}}",
            f"certificates = {_lua(str(self.cert.cert.parent))}",
            f"ssl = {{ {'; '.join(ssl_fields)} }}",
            f"modules_enabled = {{ {modules} }}",
            'authentication = "internal_hashed"',
            'storage = "internal"',
            "c2s_require_encryption = true",
            "s2s_require_encryption = true",
            f"s2s_secure_auth = {'true' if self.mode is S2SMode.CERTIFICATE else 'false'}",
            f"log = {{ debug = {_lua(str(self.log_path))} }}",
            *self.extra_config,
            "",
            f"VirtualHost {_lua(self.domain)}",
            "",
        ]
        return "\n".join(lines)

    # -- lifecycle -------------------------------------------------------------------

    def start(self, *, fresh: bool = False) -> None:
        """Start Prosody; `fresh` begins with empty data (accounts, rosters, offline)."""
        if self._proc is not None:
            raise PeerError(f"prosody {self.domain} already running")
        if fresh:
            self._generation += 1
        data_path = self.directory / f"data{self._generation}"
        data_path.mkdir(exist_ok=True)
        ensure_free(self.address, (self.c2s_port, self.s2s_port), f"prosody {self.domain}")
        rotate_log(self.log_path)
        write_hosts_file(self.hosts_path, self.zone)
        self.config_path.write_text(self._config(data_path))
        self._proc = spawn(
            [self.binary, "--config", str(self.config_path), "-F"], console=self.console_path
        )
        try:
            wait_listening(
                self.address,
                (self.c2s_port, self.s2s_port),
                proc=self._proc,
                what=f"prosody {self.domain}",
                logs=(self.console_path, self.log_path),
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._proc is not None:
            stop_group(self._proc)
            self._proc = None

    def reset(self) -> None:
        """Restart with empty data: Prosody drops a `subscribed` that changes nothing
        (RFC 6121 §3.1.5 allows it), so subscription tests need fresh rosters."""
        self.stop()
        self.start(fresh=True)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Prosody:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- accounts and logs -----------------------------------------------------------

    def _register_argv(self, local: str, password: str) -> list[str]:
        return [
            self.ctl_binary,
            "--config",
            str(self.config_path),
            "register",
            local,
            self.domain,
            password,
        ]

    def register(self, local: str, password: str = PEER_PASSWORD) -> str:
        """Create `local@domain` (prosodyctl, ~40 ms); return the bare JID."""
        run_checked(self._register_argv(local, password), what=f"prosodyctl register {local}")
        return f"{local}@{self.domain}"

    async def aregister(self, local: str, password: str = PEER_PASSWORD) -> str:
        """`register` without blocking the event loop (for use inside async tests)."""
        argv = self._register_argv(local, password)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
        if proc.returncode != 0:
            raise PeerError(f"prosodyctl register {local} failed: {out.decode(errors='replace')}")
        return f"{local}@{self.domain}"

    async def new_user(self, prefix: str = "user", password: str = PEER_PASSWORD) -> str:
        """A never-used account (fresh roster, no offline messages); returns its JID."""
        return await self.aregister(unique_local(prefix), password)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_mark(self) -> int:
        """The log's current size: pass it to `log_since` to see only what follows."""
        return log_size(self.log_path)

    def log_since(self, mark: int) -> str:
        return log_from(self.log_path, mark)

    async def wait_log(self, text: str, *, since: int = 0, timeout: float = 5.0) -> str:
        """Wait until `text` appears in the log after offset `since`; return that log."""
        return await wait_log(self.log_path, text, since=since, timeout=timeout)

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.console_path, self.log_path, lines=lines)

    def __repr__(self) -> str:
        return f"<Prosody {self.domain} at {self.address} {self.mode}>"


@contextmanager
def running_prosody(directory: Path, **kwargs: object) -> Iterator[Prosody]:
    """`with running_prosody(dir, domain=..., address=..., ca=...) as p:` — started, stopped."""
    peer = Prosody(directory, **kwargs)  # type: ignore[arg-type]
    with peer:
        yield peer


def prosody_binaries() -> tuple[str, str] | None:
    """(prosody, prosodyctl) when installed."""
    a, b = shutil.which("prosody"), shutil.which("prosodyctl")
    return (a, b) if a and b else None
