"""XEP-0191 block lists: which entries cover an address (XEP-0016 §2.1 matching)."""

from __future__ import annotations

from collections.abc import Iterable

from imedge.domain.jid import Jid


def matches(item: Jid, jid: Jid) -> bool:
    """Whether the block-list `item` covers `jid`: a full JID only itself, a bare JID every
    resource of it, a domain every address at that domain."""
    if item.resource is not None:
        return item == jid
    if item.local is not None:
        return item == jid.bare
    return item.domain == jid.domain


def is_blocked(items: Iterable[Jid], jid: Jid) -> bool:
    return any(matches(item, jid) for item in items)
