"""FEDERATION.md §Fresh install: well-known public XMPP providers, listed but not allowed.

Like the MSN, AOL and Yahoo! rows of the seed's IM Provider tab: public (their users need
per-user public IM rights) and blocked until an administrator allows them. Each row also
covers the provider's subdomains, where its group chat and upload services live.
"""

from __future__ import annotations

from imedge.policy.model import DEFAULT, Filter, Partner

_PROVIDERS = (
    ("jabber.org", "jabber.org", "The XMPP Standards Foundation's original public service."),
    ("xmpp.jp", "xmpp.jp", "A large public service run from Japan."),
    ("Conversations.im", "conversations.im", "The service of the Conversations client."),
    ("Disroot", "disroot.org", "A community-run public service."),
)


def default_partners() -> tuple[Partner, ...]:
    return tuple(
        Partner(
            name=name,
            domains=(domain, f"*.{domain}"),
            comment=f"{comment} Public IM provider, listed by default.",
            allowed=False,
            public=True,
            filter=Filter.VERIFIED,
            origin=DEFAULT,
        )
        for name, domain, comment in _PROVIDERS
    )
