"""RFC 6121 §4.7 presence values and §8.5.2 delivery to a bare JID."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imedge.domain.presence import PresenceType, message_targets, parse_priority


@pytest.mark.parametrize(
    ("attr", "expected"),
    [
        (None, PresenceType.AVAILABLE),
        ("unavailable", PresenceType.UNAVAILABLE),
        ("subscribe", PresenceType.SUBSCRIBE),
        ("subscribed", PresenceType.SUBSCRIBED),
        ("unsubscribe", PresenceType.UNSUBSCRIBE),
        ("unsubscribed", PresenceType.UNSUBSCRIBED),
        ("probe", PresenceType.PROBE),
        ("error", PresenceType.ERROR),
    ],
)
def test_presence_type_from_attr(attr: str | None, expected: PresenceType) -> None:
    assert PresenceType.from_attr(attr) is expected


@pytest.mark.parametrize("attr", ["available", "", "Unavailable", "invisible", " probe"])
def test_presence_type_refuses_unknown_values(attr: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - any ValueError means bad-request
        PresenceType.from_attr(attr)


def test_subscription_types() -> None:
    assert {t for t in PresenceType if t.is_subscription} == {
        PresenceType.SUBSCRIBE,
        PresenceType.SUBSCRIBED,
        PresenceType.UNSUBSCRIBE,
        PresenceType.UNSUBSCRIBED,
    }


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (None, 0),
        ("0", 0),
        ("5", 5),
        ("-1", -1),
        ("+7", 7),
        ("127", 127),
        ("-128", -128),
        (" 10\n", 10),
        ("007", 7),
    ],
)
def test_parse_priority(text: str | None, value: int) -> None:
    assert parse_priority(text) == value


@pytest.mark.parametrize(
    "text", ["", " ", "128", "-129", "1.5", "ten", "1_0", "٣", "0x10", "1e2", "--1"]
)
def test_parse_priority_refuses_invalid(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the caller answers bad-request
        parse_priority(text)


@given(st.integers(min_value=-128, max_value=127))
def test_parse_priority_roundtrips_every_valid_value(value: int) -> None:
    assert parse_priority(str(value)) == value


def test_message_targets_picks_the_highest_priority() -> None:
    assert message_targets({"phone": 1, "desktop": 5, "tablet": 3}) == ["desktop"]


def test_message_targets_returns_every_resource_sharing_the_top_priority() -> None:
    assert message_targets({"b": 5, "a": 5, "c": 0}) == ["a", "b"]


def test_message_targets_includes_priority_zero() -> None:
    assert message_targets({"only": 0}) == ["only"]


def test_message_targets_never_chooses_negative_priority() -> None:
    # §8.5.2.1.1: a negative priority asks never to get messages sent to the bare JID.
    assert message_targets({"bot": -1, "pager": -128}) == []
    assert message_targets({"bot": -1, "desk": 0}) == ["desk"]


def test_message_targets_without_resources() -> None:
    assert message_targets({}) == []


@given(st.dictionaries(st.text(min_size=1), st.integers(min_value=-128, max_value=127)))
def test_message_targets_properties(resources: dict[str, int]) -> None:
    targets = message_targets(resources)
    assert targets == sorted(targets)
    non_negative = [p for p in resources.values() if p >= 0]
    if not non_negative:
        assert targets == []
        return
    best = max(non_negative)
    assert targets == sorted(r for r, p in resources.items() if p == best)
