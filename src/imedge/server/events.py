"""Typed events with named priorities: how features hook into the server.

A feature subscribes a handler to an event class: `bus.subscribe(MessageToBare, handler,
priority=Priority.POLICY)`. Handlers run from the highest priority down; one that returns
`True` has dealt with the event and stops the rest. Handlers may be plain functions or
coroutines.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from enum import IntEnum
from typing import Any, TypeVar

log = logging.getLogger(__name__)


class Priority(IntEnum):
    FIRST = 1000
    POLICY = 800  # federation policy gate
    BLOCKING = 700  # XEP-0191 and other vetoes
    PRE = 600  # features that look at or adjust a stanza before it is handled
    NORMAL = 500  # the feature that owns the event
    FALLBACK = 100  # what happens when nobody else handled it


class Event:
    """Base class of every event."""

    __slots__ = ()


E = TypeVar("E", bound=Event)
Handler = Callable[[Any], "Awaitable[bool | None] | bool | None"]


class EventBus:
    def __init__(self) -> None:
        self._handlers: dict[type[Event], list[tuple[int, int, Handler]]] = {}
        self._seq = 0

    def subscribe(
        self,
        event: type[E],
        handler: Callable[[E], bool | Awaitable[bool | None] | None],
        priority: int = Priority.NORMAL,
    ) -> Callable[[], None]:
        """Add a handler; return a function that removes it again."""
        self._seq += 1
        entry = (-int(priority), self._seq, handler)
        handlers = self._handlers.setdefault(event, [])
        handlers.append(entry)
        handlers.sort(key=lambda e: (e[0], e[1]))

        def unsubscribe() -> None:
            if entry in handlers:
                handlers.remove(entry)

        return unsubscribe

    def has_handlers(self, event: type[Event]) -> bool:
        return bool(self._handlers.get(event))

    async def fire(self, event: Event) -> bool:
        """Run the handlers of `type(event)`; True if one of them handled it."""
        for _, _, handler in self._handlers.get(type(event), ()):
            result = handler(event)
            if inspect.isawaitable(result):
                result = await result
            if result:
                return True
        return False
