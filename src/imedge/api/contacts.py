"""`/api/v1/users/{jid}/contacts`: an administrator adds a contact to a user's roster.

Issue 5's personal contacts: the contact is added and asked for a presence subscription
exactly as if the user had done it from a client (a roster set, then `subscribe`), so
the user's clients get the roster push and the contact's server the request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, status
from pydantic import BaseModel, Field, field_validator

from imedge.domain.jid import Jid, JidMalformed
from imedge.features.presence import subscribe_on_behalf
from imedge.features.roster import add_contact
from imedge.server.context import ServerContext


class ContactIn(BaseModel):
    jid: str = Field(
        description="The contact's address, e.g. john_smith@ocs.example", max_length=3071
    )
    name: str | None = Field(default=None, max_length=1023)
    groups: list[str] = Field(default_factory=list, max_length=100)
    subscribe: bool = Field(default=True, description="Also ask for a presence subscription")

    @field_validator("jid")
    @classmethod
    def _jid(cls, value: str) -> str:
        try:
            jid = Jid.parse(value)
        except JidMalformed as exc:
            raise ValueError(f"not a valid address: {exc}") from None
        if jid.local is None:
            raise ValueError("a contact is a user address (user@domain)")
        return str(jid.bare)

    @field_validator("groups")
    @classmethod
    def _groups(cls, value: list[str]) -> list[str]:
        if any(not g.strip() or len(g) > 1023 for g in value):
            raise ValueError("group names are 1 to 1023 characters")
        return value


UserJid = Annotated[str, Path(description="The user, as user@domain", max_length=3071)]


class ContactOut(BaseModel):
    user: str
    jid: str
    name: str | None
    groups: list[str]
    subscription: str
    ask: bool


def contacts_router(ctx: ServerContext, *, guard: Callable[..., Awaitable[str]]) -> APIRouter:
    router = APIRouter(prefix="/api/v1", dependencies=[Depends(guard)])

    @router.post(
        "/users/{jid}/contacts",
        tags=["users"],
        summary="Add a contact for a user",
        description="Adds the contact to the user's roster (the user's clients get a roster "
        "push) and, unless `subscribe` is false, asks the contact for a presence "
        "subscription on the user's behalf, as a client would. The federation policy "
        "applies to the request as to any other.",
        status_code=status.HTTP_201_CREATED,
        responses={404: {"description": "No such account"}},
    )
    async def add(jid: UserJid, body: ContactIn) -> ContactOut:
        try:
            user = Jid.parse(jid).bare
        except JidMalformed:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no account {jid}") from None
        if user.domain not in ctx.hosts or await ctx.store.accounts.get(user) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no account {jid}")
        contact = Jid.parse(body.jid)
        if contact == user:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_ENTITY,
                detail=[{"field": "jid", "message": "a user cannot be their own contact"}],
            )
        await add_contact(ctx, user, contact, body.name, tuple(body.groups))
        if body.subscribe:
            await subscribe_on_behalf(ctx, user, contact)
        item = await ctx.store.rosters.get_item(user, contact)
        assert item is not None
        return ContactOut(
            user=str(user),
            jid=str(contact),
            name=item.name,
            groups=list(item.groups),
            subscription=str(item.subscription),
            ask=item.pending_out,
        )

    return router
