"""Administering federation: the partner table, global and per-user settings, explain.

The CLI, the REST API and the web console all go through this service. Every change is
validated by `imedge.policy` before it is saved, recorded with who made it, and applied
to live traffic at once: the gate gets the new configuration, and blocking or removing a
partner (or switching federation off) closes the affected streams.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from imedge.domain.blocking import is_blocked
from imedge.domain.jid import Jid, JidMalformed
from imedge.policy import (
    AuthMethod,
    CertStatus,
    Decision,
    FederationConfig,
    GlobalSettings,
    InboundContext,
    OutboundContext,
    Partner,
    Problem,
    StanzaKind,
    StreamFacts,
    UserSettings,
    covers,
    decide_inbound,
    decide_outbound,
    default_partners,
    has_errors,
    normalize_allow_entry,
    normalize_partner,
    normalize_settings,
    on_allow_list,
    validate_licences,
    validate_partner,
    validate_settings,
    validate_user_settings,
)
from imedge.store.ports import AlreadyExists, NotFound, Store

log = logging.getLogger(__name__)


class FederationError(ValueError):
    """A change that cannot be made; `problems` name the fields and say why."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = list(problems)


class NoSuchPartner(LookupError):
    pass


@dataclass
class LiveHooks:
    """What the running server does when the configuration changes (no-ops in the CLI)."""

    apply: Callable[[FederationConfig], None] = lambda _cfg: None
    close_domain: Callable[[str, str], int] = lambda _domain, _reason: 0
    close_all: Callable[[str], int] = lambda _reason: 0
    forget_user: Callable[[Jid], None] = lambda _user: None
    live_domains: Callable[[], list[str]] = list
    streams: Callable[[], list[dict[str, object]]] = list  # S2SStreamInfo.as_dict() each
    links: Callable[[], list[dict[str, object]]] = list  # outbound link status each
    decision_counts: Callable[[], dict[tuple[str, str, str], int]] = (
        dict  # (partner, verdict, reason)
    )


class FederationService:
    def __init__(self, store: Store, hosts: frozenset[str], hooks: LiveHooks | None = None) -> None:
        self.store = store
        self.hosts = hosts
        self.hooks = hooks or LiveHooks()
        self.config = FederationConfig()

    async def load(self) -> FederationConfig:
        """Read the table (seeding the default providers on a fresh install) and apply it."""
        if await self.store.federation.seed_defaults(default_partners()):
            log.info("fresh install: listed the well-known public IM providers (not allowed)")
        self.config = FederationConfig(
            await self.store.federation.get_settings(),
            tuple(await self.store.federation.list_partners()),
        )
        self.hooks.apply(self.config)
        return self.config

    # --- partners -------------------------------------------------------------------
    async def partners(self) -> list[Partner]:
        return list(self.config.partners)

    def find(self, name_or_id: str | int) -> Partner:
        for p in self.config.partners:
            if str(p.id) == str(name_or_id) or p.name == name_or_id:
                return p
        raise NoSuchPartner(f"no partner named {name_or_id!r}")

    def _check(self, partner: Partner) -> Partner:
        partner = normalize_partner(partner)
        problems = validate_partner(
            partner,
            self.config.partners,
            local_domains=self.hosts,
            blocked_domains=self.config.settings.blocked_domains,
        )
        if has_errors(problems):
            raise FederationError([p for p in problems if p.severity == "error"])
        for p in problems:
            log.warning("partner %s: %s: %s", partner.name, p.field, p.message)
        return partner

    async def add_partner(self, partner: Partner, actor: str) -> Partner:
        partner = self._check(replace(partner, id=None))
        try:
            saved = await self.store.federation.add_partner(partner, actor)
        except AlreadyExists:
            raise FederationError(
                [Problem("name", f"a partner named {partner.name!r} exists")]
            ) from None
        await self.load()
        return saved

    async def edit_partner(
        self, name_or_id: str | int, changes: dict[str, object], actor: str
    ) -> Partner:
        current = self.find(name_or_id)
        try:
            edited = replace(current, **changes)  # type: ignore[arg-type]
        except TypeError as exc:
            raise FederationError([Problem("partner", str(exc))]) from None
        edited = self._check(edited)
        saved = await self.store.federation.update_partner(edited, actor)
        await self.load()
        if current.allowed and not saved.allowed:
            self._close_partner(current, "the administrator blocked this partner")
        elif set(current.domains) - set(saved.domains):
            self._close_partner(
                replace(current, domains=tuple(set(current.domains) - set(saved.domains))),
                "this domain is no longer a federation partner",
            )
        return saved

    async def block(self, name_or_id: str | int, actor: str) -> Partner:
        current = self.find(name_or_id)
        saved = await self.store.federation.update_partner(
            replace(current, allowed=False), actor, "partner.block"
        )
        await self.load()
        self._close_partner(current, "the administrator blocked this partner")
        return saved

    async def unblock(self, name_or_id: str | int, actor: str) -> Partner:
        current = self.find(name_or_id)
        saved = await self.store.federation.update_partner(
            replace(current, allowed=True), actor, "partner.unblock"
        )
        await self.load()
        return saved

    async def remove(self, name_or_id: str | int, actor: str) -> Partner:
        current = self.find(name_or_id)
        assert current.id is not None
        try:
            await self.store.federation.remove_partner(current.id, actor)
        except NotFound:
            raise NoSuchPartner(f"no partner named {name_or_id!r}") from None
        await self.load()
        self._close_partner(current, "this domain is no longer a federation partner")
        return current

    def _close_partner(self, partner: Partner, reason: str) -> int:
        closed = 0
        for domain in self.hooks.live_domains():
            if any(covers(pattern, domain) for pattern in partner.domains):
                closed += self.hooks.close_domain(domain, reason)
        if closed:
            log.info("closed %d stream(s) of partner %s: %s", closed, partner.name, reason)
        return closed

    def partner_status(self, name_or_id: str | int) -> dict[str, object]:
        """FEDERATION.md §Every decision is explainable: live streams, last success and
        failure of our links to it, and its decisions counted by verdict and reason."""
        partner = self.find(name_or_id)

        def covered(domain: object) -> bool:
            return isinstance(domain, str) and any(covers(p, domain) for p in partner.domains)

        streams = [s for s in self.hooks.streams() if covered(s.get("remote"))]
        links = [link for link in self.hooks.links() if covered(link.get("remote"))]
        successes = [float(str(x["last_success"])) for x in links if x.get("last_success")]
        failures = [x for x in links if x.get("last_failure")]
        last_failure = max(failures, key=lambda x: float(str(x["last_failure"])), default=None)
        counts = [
            {"verdict": verdict, "reason": reason, "count": n}
            for (label, verdict, reason), n in sorted(self.hooks.decision_counts().items())
            if label == partner.label
        ]
        return {
            "partner": partner.name,
            "allowed": partner.allowed,
            "streams": streams,
            "links": links,
            "last_success": max(successes, default=None),
            "last_failure": last_failure.get("last_failure") if last_failure else None,
            "last_failure_reason": last_failure.get("last_error") if last_failure else None,
            "decisions": counts,
        }

    # --- global settings ------------------------------------------------------------
    async def settings(self) -> GlobalSettings:
        return self.config.settings

    async def update_settings(self, changes: dict[str, object], actor: str) -> GlobalSettings:
        current = self.config.settings
        try:
            new = normalize_settings(replace(current, **changes))  # type: ignore[arg-type]
        except TypeError as exc:
            raise FederationError([Problem("settings", str(exc))]) from None
        holders = await self.store.federation.count_public_im()
        problems = validate_settings(new, users_with_public_im=holders)
        if has_errors(problems):
            raise FederationError([p for p in problems if p.severity == "error"])
        await self.store.federation.save_settings(new, actor)
        await self.load()
        if current.federation and not new.federation:
            n = self.hooks.close_all("federation is disabled on this server")
            log.warning("federation disabled by %s: %d stream(s) closed", actor, n)
        if current.blocked_domains != new.blocked_domains:
            for domain in self.hooks.live_domains():
                if self.config.blocked_by(domain):
                    self.hooks.close_domain(domain, "this domain is blocked")
        return new

    # --- users ----------------------------------------------------------------------
    def _user(self, address: str) -> Jid:
        try:
            jid = Jid.parse(address)
        except JidMalformed as exc:
            raise FederationError([Problem("user", f"not a valid address: {exc}")]) from None
        if jid.local is None or jid.domain not in self.hosts:
            raise FederationError([Problem("user", f"{address} is not a user of this server")])
        return jid.bare

    async def user_settings(self, address: str) -> UserSettings:
        return await self.store.federation.get_user_settings(self._user(address))

    async def update_user(
        self, address: str, changes: dict[str, object], actor: str
    ) -> UserSettings:
        jid = self._user(address)
        if await self.store.accounts.get(jid) is None:
            raise FederationError([Problem("user", f"no account {jid}")])
        current = await self.store.federation.get_user_settings(jid)
        try:
            new = replace(current, **changes)  # type: ignore[arg-type]
        except TypeError as exc:
            raise FederationError([Problem("user", str(exc))]) from None
        problems = validate_user_settings(new)
        if not has_errors(problems):
            # Store allow-list entries in their canonical form, like partner domains.
            new = replace(new, allow_list=tuple(normalize_allow_entry(e) for e in new.allow_list))
        if new.public_im and not current.public_im:
            holders = await self.store.federation.count_public_im() + 1
            problems += validate_licences(holders, self.config.settings.public_im_licences)
        if has_errors(problems):
            raise FederationError([p for p in problems if p.severity == "error"])
        await self.store.federation.save_user_settings(jid, new, actor)
        self.hooks.forget_user(jid)
        return new

    # --- explain --------------------------------------------------------------------
    async def explain(
        self,
        sender: str,
        recipient: str,
        kind: StanzaKind,
        *,
        facts: StreamFacts | None = None,
    ) -> Decision:
        """What would happen to such a stanza now, without sending anything."""
        try:
            s, r = Jid.parse(sender), Jid.parse(recipient)
        except JidMalformed as exc:
            raise FederationError([Problem("address", str(exc))]) from None
        s_local, r_local = s.domain in self.hosts, r.domain in self.hosts
        if r_local and not s_local:
            user = (
                await self.store.federation.get_user_settings(r.bare) if r.local else UserSettings()
            )
            item = await self.store.rosters.get_item(r.bare, s.bare) if r.local else None
            # As the gate does: listed roster items only, XEP-0191 matching.
            roster = [item.jid] if item is not None and item.listed else []
            allow = on_allow_list(s, roster=roster, allow=user.allow_list)
            blocked = r.local is not None and is_blocked(
                await self.store.blocking.get_blocklist(r.bare), s
            )
            ctx = InboundContext(
                sender=s,
                recipient=r,
                kind=kind,
                stream=facts
                or StreamFacts(auth=AuthMethod.DIALBACK, cert=CertStatus.UNTRUSTED, tls=True),
                user=user,
                on_allow_list=allow,
                on_block_list=blocked,
            )
            return decide_inbound(ctx, self.config)
        if s_local and not r_local:
            user = (
                await self.store.federation.get_user_settings(s.bare) if s.local else UserSettings()
            )
            return decide_outbound(
                OutboundContext(sender=s, recipient=r, kind=kind, user=user), self.config
            )
        raise FederationError(
            [Problem("address", "one address must be a user of this server and the other remote")]
        )
