"""FEDERATION.md: the federation admin API under `/api/v1` — partners, global and per-user
settings, status, connection tests, audit, and explain.

A thin face over `FederationService`: JSON in, policy values to the service, JSON out.
Every change is validated by `imedge.policy` (through the service), recorded with the
actor the guard established (`api:token`, `cli:<user>`, `admin:<jid>`) and applied to live
traffic at once. The service's refusals become 422 with `{"detail": [{"field",
"message"}]}`, an unknown partner 404, and malformed JSON FastAPI's own 422 whose `loc`
names the field; nothing a client sends should produce a 5xx.
"""

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Response, status
from pydantic import BaseModel

from imedge.api.models import (
    AuditEntryOut,
    ChangeEntryOut,
    ExplainIn,
    ExplainOut,
    FederationStatusOut,
    PartnerIn,
    PartnerOut,
    PartnerPatch,
    PartnerStatusOut,
    PartnerTestIn,
    SettingsOut,
    SettingsPatch,
    UserFederationOut,
    UserFederationPatch,
)
from imedge.api.s2s import DiagnosisOut, LinkOut
from imedge.domain.jid import Jid, JidMalformed, prep_domain
from imedge.policy import (
    AuthMethod,
    CertStatus,
    StanzaKind,
    StreamFacts,
    covers,
    decision_as_dict,
    render,
    render_steps,
)
from imedge.policy.domains import is_wildcard
from imedge.server.s2s.diagnose import diagnose
from imedge.server.s2s.gate import stream_facts
from imedge.server.s2s.info import Direction
from imedge.server.s2s.pool import S2SPool
from imedge.services.federation import FederationError, FederationService, NoSuchPartner
from imedge.store.ports import Store

log = logging.getLogger(__name__)

# 422 Unprocessable Content (RFC 9110 §15.5.21), spelt as a number: Starlette renamed its constant.
UNPROCESSABLE = 422

# What a stream of each trust level is assumed to have established, for explain.
STRONG = StreamFacts(auth=AuthMethod.SASL_EXTERNAL, cert=CertStatus.VALID, tls=True)
WEAK = StreamFacts(auth=AuthMethod.DIALBACK, cert=CertStatus.UNTRUSTED, tls=True)


class ProblemOut(BaseModel):
    field: str
    message: str


class ProblemsOut(BaseModel):
    """The change was refused: one entry per field at fault. (Malformed JSON is refused in
    FastAPI's form instead: `{"detail": [{"loc": ["body", field], "msg", "type"}]}`.)"""

    detail: list[ProblemOut]


class MessageOut(BaseModel):
    detail: str


NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": MessageOut, "description": "No partner with that id or name"}
}
REFUSED: dict[int | str, dict[str, Any]] = {
    422: {"model": ProblemsOut, "description": "Refused: each problem names its field"}
}

PartnerRef = Annotated[
    str,
    Path(
        description="The partner's id or its name",
        min_length=1,
        max_length=1000,
        examples=["1", "Contoso"],
    ),
]
UserJid = Annotated[
    str,
    Path(description="The user's bare JID", min_length=1, max_length=3071),
]


def unprocessable(field: str, message: str) -> HTTPException:
    return HTTPException(
        UNPROCESSABLE,
        detail=[{"field": field, "message": message}],
    )


@contextlib.contextmanager
def service_errors() -> Iterator[None]:
    """The service's refusals as HTTP answers."""
    try:
        yield
    except FederationError as exc:
        raise HTTPException(
            UNPROCESSABLE,
            detail=[{"field": p.field, "message": p.message} for p in exc.problems],
        ) from None
    except NoSuchPartner as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None


def federation_router(
    service: FederationService,
    store: Store,
    pool: S2SPool,
    *,
    default_local: str,
    guard: Callable[..., Awaitable[str]],
    flush_audit: Callable[[], Awaitable[None]] | None = None,
) -> APIRouter:
    """The routes of the federation admin API, all behind `guard` (which returns the
    actor recorded with each change)."""
    router = APIRouter(prefix="/api/v1", dependencies=[Depends(guard)])
    Actor = Annotated[str, Depends(guard)]

    # --- partners ---------------------------------------------------------------------

    @router.get(
        "/partners",
        tags=["partners"],
        summary="List the partner table",
        description="Every federated partner, allowed or blocked, with its whole "
        "configuration. A fresh install lists a few well-known public IM providers, "
        "public and not allowed.",
    )
    async def list_partners() -> list[PartnerOut]:
        return [PartnerOut.of(p) for p in await service.partners()]

    @router.post(
        "/partners",
        tags=["partners"],
        status_code=status.HTTP_201_CREATED,
        summary="Add a partner",
        description="Adds a row to the partner table; it applies to live traffic at once. "
        "The row is checked before it is saved: its name must be free, each domain a valid "
        "domain or `*.` pattern listed by no other partner and not served here, and its "
        "authentication settings must leave a way to authenticate (SASL EXTERNAL needs TLS; "
        "with SASL EXTERNAL off, dialback must be allowed).",
        responses=REFUSED,
    )
    async def add_partner(body: PartnerIn, actor: Actor) -> PartnerOut:
        with service_errors():
            saved = await service.add_partner(body.to_partner(), actor)
        log.info("partner %s added by %s", saved.name, actor)
        return PartnerOut.of(saved)

    @router.get(
        "/partners/{ref}",
        tags=["partners"],
        summary="Show a partner",
        description="One partner, by id or by name.",
        responses=NOT_FOUND,
    )
    async def get_partner(ref: PartnerRef) -> PartnerOut:
        with service_errors():
            return PartnerOut.of(service.find(ref))

    @router.patch(
        "/partners/{ref}",
        tags=["partners"],
        summary="Edit a partner",
        description="Changes the fields given and keeps the others. The edited row is "
        "checked as a new one is. Blocking through `allowed: false` closes the partner's "
        "streams, as does dropping a domain for that domain's streams.",
        responses={**NOT_FOUND, **REFUSED},
    )
    async def edit_partner(ref: PartnerRef, body: PartnerPatch, actor: Actor) -> PartnerOut:
        with service_errors():
            saved = await service.edit_partner(ref, body.changes(), actor)
        return PartnerOut.of(saved)

    @router.post(
        "/partners/{ref}/block",
        tags=["partners"],
        summary="Block a partner",
        description="Refuses the partner's traffic from now on and closes its open streams "
        "at once. The row keeps its configuration: unblocking restores it exactly.",
        responses=NOT_FOUND,
    )
    async def block_partner(ref: PartnerRef, actor: Actor) -> PartnerOut:
        with service_errors():
            return PartnerOut.of(await service.block(ref, actor))

    @router.post(
        "/partners/{ref}/unblock",
        tags=["partners"],
        summary="Unblock a partner",
        description="Allows the partner again, with the configuration it had.",
        responses=NOT_FOUND,
    )
    async def unblock_partner(ref: PartnerRef, actor: Actor) -> PartnerOut:
        with service_errors():
            return PartnerOut.of(await service.unblock(ref, actor))

    @router.delete(
        "/partners/{ref}",
        tags=["partners"],
        status_code=status.HTTP_204_NO_CONTENT,
        response_class=Response,
        summary="Remove a partner",
        description="Deletes the row and closes the partner's streams. Its domains are then "
        "unknown: refused, unless open federation accepts them as contacts_only. To stop a "
        "partner but keep its configuration, block it instead.",
        responses=NOT_FOUND,
    )
    async def remove_partner(ref: PartnerRef, actor: Actor) -> Response:
        with service_errors():
            await service.remove(ref, actor)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.get(
        "/partners/{ref}/status",
        tags=["partners"],
        summary="A partner's live streams, links and decisions",
        description="Its live s2s streams (direction, TLS version, how it authenticated, "
        "certificate status), our outbound links to its domains, the last successful and the "
        "last failed connection with the reason, and its federation decisions counted by "
        "verdict and reason.",
        responses=NOT_FOUND,
    )
    async def partner_status(ref: PartnerRef) -> PartnerStatusOut:
        with service_errors():
            return PartnerStatusOut.model_validate(service.partner_status(ref))

    @router.post(
        "/partners/{ref}/test",
        tags=["partners"],
        summary="Test the connection to a partner",
        description="Resolves, connects, negotiates TLS and authenticates to one of the "
        "partner's domains, as an outbound stream would, and reports each step. The domain "
        "is the partner's first one that is not a wildcard, or the one given, which the "
        "partner must cover. Nothing is sent to the partner's users.",
        responses={**NOT_FOUND, **REFUSED},
    )
    async def test_partner(
        ref: PartnerRef, body: Annotated[PartnerTestIn | None, Body()] = None
    ) -> DiagnosisOut:
        with service_errors():
            partner = service.find(ref)
        if body is not None and body.domain is not None:
            try:
                domain = prep_domain(body.domain.strip())
            except JidMalformed as exc:
                raise unprocessable("domain", f"not a valid XMPP domain: {exc}") from None
            if not any(covers(pattern, domain) for pattern in partner.domains):
                raise unprocessable("domain", f"{domain} is not a domain of {partner.name}")
        else:
            exact = [d for d in partner.domains if not is_wildcard(d)]
            if not exact:
                raise unprocessable(
                    "domain",
                    f"{partner.name} lists only wildcard domains: name one of them to test, "
                    'as in {"domain": "xmpp.example.org"}',
                )
            domain = exact[0]
        if domain in service.hosts:
            raise unprocessable("domain", f"{domain} is served by this server itself")
        result = await diagnose(pool, default_local, domain)
        return DiagnosisOut.model_validate(result.as_dict())

    # --- global settings --------------------------------------------------------------

    async def settings_out() -> SettingsOut:
        in_use = await store.federation.count_public_im()
        return SettingsOut.of(await service.settings(), in_use)

    @router.get(
        "/federation/settings",
        tags=["federation"],
        summary="The global federation settings",
        description="Federation on or off, open federation and its limits for discovered "
        "domains, the blocked domains, and public IM licences (granted and in use).",
    )
    async def get_settings() -> SettingsOut:
        return await settings_out()

    @router.patch(
        "/federation/settings",
        tags=["federation"],
        summary="Change global federation settings",
        description="Changes the settings given and keeps the others; applies at once. "
        "Switching federation off closes every s2s stream; blocking a domain closes its "
        "streams. The licence count cannot go below the users who hold public IM.",
        responses=REFUSED,
    )
    async def patch_settings(body: SettingsPatch, actor: Actor) -> SettingsOut:
        with service_errors():
            await service.update_settings(body.changes(), actor)
        return await settings_out()

    @router.post(
        "/federation/enable",
        tags=["federation"],
        summary="Switch federation on",
        description="Server-to-server traffic is accepted and sent again, as the partner "
        "table says.",
    )
    async def enable(actor: Actor) -> SettingsOut:
        with service_errors():
            await service.update_settings({"federation": True}, actor)
        return await settings_out()

    @router.post(
        "/federation/disable",
        tags=["federation"],
        summary="Switch federation off",
        description="No server-to-server traffic at all, in or out: every s2s stream is "
        "closed at once, new ones are refused, and local users' stanzas to other servers "
        "are refused with an error that says so. The partner table is kept.",
    )
    async def disable(actor: Actor) -> SettingsOut:
        with service_errors():
            await service.update_settings({"federation": False}, actor)
        return await settings_out()

    @router.get(
        "/federation/status",
        tags=["federation"],
        summary="Federation at a glance",
        description="Whether federation and open federation are on, how many partners are "
        "listed, allowed and blocked, how many s2s streams are live, and the state of each "
        "outbound link.",
    )
    async def federation_status() -> FederationStatusOut:
        partners = await service.partners()
        cfg = await service.settings()
        allowed = sum(1 for p in partners if p.allowed)
        return FederationStatusOut(
            federation=cfg.federation,
            open_federation=cfg.open_federation,
            partners=len(partners),
            allowed=allowed,
            blocked=len(partners) - allowed,
            live_streams=len(pool.streams()),
            links=[LinkOut.model_validate(s, from_attributes=True) for s in pool.link_status()],
        )

    # --- users ------------------------------------------------------------------------

    async def account(address: str) -> str:
        """The user's bare JID; 422 when the address is not one of ours, 404 when there
        is no such account (administrators may know which accounts exist)."""
        with service_errors():
            await service.user_settings(address)  # validates the address
        jid = Jid.parse(address).bare
        if await store.accounts.get(jid) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no account {jid}")
        return str(jid)

    @router.get(
        "/users/{jid}/federation",
        tags=["users"],
        summary="A user's federation settings",
        description="Whether the user may federate at all and reach public IM providers, "
        "how verified subscription requests from outside the allow list are handled, "
        "whether messages from outside it are refused, and the explicit allow list. The "
        "block list is the user's own XEP-0191 list, edited from their client.",
        responses={
            404: {"model": MessageOut, "description": "No such account"},
            **REFUSED,
        },
    )
    async def get_user(jid: UserJid) -> UserFederationOut:
        user = await account(jid)
        with service_errors():
            return UserFederationOut.of(user, await service.user_settings(user))

    @router.patch(
        "/users/{jid}/federation",
        tags=["users"],
        summary="Change a user's federation settings",
        description="Changes the settings given and keeps the others. Granting public IM "
        "takes a licence: when all are in use it is refused, with field `public_im`.",
        responses={
            404: {"model": MessageOut, "description": "No such account"},
            **REFUSED,
        },
    )
    async def patch_user(
        jid: UserJid, body: UserFederationPatch, actor: Actor
    ) -> UserFederationOut:
        user = await account(jid)
        with service_errors():
            saved = await service.update_user(user, body.changes(), actor)
        return UserFederationOut.of(user, saved)

    # --- audit ------------------------------------------------------------------------

    Since = Annotated[
        float | None,
        Query(description="Only entries at or after this Unix time", allow_inf_nan=False),
    ]
    Limit = Annotated[int, Query(ge=1, le=1000, description="At most this many, newest first")]
    Match = Annotated[str | None, Query(max_length=3071)]

    @router.get(
        "/audit",
        tags=["audit"],
        summary="Recent federation decisions",
        description="The audit log of federation decisions (refusals above all), newest "
        "first, each with its reason code and its explanation. Filter by time, remote "
        "domain, partner name, user (sender or recipient) and reason code.",
    )
    async def audit(
        *,
        since: Since = None,
        until: Annotated[
            float | None,
            Query(description="Only entries at or before this Unix time", allow_inf_nan=False),
        ] = None,
        domain: Match = None,
        partner: Match = None,
        user: Match = None,
        reason: Match = None,
        limit: Limit = 100,
    ) -> list[AuditEntryOut]:
        if flush_audit is not None:
            await flush_audit()  # so that what just happened is there
        entries = await store.audit.query(
            since=since,
            until=until,
            domain=domain,
            partner=partner,
            user=user,
            reason=reason,
            limit=limit,
        )
        return [AuditEntryOut.model_validate(asdict(e)) for e in entries]

    @router.get(
        "/changes",
        tags=["audit"],
        summary="The administrative change log",
        description="Who changed what and when, newest first: partners added, edited, "
        "blocked, unblocked and removed, settings and users' settings, each with its actor "
        "(api:token, cli:<user>, admin:<jid>, ...).",
    )
    async def changes(since: Since = None, limit: Limit = 100) -> list[ChangeEntryOut]:
        entries = await store.audit.changes(since=since, limit=limit)
        return [ChangeEntryOut.model_validate(asdict(e)) for e in entries]

    # --- explain ----------------------------------------------------------------------

    @router.post(
        "/explain",
        tags=["explain"],
        summary="What would happen to a stanza",
        description="Decides on a stanza as the server would now — inbound from a remote "
        "sender to a local user, or outbound from a local user — without sending anything, "
        "and explains the decision step by step. For an inbound stanza the trust of the "
        "stream matters: give it, or the trust of a live stream from the sender's domain is "
        "used, or else weak trust (dialback alone) is assumed and the answer says so.",
        responses=REFUSED,
    )
    async def explain(body: ExplainIn) -> ExplainOut:
        sender = Jid.parse(body.sender)
        facts, assumed = None, None
        if sender.domain not in service.hosts:
            if body.trust is not None:
                facts = STRONG if body.trust == "strong" else WEAK
            else:
                facts = live_facts(sender.domain)
                if facts is None:
                    facts = WEAK
                    assumed = f"weak trust: no live stream from {sender.domain}"
        with service_errors():
            decision = await service.explain(
                body.sender, body.recipient, StanzaKind(body.kind), facts=facts
            )
        return ExplainOut(
            verdict=str(decision.verdict),
            reason=str(decision.reason),
            paragraph=render(decision),
            steps=render_steps(decision),
            decision=decision_as_dict(decision),
            assumed=assumed,
        )

    def live_facts(domain: str) -> StreamFacts | None:
        inbound = [
            s
            for s in pool.streams()
            if s.direction is Direction.INBOUND and domain in s.authenticated
        ]
        # Several streams: a stanza may come on any, so the strongest is what it can get.
        inbound.sort(key=lambda s: not s.strong)
        return stream_facts(inbound[0]) if inbound else None

    return router
