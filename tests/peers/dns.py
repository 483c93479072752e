"""RFC 6120 §3.2 name resolution for tests: a dnsmasq stub and hosts files from one zone.

Every name lives under `.test` (RFC 6761) and is answered on 127.0.0.1 only: dnsmasq runs
with `no-resolv` and no upstream, and `local=/test/` makes unknown `.test` names NXDOMAIN.
Prosody cannot resolve `.test` through DNS (libunbound's built-in `test.` zone), so it and
ejabberd's libc lookups get a hosts file written from the same `Zone` (PEERS.md).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType

from tests.peers.process import PeerError, free_port, spawn, stop_group, tail


class SrvService(StrEnum):
    XMPP_SERVER = "_xmpp-server._tcp"  # RFC 6120 §3.2.1: STARTTLS on connect
    XMPPS_SERVER = "_xmpps-server._tcp"  # XEP-0368: direct TLS


@dataclass(frozen=True, slots=True)
class SrvRecord:
    """`<service>.<domain> SRV priority weight port target`."""

    domain: str
    target: str
    port: int
    service: SrvService = SrvService.XMPP_SERVER
    priority: int = 0
    weight: int = 5

    @property
    def owner(self) -> str:
        return f"{self.service}.{self.domain}"


@dataclass(frozen=True, slots=True)
class Zone:
    """Host (A) records and SRV records, as data; immutable, extend with `with_*`."""

    hosts: Mapping[str, str] = field(default_factory=dict)
    srv: tuple[SrvRecord, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "hosts", MappingProxyType(dict(self.hosts)))

    def with_host(self, name: str, address: str) -> Zone:
        return replace(self, hosts={**self.hosts, name: address})

    def with_srv(self, *records: SrvRecord) -> Zone:
        return replace(self, srv=self.srv + records)

    def without_srv(self, domain: str) -> Zone:
        return replace(self, srv=tuple(r for r in self.srv if r.domain != domain))

    def hosts_text(self) -> str:
        """/etc/hosts syntax: localhost first (libc and Erlang's node names need it)."""
        lines = [f"127.0.0.1\tlocalhost {socket.gethostname()}"]
        lines += [f"{addr}\t{name}" for name, addr in self.hosts.items()]
        return "\n".join(lines) + "\n"

    def dnsmasq_lines(self) -> list[str]:
        lines = [f"host-record={name},{addr}" for name, addr in self.hosts.items()]
        lines += [
            f"srv-host={r.owner},{r.target},{r.port},{r.priority},{r.weight}" for r in self.srv
        ]
        return lines


# The well-known peer names of the interop tests; IM Edge instances take 127.0.0.10+.
DEFAULT_ZONE = Zone(
    hosts={
        "a.test": "127.0.0.2",
        "b.test": "127.0.0.3",
        "c.test": "127.0.0.4",
        "edge1.test": "127.0.0.10",
        "edge2.test": "127.0.0.11",
    },
    srv=tuple(
        SrvRecord(d, d, 5269) for d in ("a.test", "b.test", "c.test", "edge1.test", "edge2.test")
    ),
)


def write_hosts_file(path: Path, zone: Zone) -> Path:
    """Write `zone` as a hosts file (mode 0644: ejabberd's user reads it) and return it.

    Rewrites in place (same inode) so a bind mount of the file sees the new content.
    """
    with path.open("w") as f:
        f.write(zone.hosts_text())
    path.chmod(0o644)
    return path


class DnsStub:
    """dnsmasq on 127.0.0.1:`port` answering `zone` and NXDOMAIN for other `.test` names.

    Use as a context manager (or `start()`/`stop()`). `reload(zone)` restarts it on the
    same port: dnsmasq cannot re-read SRV records in place.
    """

    address = "127.0.0.1"

    def __init__(self, directory: Path, zone: Zone = DEFAULT_ZONE, port: int | None = None):
        self.directory = directory
        self.zone = zone
        self.port = port or free_port(self.address, udp=True)
        directory.mkdir(parents=True, exist_ok=True)
        self.conf_path = directory / "dnsmasq.conf"
        self.pid_path = directory / "dnsmasq.pid"
        self.log_path = directory / "dnsmasq.log"
        self.console_path = directory / "dnsmasq.console"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def nameserver(self) -> str:
        """`host:port`, the form of IM Edge's `[dns] nameservers` entries."""
        return f"{self.address}:{self.port}"

    def _config(self) -> str:
        lines = [
            f"port={self.port}",
            f"listen-address={self.address}",
            "bind-interfaces",
            "no-resolv",
            "no-hosts",
            "no-poll",
            "local=/test/",
            "log-queries",
            f"log-facility={self.log_path}",
            "cache-size=0",
            *self.zone.dnsmasq_lines(),
        ]
        if os.geteuid() == 0:
            lines.append("user=root")  # else it drops to `nobody`, who cannot write the log
        return "\n".join(lines) + "\n"

    def start(self, binary: str = "dnsmasq") -> None:
        self.conf_path.write_text(self._config())
        self._proc = spawn(
            [
                binary,
                "--keep-in-foreground",
                f"--conf-file={self.conf_path}",
                f"--pid-file={self.pid_path}",
            ],
            console=self.console_path,
        )
        self._wait_answering()

    def _wait_answering(self, timeout: float = 5.0) -> None:
        assert self._proc is not None
        # A UDP socket cannot be probed by connect: dnsmasq binds UDP and TCP together.
        deadline = time.monotonic() + timeout
        while True:
            with socket.socket() as s:
                s.settimeout(0.2)
                if s.connect_ex((self.address, self.port)) == 0:
                    return
            if self._proc.poll() is not None:
                raise PeerError(
                    f"dnsmasq exited with {self._proc.returncode}\n"
                    f"{tail(self.console_path, self.log_path)}"
                )
            if time.monotonic() > deadline:
                raise PeerError(f"dnsmasq not answering on {self.nameserver}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._proc is not None:
            stop_group(self._proc)
            self._proc = None

    def reload(self, zone: Zone) -> None:
        """Serve `zone` from now on (restarts dnsmasq on the same port)."""
        self.stop()
        self.zone = zone
        self.start()

    @contextmanager
    def serving(self, zone: Zone) -> Iterator[DnsStub]:
        """Serve `zone` inside the block, then the previous zone again (the stub is
        shared by the session: leave it as found). Start peers inside the block for
        their hosts files to hold `zone` too."""
        previous = self.zone
        self.reload(zone)
        try:
            yield self
        finally:
            self.reload(previous)

    def query_log(self) -> str:
        """What dnsmasq logged (`log-queries`): e.g. assert an SRV query was made."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> DnsStub:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def dns_stub(directory: Path, zone: Zone = DEFAULT_ZONE) -> Iterator[DnsStub]:
    with DnsStub(directory, zone) as stub:
        yield stub
