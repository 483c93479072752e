"""FEDERATION.md §Every decision is explainable: a `Decision` as text for administrators.

`render` gives the one paragraph the CLI's `imedge policy explain` and the audit log show;
`render_steps` gives one line per rule evaluated; `decision_as_dict` is the JSON form the
API returns.
"""

from __future__ import annotations

from imedge.policy.decision import Answer, Decision, Verdict


def disposition(decision: Decision) -> str:
    """What the server does, as the end of the sentence "<subject> is ..."."""
    match decision.verdict:
        case Verdict.APPROVE:
            return "approved by the server, which answers subscribed on the user's behalf"
        case Verdict.PROMPT:
            return (
                "delivered to the user's clients, who decide (it is stored while the user is "
                "offline)"
            )
        case Verdict.ACCEPT:
            if decision.route is not None:
                return f"accepted and sent to {decision.route.describe()}"
            return "accepted"
        case Verdict.REJECT:
            return _refusal(decision)


def _refusal(decision: Decision) -> str:
    said = f": “{decision.text}”" if decision.text else ""
    match decision.answer:
        case Answer.STREAM_ERROR:
            return f"refused, and the stream is closed with <{decision.stream_error}/>{said}"
        case Answer.UNSUBSCRIBED:
            return "rejected, and unsubscribed is sent back"
        case Answer.STANZA_ERROR:
            return f"rejected with a <{decision.error}/> error{said}"
        case Answer.NONE:
            return "rejected and dropped silently"


def render(decision: Decision) -> str:
    """One paragraph: what happened, the reason code, then every step that led there."""
    subject = decision.subject[:1].upper() + decision.subject[1:]
    head = f"{subject}: {disposition(decision)} (reason: {decision.reason})."
    return " ".join([head, *(step.text for step in decision.steps)])


def render_steps(decision: Decision) -> list[str]:
    """One numbered line per rule evaluated, in order, with its outcome."""
    return [
        f"{n}. [{step.outcome}] {step.rule}: {step.text}"
        for n, step in enumerate(decision.steps, start=1)
    ]


def decision_as_dict(decision: Decision) -> dict[str, object]:
    """JSON-ready: enums as their values, the partner by name."""
    route = decision.route
    return {
        "subject": decision.subject,
        "domain": decision.domain,
        "verdict": str(decision.verdict),
        "reason": str(decision.reason),
        "allowed": decision.allowed,
        "answer": str(decision.answer),
        "error": str(decision.error) if decision.error else None,
        "stream_error": str(decision.stream_error) if decision.stream_error else None,
        "text": decision.text,
        "partner": decision.partner.name if decision.partner else None,
        "discovered": decision.discovered,
        "trust": str(decision.trust) if decision.trust else None,
        "verified": decision.verified,
        "route": None
        if route is None
        else {
            "kind": str(route.kind),
            "domain": route.domain,
            "edge": str(route.edge) if route.edge else None,
        },
        "steps": [
            {"rule": str(s.rule), "outcome": str(s.outcome), "text": s.text} for s in decision.steps
        ],
        "explanation": render(decision),
    }
