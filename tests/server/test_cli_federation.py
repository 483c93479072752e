"""`imedge partner|federation|user set|policy explain` against an in-process running server.

As in test_cli_s2s.py: the command runs in a worker thread (CliRunner is synchronous)
while the server serves in the test's event loop, and finds it through a config file
naming the server's data_dir (for admin.token) and HTTP port. Every assertion about an
effect looks at the running server itself (its federation service and change log), so
the tests show that the CLI changes live state, not just that it prints.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from typer.testing import CliRunner, Result

from imedge.cli.api_client import actor
from imedge.cli.main import app
from imedge.policy import Filter, Partner, Requirement
from imedge.services.federation import NoSuchPartner
from tests.helpers import (
    Inbox,
    RunningServer,
    federated_server,
    free_port,
    running_server,
    wait_for,
)
from tests.server.test_cli_s2s import cli_config, config_for, table_rows

# Addresses of this module only, so that it can run beside the other federation tests.
A_IP, B_IP = "127.0.0.46", "127.0.0.47"
DEFAULT_PROVIDERS = {"jabber.org", "xmpp.jp", "Conversations.im", "Disroot"}


@pytest.fixture(autouse=True)
def _no_env_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMEDGE_CONFIG", raising=False)


@dataclass
class Cli:
    """`imedge …` bound to one running server."""

    rs: RunningServer
    config: str

    async def __call__(self, *args: str, input: str | None = None) -> Result:
        runner = CliRunner()
        return await asyncio.to_thread(
            runner.invoke,
            app,
            [*args, "--config", self.config],
            input=input,
            env={"COLUMNS": "250"},
            catch_exceptions=False,
        )

    def partner(self, name: str) -> Partner:
        return self.rs.server.federation.find(name)


@pytest.fixture
async def imedge(tmp_path: Path) -> AsyncIterator[Cli]:
    # Only the fresh install's public providers in the table, no test peers.
    async with running_server(tmp_path, partners=()) as rs:
        yield Cli(rs, str(cli_config(rs)))


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def failed(result: Result) -> str:
    assert result.exit_code == 1, result.output
    return result.output


def settings_of(output: str) -> dict[str, str]:
    """The "  label    value" lines of a command's output, label to value."""
    found = {}
    for line in output.splitlines():
        if line.startswith("  ") and not line.startswith("   ") and "  " in line.strip():
            label, value = re.split(r"\s{2,}", line.strip(), maxsplit=1)
            found[label] = value
    return found


async def test_partner_add_list_show_edit_block_unblock_remove(imedge: Cli) -> None:
    out = ok(
        await imedge(
            "partner", "add", "Contoso", "--domain", "contoso.example",
            "--domain", "*.Contoso.example", "--edge", "edge.contoso.example:5270",
            "--filter", "all", "--sasl-external", "required", "--no-dialback",
            "--connection-limit", "4", "--comment", "our supplier",
        )
    )  # fmt: skip
    assert out.splitlines()[0] == "added partner Contoso"
    assert settings_of(out)["domains"] == "contoso.example, *.contoso.example"
    live = imedge.partner("Contoso")
    assert live.domains == ("contoso.example", "*.contoso.example")
    assert str(live.edge_address) == "edge.contoso.example:5270"
    assert (live.filter, live.sasl_external, live.dialback) == (
        Filter.ALL,
        Requirement.REQUIRED,
        False,
    )
    assert live.connection_limit == 4
    assert live.comment == "our supplier"

    header, *rows = table_rows(ok(await imedge("partner", "list")))
    assert header == [
        "name", "domains", "allowed", "public", "filter", "tls", "sasl ext", "dialback",
        "edge", "origin", "live streams",
    ]  # fmt: skip
    by_name = {r[0]: r for r in rows}
    assert set(by_name) == DEFAULT_PROVIDERS | {"Contoso"}
    assert by_name["Contoso"][1:] == [
        "contoso.example, *.contoso.example", "yes", "no", "all", "required", "required",
        "no", "edge.contoso.example:5270", "manual", "0",
    ]  # fmt: skip
    assert by_name["jabber.org"][2:4] == ["no", "yes"]  # listed, public, not allowed
    assert by_name["jabber.org"][9] == "default"

    listed = json.loads(ok(await imedge("partner", "list", "--json")))
    contoso = next(p for p in listed if p["name"] == "Contoso")
    assert contoso["live_streams"] == 0
    assert contoso["connection_limit"] == 4

    out = ok(await imedge("partner", "show", "Contoso"))
    assert out.startswith(f"partner Contoso (id {live.id})\n")
    assert settings_of(out) | {
        "comment": "our supplier",
        "SASL EXTERNAL": "required",
        "dialback": "refused",
        "edge address": "edge.contoso.example:5270",
        "origin": "manual",
        "live streams": "0",
        "last success": "never",
        "last failure": "never",
        "decisions": "none yet",
    } == settings_of(out)
    shown = json.loads(ok(await imedge("partner", "show", "Contoso", "--json")))
    assert shown["partner"]["id"] == live.id
    assert shown["status"]["streams"] == []

    out = ok(
        await imedge(
            "partner", "edit", "Contoso", "--filter", "verified", "--add-domain", "contoso.test",
            "--remove-domain", "*.contoso.example", "--edge", "none", "--connection-limit",
            "none", "--rename", "Contoso Ltd",
        )
    )  # fmt: skip
    assert out.splitlines() == [
        "partner Contoso Ltd:",
        "  name: Contoso → Contoso Ltd",
        "  domains: contoso.example, *.contoso.example → contoso.example, contoso.test",
        "  filter: all → verified",
        "  edge address: edge.contoso.example:5270 → none (DNS SRV records)",
        "  connection limit: 4 → none",
    ]
    edited = imedge.partner("Contoso Ltd")
    assert edited.id == live.id
    assert edited.domains == ("contoso.example", "contoso.test")
    assert edited.edge_address is None and edited.connection_limit is None
    assert edited.sasl_external is Requirement.REQUIRED  # not given: kept

    out = ok(await imedge("partner", "block", "Contoso Ltd"))
    assert out.startswith("blocked partner Contoso Ltd: it had no live streams; its configur")
    assert "`imedge partner unblock 'Contoso Ltd'` restores it" in out
    assert imedge.partner("Contoso Ltd").allowed is False
    assert ok(await imedge("partner", "block", "Contoso Ltd")).strip() == (
        "partner Contoso Ltd is already blocked"
    )
    out = ok(await imedge("partner", "unblock", "Contoso Ltd"))
    assert out.strip() == (
        "unblocked partner Contoso Ltd: contoso.example, contoso.test may federate again"
    )
    assert imedge.partner("Contoso Ltd") == edited  # exactly the configuration it had

    out = failed(await imedge("partner", "remove", "Contoso Ltd", input="n\n"))
    assert (
        "Remove partner Contoso Ltd (contoso.example, contoso.test)? This deletes its "
        "configuration and closes no live stream." in out
    )
    assert out.rstrip().endswith("error: not removed")
    assert imedge.partner("Contoso Ltd") == edited
    out = ok(await imedge("partner", "remove", "Contoso Ltd", "--yes"))
    assert out.strip() == "removed partner Contoso Ltd: it had no live streams"
    with pytest.raises(NoSuchPartner):
        imedge.partner("Contoso Ltd")

    # Every change was recorded as made from the CLI, by this Unix user.
    changes = await imedge.rs.server.store.audit.changes(limit=20)
    ours = [c for c in changes if c.target in ("Contoso", "Contoso Ltd")]
    assert len(ours) >= 5
    assert {c.actor for c in ours} == {actor()}
    assert actor().startswith("cli:")


async def test_partner_errors_are_one_line_per_problem(imedge: Cli) -> None:
    out = failed(
        await imedge(
            "partner", "add", "Bad", "--domain", "a*.example", "--tls", "off",
            "--sasl-external", "required",
        )
    )  # fmt: skip
    lines = out.splitlines()
    assert lines[0] == "error: partner Bad not added:"
    assert lines[1].startswith("  domains: 'a*.example': a wildcard is only allowed")
    assert lines[2].startswith("  sasl_external: SASL EXTERNAL uses the TLS certificate")
    assert len(lines) == 3

    # One problem: one line. A schema error (FastAPI's `loc`) reads the same way.
    out = failed(await imedge("partner", "add", "Bad", "--domain", "ok.example", "--edge", ":1"))
    assert out.startswith("error: partner Bad not added: edge_address: ")
    assert len(out.splitlines()) == 1
    out = failed(await imedge("partner", "add", "Bad"))
    assert out.strip() == "error: partner Bad not added: domains: list at least one domain"
    out = failed(await imedge("partner", "add", "Disroot", "--domain", "d.example"))
    assert "name:" in out and "Disroot" in out

    for args in (
        ("partner", "show", "Nobody"),
        ("partner", "edit", "Nobody", "--filter", "all"),
        ("partner", "block", "Nobody"),
        ("partner", "remove", "Nobody", "--yes"),
        ("partner", "test", "Nobody"),
    ):
        assert failed(await imedge(*args)).strip() == "error: no partner named 'Nobody'"

    out = failed(await imedge("partner", "edit", "Disroot"))
    assert out.strip() == "error: nothing to change: give at least one option (see --help)"
    out = failed(await imedge("partner", "edit", "Disroot", "--remove-domain", "nope.example"))
    assert out.strip() == (
        "error: partner Disroot does not list nope.example (it lists disroot.org, *.disroot.org)"
    )
    out = failed(await imedge("partner", "add", "X", "-d", "x.example", "--connection-limit", "z"))
    assert out.strip() == "error: --connection-limit: give a number or 'none', not 'z'"
    # A wildcard-only partner names no domain to test: the API's refusal, in one line.
    ok(await imedge("partner", "add", "Wild", "--domain", "*.wild.example"))
    out = failed(await imedge("partner", "test", "Wild"))
    assert out.startswith("error: cannot test partner Wild: ")


async def test_federation_disable_enable_status_set(imedge: Cli) -> None:
    status = json.loads(ok(await imedge("federation", "status", "--json")))
    assert status["federation"] is True
    assert (status["partners"], status["allowed"], status["blocked"]) == (4, 0, 4)
    assert status["live_streams"] == 0
    assert status["settings"]["public_im_licences"] == 0
    assert settings_of(ok(await imedge("federation", "status"))) == {
        "federation": "on",
        "open federation": "off",
        "blocked domains": "none",
        "public IM": "0 of 0 licences in use",
        "partners": "4 (0 allowed, 4 blocked)",
        "live streams": "0",
    }

    out = failed(await imedge("federation", "disable", input="n\n"))
    assert (
        "Disable federation? This cuts all federation: no partner can reach this server's "
        "users nor be reached, and it closes 0 live streams." in out
    )
    assert out.rstrip().endswith("error: federation stays on")
    assert imedge.rs.server.federation.config.settings.federation is True

    out = ok(await imedge("federation", "disable", input="y\n"))
    assert out.splitlines()[-1] == (
        "federation is off: closed 0 live streams; no server-to-server traffic in or out "
        "until `imedge federation enable`"
    )
    assert imedge.rs.server.federation.config.settings.federation is False
    assert settings_of(ok(await imedge("federation", "status")))["federation"] == "off"
    assert ok(await imedge("federation", "disable")).strip() == "federation is already off"
    out = ok(await imedge("federation", "enable"))
    assert out.strip().startswith("federation is on")
    assert imedge.rs.server.federation.config.settings.federation is True
    assert ok(await imedge("federation", "enable")).strip() == "federation is already on"

    out = ok(
        await imedge(
            "federation", "set", "--open", "on", "--max-contacts", "5", "--stanza-rate", "2.5",
            "--blocked-domain", "Spam.example", "--blocked-domain", "*.spam.test",
            "--licences", "3",
        )
    )  # fmt: skip
    assert out.splitlines() == [
        "federation settings:",
        "  open federation: off → on",
        "  contacts per discovered domain: 100 → 5",
        "  stanzas per second per discovered domain: 10.0 → 2.5",
        "  blocked domains: none → spam.example, *.spam.test",
        "  public IM licences: 0 → 3",
    ]
    settings = imedge.rs.server.federation.config.settings
    assert settings.open_federation is True
    assert settings.blocked_domains == ("spam.example", "*.spam.test")
    assert settings.public_im_licences == 3
    status_lines = settings_of(ok(await imedge("federation", "status")))
    assert status_lines["open federation"] == (
        "on (at most 5 contacts and 2.5 stanzas/s per discovered domain)"
    )
    assert status_lines["public IM"] == "0 of 3 licences in use"

    out = ok(await imedge("federation", "set", "--unblock-domain", "SPAM.example"))
    assert out.splitlines()[1] == "  blocked domains: spam.example, *.spam.test → *.spam.test"
    out = failed(await imedge("federation", "set", "--unblock-domain", "other.example"))
    assert out.strip() == "error: other.example is not a blocked domain (blocked: *.spam.test)"
    out = failed(await imedge("federation", "set", "--licences", "-1"))
    assert out.strip() == (
        "error: settings not changed: public_im_licences: the licence count cannot be negative"
    )
    assert failed(await imedge("federation", "set")).startswith("error: nothing to change")


async def test_user_set_and_show_with_licence_refusal(imedge: Cli) -> None:
    alice = await imedge.rs.add_user("alice")
    bob = await imedge.rs.add_user("bob")
    out = ok(await imedge("user", "show", alice))
    assert out.splitlines()[:6] == [
        alice,
        "  federation              on",
        "  public IM               off",
        "  verified subscriptions  prompt",
        "  block non-allowed IM    off",
        "  allow list              no explicit entries",
    ]

    out = failed(await imedge("user", "set", alice, "--public-im", "on"))
    assert out.strip() == (
        f"error: {alice} not changed: public_im: no public IM licences are available: the "
        "licence count is 0"
    )
    ok(await imedge("federation", "set", "--licences", "1"))
    out = ok(
        await imedge(
            "user", "set", alice, "--public-im", "on", "--verified-subscriptions", "allow",
            "--block-non-allowed-im", "on", "--allow", "john@ocs.example", "--allow",
            "*.Partner.example",
        )
    )  # fmt: skip
    assert out.splitlines() == [
        f"{alice}:",
        "  public IM: off → on",
        "  verified subscriptions: prompt → allow",
        "  block non-allowed IM: off → on",
        "  allow list: no explicit entries → john@ocs.example, *.partner.example",
    ]
    out = failed(await imedge("user", "set", bob, "--public-im", "on"))
    assert out.strip() == (
        f"error: {bob} not changed: public_im: the only public IM licence is in use"
    )
    status_lines = settings_of(ok(await imedge("federation", "status")))
    assert status_lines["public IM"] == "1 of 1 licence in use"

    out = ok(await imedge("user", "set", alice, "--disallow", "JOHN@ocs.example"))
    assert out.splitlines()[1] == (
        "  allow list: john@ocs.example, *.partner.example → *.partner.example"
    )
    shown = json.loads(ok(await imedge("user", "show", alice, "--json")))
    assert shown["public_im"] is True
    assert shown["allow_list"] == ["*.partner.example"]
    stored = await imedge.rs.server.federation.user_settings(alice)
    assert stored.public_im and stored.block_non_allowed_im
    assert stored.allow_list == ("*.partner.example",)

    out = failed(await imedge("user", "set", alice, "--disallow", "x.example"))
    assert out.strip() == (
        f"error: x.example is not on the allow list of {alice} (*.partner.example)"
    )
    out = failed(await imedge("user", "set", "carol@elsewhere.example", "--federation", "off"))
    assert out.startswith("error: cannot read the settings of carol@elsewhere.example: user: ")
    out = failed(await imedge("user", "set", alice, "--allow", "not a domain!"))
    assert out.startswith(f"error: {alice} not changed: allow_list: ")


async def test_policy_explain_prints_the_decision_and_every_step(imedge: Cli) -> None:
    alice = await imedge.rs.add_user("alice")
    ok(await imedge("partner", "add", "Fabrikam", "--domain", "fabrikam.example"))
    args = ("policy", "explain", "--from", "s@fabrikam.example", "--to", alice)

    out = ok(await imedge(*args, "--kind", "subscribe"))
    lines = out.splitlines()
    assert lines[0] == "decision: reject (reason: unverified_not_on_allow_list)"
    assert lines[1] == (
        "assumed weak trust: no live stream from fabrikam.example (choose with --trust strong|weak)"
    )
    assert lines[2] == ""
    # The paragraph: what happens, why, then every step in words.
    assert lines[3].startswith(
        f"Subscribe from s@fabrikam.example to {alice}: rejected, and unsubscribed is sent "
        "back (reason: unverified_not_on_allow_list). Federation is on."
    )
    assert lines[4:6] == ["", "steps:"]
    steps = lines[6:]
    assert steps[0] == "  1. [ok] federation: Federation is on."
    assert "[note] verification: The stanza is unverified" in out
    assert steps[-1].startswith(f"  {len(steps)}. [refused] subscription: The request is unv")

    # Strong trust with filter verified: the user's `verified_subscriptions` (prompt) decides.
    out = ok(await imedge(*args, "--kind", "subscribe", "--trust", "strong"))
    assert out.splitlines()[0].startswith("decision: prompt (reason: ")
    assert "assumed" not in out

    as_json = json.loads(ok(await imedge(*args, "--kind", "message", "--json")))
    assert set(as_json) >= {"verdict", "reason", "paragraph", "steps", "decision"}
    assert as_json["decision"]["partner"] == "Fabrikam"

    out = failed(await imedge("policy", "explain", "--from", "@@", "--to", alice, "--kind", "iq"))
    assert out.strip() == "error: cannot explain: from: not a valid XMPP address: empty localpart"


async def test_block_and_remove_count_the_live_streams_they_close(tmp_path: Path) -> None:
    ca = trustme.CA()
    a_dom, b_dom = "a.test", "b.test"
    async with (
        federated_server(tmp_path / "a", a_dom, A_IP, ca, partners=()) as a,
        federated_server(
            tmp_path / "b", b_dom, B_IP, ca, **{"s2s.edge_addresses": {a_dom: f"{A_IP}:5269"}}
        ) as b,
    ):
        imedge = Cli(a, str(cli_config(a)))
        ok(
            await imedge(
                "partner", "add", "Bee", "--domain", b_dom, "--edge", f"{B_IP}:5269",
                "--filter", "all",
            )
        )  # fmt: skip
        alice, bob = await a.add_user("alice"), await b.add_user("bob")
        inbox = Inbox(await b.client(bob))
        (await a.client(alice)).send_message(mto=bob, mbody="hi", mtype="chat")
        await inbox.get(lambda m: m["body"] == "hi", timeout=10)

        rows = {r[0]: r for r in table_rows(ok(await imedge("partner", "list")))[1:]}
        live = int(rows["Bee"][10])
        assert live >= 1
        shown = settings_of(ok(await imedge("partner", "show", "Bee")))
        assert shown["live streams"] == str(live)
        assert shown["last success"] != "never"

        out = failed(await imedge("partner", "remove", "Bee", input="n\n"))
        assert f"and closes {live} live stream" in out
        out = failed(await imedge("federation", "disable", input="n\n"))
        assert f"it closes {live} live stream" in out

        out = ok(await imedge("partner", "block", "Bee"))
        assert out.startswith(f"blocked partner Bee: closed its {live} live stream")
        await wait_for(lambda: not a.server.s2s.streams(), what="streams closed")
        rows = {r[0]: r for r in table_rows(ok(await imedge("partner", "list")))[1:]}
        assert rows["Bee"][2] == "no" and rows["Bee"][10] == "0"


async def test_commands_explain_a_server_that_is_not_running(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "admin.token").write_text("some-token\n")
    port = free_port()  # nothing listens there
    config = config_for(tmp_path, data, f"127.0.0.1:{port}")
    for args in (
        ["partner", "list"],
        ["partner", "add", "X", "--domain", "x.example"],
        ["federation", "status"],
        ["federation", "disable", "--yes"],
        ["user", "set", "alice@localhost", "--federation", "off"],
        ["policy", "explain", "--from", "a@b.example", "--to", "c@localhost", "--kind", "iq"],
    ):
        result = await asyncio.to_thread(
            CliRunner().invoke, app, [*args, "--config", str(config)], catch_exceptions=False
        )
        assert result.exit_code == 1, result.output
        assert f"cannot reach the server at http://127.0.0.1:{port}/api/v1/" in result.output
        assert result.output.rstrip().endswith("(is `imedge serve` running?)")
