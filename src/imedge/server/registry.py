"""The sessions bound on this server, by bare JID and resource."""

from __future__ import annotations

from collections.abc import Iterator

from imedge.domain.jid import Jid
from imedge.server.session import C2SSession


class SessionRegistry:
    def __init__(self) -> None:
        self._by_bare: dict[Jid, dict[str, C2SSession]] = {}
        self._count = 0

    def bind(self, session: C2SSession) -> C2SSession | None:
        """Register `session`; return the session it replaces on the same resource, if any."""
        resources = self._by_bare.setdefault(session.bare, {})
        resource = session.jid.resource
        assert resource is not None
        old = resources.get(resource)
        resources[resource] = session
        if old is None:
            self._count += 1
        return old

    def unbind(self, session: C2SSession) -> bool:
        """Remove `session` if it is still the one bound to its resource."""
        resources = self._by_bare.get(session.bare)
        resource = session.jid.resource
        if not resources or resource is None or resources.get(resource) is not session:
            return False
        del resources[resource]
        self._count -= 1
        if not resources:
            del self._by_bare[session.bare]
        return True

    def get(self, full: Jid) -> C2SSession | None:
        resources = self._by_bare.get(full.bare)
        if resources is None or full.resource is None:
            return None
        return resources.get(full.resource)

    def sessions_of(self, bare: Jid) -> list[C2SSession]:
        resources = self._by_bare.get(bare)
        return list(resources.values()) if resources else []

    def available_of(self, bare: Jid) -> list[C2SSession]:
        resources = self._by_bare.get(bare)
        return [s for s in resources.values() if s.available] if resources else []

    def has_resource(self, bare: Jid, resource: str) -> bool:
        resources = self._by_bare.get(bare)
        return bool(resources) and resource in resources  # type: ignore[operator]

    def __iter__(self) -> Iterator[C2SSession]:
        for resources in list(self._by_bare.values()):
            yield from list(resources.values())

    def __len__(self) -> int:
        return self._count
