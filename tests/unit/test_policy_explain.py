"""FEDERATION.md §Every decision is explainable: "what would happen to a subscribe from s@D
to r?" answered with the decision and every step that led to it."""

from __future__ import annotations

import json

from imedge.domain.jid import Jid
from imedge.policy import (
    AuthMethod,
    CertStatus,
    EdgeAddress,
    FederationConfig,
    Filter,
    GlobalSettings,
    InboundContext,
    OutboundContext,
    Partner,
    StanzaKind,
    StreamFacts,
    UserSettings,
    VerifiedSubscriptions,
    decide_inbound,
    decide_outbound,
    decide_stream,
    decision_as_dict,
    render,
    render_steps,
)

OCS = Partner(name="OCS", domains=("ocs.example",), filter=Filter.VERIFIED)
CFG = FederationConfig(GlobalSettings(), (OCS,))
WEAK = StreamFacts(AuthMethod.DIALBACK, CertStatus.UNTRUSTED, tls=True)
STRONG = StreamFacts(AuthMethod.SASL_EXTERNAL, CertStatus.VALID, tls=True)


def subscribe(stream: StreamFacts, user: UserSettings | None = None) -> InboundContext:
    return InboundContext(
        sender=Jid.parse("john_smith@ocs.example"),
        recipient=Jid.parse("alice@edge.example"),
        kind=StanzaKind.SUBSCRIBE,
        stream=stream,
        user=user or UserSettings(),
    )


def test_render_an_unverified_subscription() -> None:
    decision = decide_inbound(subscribe(WEAK), CFG)
    text = render(decision)
    assert text.startswith(
        "Subscribe from john_smith@ocs.example to alice@edge.example: rejected, and "
        "unsubscribed is sent back (reason: unverified_not_on_allow_list)."
    )
    # every step that led there, in order
    positions = [text.index(step.text) for step in decision.steps]
    assert positions == sorted(positions)
    assert "partner 'OCS' has filter verified" in text
    assert "trust is weak" in text
    assert "\n" not in text  # one paragraph


def test_render_steps_numbers_each_rule_with_its_outcome() -> None:
    decision = decide_inbound(subscribe(WEAK), CFG)
    lines = render_steps(decision)
    assert len(lines) == len(decision.steps)
    assert lines[0] == "1. [ok] federation: Federation is on."
    assert lines[-1].startswith(f"{len(lines)}. [refused] subscription: ")
    assert any("[note] verification: The stanza is unverified" in line for line in lines)


def test_render_a_prompt_and_an_approval() -> None:
    prompt = render(decide_inbound(subscribe(STRONG), CFG))
    assert "delivered to the user's clients, who decide" in prompt
    assert "(reason: verified_subscriptions_prompt)" in prompt
    allow = UserSettings(verified_subscriptions=VerifiedSubscriptions.ALLOW)
    approve = render(decide_inbound(subscribe(STRONG, allow), CFG))
    assert "approved by the server" in approve


def test_render_a_refused_stream_names_the_error_and_its_text() -> None:
    decision = decide_stream(
        "ocs.example", StreamFacts(AuthMethod.DIALBACK, CertStatus.NO_CERTIFICATE, tls=False), CFG
    )
    text = render(decision)
    assert text.startswith("Stream from ocs.example: refused, and the stream is closed with")
    assert "<policy-violation/>" in text
    assert "TLS is required for ocs.example" in text
    assert "(reason: tls_required)" in text


def test_render_an_outbound_refusal_and_a_route() -> None:
    ctx = OutboundContext(
        sender=Jid.parse("alice@edge.example"),
        recipient=Jid.parse("bob@elsewhere.example"),
        kind=StanzaKind.MESSAGE,
    )
    refused = render(decide_outbound(ctx, CFG))
    assert "rejected with a <not-allowed/> error" in refused
    assert "elsewhere.example matches no partner and open federation is off." in refused

    edge = Partner(name="E", domains=("elsewhere.example",), edge_address=EdgeAddress("gw.example"))
    routed = render(decide_outbound(ctx, FederationConfig(partners=(edge,))))
    assert "accepted and sent to the edge address gw.example:5269" in routed


def test_render_an_inbound_service_unavailable_has_no_text() -> None:
    ctx = InboundContext(
        sender=Jid.parse("john_smith@ocs.example"),
        recipient=Jid.parse("alice@edge.example"),
        kind=StanzaKind.MESSAGE,
        stream=WEAK,
    )
    text = render(decide_inbound(ctx, CFG))
    assert "rejected with a <service-unavailable/> error (reason:" in text


def test_decision_as_dict_is_json() -> None:
    decision = decide_inbound(subscribe(WEAK), CFG)
    data = decision_as_dict(decision)
    assert json.loads(json.dumps(data)) == data
    assert data["verdict"] == "reject"
    assert data["reason"] == "unverified_not_on_allow_list"
    assert data["answer"] == "unsubscribed"
    assert data["partner"] == "OCS"
    assert data["verified"] is False
    assert data["trust"] == "weak"
    assert isinstance(data["steps"], list)
    assert data["steps"][-1] == {
        "rule": "subscription",
        "outcome": "refused",
        "text": decision.steps[-1].text,
    }
    assert data["explanation"] == render(decision)
