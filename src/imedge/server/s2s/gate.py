"""The federation gate: the one place where the policy of FEDERATION.md meets the traffic.

It asks `imedge.policy` (pure functions) and turns each decision into stream and stanza
actions: admitting or refusing a peer domain on an inbound stream, refusing, approving or
passing an inbound stanza, refusing an outbound one. Every refusal is logged once, counted
per partner and reason, and kept in the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import replace

from prometheus_client import Counter as PromCounter

from imedge.domain.blocking import is_blocked
from imedge.domain.errors import StanzaError
from imedge.domain.jid import Jid
from imedge.domain.roster import RosterItem
from imedge.policy import (
    Answer,
    AuthMethod,
    CertStatus,
    Decision,
    FederationConfig,
    InboundContext,
    OutboundContext,
    Partner,
    Requirement,
    StanzaKind,
    StreamFacts,
    UserSettings,
    Verdict,
    decide_inbound,
    decide_outbound,
    decide_stream,
    on_allow_list,
    render,
    stanza_kind,
)
from imedge.protocol.element import Element
from imedge.protocol.stanza import error_reply, may_bounce
from imedge.server.metrics import Metrics
from imedge.server.router import Router
from imedge.server.s2s.info import S2SStreamInfo
from imedge.server.s2s.settings import PeerRules
from imedge.server.stanzas import StanzaToRemote
from imedge.store.ports import AuditEntry, Store, StoreError

log = logging.getLogger(__name__)

AUDIT_FLUSH_SECONDS = 1.0
AUDIT_BUFFER_MAX = 10000


def stream_facts(info: S2SStreamInfo) -> StreamFacts:
    return StreamFacts(
        auth=AuthMethod(str(info.auth)),
        cert=CertStatus(str(info.cert)) if info.cert is not None else CertStatus.NO_CERTIFICATE,
        tls=info.tls_version is not None,
    )


class FederationGate:
    def __init__(
        self,
        store: Store,
        router: Router,
        metrics: Metrics,
        *,
        hosts: frozenset[str],
        config: FederationConfig | None = None,
        audit_keep: int = 100_000,
        require_tls: bool = True,
        dialback: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.require_tls = require_tls
        self.dialback = dialback
        self.router = router
        self.hosts = hosts
        self.config = config or FederationConfig()
        self.audit_keep = audit_keep
        self.clock = clock
        self._users: dict[Jid, UserSettings] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # discovered domain -> tokens, time
        self._audit: deque[AuditEntry] = deque(maxlen=AUDIT_BUFFER_MAX)
        self._flusher: asyncio.Task[None] | None = None
        self._answering: set[int] = set()  # id() of answers `_answer` is routing now
        self.counts: Counter[tuple[str, str, str]] = Counter()  # (partner, verdict, reason)
        self.decisions = PromCounter(
            "imedge_federation_decisions",
            "Federation decisions by partner, verdict and reason",
            ["partner", "verdict", "reason"],
            registry=metrics.registry,
        )
        self.open_streams: Callable[[str], int] = lambda _domain: 0

    # --- configuration --------------------------------------------------------------
    def update(self, config: FederationConfig) -> None:
        """A new partner table or settings: applies to the next decision."""
        self.config = config

    def forget_user(self, user: Jid) -> None:
        self._users.pop(user.bare, None)

    async def user_settings(self, user: Jid) -> UserSettings:
        bare = user.bare
        cached = self._users.get(bare)
        if cached is None:
            cached = await self.store.federation.get_user_settings(bare)
            if len(self._users) > 50_000:
                self._users.clear()
            self._users[bare] = cached
        return cached

    def partner_for(self, domain: str) -> Partner | None:
        return self.config.partner_for(domain)

    def edge_address(self, domain: str) -> tuple[str, int] | None:
        partner = self.config.partner_for(domain)
        if partner is not None and partner.edge_address is not None:
            return partner.edge_address.host, partner.edge_address.port
        return None

    # --- streams (FEDERATION.md §Inbound 1) ---------------------------------------------
    def admit(self, info: S2SStreamInfo, domain: str) -> str | None:
        """Whether `domain`, just authenticated on an inbound stream, may use it."""
        decision = decide_stream(
            domain, stream_facts(info), self.config, open_streams=self.open_streams(domain)
        )
        self._account(decision, "stream", domain, info.local, "stream")
        if decision.allowed:
            return None
        return decision.text or str(decision.reason)

    def rules(self, domain: str) -> PeerRules:
        """The partner row's authentication requirements (FEDERATION.md §The partner
        table); a domain without a row (open federation) gets the defaults."""
        partner = self.config.partner_for(domain)
        if partner is None:
            return PeerRules(tls_required=self.require_tls, dialback=self.dialback)
        return PeerRules(
            starttls=partner.tls is not Requirement.OFF,
            tls_required=partner.tls is Requirement.REQUIRED,
            sasl_external=partner.sasl_external is not Requirement.OFF,
            sasl_external_required=partner.sasl_external is Requirement.REQUIRED,
            dialback=partner.dialback and self.dialback,
        )

    # --- inbound stanzas (FEDERATION.md §Inbound 2-6) -----------------------------------
    async def inbound(self, stanza: Element, from_: Jid, to: Jid, info: S2SStreamInfo) -> bool:
        """Decide one stanza from a peer; True to route it on, False when handled here."""
        kind = stanza_kind(stanza.name, stanza.attrs.get("type"))
        local_user = to.local is not None
        user = await self.user_settings(to) if local_user else UserSettings()
        allow = blocked = False
        if local_user and kind in (StanzaKind.SUBSCRIBE, StanzaKind.MESSAGE, StanzaKind.IQ):
            allow = await self._on_allow_list(to.bare, from_, user)
            blocked = await self._on_block_list(to.bare, from_)
        ctx = InboundContext(
            sender=from_,
            recipient=to,
            kind=kind,
            stream=stream_facts(info),
            user=user,
            on_allow_list=allow,
            on_block_list=blocked,
            over_rate=self._over_rate(from_.domain),
        )
        decision = decide_inbound(ctx, self.config)
        self._account(decision, "in", str(from_), str(to), str(kind))
        if decision.verdict is Verdict.REJECT:
            await self._refuse_inbound(decision, stanza, from_, to, info)
            return False
        if decision.verdict is Verdict.APPROVE:
            await self._pre_approve(to.bare, from_.bare)
        return True

    def _over_rate(self, domain: str) -> bool:
        """Open federation's stanza rate for a discovered domain (a token bucket per domain,
        burst of two seconds' worth); listed partners are not limited here."""
        if self.config.partner_for(domain) is not None:
            return False
        rate = self.config.settings.open_federation_stanza_rate
        now = self.clock()
        tokens, last = self._buckets.get(domain, (rate * 2, now))
        tokens = min(rate * 2, tokens + (now - last) * rate)
        over = tokens < 1.0
        if len(self._buckets) > 10_000:
            self._buckets.clear()
        self._buckets[domain] = (tokens if over else tokens - 1.0, now)
        return over

    async def _on_allow_list(self, user: Jid, sender: Jid, settings: UserSettings) -> bool:
        item = await self.store.rosters.get_item(user, sender.bare)
        # Only a contact the user has in the roster they see: an unlisted item merely
        # carries a pending request (RFC 6121 §3.1.3) and must not let its sender in.
        roster = [item.jid] if item is not None and item.listed else []
        return on_allow_list(sender, roster=roster, allow=settings.allow_list)

    async def _on_block_list(self, user: Jid, sender: Jid) -> bool:
        return is_blocked(await self.store.blocking.get_blocklist(user), sender)

    async def _refuse_inbound(
        self, decision: Decision, stanza: Element, from_: Jid, to: Jid, info: S2SStreamInfo
    ) -> None:
        if decision.answer is Answer.STANZA_ERROR and decision.error is not None:
            if may_bounce(stanza):
                err = StanzaError(decision.error)
                answer = error_reply(stanza, err.condition, err.text, err.type)
                answer.attrs["from"] = str(to)
                answer.attrs["to"] = str(from_)
                await self._answer(answer, to, from_)
        elif decision.answer is Answer.UNSUBSCRIBED:
            # FEDERATION.md §Inbound 4: a refused request is answered `unsubscribed`.
            answer = Element("presence", "jabber:client", {"type": "unsubscribed"})
            answer.attrs["from"] = str(to.bare)
            answer.attrs["to"] = str(from_.bare)
            await self._answer(answer, to.bare, from_.bare)
        elif decision.answer is Answer.STREAM_ERROR:
            raise_error = decision.as_stream_error()
            if raise_error is not None:
                raise raise_error

    async def _answer(self, answer: Element, from_: Jid, to: Jid) -> None:
        """Send the server's answer to a refused inbound stanza. It goes out in the local
        recipient's name, but it is the policy's own answer, so the outbound rules are not
        applied to it: a recipient without public IM or with federation off must still
        get the refusal back to the sender (FEDERATION.md §Inbound 3-5)."""
        key = id(answer)
        self._answering.add(key)
        try:
            await self.router.route(answer, from_, to)
        finally:
            self._answering.discard(key)

    async def _pre_approve(self, user: Jid, contact: Jid) -> None:
        """FEDERATION.md §Inbound 4: answered by the server as for a known contact, with
        the semantics of a pre-approval (RFC 6121 §3.4), which the presence feature then
        turns into `subscribed` when the request arrives."""
        if await self.store.accounts.get(user) is None:
            return
        item = await self.store.rosters.get_item(user, contact)
        if item is None:
            item = RosterItem(jid=contact, listed=False)
        if not item.approved:
            await self.store.rosters.put_item(user, replace(item, approved=True))

    # --- outbound stanzas (FEDERATION.md §Outbound) -------------------------------------
    async def outbound(self, ev: StanzaToRemote) -> bool:
        """Bus handler at Priority.POLICY: True when the stanza is refused (and answered)."""
        from_, to, stanza = ev.from_, ev.to, ev.stanza
        if from_.domain not in self.hosts:
            return False  # an error or answer the server itself sends on someone's behalf
        if id(stanza) in self._answering:
            return False  # this gate's own answer to a refused inbound stanza
        kind = stanza_kind(stanza.name, stanza.attrs.get("type"))
        user = await self.user_settings(from_) if from_.local is not None else UserSettings()
        contacts = 0
        if kind is StanzaKind.SUBSCRIBE and self.config.partner_for(to.domain) is None:
            contacts = await self.store.rosters.count_contacts_at(to.domain, exclude=to)
        ctx = OutboundContext(
            sender=from_, recipient=to, kind=kind, user=user, contacts_at_domain=contacts
        )
        decision = decide_outbound(ctx, self.config)
        if kind in (StanzaKind.PRESENCE, StanzaKind.SUBSCRIPTION_ANSWER):
            # Presence the server sends on a user's behalf (broadcasts, probes, answers):
            # refused quietly, counted but neither audited nor bounced, or every broadcast
            # to a blocked partner's users would come back to the client as an error.
            self._count(decision)
            return not decision.allowed
        self._account(decision, "out", str(from_), str(to), str(kind))
        if decision.allowed:
            return False
        err = decision.as_stanza_error()
        if err is not None:
            await self.router.bounce(stanza, from_, to, err)
        return True

    # --- accounting -----------------------------------------------------------------
    def _count(self, decision: Decision) -> None:
        key = (decision.partner_label, str(decision.verdict), str(decision.reason))
        self.counts[key] += 1
        self.decisions.labels(*key).inc()

    def _account(
        self, decision: Decision, direction: str, sender: str, recipient: str, kind: str
    ) -> None:
        self._count(decision)
        if decision.allowed:
            return
        text = render(decision)
        log.info("federation refused %s %s -> %s: %s", kind, sender, recipient, decision.reason)
        self._audit.append(
            AuditEntry(
                at=self.clock(),
                direction=direction,
                domain=decision.domain,
                partner=decision.partner.name if decision.partner is not None else None,
                sender=sender,
                recipient=recipient,
                kind=kind,
                verdict=str(decision.verdict),
                reason=str(decision.reason),
                text=text,
            )
        )
        self._ensure_flusher()

    def _ensure_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            with contextlib.suppress(RuntimeError):
                self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(AUDIT_FLUSH_SECONDS)
        await self.flush_audit()

    async def flush_audit(self) -> None:
        """Write buffered audit entries (and keep the log bounded)."""
        if not self._audit:
            return
        batch = list(self._audit)
        self._audit.clear()
        try:
            await self.store.audit.record(batch)
            await self.store.audit.prune(self.audit_keep)
        except StoreError as exc:
            log.warning("could not write %d audit entries: %s", len(batch), exc)

    async def close(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
            with contextlib.suppress(BaseException):
                await self._flusher
        await self.flush_audit()
