"""RFC 6120 §13 (server-to-server) for operators: `imedge s2s test DOMAIN`.

Try to federate with a domain the way the pool would, step by step (resolve, connect,
TLS, authenticate), stop at the first step that fails, and sum it up in one paragraph an
administrator can act on: what worked, what failed and why, and what to check.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from enum import StrEnum

from imedge.policy import AuthMethod
from imedge.server.s2s.channel import Channel, ChannelError
from imedge.server.s2s.outbound import OutboundStream, S2SFailure
from imedge.server.s2s.pool import S2SPool
from imedge.server.s2s.resolver import Resolution, ResolutionError, ResolutionSource, Target

log = logging.getLogger(__name__)


class StepName(StrEnum):
    DNS = "dns"
    CONNECT = "connect"
    TLS = "tls"
    NEGOTIATION = "negotiation"
    AUTHENTICATION = "authentication"


# The steps S2SFailure names (outbound.py), as the operator's steps.
_STEP_OF_FAILURE: dict[str, StepName] = {
    "dns": StepName.DNS,
    "connect": StepName.CONNECT,
    "tls": StepName.TLS,
    "stream": StepName.NEGOTIATION,
    "negotiation": StepName.NEGOTIATION,
    "authentication": StepName.AUTHENTICATION,
    "dialback": StepName.AUTHENTICATION,
}

_AUTH_WORDS = {
    AuthMethod.SASL_EXTERNAL: "SASL EXTERNAL, trusting our certificate",
    AuthMethod.DIALBACK: "Server Dialback (XEP-0220)",
    AuthMethod.NONE: "no authentication",
}


@dataclass(frozen=True, slots=True)
class Step:
    name: StepName
    ok: bool
    detail: str


@dataclass(slots=True)
class Diagnosis:
    local: str
    remote: str
    steps: list[Step] = field(default_factory=list)
    ok: bool = False
    summary: str = ""

    @property
    def failed_step(self) -> StepName | None:
        """The step that ended the test, None when it succeeded."""
        if self.ok:
            return None
        return next((s.name for s in reversed(self.steps) if not s.ok), None)

    def as_dict(self) -> dict[str, object]:
        failed = self.failed_step
        return {
            "local": self.local,
            "remote": self.remote,
            "ok": self.ok,
            "failed_step": str(failed) if failed else None,
            "summary": self.summary,
            "steps": [{"step": str(s.name), "ok": s.ok, "detail": s.detail} for s in self.steps],
        }


def _clean(reason: str) -> str:
    return reason.strip().rstrip(".")


def _target_text(t: Target) -> str:
    return f"{t.address or t.host}:{t.port}" + (" (direct TLS)" if t.direct_tls else "")


def advice(failure: S2SFailure, local: str, remote: str) -> str:
    """What the administrator should check, for a failure at `failure.step`."""
    step = failure.step
    if step == "dns":
        if failure.temporary:
            return (
                "Check that the DNS servers this server uses ([dns] nameservers, else the "
                "system's) are reachable and answer, then try again."
            )
        return (
            f"Check the spelling of {remote} and its DNS records (_xmpp-server._tcp SRV, or "
            f"A/AAAA), or give it an edge address (imedge partner edit NAME --edge host:port, or "
            f"[s2s.edge_addresses] for a domain without a partner row)."
        )
    if step == "connect":
        if failure.temporary:
            return (
                "Nothing answered: check that the address is right, that the host is up, and "
                "that no firewall on the way silently drops connections to that port."
            )
        return (
            f"Check that the XMPP server of {remote} is running and listening on that "
            "address and port, and that no firewall or connector on the way blocks it."
        )
    if step == "tls":
        return (
            "Check that both servers speak TLS 1.2 or newer and have their certificate and "
            "key in place; the other server's log says why the handshake failed."
        )
    if step in ("negotiation", "stream"):
        if failure.temporary:
            return (
                "Something accepted the connection but did not speak XMPP in time: check "
                "that the address is the server-to-server port (5269) of an XMPP server, and "
                "that any connector in front of it forwards the traffic."
            )
        return (
            f"Their server answered but broke off the stream; its log says why (for "
            f"example it does not serve {remote}, or it refuses {local})."
        )
    if step == "dialback" and "rejected our dialback key" in failure.reason:
        return (
            f"{remote} could not confirm our dialback key: it must be able to resolve "
            f"{local} and connect back to us on port 5269."
        )
    return (
        f"{remote} must either trust our certificate (SASL EXTERNAL: add the authority that "
        f"issued ours to its trust store) or accept Server Dialback and be able to connect "
        f"back to {local} on port 5269."
    )


async def diagnose(pool: S2SPool, local: str, remote: str) -> Diagnosis:
    """Resolve, connect, TLS, authenticate: stop at the first step that fails."""
    d = Diagnosis(local, remote)
    settings = pool.settings
    try:
        resolution = await pool.resolver.explain(remote, override=pool.edge_address(remote))
    except ResolutionError as exc:
        return _fail(d, S2SFailure("dns", exc.reason, temporary=exc.temporary), None)
    if not resolution.targets:
        return _fail(d, S2SFailure("dns", f"{resolution.reason}: no server to connect to"), None)
    where = ", ".join(_target_text(t) for t in resolution.targets)
    d.steps.append(Step(StepName.DNS, True, f"{resolution.reason}: {where}"))
    refused: list[str] = []  # "host:port: why", per target tried
    all_timed_out = True
    for target in resolution.targets:
        host = target.address or target.host
        try:
            channel = await Channel.connect(host, target.port, timeout=settings.connect_timeout)
        except ChannelError as exc:
            where = f"{host}:{target.port}"
            why = (
                f"no answer within {settings.connect_timeout:g} s"
                if exc.timed_out
                else str(exc).partition(f"{where}: ")[2] or str(exc)
            )
            refused.append(f"{where}: {why}")
            all_timed_out = all_timed_out and exc.timed_out
            continue
        d.steps.extend(Step(StepName.CONNECT, False, r) for r in refused)
        d.steps.append(Step(StepName.CONNECT, True, f"connected to {host}:{target.port}"))
        return await _negotiate(d, pool, channel, target, resolution)
    # Every target failed: one failed step naming each of them.
    failure = S2SFailure("connect", "; ".join(refused), temporary=all_timed_out)
    return _fail(d, failure, resolution)


async def _negotiate(
    d: Diagnosis, pool: S2SPool, channel: Channel, target: Target, resolution: Resolution
) -> Diagnosis:
    settings = pool.settings
    stream = OutboundStream(channel, settings, pool.tls, d.local, d.remote, metrics=pool.metrics)
    try:
        if target.direct_tls:
            await channel.start_tls(
                pool.tls,
                server_side=False,
                server_name=d.remote,
                timeout=settings.negotiation_timeout,
            )
        async with asyncio.timeout(settings.negotiation_timeout):
            await stream.negotiate(authenticate=True, rules=pool.policy.rules(d.remote))
    except S2SFailure as failure:
        _tls_step(d, stream)
        return _fail(d, failure, resolution)
    except TimeoutError:
        _tls_step(d, stream)
        slow = S2SFailure(
            "negotiation",
            f"{d.remote} did not finish the stream negotiation within "
            f"{settings.negotiation_timeout:g} s",
            temporary=True,
        )
        return _fail(d, slow, resolution)
    except ChannelError as exc:
        return _fail(d, S2SFailure("tls", str(exc), temporary=exc.timed_out), resolution)
    except Exception as exc:
        log.warning("s2s test of %s: unexpected error", d.remote, exc_info=True)
        return _fail(d, S2SFailure("negotiation", f"unexpected error: {exc}"), resolution)
    finally:
        stream.close()
    _tls_step(d, stream)
    info = stream.info
    d.steps.append(
        Step(StepName.AUTHENTICATION, True, f"{d.remote} accepted us by {_AUTH_WORDS[info.auth]}")
    )
    d.ok = True
    if info.tls_version is None:
        tls = "without TLS"
    elif info.strong:
        tls = f"over {info.tls_version}, presenting a valid certificate"
    else:
        tls = (
            f"over {info.tls_version}, but {info.cert_detail or 'its certificate did not validate'}"
            " (weak trust: only dialback authenticates it)"
        )
    d.summary = (
        f"{d.local} can federate with {d.remote}: {_found(resolution, target)} answered {tls}, "
        f"and {d.remote} accepted us by {_AUTH_WORDS[info.auth]}."
    )
    return d


def _found(resolution: Resolution, target: Target) -> str:
    """How we came to `target`, as the subject of a sentence."""
    if resolution.source is ResolutionSource.OVERRIDE:
        return f"its configured edge address {_target_text(target)}"
    return f"{_target_text(target)}, found by {_clean(resolution.reason)},"


def _tls_step(d: Diagnosis, stream: OutboundStream) -> None:
    info = stream.info
    if info.tls_version is None:
        return
    detail = f"{info.tls_version}; certificate {info.cert}" + (
        f": {info.cert_detail}" if info.cert_detail else ""
    )
    if not info.strong:
        detail += " (dialback can still authenticate)"
    d.steps.append(Step(StepName.TLS, True, detail))


def _fail(d: Diagnosis, failure: S2SFailure, resolution: Resolution | None) -> Diagnosis:
    step = _STEP_OF_FAILURE.get(failure.step, StepName.NEGOTIATION)
    reason = _clean(failure.reason)
    d.steps.append(Step(step, False, reason))
    d.ok = False
    if step is StepName.DNS or resolution is None:
        what = f"the DNS lookup failed: {reason}"
    elif step is StepName.CONNECT:
        where = ", ".join(_target_text(t) for t in resolution.targets)
        if resolution.source is ResolutionSource.OVERRIDE:
            found = f"its configured edge address is {where}"
        else:
            found = f"{_clean(resolution.reason)} gave {where}"
        what = f"{found}, but no connection could be made ({reason})"
    else:
        reached = next(
            (
                s.detail.removeprefix("connected to ")
                for s in d.steps
                if s.ok and s.name is StepName.CONNECT
            ),
            "their server",
        )
        tls = next(
            (s.detail.split(";")[0] for s in d.steps if s.ok and s.name is StepName.TLS), None
        )
        what = f"{reached} accepted the connection" + (f" and negotiated {tls}" if tls else "")
        what += f", but the {step} step failed: {reason}"
    d.summary = (
        f"{d.local} cannot federate with {d.remote}: {what}. {advice(failure, d.local, d.remote)}"
    )
    return d
