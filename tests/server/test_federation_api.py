"""The federation admin API (`/api/v1`, FEDERATION.md and issue 4) against an in-process
server: authentication and actors, the partner table, global and per-user settings,
explain, audit after real refused traffic, the change log, and hostile input.

Every effect is checked on the running server too (its federation service, its change
log), so the tests show that the API changes live state, not just that it answers.
"""

from __future__ import annotations

import base64
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from imedge.config import ConfigError, load_config
from imedge.policy import Partner, Requirement
from imedge.services.federation import NoSuchPartner
from tests.helpers import PASSWORD, Inbox, RunningServer, free_port, running_server

API = "/api/v1"
DEFAULT_PROVIDERS = {"jabber.org", "xmpp.jp", "Conversations.im", "Disroot"}
CONTOSO = {"name": "Contoso", "domains": ["contoso.example", "*.contoso.example"]}


def client(rs: RunningServer, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{rs.http_port}", headers=headers or {})


def admin(rs: RunningServer, **extra: str) -> httpx.AsyncClient:
    return client(rs, {"Authorization": f"Bearer {rs.server.admin_token}", **extra})


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def fields(r: httpx.Response) -> list[str]:
    """The fields a 422 names, in either shape (the service's or FastAPI's)."""
    assert r.status_code == 422, r.text
    out = []
    for problem in r.json()["detail"]:
        out.append(problem["field"] if "field" in problem else str(problem["loc"][-1]))
    return out


def messages(r: httpx.Response) -> str:
    return " ".join(p.get("message") or p.get("msg", "") for p in r.json()["detail"])


@pytest.fixture
async def rs(tmp_path: Path) -> AsyncIterator[RunningServer]:
    # A clean table: only the fresh install's public providers.
    async with running_server(tmp_path, partners=()) as server:
        yield server


@pytest.fixture
async def http(rs: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with admin(rs) as c:
        yield c


# --- authentication and actors -------------------------------------------------------


async def test_requests_without_credentials_are_told_how_to_authenticate(
    rs: RunningServer,
) -> None:
    async with client(rs) as anonymous:
        r = await anonymous.get(f"{API}/partners")
        posted = await anonymous.post(f"{API}/partners", json=CONTOSO)
        wrong = await anonymous.get(f"{API}/partners", headers={"Authorization": "Bearer nope"})
        basic_r = await anonymous.get(f"{API}/partners", headers=basic("admin", "admin"))
        garbage = await anonymous.get(f"{API}/partners", headers={"Authorization": "Basic %%%"})
    for answer in (r, posted, wrong, basic_r, garbage):
        assert answer.status_code == 401, answer.text
        assert "Bearer" in answer.headers["www-authenticate"]
        assert "Authorization: Bearer <token>" in answer.json()["detail"]
    assert r.json()["detail"].startswith("admin credentials required")
    assert wrong.json()["detail"].startswith("the admin token is not valid")
    # No administrator account is configured, and the answer says so.
    assert "accounts.admins" in basic_r.json()["detail"]
    assert "Basic" not in r.headers["www-authenticate"]
    with pytest.raises(NoSuchPartner):
        rs.server.federation.find("Contoso")


async def test_administrator_accounts_authenticate_with_their_password(tmp_path: Path) -> None:
    admins = ["admin@localhost", "root@localhost", "ops@other.example"]
    async with running_server(
        tmp_path, partners=(), hosts=["other.example"], **{"accounts.admins": admins}
    ) as rs:
        admin_jid = await rs.add_user("admin", "pässwörd ünïcode")
        await rs.add_user("alice")
        ops = str(await rs.accounts.create("ops@other.example", PASSWORD))
        async with client(rs) as c:
            ok = await c.post(
                f"{API}/partners", json=CONTOSO, headers=basic(admin_jid, "pässwörd ünïcode")
            )
            localpart = await c.get(f"{API}/partners", headers=basic("admin", "pässwörd ünïcode"))
            wrong = await c.get(f"{API}/partners", headers=basic(admin_jid, "wrong"))
            nobody = await c.get(f"{API}/partners", headers=basic("root@localhost", "wrong"))
            user = await c.get(f"{API}/partners", headers=basic("alice@localhost", PASSWORD))
            anonymous = await c.get(f"{API}/partners")
            other_host = await c.get(f"{API}/federation/settings", headers=basic(ops, PASSWORD))
        assert ok.status_code == 201, ok.text
        assert other_host.status_code == 200, other_host.text
        assert localpart.status_code == 200
        # A wrong password and an account that does not exist get the same answer.
        assert wrong.status_code == nobody.status_code == 401
        assert wrong.json() == nobody.json()
        assert "not valid" in wrong.json()["detail"]
        # A user who is not an administrator knows their password but may not administer.
        assert user.status_code == 403
        assert "not an administrator" in user.json()["detail"]
        # With administrator accounts configured, Basic is offered and explained.
        assert "Basic" in anonymous.headers["www-authenticate"]
        assert "HTTP Basic" in anonymous.json()["detail"]
        changes = await rs.server.store.audit.changes(limit=5)
        assert (changes[0].actor, changes[0].action, changes[0].target) == (
            "admin:admin@localhost",
            "partner.add",
            "Contoso",
        )


async def test_administrator_password_guessing_is_throttled(tmp_path: Path) -> None:
    async with running_server(
        tmp_path,
        partners=(),
        **{"accounts.admins": ["admin@localhost"], "limits.login_failures_per_account": 3},
    ) as rs:
        await rs.add_user("admin")
        async with client(rs) as c:
            codes = [
                (await c.get(f"{API}/partners", headers=basic("admin@localhost", "x"))).status_code
                for _ in range(3)
            ]
            locked = await c.get(f"{API}/partners", headers=basic("admin@localhost", PASSWORD))
        assert codes == [401, 401, 401]
        assert locked.status_code == 429
        assert int(locked.headers["retry-after"]) >= 1


async def test_changes_record_the_actor(rs: RunningServer) -> None:
    async with admin(rs) as token, admin(rs, **{"X-IMEdge-Actor": "cli:ops_user"}) as cli:
        assert (await token.post(f"{API}/partners", json=CONTOSO)).status_code == 201
        assert (await cli.post(f"{API}/partners/Contoso/block")).status_code == 200
        r = await token.get(f"{API}/changes", params={"limit": 2})
        bad = await token.post(
            f"{API}/partners/Contoso/unblock", headers={"X-IMEdge-Actor": "root; rm -rf"}
        )
    assert r.status_code == 200
    assert [(c["actor"], c["action"], c["target"]) for c in r.json()] == [
        ("cli:ops_user", "partner.block", "Contoso"),
        ("api:token", "partner.add", "Contoso"),
    ]
    assert fields(bad) == ["X-IMEdge-Actor"]
    assert not rs.server.federation.find("Contoso").allowed  # the refused unblock did nothing


# --- the partner table ---------------------------------------------------------------


async def test_a_fresh_install_lists_the_public_providers_blocked(
    http: httpx.AsyncClient,
) -> None:
    r = await http.get(f"{API}/partners")
    assert r.status_code == 200
    rows = {p["name"]: p for p in r.json()}
    assert set(rows) == DEFAULT_PROVIDERS
    for row in rows.values():
        assert row["public"] is True
        assert row["allowed"] is False
        assert row["origin"] == "default"
    assert rows["jabber.org"]["domains"] == ["jabber.org", "*.jabber.org"]


async def test_partner_crud(rs: RunningServer, http: httpx.AsyncClient) -> None:
    body = {
        **CONTOSO,
        "comment": "Our supplier",
        "edge_address": "Edge.Contoso.Example:5270",
        "filter": "all",
        "tls": "required",
        "sasl_external": "required",
        "dialback": False,
        "connection_limit": 4,
    }
    created = await http.post(f"{API}/partners", json=body)
    assert created.status_code == 201, created.text
    row = created.json()
    assert row["origin"] == "manual"
    assert row["edge_address"] == "Edge.Contoso.Example:5270"
    assert {k: row[k] for k in body if k != "edge_address"} == {
        k: v for k, v in body.items() if k != "edge_address"
    }
    live = rs.server.federation.find("Contoso")
    assert live.sasl_external is Requirement.REQUIRED
    assert rs.server.gate.config.partner_for("x.contoso.example") == live

    by_id = await http.get(f"{API}/partners/{row['id']}")
    by_name = await http.get(f"{API}/partners/Contoso")
    assert by_id.json() == by_name.json() == row
    assert "Contoso" in {p["name"] for p in (await http.get(f"{API}/partners")).json()}

    edited = await http.patch(
        f"{API}/partners/Contoso",
        json={"comment": "Supplier since 2019", "edge_address": None, "connection_limit": None},
    )
    assert edited.status_code == 200, edited.text
    assert edited.json() == {
        **row,
        "comment": "Supplier since 2019",
        "edge_address": None,
        "connection_limit": None,
    }
    assert rs.server.federation.find("Contoso").edge_address is None

    gone = await http.delete(f"{API}/partners/Contoso")
    assert gone.status_code == 204
    assert gone.content == b""
    missing = await http.get(f"{API}/partners/Contoso")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no partner named 'Contoso'"}
    assert (await http.delete(f"{API}/partners/{row['id']}")).status_code == 404
    assert (await http.post(f"{API}/partners/Contoso/block")).status_code == 404
    assert rs.server.gate.config.partner_for("contoso.example") is None


async def test_block_keeps_the_configuration_and_unblock_restores_it(
    rs: RunningServer, http: httpx.AsyncClient
) -> None:
    body = {**CONTOSO, "filter": "contacts_only", "tls": "optional", "connection_limit": 2}
    row = (await http.post(f"{API}/partners", json=body)).json()
    blocked = await http.post(f"{API}/partners/{row['id']}/block")
    assert blocked.status_code == 200
    assert blocked.json() == {**row, "allowed": False}
    assert not rs.server.gate.config.partner_for("contoso.example").allowed
    unblocked = await http.post(f"{API}/partners/Contoso/unblock")
    assert unblocked.json() == row
    assert rs.server.federation.find("Contoso") == Partner(
        id=row["id"],
        name="Contoso",
        domains=("contoso.example", "*.contoso.example"),
        filter=rs.server.federation.find("Contoso").filter,
        tls=Requirement.OPTIONAL,
        connection_limit=2,
    )
    actions = [c["action"] for c in (await http.get(f"{API}/changes?limit=2")).json()]
    assert actions == ["partner.unblock", "partner.block"]


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"tls": "off", "sasl_external": "required"}, "sasl_external", "tls off"),
        ({"sasl_external": "off", "dialback": False}, "dialback", "nothing is left"),
        ({"domains": ["a.*.example"]}, "domains", "wildcard"),
        ({"domains": ["*"]}, "domains", ""),
        ({"domains": []}, "domains", "at least one"),
        ({"domains": ["localhost"]}, "domains", "this server serves"),
        ({"name": "   "}, "name", "needs a name"),
        ({"name": "bell\u0007"}, "name", "control characters"),
        ({"name": "n" * 101}, "name", "at most 100"),
        ({"edge_address": "host:port"}, "edge_address", "number"),
        ({"edge_address": "bad host:5269"}, "edge_address", "not a host"),
        ({"connection_limit": 0}, "connection_limit", "at least 1"),
        ({"connection_limit": -5}, "connection_limit", "at least 1"),
        ({"filter": "maybe"}, "filter", ""),
        ({"tls": True}, "tls", ""),
        ({"domains": "contoso.example"}, "domains", "list"),
        ({"colour": "blue"}, "colour", ""),
    ],
)
async def test_invalid_partners_are_refused_naming_the_field(
    rs: RunningServer, http: httpx.AsyncClient, body: dict[str, Any], field: str, says: str
) -> None:
    before = rs.server.federation.config.partners
    r = await http.post(f"{API}/partners", json={**CONTOSO, **body})
    assert field in fields(r)
    assert says in messages(r)
    assert rs.server.federation.config.partners == before


async def test_duplicate_names_and_domains_are_refused(http: httpx.AsyncClient) -> None:
    assert (await http.post(f"{API}/partners", json=CONTOSO)).status_code == 201
    same_name = await http.post(f"{API}/partners", json={**CONTOSO, "domains": ["x.example"]})
    same_domain = await http.post(
        f"{API}/partners", json={"name": "Other", "domains": ["Contoso.Example."]}
    )
    public_domain = await http.post(
        f"{API}/partners", json={"name": "Mine", "domains": ["jabber.org"]}
    )
    assert fields(same_name) == ["name"]
    assert fields(same_domain) == ["domains"]
    assert "already listed by partner 'Contoso'" in messages(same_domain)
    assert "'jabber.org'" in messages(public_domain)
    # An edit is checked like a new row, and a refused edit changes nothing.
    other = await http.post(f"{API}/partners", json={"name": "Other", "domains": ["o.example"]})
    assert other.status_code == 201
    clash = await http.patch(f"{API}/partners/Other", json={"domains": ["contoso.example"]})
    assert fields(clash) == ["domains"]
    null_name = await http.patch(f"{API}/partners/Other", json={"name": None})
    assert fields(null_name) == ["name"]
    assert (await http.get(f"{API}/partners/Other")).json() == other.json()


async def test_partner_status_and_connection_test(http: httpx.AsyncClient) -> None:
    closed = free_port()
    await http.post(
        f"{API}/partners",
        json={"name": "Closed", "domains": ["closed.test"], "edge_address": f"127.0.0.1:{closed}"},
    )
    await http.post(f"{API}/partners", json={"name": "Wild", "domains": ["*.wild.test"]})
    status = await http.get(f"{API}/partners/Closed/status")
    assert status.status_code == 200
    assert status.json()["partner"] == "Closed"
    assert status.json()["streams"] == []

    r = await http.post(f"{API}/partners/Closed/test")
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["remote"] == "closed.test"
    assert result["ok"] is False
    assert result["failed_step"] == "connect"
    assert f"127.0.0.1:{closed}" in result["steps"][0]["detail"]  # the edge address is used

    wildcards = await http.post(f"{API}/partners/Wild/test")
    assert fields(wildcards) == ["domain"]
    assert "only wildcard" in messages(wildcards)
    elsewhere = await http.post(f"{API}/partners/Wild/test", json={"domain": "other.test"})
    assert fields(elsewhere) == ["domain"]
    assert (await http.post(f"{API}/partners/Nope/test")).status_code == 404


# --- global settings -----------------------------------------------------------------


async def test_settings_patch_enable_and_disable(
    rs: RunningServer, http: httpx.AsyncClient
) -> None:
    r = await http.get(f"{API}/federation/settings")
    assert r.json() == {
        "federation": True,
        "open_federation": False,
        "open_federation_max_contacts": 100,
        "open_federation_stanza_rate": 10.0,
        "blocked_domains": [],
        "public_im_licences": 0,
        "public_im_in_use": 0,
    }
    patched = await http.patch(
        f"{API}/federation/settings",
        json={"open_federation": True, "blocked_domains": ["Spam.Example", "*.junk.example"]},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["open_federation"] is True
    assert patched.json()["blocked_domains"] == ["spam.example", "*.junk.example"]
    assert patched.json()["public_im_licences"] == 0  # untouched
    assert rs.server.gate.config.blocked_by("a.junk.example") == "*.junk.example"

    off = await http.post(f"{API}/federation/disable")
    assert off.json()["federation"] is False
    assert rs.server.gate.config.settings.federation is False
    status = (await http.get(f"{API}/federation/status")).json()
    assert status["federation"] is False
    assert (status["partners"], status["allowed"], status["blocked"]) == (4, 0, 4)
    on = await http.post(f"{API}/federation/enable")
    assert on.json()["federation"] is True
    assert on.json()["open_federation"] is True  # the rest is as it was

    for body, field in [
        ({"blocked_domains": ["a..b"]}, "blocked_domains"),
        ({"public_im_licences": -1}, "public_im_licences"),
        ({"open_federation_stanza_rate": 0}, "open_federation_stanza_rate"),
        ({"open_federation_max_contacts": -3}, "open_federation_max_contacts"),
        ({"federation": None}, "federation"),
        ({"federation": "sometimes"}, "federation"),
        ({"licences": 3}, "licences"),
    ]:
        assert field in fields(await http.patch(f"{API}/federation/settings", json=body)), body
    nan = await http.patch(
        f"{API}/federation/settings",
        content=b'{"open_federation_stanza_rate": NaN}',
        headers={"Content-Type": "application/json"},
    )
    assert fields(nan) == ["open_federation_stanza_rate"]
    assert not math.isnan(rs.server.gate.config.settings.open_federation_stanza_rate)
    actions = [c["action"] for c in (await http.get(f"{API}/changes")).json()][:3]
    assert len(actions) == 3
    assert all(a.startswith("settings") for a in actions), actions


# --- users ---------------------------------------------------------------------------


async def test_user_federation_settings(rs: RunningServer, http: httpx.AsyncClient) -> None:
    alice = await rs.add_user("alice")
    r = await http.get(f"{API}/users/{alice}/federation")
    assert r.json() == {
        "user": alice,
        "federation": True,
        "public_im": False,
        "verified_subscriptions": "prompt",
        "block_non_allowed_im": False,
        "allow_list": [],
    }
    patched = await http.patch(
        f"{API}/users/{alice}/federation",
        json={
            "verified_subscriptions": "allow",
            "block_non_allowed_im": True,
            "allow_list": ["bob@contoso.example", "*.partner.example"],
        },
    )
    assert patched.status_code == 200, patched.text
    assert (await http.get(f"{API}/users/{alice}/federation")).json() == patched.json()
    assert patched.json()["federation"] is True  # untouched

    assert fields(
        await http.patch(f"{API}/users/{alice}/federation", json={"allow_list": ["a@b/c"]})
    ) == ["allow_list"]
    assert fields(
        await http.patch(f"{API}/users/{alice}/federation", json={"verified_subscriptions": "ask"})
    ) == ["verified_subscriptions"]
    unknown = await http.get(f"{API}/users/nobody@localhost/federation")
    assert unknown.status_code == 404
    assert fields(await http.get(f"{API}/users/bob@elsewhere.example/federation")) == ["user"]
    assert fields(await http.patch(f"{API}/users/not a jid@@/federation", json={})) == ["user"]
    change = (await http.get(f"{API}/changes?limit=1")).json()[0]
    assert (change["actor"], change["target"]) == ("api:token", alice)


async def test_public_im_is_refused_past_the_licence_count(
    rs: RunningServer, http: httpx.AsyncClient
) -> None:
    users = [await rs.add_user(name) for name in ("alice", "bob", "carol")]
    grant = {"public_im": True}
    none_left = await http.patch(f"{API}/users/{users[0]}/federation", json=grant)
    assert fields(none_left) == ["public_im"]
    assert "no public IM licences are available" in messages(none_left)

    await http.patch(f"{API}/federation/settings", json={"public_im_licences": 2})
    for user in users[:2]:
        ok = await http.patch(f"{API}/users/{user}/federation", json=grant)
        assert ok.json()["public_im"] is True
    refused = await http.patch(f"{API}/users/{users[2]}/federation", json=grant)
    assert fields(refused) == ["public_im"]
    assert messages(refused) == "all 2 public IM licences are in use"
    settings = (await http.get(f"{API}/federation/settings")).json()
    assert (settings["public_im_licences"], settings["public_im_in_use"]) == (2, 2)
    lower = await http.patch(f"{API}/federation/settings", json={"public_im_licences": 1})
    assert fields(lower) == ["public_im_licences"]


# --- explain -------------------------------------------------------------------------


async def test_explain_inbound_and_outbound(rs: RunningServer, http: httpx.AsyncClient) -> None:
    alice = await rs.add_user("alice")
    await http.post(f"{API}/partners", json=CONTOSO)

    async def explain(**body: Any) -> dict[str, Any]:
        r = await http.post(f"{API}/explain", json=body)
        assert r.status_code == 200, r.text
        return dict(r.json())

    weak = await explain(**{"from": "bob@contoso.example", "to": alice, "kind": "subscribe"})
    assert (weak["verdict"], weak["reason"]) == ("reject", "unverified_not_on_allow_list")
    assert weak["assumed"] == "weak trust: no live stream from contoso.example"
    assert weak["paragraph"].startswith("Subscribe from bob@contoso.example")
    assert weak["steps"][0].startswith("1. ")
    assert weak["decision"]["partner"] == "Contoso"
    assert weak["decision"]["trust"] == "weak"

    strong = await explain(
        **{"from": "bob@contoso.example", "to": alice, "kind": "subscribe", "trust": "strong"}
    )
    assert (strong["verdict"], strong["reason"]) == ("prompt", "verified_subscriptions_prompt")
    assert strong["assumed"] is None
    message = await explain(
        **{"from": "bob@contoso.example", "to": alice, "kind": "message", "trust": "strong"}
    )
    assert message["verdict"] == "accept"

    stranger = await explain(**{"from": "eve@unknown.example", "to": alice, "kind": "message"})
    assert (stranger["verdict"], stranger["reason"]) == ("reject", "no_partner")

    out = await explain(**{"from": alice, "to": "bob@contoso.example", "kind": "message"})
    assert out["verdict"] == "accept"
    assert out["decision"]["route"]["domain"] == "contoso.example"
    assert out["assumed"] is None
    refused = await explain(**{"from": alice, "to": "eve@unknown.example", "kind": "message"})
    assert (refused["verdict"], refused["reason"]) == ("reject", "no_partner")

    bad = await http.post(f"{API}/explain", json={"from": "a@@b", "to": alice, "kind": "subscribe"})
    assert fields(bad) == ["from"]
    assert fields(
        await http.post(f"{API}/explain", json={"from": alice, "to": alice, "kind": "wave"})
    ) == ["kind"]
    both_local = await http.post(
        f"{API}/explain", json={"from": alice, "to": "bob@localhost", "kind": "message"}
    )
    assert fields(both_local) == ["address"]


# --- audit ---------------------------------------------------------------------------


async def test_refused_traffic_is_in_the_audit_log(
    rs: RunningServer, http: httpx.AsyncClient
) -> None:
    alice = await rs.add_user("alice")
    c = await rs.client(alice)
    errors = Inbox(c, "message_error")
    c.send_message(mto="bob@nowhere.example", mbody="hello?", mtype="chat")
    error = await errors.get()
    assert error["error"]["condition"] == "not-allowed"
    await rs.server.gate.flush_audit()

    r = await http.get(f"{API}/audit", params={"reason": "no_partner"})
    assert r.status_code == 200
    entries = r.json()
    assert len(entries) == 1
    entry = entries[0]
    assert (entry["direction"], entry["domain"], entry["verdict"]) == (
        "out",
        "nowhere.example",
        "reject",
    )
    assert entry["sender"].startswith(alice)
    assert entry["partner"] is None
    assert "no_partner" in entry["text"]
    by_user = await http.get(f"{API}/audit", params={"user": alice, "limit": 10})
    assert [e["id"] for e in by_user.json()] == [entry["id"]]
    assert (await http.get(f"{API}/audit", params={"reason": "domain_blocked"})).json() == []
    later = await http.get(f"{API}/audit", params={"since": entry["at"] + 1})
    assert later.json() == []


# --- hostile input -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "content"),
    [
        ("POST", "/partners", b"{"),
        ("POST", "/partners", b"[" * 100_000),
        ("POST", "/partners", b'"just a string"'),
        ("POST", "/partners", b'{"name": "x", "domains": ["\\ud800.example"]}'),
        ("POST", "/partners", b'{"name": "x\\u0000y", "domains": ["a.example"]}'),
        ("POST", "/partners", b'{"name": "x", "domains": ["a.example"], "comment": "\\udfff"}'),
        ("POST", "/partners", b'{"name": "x", "domains": ["a.example"], "connection_limit": 1e99}'),
        ("POST", "/partners", b'{"name": "x", "domains": ["a.example"], "connection_limit": '
         + b"9" * 40 + b"}"),
        ("POST", "/partners", b'{"name": "' + b"n" * 200_000 + b'", "domains": ["a.example"]}'),
        ("POST", "/partners", b'{"name": "x", "domains": [' + b'"a.example",' * 30_000
         + b'"b.example"]}'),
        ("PATCH", "/partners/1", b'{"domains": [null]}'),
        ("PATCH", "/partners/1", b'{"edge_address": "[::1"}'),
        ("PATCH", "/partners/%00", b"{}"),
        ("PATCH", "/federation/settings", b'{"public_im_licences": 1e400}'),
        ("PATCH", "/federation/settings", b'{"open_federation_stanza_rate": Infinity}'),
        ("PATCH", "/federation/settings", b'{"blocked_domains": [{"a": 1}]}'),
        ("PATCH", "/users/%F0%9F%92%A9@localhost/federation", b'{"federation": false}'),
        ("PATCH", "/users/a%40b%40c/federation", b"{}"),
        ("PATCH", "/users/%ED%A0%80@localhost/federation", b"{}"),
        ("GET", "/users/@localhost/federation", b""),
        ("GET", "/users/localhost/federation", b""),
        ("GET", "/partners/%FF%FE", b""),
        ("GET", "/audit?limit=-1", b""),
        ("GET", "/audit?limit=0", b""),
        ("GET", "/audit?limit=100000000000000000000000", b""),
        ("GET", "/audit?since=nan", b""),
        ("GET", "/audit?since=yesterday", b""),
        ("GET", "/audit?domain=" + "x" * 5000, b""),
        ("GET", "/changes?limit=-5", b""),
        ("POST", "/explain", b'{"from": "\\u202e@x", "to": "\\ud800", "kind": "message"}'),
        ("POST", "/explain", b'{"from": 1, "to": [], "kind": null, "trust": "total"}'),
        ("POST", "/partners/1/test", b'{"domain": "\\u0000"}'),
        ("POST", "/partners/1/test", b'{"domain": 5}'),
    ],
)  # fmt: skip
async def test_hostile_requests_get_a_4xx(
    rs: RunningServer, http: httpx.AsyncClient, method: str, path: str, content: bytes
) -> None:
    await rs.add_user("alice")
    r = await http.request(
        method, API + path, content=content, headers={"Content-Type": "application/json"}
    )
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/json")
    assert "detail" in r.json()


@pytest.mark.parametrize(
    "junk",
    [
        "\u202eevil.example",
        "zero\u200bwidth.example",
        "💩.example",
        "*.💩.example",
        "ⅷ.example",
        "a" * 64 + ".example",
        "xn--zz.example",
        "[::1]",
        "*.[::1]",
        "127.0.0.1",
        "ex ample",
        "\x07bell.example",
        "ドメイン.テスト",
    ],
)
async def test_unicode_junk_in_names_and_domains_never_breaks_the_server(
    rs: RunningServer, http: httpx.AsyncClient, junk: str
) -> None:
    r = await http.post(f"{API}/partners", json={"name": junk, "domains": [junk]})
    assert r.status_code in (201, 422), r.text
    if r.status_code == 201:
        row = r.json()
        again = await http.get(f"{API}/partners/{row['id']}")
        assert again.json() == row
        assert rs.server.federation.find(row["id"]).domains == tuple(row["domains"])
    else:
        assert set(fields(r)) <= {"name", "domains"}


async def test_huge_bodies_are_refused_before_parsing(http: httpx.AsyncClient) -> None:
    huge = b'{"name": "x", "comment": "' + b"a" * (5 * 1024 * 1024) + b'"}'
    r = await http.post(
        f"{API}/partners", content=huge, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413
    assert "larger than" in r.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        for _ in range(6):
            yield b"a" * (1024 * 1024)

    chunked = await http.post(f"{API}/partners", content=chunks())
    assert chunked.status_code == 413
    # The server is still fine afterwards.
    assert (await http.get(f"{API}/partners")).status_code == 200


async def test_the_openapi_document_describes_every_operation(http: httpx.AsyncClient) -> None:
    doc = (await http.get("/api/openapi.json")).json()
    operations = [
        (path, method, op)
        for path, item in doc["paths"].items()
        if path.startswith(f"{API}/") and not path.startswith(f"{API}/s2s")
        for method, op in item.items()
    ]
    federation = {
        (path, method)
        for path, method, _ in operations
        if not path.startswith((f"{API}/peer-servers", f"{API}/directory"))
        and not path.endswith("/contacts")
    }
    assert len(federation) == 19  # the federation administration of issue 4
    for path, method, op in operations:
        assert op.get("summary"), (method, path)
        assert op.get("description"), (method, path)
        assert op.get("security"), (method, path)
    schemes = doc["components"]["securitySchemes"]
    assert {s["scheme"] for s in schemes.values()} == {"bearer", "basic"}


# --- configuration -------------------------------------------------------------------


def test_admins_must_be_bare_local_user_jids() -> None:
    config = load_config(
        None, overrides={"hosts": ["other.example"], "accounts.admins": ["Root@Other.Example"]}
    )
    assert config.accounts.admins == ("root@other.example",)
    for bad, says in [
        (["admin@elsewhere.example"], "not an account of this server"),
        (["localhost"], "bare user JID"),
        (["admin@localhost/laptop"], "bare user JID"),
        (["a@localhost", "A@localhost"], "listed twice"),
        ("admin@localhost", "expected a list"),
    ]:
        with pytest.raises(ConfigError, match=says):
            load_config(None, overrides={"accounts.admins": bad})
