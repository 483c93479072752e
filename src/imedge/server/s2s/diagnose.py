"""`imedge s2s test DOMAIN`: try to federate with a domain, step by step, and say what failed
in words an administrator can act on."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from imedge.server.s2s.channel import Channel
from imedge.server.s2s.outbound import OutboundStream, S2SFailure
from imedge.server.s2s.pool import S2SPool
from imedge.server.s2s.resolver import ResolutionError

_ADVICE = {
    "dns": "Check the domain's spelling and its DNS records (_xmpp-server._tcp SRV or A/AAAA), "
    "or set an edge address for it.",
    "connect": "Check that their server is running and that port is open in every firewall "
    "and connector on the way.",
    "tls": "Check that both servers speak TLS 1.2 or newer and that their certificate and ours "
    "are in place.",
    "negotiation": "Their server answered but broke off the stream; its log will say why.",
    "authentication": "Their server must either trust our certificate (SASL EXTERNAL) or be able "
    "to connect back to us on port 5269 to check a dialback key.",
    "dialback": "Their server could not confirm our dialback key: it must be able to resolve our "
    "domain and connect back to us on port 5269.",
}


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    ok: bool
    detail: str


@dataclass(slots=True)
class Diagnosis:
    local: str
    remote: str
    steps: list[Step] = field(default_factory=list)
    ok: bool = False
    summary: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "local": self.local,
            "remote": self.remote,
            "ok": self.ok,
            "summary": self.summary,
            "steps": [{"step": s.name, "ok": s.ok, "detail": s.detail} for s in self.steps],
        }


async def diagnose(pool: S2SPool, local: str, remote: str) -> Diagnosis:
    """Resolve, connect, TLS, authenticate: stop at the first step that fails."""
    d = Diagnosis(local, remote)
    settings = pool.settings
    override = settings.edge_addresses.get(remote)
    try:
        resolution = await pool.resolver.explain(remote, override=override)
    except ResolutionError as exc:
        return _fail(d, "dns", exc.reason)
    where = ", ".join(
        f"{t.address or t.host}:{t.port}{' (direct TLS)' if t.direct_tls else ''}"
        for t in resolution.targets
    )
    if not resolution.targets:
        return _fail(d, "dns", f"{resolution.reason}: no server to connect to")
    d.steps.append(Step("dns", True, f"{resolution.reason}: {where}"))
    last: S2SFailure | None = None
    for target in resolution.targets:
        host = target.address or target.host
        try:
            channel = await Channel.connect(host, target.port, timeout=settings.connect_timeout)
        except TimeoutError:
            last = S2SFailure(
                "connect",
                f"no answer from {host}:{target.port} within {settings.connect_timeout:g} s",
            )
            continue
        except OSError as exc:
            last = S2SFailure("connect", str(exc))
            continue
        d.steps.append(Step("connect", True, f"connected to {host}:{target.port}"))
        stream = OutboundStream(channel, settings, pool.tls, local, remote, metrics=pool.metrics)
        try:
            if target.direct_tls:
                await channel.start_tls(
                    pool.tls,
                    server_side=False,
                    server_name=remote,
                    timeout=settings.negotiation_timeout,
                )
            async with asyncio.timeout(settings.negotiation_timeout):
                await stream.negotiate(authenticate=True)
        except S2SFailure as failure:
            _tls_step(d, stream)
            return _fail(d, failure.step, failure.reason)
        except TimeoutError:
            return _fail(
                d, "negotiation", f"{remote} did not finish the stream negotiation in time"
            )
        except Exception as exc:
            return _fail(d, "tls", str(exc))
        finally:
            stream.close()
        _tls_step(d, stream)
        info = stream.info
        d.steps.append(Step("authentication", True, f"authenticated with {info.auth}"))
        d.ok = True
        cert = (
            "a valid certificate"
            if info.strong
            else f"a certificate that did not validate ({info.cert_detail})"
        )
        d.summary = (
            f"{local} can federate with {remote}: {resolution.reason} led to {host}:{target.port}, "
            f"{info.tls_version or 'no TLS'} with {cert}, and {remote} accepted us by {info.auth}."
        )
        return d
    assert last is not None
    return _fail(d, last.step, last.reason)


def _tls_step(d: Diagnosis, stream: OutboundStream) -> None:
    info = stream.info
    if info.tls_version is None:
        return
    ok = info.strong
    detail = f"{info.tls_version}; certificate {info.cert}" + (
        f": {info.cert_detail}" if info.cert_detail else ""
    )
    d.steps.append(
        Step("tls", True, detail if ok else detail + " (dialback can still authenticate)")
    )


def _fail(d: Diagnosis, step: str, reason: str) -> Diagnosis:
    d.steps.append(Step(step, False, reason))
    d.ok = False
    advice = _ADVICE.get(step, "")
    d.summary = f"{d.local} cannot federate with {d.remote}: at the {step} step, {reason}. {advice}"
    d.summary = d.summary.strip()
    return d
