"""RFC 6121 §2: Roster management (get, set, remove, pushes) with §2.6 versioning.

The roster is the user's list of contacts with their subscription state; the state
itself changes only through presence subscription stanzas (`imedge.features.presence`),
which share this module's roster pushes and its per-user write lock.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

from imedge.domain.errors import StanzaError, StanzaErrorCondition
from imedge.domain.jid import Jid, JidMalformed
from imedge.domain.roster import (
    RosterItem,
    SubscriptionKind,
    is_subscribed_from,
    is_subscribed_to,
    plan_removal,
    roster_visible,
)
from imedge.protocol import ns
from imedge.protocol.element import Element
from imedge.protocol.stanza import IqType
from imedge.server.context import ServerContext
from imedge.server.events import EventBus
from imedge.server.iq import IqRequest, IqTarget
from imedge.server.stanzas import RosterRequested

log = logging.getLogger(__name__)

# RFC 6121 §2.3.3: a server MAY limit the length of names and group names; a value over
# the limit is refused with not-acceptable.
MAX_NAME_CHARS = 1023
MAX_GROUP_CHARS = 1023
MAX_GROUPS = 100


# --- shared with the presence feature ----------------------------------------------------
class RosterLocks:
    """One lock per user, held around each read-modify-write of the user's roster.

    Stanzas for one user arrive on many streams (the user's own resources, contacts'
    subscription stanzas), and the store only reads and writes whole items, so two
    concurrent changes could otherwise lose one of them (say, a name change overwriting
    a subscription just approved). Never hold a lock while routing: a local contact's
    answer comes back through the router and would wait for it.
    """

    def __init__(self) -> None:
        self._locks: dict[Jid, asyncio.Lock] = {}
        self._users: dict[Jid, int] = {}  # holders and waiters, to drop idle locks

    @asynccontextmanager
    async def hold(self, user: Jid) -> AsyncIterator[None]:
        key = user.bare
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            left = self._users[key] - 1
            if left:
                self._users[key] = left
            else:
                del self._users[key]
                del self._locks[key]


# One registry per running server (keyed by its event bus), shared by the roster and the
# presence features, which are installed separately on the same context.
_LOCKS: weakref.WeakKeyDictionary[EventBus, RosterLocks] = weakref.WeakKeyDictionary()


def roster_locks(ctx: ServerContext) -> RosterLocks:
    locks = _LOCKS.get(ctx.bus)
    if locks is None:
        locks = _LOCKS[ctx.bus] = RosterLocks()
    return locks


def item_element(item: RosterItem, *, removed: bool = False) -> Element:
    """The `<item/>` of a roster result or push (RFC 6121 §2.1.2)."""
    el = Element("item", ns.ROSTER, {"jid": str(item.jid)})
    if removed:
        el.attrs["subscription"] = "remove"
        return el
    if item.name:
        el.attrs["name"] = item.name
    el.attrs["subscription"] = str(item.subscription)
    # §2.1.2.2: `ask` shows a pending outbound request; it cannot coexist with `to`.
    if item.pending_out and not is_subscribed_to(item):
        el.attrs["ask"] = "subscribe"
    # §3.4: a pre-approval is shown only while it is not used up.
    if item.approved and not is_subscribed_from(item):
        el.attrs["approved"] = "true"
    for group in item.groups:
        el.sub("group", text=group)
    return el


async def save_item(
    ctx: ServerContext, user: Jid, before: RosterItem | None, after: RosterItem | None, contact: Jid
) -> int:
    """Persist `after` (None: delete) in place of `before`; return the new roster version."""
    if after is not None:
        return await ctx.store.rosters.put_item(user, after)
    if before is not None:
        return await ctx.store.rosters.remove_item(user, contact)
    return await ctx.store.rosters.get_version(user)


def push_item(
    ctx: ServerContext, user: Jid, contact: Jid, item: RosterItem | None, version: int
) -> None:
    """RFC 6121 §2.1.6: send the changed item to every interested resource of the user.

    An item that is gone or not listed any more is pushed as subscription='remove'. The
    push carries no 'from' (it comes from the user's own account), and its result is
    ignored (the router drops IQ results addressed to an account).
    """
    if roster_visible(item):
        assert item is not None
        el = item_element(item)
    else:
        el = item_element(RosterItem(jid=contact.bare), removed=True)
    for session in ctx.sessions.sessions_of(user.bare):
        if not session.interested:
            continue
        iq = Element("iq", ns.CLIENT, {"type": "set", "id": "push" + secrets.token_hex(6)})
        iq.attrs["to"] = str(session.jid)
        query = iq.sub("query", ns.ROSTER, {"ver": str(version)})
        query.add(el.copy())
        session.deliver(iq)


# --- the IQ handlers ---------------------------------------------------------------------
def _parse_set(payload: Element, user: Jid) -> tuple[Jid, bool, str | None, tuple[str, ...]]:
    """Validate a roster set (RFC 6121 §2.3.3, §2.5); return (contact, remove, name, groups)."""
    items = payload.find_all("item", ns.ROSTER)
    if len(items) != 1 or sum(1 for _ in payload.elements()) != 1:
        raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "a roster set has exactly one item")
    item = items[0]
    jid_attr = item.get("jid")
    if jid_attr is None:
        raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "the item has no jid")
    try:
        contact = Jid.parse(jid_attr)
    except JidMalformed as exc:
        raise StanzaError(StanzaErrorCondition.JID_MALFORMED, str(exc)) from None
    if not contact.is_bare:
        # §2.1.2.3: roster items are kept by bare JID; silently dropping the resource
        # would push an item the client did not ask for.
        raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "roster items are bare JIDs")
    if contact == user.bare:
        # COMPAT: like Prosody; the user is implicitly subscribed to itself, and an item
        # for its own JID would feed its own presence back through the state machine.
        raise StanzaError(StanzaErrorCondition.NOT_ALLOWED, "you cannot be your own contact")
    # §2.1.2.5: only subscription='remove' means anything in a set; other values, 'ask'
    # and 'approved' are ignored.
    remove = item.get("subscription") == "remove"
    name = item.get("name") or None
    if name is not None and len(name) > MAX_NAME_CHARS:
        raise StanzaError(StanzaErrorCondition.NOT_ACCEPTABLE, "name too long")
    groups: list[str] = []
    for group_el in item.find_all("group", ns.ROSTER):
        group = group_el.text
        if not group or len(group) > MAX_GROUP_CHARS:
            raise StanzaError(StanzaErrorCondition.NOT_ACCEPTABLE, "empty or too long group name")
        if group in groups:
            raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "duplicate group")
        groups.append(group)
    if len(groups) > MAX_GROUPS:
        raise StanzaError(StanzaErrorCondition.NOT_ACCEPTABLE, "too many groups")
    return contact, remove, name, tuple(groups)


class Roster:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.locks = roster_locks(ctx)

    async def get(self, req: IqRequest) -> Element | None:
        """RFC 6121 §2.1.3 roster get, with §2.6.3 versioning."""
        user = req.from_.bare
        if req.origin is not None and req.origin.jid == req.from_:
            # §2.1.6: a resource that asked for the roster gets the pushes from now on.
            req.origin.interested = True
            await self.ctx.bus.fire(RosterRequested(req.origin))
        version, items = await self.ctx.store.rosters.get_roster(user)
        requested_ver = req.payload.get("ver")
        if requested_ver is not None and requested_ver == str(version):
            # §2.6.3: the client's cached copy is current: an empty result, no pushes.
            return None
        query = Element("query", ns.ROSTER)
        if requested_ver is not None:
            query.attrs["ver"] = str(version)
        for item in items:
            if roster_visible(item):
                query.add(item_element(item))
        return query

    async def set(self, req: IqRequest) -> Element | None:
        """RFC 6121 §2.3 add or update, §2.5 remove."""
        user = req.from_.bare
        contact, remove, name, groups = _parse_set(req.payload, user)
        if remove:
            await self._remove(user, contact)
            return None
        async with self.locks.hold(user):
            before = await self.ctx.store.rosters.get_item(user, contact)
            if before is None:
                after = RosterItem(jid=contact, name=name, groups=groups)
            else:
                # §2.3.2: a set changes name and groups only; the subscription state is
                # the server's to keep.
                after = replace(before, name=name, groups=groups, listed=True)
            version = await self.ctx.store.rosters.put_item(user, after)
        push_item(self.ctx, user, contact, after, version)
        return None

    async def _remove(self, user: Jid, contact: Jid) -> None:
        """RFC 6121 §2.5.2: delete the item, push the removal, end both subscriptions."""
        async with self.locks.hold(user):
            before = await self.ctx.store.rosters.get_item(user, contact)
            if before is None or not before.listed:
                # §2.5.3: nothing to remove.
                raise StanzaError(StanzaErrorCondition.ITEM_NOT_FOUND)
            version = await self.ctx.store.rosters.remove_item(user, contact)
        push_item(self.ctx, user, contact, None, version)
        if before.pending_in:
            await self.ctx.store.subscription_requests.delete_request(user, contact)
        for kind in plan_removal(before):
            if kind is SubscriptionKind.UNSUBSCRIBED and is_subscribed_from(before):
                # §3.2.2: the contact loses the user's presence, so it learns "offline"
                # first, while its server still accepts presence from the user.
                for session in self.ctx.sessions.available_of(user):
                    gone = Element("presence", ns.CLIENT, {"type": "unavailable"})
                    gone.attrs["from"] = str(session.jid)
                    gone.attrs["to"] = str(contact)
                    await self.ctx.router.route(gone, session.jid, contact)
            stanza = Element("presence", ns.CLIENT, {"type": str(kind)})
            stanza.attrs["from"] = str(user)
            stanza.attrs["to"] = str(contact)
            await self.ctx.router.route(stanza, user, contact)
        log.debug("%s removed %s from the roster", user, contact)


async def add_contact(
    ctx: ServerContext, user: Jid, contact: Jid, name: str | None, groups: tuple[str, ...]
) -> RosterItem:
    """RFC 6121 §2.3 done by the server for `user` (the admin API adding a contact on the
    user's behalf): the same item, version and pushes as a roster set from a client."""
    locks = roster_locks(ctx)
    async with locks.hold(user.bare):
        before = await ctx.store.rosters.get_item(user.bare, contact.bare)
        if before is None:
            after = RosterItem(jid=contact.bare, name=name, groups=groups)
        else:
            after = replace(before, name=name, groups=groups, listed=True)
        version = await ctx.store.rosters.put_item(user.bare, after)
    push_item(ctx, user, contact.bare, after, version)
    return after


def install(ctx: ServerContext) -> None:
    roster = Roster(ctx)
    ctx.iq.register(ns.ROSTER, roster.get, types=(IqType.GET,), targets=IqTarget.SELF)
    ctx.iq.register(ns.ROSTER, roster.set, types=(IqType.SET,), targets=IqTarget.SELF)
