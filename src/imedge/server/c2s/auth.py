"""Looks up SASL keys for a client login and throttles failed logins."""

from __future__ import annotations

import time
from collections.abc import Callable

from imedge.domain.jid import Jid, JidMalformed
from imedge.domain.throttle import LoginThrottle
from imedge.protocol.sasl import ScramKeys
from imedge.store.ports import AccountStore


class Authenticator:
    def __init__(
        self,
        accounts: AccountStore,
        throttle: LoginThrottle,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._accounts = accounts
        self._throttle = throttle
        self._clock = clock

    @staticmethod
    def account_jid(username: str, domain: str) -> Jid | None:
        """The account a SASL authcid names: a localpart, or a bare JID of this domain."""
        try:
            if "@" in username:
                jid = Jid.parse(username)
                return jid if jid.is_bare and jid.domain == Jid.of(None, domain).domain else None
            return Jid.of(username, domain)
        except JidMalformed:
            return None

    async def keys(self, account: Jid, mechanism: str) -> ScramKeys | None:
        acct = await self._accounts.get(account)
        if acct is None or acct.disabled:
            return None
        cred = await self._accounts.get_credential(account, mechanism)
        if cred is None and mechanism == "PLAIN":
            cred = await self._accounts.get_credential(account, "SCRAM-SHA-256")
        if cred is None:
            return None
        return ScramKeys(
            cred.mechanism, cred.salt, cred.iterations, cred.stored_key, cred.server_key
        )

    def retry_after(self, address: str, account: Jid | None) -> float:
        return self._throttle.retry_after(address, str(account) if account else None, self._clock())

    def failed(self, address: str, account: Jid | None) -> None:
        self._throttle.record_failure(address, str(account) if account else None, self._clock())

    def succeeded(self, address: str, account: Jid) -> None:
        self._throttle.record_success(address, str(account), self._clock())
