"""Account administration: what the CLI and the admin API call to manage users."""

from __future__ import annotations

from dataclasses import dataclass

from imedge.domain.jid import Jid, JidMalformed
from imedge.protocol.sasl import make_scram_keys
from imedge.store.ports import Account, AccountStore, NotFound, ScramCredential


class AccountError(ValueError):
    """A request about accounts that cannot be done; the message says why."""


@dataclass(frozen=True, slots=True)
class AccountService:
    accounts: AccountStore
    hosts: frozenset[str]
    scram_iterations: int = 4096

    def parse(self, address: str) -> Jid:
        """A bare JID of one of our domains, or AccountError naming the problem."""
        try:
            jid = Jid.parse(address)
        except JidMalformed as exc:
            raise AccountError(f"'{address}' is not a valid address: {exc}") from None
        if jid.local is None or not jid.is_bare:
            raise AccountError(f"'{address}' is not a user address (user@domain)")
        if jid.domain not in self.hosts:
            served = ", ".join(sorted(self.hosts))
            raise AccountError(f"this server does not serve '{jid.domain}' (it serves {served})")
        return jid

    def credentials(self, password: str) -> list[ScramCredential]:
        if not password:
            raise AccountError("the password is empty")
        try:
            keys = make_scram_keys(password, iterations=self.scram_iterations)
        except ValueError as exc:
            raise AccountError(f"the password is not allowed: {exc}") from None
        return [
            ScramCredential(k.mechanism, k.salt, k.iterations, k.stored_key, k.server_key)
            for k in keys
        ]

    async def create(self, address: str, password: str) -> Jid:
        jid = self.parse(address)
        await self.accounts.create(jid, self.credentials(password))
        return jid

    async def set_password(self, address: str, password: str) -> Jid:
        jid = self.parse(address)
        try:
            await self.accounts.set_credentials(jid, self.credentials(password))
        except NotFound:
            raise AccountError(f"no account {jid}") from None
        return jid

    async def delete(self, address: str) -> Jid:
        jid = self.parse(address)
        if await self.accounts.get(jid) is None:
            raise AccountError(f"no account {jid}")
        await self.accounts.delete(jid)
        return jid

    async def list(self, domain: str | None = None) -> list[Account]:
        return await self.accounts.list(domain)
