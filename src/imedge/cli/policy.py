"""FEDERATION.md §Every decision is explainable: `imedge policy explain`.

Asks the running server's policy what it would do with a stanza, now, with the partner
table and the users' settings as they are, and prints the decision with every step that
led to it. Nothing is sent to anyone.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Annotated

import typer

from imedge.cli.api_client import API, JsonOption, api_call, say_json
from imedge.cli.common import ConfigOption, configured, say

policy = typer.Typer(
    name="policy",
    help="Ask the federation policy what it would do with a stanza, without sending it.",
    no_args_is_help=True,
)


class Kind(StrEnum):
    """The stanzas FEDERATION.md decides on (§Inbound 4-6)."""

    SUBSCRIBE = "subscribe"
    MESSAGE = "message"
    IQ = "iq"
    PRESENCE = "presence"
    SUBSCRIPTION_ANSWER = "subscription_answer"


class TrustLevel(StrEnum):
    STRONG = "strong"  # the remote domain authenticated with a certificate that validated
    WEAK = "weak"  # dialback alone


@policy.command("explain")
def explain(
    ctx: typer.Context,
    *,
    sender: Annotated[
        str,
        typer.Option(
            "--from",
            metavar="JID",
            help="Who sends it: a remote address (s@partner.example) for an inbound "
            "stanza, a local user for an outbound one.",
            show_default=False,
        ),
    ],
    recipient: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="JID",
            help="Who it is for: a local user, or a remote address.",
            show_default=False,
        ),
    ],
    kind: Annotated[
        Kind,
        typer.Option(
            "--kind",
            help="subscribe (a presence subscription request), message, iq, presence "
            "(available, unavailable, probe) or subscription_answer.",
            show_default=False,
        ),
    ],
    trust: Annotated[
        TrustLevel | None,
        typer.Option(
            "--trust",
            help="How the remote domain's stream authenticated: strong (a certificate "
            "that validated) or weak (dialback alone). Default: as its live inbound "
            "stream did, else weak.",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """What would happen to a stanza from --from to --to, and every step that led there.

    Nothing is sent. Exit status 0 whatever the decision, 1 when it cannot be asked.
    """
    body = {
        "from": sender,
        "to": recipient,
        "kind": str(kind),
        "trust": str(trust) if trust is not None else None,
    }
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        result = api_call(cfg, "POST", f"{API}/explain", body, refused="cannot explain")
    if as_json:
        say_json(result)
        return
    say(f"decision: {result['verdict']} (reason: {result['reason']})")
    if result.get("assumed"):
        say(f"assumed {result['assumed']} (choose with --trust strong|weak)")
    say("")
    say(result["paragraph"])
    say("")
    say("steps:")
    for step in result["steps"]:
        say(f"  {step}")
