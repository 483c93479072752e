"""RFC 6120 §3.2 and XEP-0368: where to connect to reach a remote XMPP server.

Order of resolution (RFC 6120 §3.2.1, XEP-0368 §3, RFC 2782):

1. A configured override (a partner's "edge address") wins: no SRV lookup at all.
2. `_xmpps-server._tcp.<domain>` (direct TLS) and `_xmpp-server._tcp.<domain>` (STARTTLS)
   SRV, queried concurrently and merged into one list: XEP-0368 §3 rule 1, "all
   priorities and weights are mixed", then ordered per RFC 2782 (lowest priority first,
   weighted random inside a priority).
3. Only when neither SRV name exists: the A/AAAA records of the domain itself, port 5269
   (RFC 6120 §3.2.1 step 5). A single SRV record with target "." means the service is
   decidedly not available (RFC 2782): no fallback then (XEP-0368 §4 for xmpps-).

Each target's host name is resolved to its addresses here (IPv4 first, both kept), with
the same resolver: when `[dns] nameservers` is set, nothing ever asks the system
resolver. Failures raise ResolutionError, whose `temporary` tells the router to bounce
with remote-server-timeout (try later) or remote-server-not-found (RFC 6120 §8.3.3).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import idna

from imedge.config import DnsConfig

__all__ = [
    "DEFAULT_S2S_PORT",
    "Resolution",
    "ResolutionError",
    "ResolutionSource",
    "S2SResolver",
    "SrvRecord",
    "Target",
    "order_srv",
]

log = logging.getLogger(__name__)

# RFC 6120 §3.2.1 step 5 / IANA: the port of xmpp-server when there is no SRV record.
DEFAULT_S2S_PORT = 5269
# A hostile or broken zone could list hundreds of SRV records; more than this many
# targets are never worth trying for one connection attempt.
MAX_SRV_RECORDS = 16
DEFAULT_TIMEOUT = 5.0
CACHE_SIZE = 512


@dataclass(frozen=True, slots=True)
class Target:
    """One place to connect to: `address` (an IP literal) on `port`.

    `host` is the name it came from (SRV target, the domain, or the override host);
    `direct_tls` means TLS from the first byte (XEP-0368), else STARTTLS. The resolver
    always fills `address`; None would mean "connect by host name" and is never produced
    here, so that no connect falls back to the system resolver.
    """

    host: str
    port: int
    direct_tls: bool
    address: str | None


class ResolutionError(Exception):
    """The domain could not be resolved; `reason` is for logs and `imedge s2s test`.

    `temporary` is True for timeouts and server failures (retry later,
    remote-server-timeout), False when DNS says the domain does not exist
    (remote-server-not-found).
    """

    def __init__(self, reason: str, *, temporary: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.temporary = temporary


class ResolutionSource(StrEnum):
    OVERRIDE = "override"
    IP_LITERAL = "ip_literal"
    SRV = "srv"
    FALLBACK = "fallback"  # no SRV: A/AAAA of the domain, port 5269
    NOT_AVAILABLE = "not_available"  # SRV target "." (RFC 2782)


@dataclass(frozen=True, slots=True)
class Resolution:
    """What `S2SResolver.explain` found; `reason` says how, in an administrator's words."""

    domain: str
    source: ResolutionSource
    targets: tuple[Target, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class SrvRecord:
    """One usable SRV record (RFC 2782); `direct_tls` for _xmpps-server (XEP-0368)."""

    priority: int
    weight: int
    port: int
    host: str
    direct_tls: bool


class _Kind(StrEnum):
    RECORDS = "records"
    ABSENT = "absent"  # NXDOMAIN or no SRV data at that name
    DOT = "dot"  # only target "."
    FAILED = "failed"  # timeout, SERVFAIL, refused: we do not know


@dataclass(frozen=True, slots=True)
class SrvRecordLookup:
    kind: _Kind
    records: tuple[SrvRecord, ...] = ()
    error: str = ""


def order_srv(records: Sequence[SrvRecord], rng: random.Random) -> list[SrvRecord]:
    """RFC 2782 "Usage rules": by ascending priority, weighted random inside a priority."""
    ordered: list[SrvRecord] = []
    for priority in sorted({r.priority for r in records}):
        # Zero-weight records go first so that they are chosen only by a roll of 0.
        remaining = sorted(
            (r for r in records if r.priority == priority), key=lambda r: r.weight != 0
        )
        while remaining:
            roll = rng.randint(0, sum(r.weight for r in remaining))
            running = 0
            for index, record in enumerate(remaining):
                running += record.weight
                if running >= roll:
                    ordered.append(remaining.pop(index))
                    break
    return ordered


class S2SResolver:
    """Resolves remote XMPP domains to connect targets, with its own nameservers.

    `nameservers` are (address, port) pairs; empty means the system resolver
    configuration (/etc/resolv.conf). `timeout` bounds one whole resolution. `rng` makes
    the RFC 2782 weighted choice reproducible in tests.
    """

    def __init__(
        self,
        nameservers: Sequence[tuple[str, int]] = (),
        *,
        timeout: float = DEFAULT_TIMEOUT,
        rng: random.Random | None = None,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self.timeout = timeout
        self._rng = rng or random.Random()
        # configure=False when nameservers are given: /etc/resolv.conf is never read, so
        # there is no path to the system's resolver (tests must not leave loopback).
        try:
            resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        except dns.resolver.NoResolverConfiguration:
            # No usable /etc/resolv.conf: start anyway; every lookup then fails as
            # temporary ("no DNS server") instead of the whole server refusing to start.
            log.warning("no system DNS configuration; set [dns] nameservers for s2s")
            resolver = dns.asyncresolver.Resolver(configure=False)
        if nameservers:
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(address, port) for address, port in nameservers
            ]
        # Two rounds of queries (SRV, then the targets' addresses) share `timeout`: one
        # silent query (some servers drop SRV for _xmpps-) must not use up the budget of
        # the other lookups.
        resolver.timeout = timeout / 2
        resolver.lifetime = timeout / 2
        resolver.search = []
        resolver.use_search_by_default = False
        # dnspython's cache honours each answer's TTL and is bounded (LRU).
        resolver.cache = dns.resolver.LRUCache(cache_size) if cache_size > 0 else None
        self._resolver = resolver

    @classmethod
    def from_config(cls, config: DnsConfig, *, timeout: float = DEFAULT_TIMEOUT) -> S2SResolver:
        return cls([(e.host, e.port) for e in config.nameservers], timeout=timeout)

    async def resolve(
        self, domain: str, *, override: tuple[str, int] | None = None
    ) -> list[Target]:
        """The targets to try in order; [] when DNS says the service is not available."""
        return list((await self.explain(domain, override=override)).targets)

    async def explain(self, domain: str, *, override: tuple[str, int] | None = None) -> Resolution:
        """Like `resolve`, and say where the targets came from (for `imedge s2s test`)."""
        try:
            async with asyncio.timeout(self.timeout):
                resolution = await self._explain(domain, override)
        except TimeoutError:
            log.info("cannot resolve %s: no answer within %s s", domain, self.timeout)
            raise ResolutionError(
                f"DNS gave no complete answer for {domain} within {self.timeout:g} s "
                "(DNS server unreachable or too slow)",
                temporary=True,
            ) from None
        except ResolutionError as exc:
            log.info("cannot resolve %s: %s", domain, exc.reason)
            raise
        log.debug(
            "resolved %s: %s -> %s",
            domain,
            resolution.reason,
            [f"{t.address}:{t.port}{'/tls' if t.direct_tls else ''}" for t in resolution.targets],
        )
        return resolution

    async def _explain(self, domain: str, override: tuple[str, int] | None) -> Resolution:
        if override is not None:
            host, port = override
            targets = await self._targets_of_host(
                _strip_brackets(host), port, direct_tls=False, what="edge address host"
            )
            return Resolution(
                domain,
                ResolutionSource.OVERRIDE,
                tuple(targets),
                f"configured edge address {host}:{port} (DNS SRV not consulted)",
            )
        literal = _ip_literal(domain)
        if literal is not None:
            # A JID domain may be an IP literal (RFC 7622 §3.2): nothing to look up.
            return Resolution(
                domain,
                ResolutionSource.IP_LITERAL,
                (Target(literal, DEFAULT_S2S_PORT, False, literal),),
                f"{domain} is an IP address; port {DEFAULT_S2S_PORT}",
            )
        ace = _a_label(domain)
        xmpps, xmpp = await asyncio.gather(
            self._srv(f"_xmpps-server._tcp.{ace}", direct_tls=True),
            self._srv(f"_xmpp-server._tcp.{ace}", direct_tls=False),
        )
        records = [*xmpps.records, *xmpp.records][:MAX_SRV_RECORDS]
        if records:
            for lookup, service in ((xmpps, "_xmpps-server"), (xmpp, "_xmpp-server")):
                if lookup.kind is _Kind.FAILED:
                    log.warning("%s SRV of %s failed (%s)", service, ace, lookup.error)
            return await self._srv_resolution(domain, records)
        failed = [x for x in (xmpps, xmpp) if x.kind is _Kind.FAILED]
        if failed:
            # Without both answers we cannot tell "no SRV" (fall back) from "SRV we missed".
            raise ResolutionError(
                f"DNS lookup of SRV records for {domain} failed: {failed[0].error}",
                temporary=True,
            )
        if _Kind.DOT in (xmpps.kind, xmpp.kind):
            # RFC 2782: target "." = "decidedly not available"; XEP-0368 §4: an xmpps- "."
            # still forbids the A/AAAA fallback.
            return Resolution(
                domain,
                ResolutionSource.NOT_AVAILABLE,
                (),
                f"{domain} publishes an SRV record with target '.': it does not accept "
                "server-to-server connections",
            )
        targets = await self._targets_of_host(
            ace, DEFAULT_S2S_PORT, direct_tls=False, what="domain", is_domain=True
        )
        return Resolution(
            domain,
            ResolutionSource.FALLBACK,
            tuple(targets),
            f"no _xmpp-server/_xmpps-server SRV records; A/AAAA of {ace} on port "
            f"{DEFAULT_S2S_PORT}",
        )

    async def _srv_resolution(self, domain: str, records: Sequence[SrvRecord]) -> Resolution:
        ordered = order_srv(records, self._rng)
        results = await asyncio.gather(
            *(
                self._targets_of_host(r.host, r.port, direct_tls=r.direct_tls, what="SRV target")
                for r in ordered
            ),
            return_exceptions=True,
        )
        targets: list[Target] = []
        errors: list[ResolutionError] = []
        for result in results:
            if isinstance(result, ResolutionError):
                errors.append(result)
            elif isinstance(result, BaseException):
                raise result
            else:
                targets.extend(result)
        for error in errors:
            log.warning("%s: skipping SRV target: %s", domain, error.reason)
        if not targets:
            raise ResolutionError(
                f"none of the SRV targets of {domain} resolve: "
                + "; ".join(e.reason for e in errors),
                temporary=any(e.temporary for e in errors),
            )
        direct = sum(1 for r in ordered if r.direct_tls)
        return Resolution(
            domain,
            ResolutionSource.SRV,
            tuple(targets),
            f"{len(ordered)} SRV record(s) ({direct} direct TLS, {len(ordered) - direct} STARTTLS)",
        )

    async def _srv(self, name: str, *, direct_tls: bool) -> SrvRecordLookup:
        try:
            answer = await self._resolver.resolve(
                dns.name.from_text(name), dns.rdatatype.SRV, search=False
            )
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return SrvRecordLookup(_Kind.ABSENT)
        except dns.exception.DNSException as exc:
            return SrvRecordLookup(_Kind.FAILED, error=_describe(exc))
        records: list[SrvRecord] = []
        saw_dot = False
        for rdata in answer:
            target = rdata.target
            if target == dns.name.root:
                saw_dot = True
                continue
            records.append(
                SrvRecord(
                    priority=rdata.priority,
                    weight=rdata.weight,
                    port=rdata.port,
                    host=target.to_text(omit_final_dot=True).lower(),
                    direct_tls=direct_tls,
                )
            )
        if records:
            return SrvRecordLookup(_Kind.RECORDS, tuple(records))
        return SrvRecordLookup(_Kind.DOT if saw_dot else _Kind.ABSENT)

    async def _targets_of_host(
        self, host: str, port: int, *, direct_tls: bool, what: str, is_domain: bool = False
    ) -> list[Target]:
        literal = _ip_literal(host)
        if literal is not None:
            return [Target(host, port, direct_tls, literal)]
        ace = _a_label(host)
        name = dns.name.from_text(ace)
        v4, v6 = await asyncio.gather(
            self._addresses(name, dns.rdatatype.A),
            self._addresses(name, dns.rdatatype.AAAA),
        )
        addresses = [a for a in (*v4, *v6) if isinstance(a, str)]
        if addresses:
            return [Target(ace, port, direct_tls, a) for a in addresses]
        problems = [p for p in (*v4, *v6) if isinstance(p, dns.exception.DNSException)]
        if any(isinstance(p, dns.resolver.NXDOMAIN) for p in problems):
            reason = "no such domain" if is_domain else "no such host"
            raise ResolutionError(f"{what} {ace}: {reason} (NXDOMAIN)", temporary=False)
        hard = [p for p in problems if not isinstance(p, dns.resolver.NoAnswer)]
        if hard:
            raise ResolutionError(f"{what} {ace}: {_describe(hard[0])}", temporary=True)
        raise ResolutionError(f"{what} {ace} has no A or AAAA record", temporary=False)

    async def _addresses(
        self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> list[str | dns.exception.DNSException]:
        """The addresses of one family, or the one error that stood in the way."""
        try:
            answer = await self._resolver.resolve(name, rdtype, search=False)
        except dns.exception.DNSException as exc:
            return [exc]
        return [rdata.address for rdata in answer]


def _describe(exc: dns.exception.DNSException) -> str:
    if isinstance(exc, dns.exception.Timeout):
        return "the DNS server did not answer in time"
    if isinstance(exc, dns.resolver.NoNameservers):
        return "no DNS server gave a usable answer (SERVFAIL, refused or unreachable)"
    return f"DNS error: {exc}"


def _strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _ip_literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(_strip_brackets(host)))
    except ValueError:
        return None


def _a_label(domain: str) -> str:
    """The ASCII (A-label) form DNS is queried with (RFC 5890); IDNs are converted."""
    domain = domain.rstrip(".")
    if domain.isascii():
        ace = domain.lower()
    else:
        try:
            ace = idna.encode(domain, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ResolutionError(
                f"{domain!r} is not a valid domain name ({exc})", temporary=False
            ) from None
    try:
        if not ace or any(not label for label in ace.split(".")):
            raise ValueError("empty label")
        dns.name.from_text(f"_xmpps-server._tcp.{ace}")
    except (ValueError, dns.exception.DNSException):
        raise ResolutionError(f"{domain!r} is not a valid domain name", temporary=False) from None
    return ace
