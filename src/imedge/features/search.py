"""XEP-0055: Jabber Search (with XEP-0004 data forms) of the corporate directory.

The service lives on its own subdomain, `directory.<domain>`, registered with the router as
a component and advertised in the server's disco#items (XEP-0030 §4). It searches local
accounts and the people synced from peer servers' LDAP, and says for each person whether
federation lets us reach them now.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from imedge.domain.errors import StanzaError, StanzaErrorCondition
from imedge.domain.jid import Jid
from imedge.policy import FederationConfig
from imedge.protocol import ns
from imedge.protocol.element import Element
from imedge.protocol.stanza import IqType, iq_result
from imedge.server.context import ServerContext
from imedge.server.iq import IqDispatcher, IqRequest, IqTarget
from imedge.server.session import C2SSession
from imedge.store.ports import Account, DirectoryEntry

log = logging.getLogger(__name__)

SEARCH = "jabber:iq:search"
DATA_FORMS = "jabber:x:data"
SUBDOMAIN = "directory"
SERVICE_NAME = "Corporate directory"
MAX_RESULTS = 100
# The store matches any of name, e-mail, IM address and department; the per-field filter
# below then narrows its answer, so it asks for more rows than it will show.
CANDIDATES = 1000
INSTRUCTIONS = (
    "Search the corporate directory: fill in one or more fields; every filled field must "
    f"match (part of the text, ignoring case). At most {MAX_RESULTS} people are returned: "
    "refine the search if you do not find someone."
)


class Attr(StrEnum):
    """What a search criterion looks at."""

    NAME = "name"  # the display name, or the JID's localpart when there is none
    EMAIL = "email"
    DEPARTMENT = "department"
    IM = "im"  # the whole bare JID
    LOCALPART = "localpart"  # the legacy `nick` field


# XEP-0055 §3: the data form's fields, with their labels.
FORM_FIELDS: dict[str, tuple[Attr, str]] = {
    "name": (Attr.NAME, "Name"),
    "email": (Attr.EMAIL, "E-mail"),
    "department": (Attr.DEPARTMENT, "Department"),
    "im": (Attr.IM, "IM address"),
}
# XEP-0055 §2: the legacy fields.
LEGACY_FIELDS: dict[str, Attr] = {
    "first": Attr.NAME,
    "last": Attr.NAME,
    "nick": Attr.LOCALPART,
    "email": Attr.EMAIL,
}
REPORTED: tuple[tuple[str, str], ...] = (
    ("jid", "IM address"),
    ("name", "Name"),
    ("email", "E-mail"),
    ("department", "Department"),
    ("title", "Title"),
    ("reachable", "Reachable by federation"),
)


@dataclass(frozen=True, slots=True)
class Query:
    """Every criterion must match; `legacy` says how to answer (XEP-0055 §2 or §3)."""

    criteria: tuple[tuple[Attr, str], ...]
    legacy: bool

    @property
    def store_text(self) -> str:
        """The text to ask the store for: the longest criterion, likely the most selective."""
        return max((text for _, text in self.criteria), key=len)


@dataclass(frozen=True, slots=True)
class Person:
    """One search result."""

    jid: str
    name: str | None = None
    email: str | None = None
    department: str | None = None
    title: str | None = None
    reachable: bool = False

    def value(self, attr: Attr) -> str:
        local = self.jid.partition("@")[0] if "@" in self.jid else ""
        match attr:
            case Attr.NAME:
                return self.name or local
            case Attr.EMAIL:
                return self.email or ""
            case Attr.DEPARTMENT:
                return self.department or ""
            case Attr.IM:
                return self.jid
            case Attr.LOCALPART:
                return local

    def matches(self, query: Query) -> bool:
        return all(text.casefold() in self.value(attr).casefold() for attr, text in query.criteria)


# --- parsing requests -------------------------------------------------------------------


def _bad(text: str) -> StanzaError:
    return StanzaError(StanzaErrorCondition.BAD_REQUEST, text)


def parse_query(query: Element) -> Query:
    """The criteria of a search submission (an IQ set's `<query/>`); a data form, when
    there is one, wins over legacy fields (XEP-0055 §3)."""
    form = query.find("x", DATA_FORMS)
    if form is not None:
        criteria = _form_criteria(form)
        legacy = False
    else:
        criteria = _legacy_criteria(query)
        legacy = True
    if not criteria:
        raise StanzaError(StanzaErrorCondition.NOT_ACCEPTABLE, "fill in at least one field")
    return Query(criteria, legacy)


def _form_criteria(form: Element) -> tuple[tuple[Attr, str], ...]:
    if form.get("type") != "submit":
        raise _bad("a search form must be of type 'submit' (XEP-0004 §3.1)")
    criteria: list[tuple[Attr, str]] = []
    for field in form.find_all("field", DATA_FORMS):
        var = field.get("var")
        value = (field.find_text("value", DATA_FORMS) or "").strip()
        if var == "FORM_TYPE":
            # XEP-0068 §3: a form of another type is not ours to answer.
            if value != SEARCH:
                raise _bad(f"FORM_TYPE must be {SEARCH}")
            continue
        if var not in FORM_FIELDS:
            raise _bad(f"unknown field {var!r}")
        if value:
            criteria.append((FORM_FIELDS[var][0], value))
    return tuple(criteria)


def _legacy_criteria(query: Element) -> tuple[tuple[Attr, str], ...]:
    criteria: list[tuple[Attr, str]] = []
    for child in query.elements():
        if child.ns != SEARCH or (child.name not in LEGACY_FIELDS and child.name != "instructions"):
            raise _bad(f"unknown field {child.name!r}")
        text = child.text.strip()
        if child.name != "instructions" and text:
            criteria.append((LEGACY_FIELDS[child.name], text))
    return tuple(criteria)


# --- building answers -------------------------------------------------------------------


def search_form() -> Element:
    """The answer to a search get: instructions, legacy fields and the data form."""
    q = Element("query", SEARCH)
    q.sub("instructions", text=INSTRUCTIONS)
    for name in LEGACY_FIELDS:
        q.sub(name)
    x = q.sub("x", DATA_FORMS, {"type": "form"})
    x.sub("title", text=SERVICE_NAME)
    x.sub("instructions", text=INSTRUCTIONS)
    _field(x, "FORM_TYPE", SEARCH, type_="hidden")
    for var, (_, label) in FORM_FIELDS.items():
        x.sub("field", attrs={"var": var, "type": "text-single", "label": label})
    return q


def _field(parent: Element, var: str, value: str | None, type_: str | None = None) -> None:
    attrs = {"var": var}
    if type_:
        attrs["type"] = type_
    field = parent.sub("field", attrs=attrs)
    if value is not None:
        field.sub("value", text=value)


def result_form(people: Sequence[Person], truncated: bool) -> Element:
    """XEP-0055 §3 / XEP-0004 §3.4: the results as a form of type `result`."""
    q = Element("query", SEARCH)
    x = q.sub("x", DATA_FORMS, {"type": "result"})
    if truncated:
        x.sub("title", text=f"The first {MAX_RESULTS} matches; refine the search for more")
    _field(x, "FORM_TYPE", SEARCH, type_="hidden")
    reported = x.sub("reported")
    for var, label in REPORTED:
        reported.sub("field", attrs={"var": var, "label": label, "type": "text-single"})
    for p in people:
        item = x.sub("item")
        _field(item, "jid", p.jid)
        _field(item, "name", p.name or "")
        _field(item, "email", p.email or "")
        _field(item, "department", p.department or "")
        _field(item, "title", p.title or "")
        _field(item, "reachable", "yes" if p.reachable else "no")
    return q


def legacy_results(people: Sequence[Person]) -> Element:
    """XEP-0055 §2: `<item jid=...>` with the legacy fields, for clients without forms.
    The display name is split into first and last at its first space."""
    q = Element("query", SEARCH)
    for p in people:
        item = q.sub("item", attrs={"jid": p.jid})
        first, _, last = (p.name or "").partition(" ")
        item.sub("first", text=first)
        item.sub("last", text=last)
        item.sub("nick", text=p.value(Attr.LOCALPART))
        item.sub("email", text=p.email or "")
    return q


# --- the search -------------------------------------------------------------------------


def is_reachable(cfg: FederationConfig, domain: str) -> bool:
    """Whether federation lets us reach `domain` now: on, not blocked, and an allowed
    partner covers it (FEDERATION.md §The partner table)."""
    if not cfg.settings.federation or cfg.blocked_by(domain) is not None:
        return False
    partner = cfg.partner_for(domain)
    return partner is not None and partner.allowed


def local_people(accounts: Iterable[Account]) -> list[Person]:
    return [
        Person(jid=str(a.jid), reachable=True)
        for a in sorted(accounts, key=lambda a: str(a.jid))
        if not a.disabled
    ]


def entry_person(entry: DirectoryEntry, cfg: FederationConfig, hosts: frozenset[str]) -> Person:
    domain = entry.im_address.rpartition("@")[2]
    return Person(
        jid=entry.im_address,
        name=entry.display_name,
        email=entry.email,
        department=entry.department,
        title=entry.title,
        reachable=domain in hosts or is_reachable(cfg, domain),
    )


class DirectorySearch:
    """The `directory.<domain>` service: disco#info and jabber:iq:search."""

    def __init__(self, ctx: ServerContext, domain: str) -> None:
        self.ctx = ctx
        self.domain = domain
        self.iq = IqDispatcher()
        self.iq.register(ns.DISCO_INFO, self.disco_info)
        self.iq.register(ns.DISCO_ITEMS, self.disco_items)
        self.iq.register(SEARCH, self.get_form)
        self.iq.register(SEARCH, self.search, types=(IqType.SET,))

    async def handle(self, stanza: Element, from_: Jid, to: Jid, origin: C2SSession | None) -> None:
        """Every stanza to `directory.<domain>`; a StanzaError raised here is bounced."""
        if stanza.name == "presence":
            return  # nothing to subscribe to
        if stanza.name != "iq" or to.local is not None or to.resource is not None:
            raise StanzaError(StanzaErrorCondition.SERVICE_UNAVAILABLE)
        t = stanza.get("type")
        if t not in (IqType.GET, IqType.SET):
            return  # results and errors end here
        payloads = list(stanza.elements())
        if len(payloads) != 1:
            raise _bad("IQ get/set needs exactly one child")  # RFC 6120 §8.2.3
        if from_.domain not in self.ctx.hosts:
            raise StanzaError(StanzaErrorCondition.FORBIDDEN, "for local users only")
        req = IqRequest(stanza, payloads[0], IqType(t), from_, to, origin)
        reply = iq_result(stanza, await self.iq.dispatch(req, IqTarget.HOST))
        reply.attrs["from"] = str(to)
        reply.attrs["to"] = str(from_)
        if origin is not None and from_ == origin.jid:
            origin.deliver(reply)
        else:
            await self.ctx.router.route(reply, to, from_)

    async def disco_info(self, req: IqRequest) -> Element | None:
        if req.payload.get("node"):
            raise StanzaError(StanzaErrorCondition.ITEM_NOT_FOUND)
        q = Element("query", ns.DISCO_INFO)
        q.sub("identity", attrs={"category": "directory", "type": "user", "name": SERVICE_NAME})
        for feature in sorted((ns.DISCO_INFO, ns.DISCO_ITEMS, SEARCH, DATA_FORMS)):
            q.sub("feature", attrs={"var": feature})
        return q

    async def disco_items(self, req: IqRequest) -> Element | None:
        if req.payload.get("node"):
            raise StanzaError(StanzaErrorCondition.ITEM_NOT_FOUND)
        return Element("query", ns.DISCO_ITEMS)

    async def get_form(self, req: IqRequest) -> Element | None:
        return search_form()

    async def search(self, req: IqRequest) -> Element | None:
        query = parse_query(req.payload)
        people = await self.find(query)
        truncated = len(people) > MAX_RESULTS
        people = people[:MAX_RESULTS]
        log.debug("directory search by %s: %d results", req.from_.bare, len(people))
        return legacy_results(people) if query.legacy else result_form(people, truncated)

    async def find(self, query: Query) -> list[Person]:
        """Local users first, then the synced directory; at most MAX_RESULTS + 1, so the
        caller can tell that there were more."""
        store = self.ctx.store
        found = [p for p in local_people(await store.accounts.list()) if p.matches(query)]
        seen = {p.jid for p in found}
        if len(found) <= MAX_RESULTS:
            # Read the partner table once per request: every entry is judged against it.
            cfg = FederationConfig(
                await store.federation.get_settings(),
                tuple(await store.federation.list_partners()),
            )
            for entry in await store.directory.search(query.store_text, limit=CANDIDATES):
                person = entry_person(entry, cfg, self.ctx.hosts)
                if person.jid not in seen and person.matches(query):
                    found.append(person)
                    seen.add(person.jid)
                    if len(found) > MAX_RESULTS:
                        break
        return found[: MAX_RESULTS + 1]


def install(ctx: ServerContext) -> None:
    service = DirectorySearch(ctx, f"{SUBDOMAIN}.{ctx.domain}")
    ctx.router.add_component(service.domain, service.handle, name=SERVICE_NAME)
