"""RFC 6120 peer: ejabberd 23.01 on its own loopback address, as in PEERS.md.

`ejabberdctl foreground` with a private config dir, a unique Erlang node name and a fixed
distribution port (ERL_DIST_PORT: no epmd), inside `unshare --mount` with its own hosts
file bound over /etc/hosts (ejabberd resolves SRV with Erlang's resolver, configured by
`inetrc` to ask the DNS stub, but the target's address with libc). ejabberd runs as user
`ejabberd`, which cannot enter pytest's 0700 temp dirs: its runtime dir lives under /tmp
(0755, owned by `ejabberd`) and its logs are copied to `directory` when it stops.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from tests.peers.common import PEER_PASSWORD, S2SMode, unique_local
from tests.peers.dns import DEFAULT_ZONE, Zone, write_hosts_file
from tests.peers.pki import CertFiles, PrivateCA
from tests.peers.process import (
    PeerError,
    ensure_free,
    free_port,
    log_from,
    log_size,
    pid_alive,
    pids_with_arg,
    rotate_log,
    run_checked,
    spawn,
    stop_group,
    tail,
    wait_listening,
    wait_log,
)

USER = "ejabberd"
MODULES = (
    "mod_roster",
    "mod_disco",
    "mod_ping",
    "mod_s2s_dialback",
    "mod_stream_mgmt",
    "mod_offline",
    "mod_carboncopy",
)


def _q(value: str) -> str:
    """A YAML scalar: JSON strings are valid YAML flow scalars."""
    return json.dumps(value)


class Ejabberd:
    """One ejabberd node serving `domain` on `address` (c2s 5222, s2s 5269 by default)."""

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
        loglevel: str = "info",  # "debug" logs every stanza, like Prosody's debug log
        dialback_fallback: bool = True,
        ctl_binary: str = "ejabberdctl",
    ) -> None:
        """`dialback_fallback=False` in certificate mode drops mod_s2s_dialback, so a peer
        whose certificate does not validate is refused (like Prosody's s2s_secure_auth);
        by default ejabberd falls back to dialback, as PEERS.md observed."""
        self.directory = directory  # logs are copied here on stop
        self.domain = domain
        self.address = address
        self.mode = mode
        self.zone = zone
        self.dns_port = dns_port
        self.c2s_port = c2s_port
        self.s2s_port = s2s_port
        self.extra_config = tuple(extra_config)
        self.loglevel = loglevel
        self.dialback_fallback = dialback_fallback or mode is S2SMode.DIALBACK
        self.ctl_binary = ctl_binary
        # The CA ejabberd trusts for s2s in certificate mode (its `ca_file`).
        self.trust_path = ca.ca_path
        # The CA a client trusts to log in: the one that issued ejabberd's certificate.
        self.ca_path = cert.ca if cert else ca.ca_path
        directory.mkdir(parents=True, exist_ok=True)
        self._ca = ca
        self._cert = cert
        self.node = f"imedge-{domain.replace('.', '-')}-{uuid.uuid4().hex[:10]}@localhost"
        self.dist_port = 0
        self.runtime: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- paths (valid once started) --------------------------------------------------

    def _rt(self) -> Path:
        if self.runtime is None:
            raise PeerError(f"ejabberd {self.domain} not started")
        return self.runtime

    @property
    def log_path(self) -> Path:
        """The node's console output (then its copy in `directory`).

        The same lines as ejabberd.log, but written at once: ejabberd.log is written with
        `delayed_write` and lags by up to 2 s, which would make log assertions flaky.
        """
        if self.runtime is not None:
            return self.runtime / "logs" / "console.log"
        return self.directory / "console.log"

    @property
    def pid_path(self) -> Path:
        return self._rt() / "ejabberd.pid"

    def _ctl_prefix(self) -> list[str]:
        rt = self._rt()
        return [
            self.ctl_binary,
            "--config-dir",
            str(rt),
            "--config",
            str(rt / "ejabberd.yml"),
            "--logs",
            str(rt / "logs"),
            "--spool",
            str(rt / "db"),
        ]

    # -- configuration ---------------------------------------------------------------

    def _write_config(self, rt: Path) -> None:
        certs = rt / "certs"
        cert = self._cert or self._ca.issue(self.domain, directory=certs)
        if cert.combined.parent != certs:
            certs.mkdir(exist_ok=True)
            shutil.copy(cert.combined, certs / cert.combined.name)
        pem = certs / cert.combined.name
        ca_copy = certs / "trusted-ca.pem"
        shutil.copy(self.trust_path, ca_copy)
        hosts = write_hosts_file(rt / "hosts", self.zone)
        (rt / "logs").mkdir(exist_ok=True)
        (rt / "db").mkdir(exist_ok=True)

        lines = [
            f"hosts: [{_q(self.domain)}]",
            f"loglevel: {self.loglevel}",
            "log_rotate_count: 0",
            f"certfiles: [{_q(str(pem))}]",
        ]
        if self.mode is S2SMode.CERTIFICATE:
            lines.append(f"ca_file: {_q(str(ca_copy))}")
        lines += [
            "listen:",
            f"  - port: {self.c2s_port}",
            f"    ip: {_q(self.address)}",
            "    module: ejabberd_c2s",
            "    starttls_required: true",
            "    max_stanza_size: 262144",
            f"  - port: {self.s2s_port}",
            f"    ip: {_q(self.address)}",
            "    module: ejabberd_s2s_in",
            "    max_stanza_size: 524288",
            "s2s_use_starttls: required",
            "outgoing_s2s_families: [ipv4]",
            # A failed peer is not retried for s2s_max_retry_delay seconds (default 300):
            # keep it short so a test that restarts a peer is not stuck behind it.
            "s2s_max_retry_delay: 5",
            "s2s_dns_timeout: 3",
            "s2s_dns_retries: 1",
            "auth_method: internal",
            "default_db: mnesia",
            "acl:",
            "  local:",
            '    user_regexp: ""',
            "access_rules:",
            "  local:",
            "    allow: local",
            "  c2s:",
            "    allow: all",
            "  s2s:",
            "    allow: all",
            "s2s_access: s2s",
            "modules:",
            *(f"  {m}: {{}}" for m in MODULES if m != "mod_s2s_dialback" or self.dialback_fallback),
        ]
        text = "\n".join(merge_yaml_blocks(lines, self.extra_config)) + "\n"
        (rt / "ejabberd.yml").write_text(text)

        # Erlang's resolver: the hosts file first, then only the stub (never the
        # machine's resolv.conf). `localhost` must resolve or ejabberdctl says nodedown.
        inetrc = [
            "{lookup,[file,dns]}.",
            f'{{host,{{127,0,0,1}},["localhost",{json.dumps(os.uname().nodename)}]}}.',
            f"{{hosts_file,{json.dumps(str(hosts))}}}.",
            '{resolv_conf,""}.',
        ]
        if self.dns_port:
            inetrc.append(f"{{nameserver,{{127,0,0,1}},{self.dns_port}}}.")
        (rt / "inetrc").write_text("\n".join(inetrc) + "\n")

        cfg = [
            f"ERLANG_NODE={self.node}",
            # INET_DIST_INTERFACE would cost every ejabberdctl call an extra `erl` run to
            # parse it; this is the kernel flag it turns into.
            'ERL_OPTIONS="-kernel inet_dist_use_interface {127,0,0,1} -env ERL_CRASH_DUMP_BYTES 0"',
            f"ERL_DIST_PORT={self.dist_port}",
            f"EJABBERD_PID_PATH={rt / 'ejabberd.pid'}",
            f"EJABBERD_CONFIG_PATH={rt / 'ejabberd.yml'}",
            "EJABBERD_BYPASS_WARNINGS=true",
        ]
        (rt / "ejabberdctl.cfg").write_text("\n".join(cfg) + "\n")

    # -- lifecycle -------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        if self._proc is not None:
            raise PeerError(f"ejabberd {self.domain} already running")
        if os.geteuid() != 0:
            raise PeerError("ejabberd peers need root (su to `ejabberd`, unshare --mount)")
        ensure_free(self.address, (self.c2s_port, self.s2s_port), f"ejabberd {self.domain}")
        self.dist_port = free_port()
        rt = Path(tempfile.mkdtemp(prefix=f"imedge-ejabberd-{self.domain}-"))
        self.runtime = rt
        self._write_config(rt)
        rt.chmod(0o755)
        shutil.chown(rt, USER, USER)
        for path in rt.rglob("*"):
            shutil.chown(path, USER, USER)
        script = 'mount --bind "$1" /etc/hosts && shift && exec "$@"'
        argv = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            str(rt / "hosts"),
            *self._ctl_prefix(),
            "foreground",
        ]
        self._proc = spawn(argv, console=rt / "logs" / "console.log")
        try:
            wait_listening(
                self.address,
                (self.c2s_port, self.s2s_port),
                proc=self._proc,
                what=f"ejabberd {self.domain}",
                logs=(rt / "logs" / "console.log", self.log_path),
                timeout=timeout,
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM the real beam PID (from EJABBERD_PID_PATH), then make sure the
        node and everything it started (ctl nodes included) are gone."""
        if self._proc is None:
            return
        rt = self._rt()
        real = _read_pid(rt / "ejabberd.pid")
        if real is not None and pid_alive(real):
            with suppress(ProcessLookupError):
                os.kill(real, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while pid_alive(real) and time.monotonic() < deadline:
                time.sleep(0.05)
        # `su -c` starts a new session, so beam is outside our process group: find any
        # survivor by the unique node name we gave it.
        for pid in pids_with_arg(self.node):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        stop_group(self._proc)
        self._proc = None
        left = [p for p in pids_with_arg(self.node) if pid_alive(p)]
        self._save_logs(rt)
        self.runtime = None
        shutil.rmtree(rt, ignore_errors=True)
        if left:
            raise PeerError(f"ejabberd {self.domain}: processes {left} survived SIGKILL")

    def _save_logs(self, rt: Path) -> None:
        for name in ("ejabberd.log", "error.log", "console.log", "crash.log"):
            src = rt / "logs" / name
            if src.exists():
                rotate_log(self.directory / name)  # keep the runs before a reset()
                shutil.copy(src, self.directory / name)
        for name in ("ejabberd.yml", "inetrc", "ejabberdctl.cfg"):
            with suppress(OSError):
                shutil.copy(rt / name, self.directory / name)

    def reset(self) -> None:
        """Restart with empty data (a new runtime dir: fresh Mnesia, no users)."""
        self.stop()
        self.start()

    @property
    def pid(self) -> int | None:
        """The real beam.smp PID (what SIGTERM stops)."""
        return _read_pid(self.pid_path) if self.runtime else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Ejabberd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- commands, accounts and logs -------------------------------------------------

    def ctl(self, *args: str, timeout: float = 30.0) -> str:
        """Run `ejabberdctl ARGS` against this node (≈0.5 s each: an Erlang VM starts)."""
        return run_checked([*self._ctl_prefix(), *args], what="ejabberdctl", timeout=timeout)

    async def actl(self, *args: str, timeout: float = 30.0) -> str:
        """`ctl` without blocking the event loop."""
        proc = await asyncio.create_subprocess_exec(
            *self._ctl_prefix(),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=timeout)
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            raise PeerError(f"ejabberdctl {' '.join(args)} failed ({proc.returncode}): {text}")
        return text

    def register(self, local: str, password: str = PEER_PASSWORD) -> str:
        self.ctl("register", local, self.domain, password)
        return f"{local}@{self.domain}"

    async def aregister(self, local: str, password: str = PEER_PASSWORD) -> str:
        await self.actl("register", local, self.domain, password)
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
        return log_size(self.log_path)

    def log_since(self, mark: int) -> str:
        return log_from(self.log_path, mark)

    async def wait_log(self, text: str, *, since: int = 0, timeout: float = 5.0) -> str:
        """Wait until `text` appears in the log after offset `since`; return that log."""
        return await wait_log(self.log_path, text, since=since, timeout=timeout)

    def log_tail(self, lines: int = 60) -> str:
        logs = self.log_path.parent
        return tail(logs / "error.log", self.log_path, lines=lines)

    def __repr__(self) -> str:
        return f"<Ejabberd {self.domain} at {self.address} {self.mode}>"


def _top_key(line: str) -> str | None:
    if not line or line[0] in " \t#-":
        return None
    key, sep, _ = line.partition(":")
    return key.strip() if sep else None


def _blocks(lines: Sequence[str]) -> list[tuple[str | None, list[str]]]:
    blocks: list[tuple[str | None, list[str]]] = []
    for line in lines:
        key = _top_key(line)
        if key is not None or not blocks:
            blocks.append((key, [line]))
        else:
            blocks[-1][1].append(line)
    return blocks


def merge_yaml_blocks(defaults: Sequence[str], extra: Sequence[str]) -> list[str]:
    """Top-level YAML keys in `extra` replace the same keys in `defaults` (whole blocks,
    e.g. `modules:` with its children); other extra lines are appended. ejabberd's YAML
    parser refuses duplicate keys, so a plain append could not override a default."""
    extra_blocks = _blocks(extra)
    replaced = {k for k, _ in extra_blocks if k is not None}
    out = [ln for k, block in _blocks(defaults) if k not in replaced for ln in block]
    return out + [ln for _, block in extra_blocks for ln in block]


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


@contextmanager
def running_ejabberd(directory: Path, **kwargs: object) -> Iterator[Ejabberd]:
    peer = Ejabberd(directory, **kwargs)  # type: ignore[arg-type]
    with peer:
        yield peer
