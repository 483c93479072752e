"""Presence values and the choice of resources for a message to a bare JID (RFC 6121 §4, §8.5)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum

# RFC 6121 §4.7.2.3: the priority is an xs:byte; XML Schema collapses the whitespace around
# it and allows a leading sign, nothing else (no "1_0", no non-ASCII digits as int() takes).
_PRIORITY = re.compile(r"[+-]?[0-9]+")
_XML_SPACE = " \t\r\n"
PRIORITY_MIN = -128
PRIORITY_MAX = 127


class PresenceType(StrEnum):
    """The `type` of a presence stanza (RFC 6121 §4.7.1); `available` is its absence."""

    AVAILABLE = "available"
    UNAVAILABLE = "unavailable"
    SUBSCRIBE = "subscribe"
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBE = "unsubscribe"
    UNSUBSCRIBED = "unsubscribed"
    PROBE = "probe"
    ERROR = "error"

    @classmethod
    def from_attr(cls, value: str | None) -> PresenceType:
        """Read the `type` attribute; raise ValueError for a value RFC 6121 does not define.

        An explicit type='available' is refused too: RFC 6121 §4.7.1 signals availability
        only by leaving the attribute out, and RFC 6120 §8.3.3.1 answers bad-request.
        """
        if value is None:
            return cls.AVAILABLE
        if value == cls.AVAILABLE:
            raise ValueError("presence type 'available' is expressed by omitting the type")
        return cls(value)

    @property
    def is_subscription(self) -> bool:
        """One of the four types handled by the subscription state machine (RFC 6121 §3)."""
        return self in _SUBSCRIPTION_TYPES


_SUBSCRIPTION_TYPES = frozenset(
    {
        PresenceType.SUBSCRIBE,
        PresenceType.SUBSCRIBED,
        PresenceType.UNSUBSCRIBE,
        PresenceType.UNSUBSCRIBED,
    }
)


def parse_priority(text: str | None) -> int:
    """RFC 6121 §4.7.2.3: an integer from -128 to 127; 0 when the element is absent.

    Raise ValueError for anything else, so the caller can answer bad-request.
    """
    if text is None:
        return 0
    stripped = text.strip(_XML_SPACE)
    if not _PRIORITY.fullmatch(stripped):
        raise ValueError(f"priority is not an integer: {text!r}")
    value = int(stripped)
    if not PRIORITY_MIN <= value <= PRIORITY_MAX:
        raise ValueError(f"priority out of range -128..127: {value}")
    return value


def message_targets(resources: Mapping[str, int]) -> list[str]:
    """The resources that get a message sent to the bare JID (RFC 6121 §8.5.2.1.1).

    `resources` maps each available resource to its priority. The message goes to the
    resources of highest priority, and never to a negative-priority one: a negative
    priority asks not to receive such messages. The result is sorted, so that it is
    stable; an empty list means no resource takes it (offline storage or an error).
    """
    eligible = {name: prio for name, prio in resources.items() if prio >= 0}
    if not eligible:
        return []
    best = max(eligible.values())
    return sorted(name for name, prio in eligible.items() if prio == best)
