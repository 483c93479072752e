"""FEDERATION.md §Words (peer server, directory): `imedge peer …` and `imedge directory
search` against an in-process running server and a real slapd.

As in test_cli_federation.py, the command runs in a worker thread while the server serves
in the test's event loop; assertions about effects look at the running server itself
(its directory and federation services), so the tests show the CLI changes live state.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from imedge.cli.main import app
from imedge.policy import OriginKind
from tests.helpers import RunningServer, running_server
from tests.interop.test_directory_sync import expected_addresses
from tests.peers.slapd import Slapd
from tests.server.test_cli_s2s import cli_config, table_rows


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


@pytest.fixture
async def imedge(tmp_path: Path) -> AsyncIterator[Cli]:
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


async def add_ocs(imedge: Cli, slapd: Slapd, password: str | None = None) -> str:
    """`peer add` for the slapd's people over StartTLS (IM address from labeledURI, as the
    sync tests do)."""
    return ok(
        await imedge(
            "peer", "add", "OCS", "--domain", slapd.im_domain, "--edge", "127.0.0.1:5270",
            "--ldap-url", slapd.url, "--ca-file", str(slapd.ca_path), "--base-dn", slapd.base_dn,
            "--bind-dn", slapd.bind_dn, "--password-stdin", "--page-size", "40",
            "--timeout", "5", "--im-attribute", "labeledURI",
            input=(password or slapd.password) + "\n",
        )
    )  # fmt: skip


@pytest.mark.interop
async def test_add_list_test_sync_search_reports_remove(imedge: Cli, slapd_server: Slapd) -> None:
    out = await add_ocs(imedge, slapd_server)
    assert out.splitlines()[0].startswith("added peer server OCS (id ")
    [peer] = await imedge.rs.server.directory.peer_servers()
    assert peer.ldap.bind_password == slapd_server.password
    assert peer.mapping.im_address == "labeledURI" and peer.ldap.page_size == 40
    shown = settings_of(out)
    assert shown["bind password"] == "set" and shown["im address from"] == "labeledURI"
    assert slapd_server.password not in out

    header, *rows = table_rows(ok(await imedge("peer", "list")))
    assert header == ["id", "name", "domains", "LDAP", "base DN", "sync", "enabled", "last sync"]
    assert rows == [
        [str(peer.id), "OCS", slapd_server.im_domain, slapd_server.url, slapd_server.base_dn,
         "on demand", "yes", "never"],
    ]  # fmt: skip
    listed = json.loads(ok(await imedge("peer", "list", "--json")))
    assert "bind_password" not in listed[0]["ldap"]
    assert slapd_server.password not in json.dumps(listed)

    assert ok(await imedge("peer", "test", "OCS")).startswith("LDAP of peer server OCS: ok")

    # A dry run plans and prints, but changes nothing and keeps no report.
    good = expected_addresses(slapd_server)
    out = ok(await imedge("peer", "sync", "OCS", "--dry-run"))
    assert "sync of peer server OCS: ok (dry run: nothing was changed)" in out
    assert settings_of(out)["added"] == str(len(good))
    assert peer.id is not None
    assert await imedge.rs.server.store.directory.entries(peer.id) == []
    assert "has not been synced yet" in ok(await imedge("peer", "reports", "OCS"))

    out = ok(await imedge("peer", "sync", str(peer.id)))
    people = len(slapd_server.people.people)
    # The progress (on stderr) ends with the count of entries fetched, before the report.
    assert out.index(f"{people} entries fetched") < out.index("sync of peer server OCS: ok")
    report = settings_of(out)
    assert (report["added"], report["changed"], report["removed"]) == (str(len(good)), "0", "0")
    assert "entries left out, by kind" in out
    assert re.search(r"^  outside domains: \d+$", out, re.M)
    entries = await imedge.rs.server.store.directory.entries(peer.id)
    assert {e.im_address for e in entries} == good
    partners = imedge.rs.server.federation.config.partners
    assert [p.name for p in partners if p.origin.kind is OriginKind.PEER_SERVER] == ["OCS"]

    header, *rows = table_rows(ok(await imedge("peer", "reports", "OCS")))
    assert header[:4] == ["started", "took", "status", "added"]
    assert [r[2:4] for r in rows] == [["ok", str(len(good))]]

    header, *rows = table_rows(ok(await imedge("directory", "search", "john_smith")))
    assert header == [
        "IM address", "name", "e-mail", "department", "title", "peer server", "reachable",
    ]  # fmt: skip
    [john] = [r for r in rows if r[0] == "john_smith@ocs.example"]
    assert john[1] == "John Smith" and john[6] == "yes"
    found = json.loads(ok(await imedge("directory", "search", "smith", "--limit", "2", "--json")))
    assert len(found) == 2

    # Removing asks first; "no" keeps everything.
    assert "not removed" in failed(await imedge("peer", "remove", "OCS", input="n\n"))
    assert len(await imedge.rs.server.directory.peer_servers()) == 1
    out = ok(await imedge("peer", "remove", "OCS", input="y\n"))
    assert "removed peer server OCS" in out
    assert await imedge.rs.server.directory.peer_servers() == []
    partners = imedge.rs.server.federation.config.partners
    assert not [p for p in partners if p.origin.kind is OriginKind.PEER_SERVER]


@pytest.mark.interop
async def test_a_wrong_password_fails_the_sync_and_says_so(
    imedge: Cli, slapd_server: Slapd
) -> None:
    await add_ocs(imedge, slapd_server, password="not the password")
    out = failed(await imedge("peer", "test", "OCS"))
    assert "invalid credentials" in out

    out = failed(await imedge("peer", "sync", "OCS"))
    assert "sync of peer server OCS: failed" in out
    assert "invalid credentials" in settings_of(out)["error"]
    assert out.rstrip().splitlines()[-1].startswith("error: sync of peer server OCS failed:")
    assert "not the password" not in out
    [peer] = await imedge.rs.server.directory.peer_servers()
    assert peer.id is not None
    assert await imedge.rs.server.store.directory.entries(peer.id) == []
    _header, *rows = table_rows(ok(await imedge("peer", "reports", "OCS")))
    assert [r[2] for r in rows] == ["failed"]
    assert "invalid credentials" in rows[0][8]

    # The password is replaced through `edit`, never shown, and the next sync succeeds.
    out = ok(
        await imedge("peer", "edit", "OCS", "--password-stdin", input=slapd_server.password + "\n")
    )
    assert "bind password: replaced" in out
    ok(await imedge("peer", "sync", "OCS"))


async def test_unknown_peer_and_bad_arguments_are_one_line(imedge: Cli) -> None:
    for command in ("show", "sync", "test", "reports", "remove"):
        out = failed(await imedge("peer", command, "nope"))
        assert out.strip() == "error: no peer server named 'nope' (`imedge peer list` shows them)"
    out = failed(
        await imedge(
            "peer", "add", "X", "--domain", "x.example", "--ldap-url", "ldaps://127.0.0.1",
            "--base-dn", "o=x",
        )
    )  # fmt: skip
    assert out.strip().startswith("error: give --im-attribute or --im-template")
    assert await imedge.rs.server.directory.peer_servers() == []

    # The server's own refusal: one line per problem it names.
    out = failed(
        await imedge(
            "peer", "add", "X", "--domain", "x.example", "--ldap-url", "http://127.0.0.1",
            "--base-dn", "o=x", "--im-attribute", "mail",
        )
    )  # fmt: skip
    assert out.startswith("error: peer server X not added")
    assert "ldap" in out and len(out.strip().splitlines()) <= 3
    assert (
        ok(await imedge("peer", "list")).strip() == "no peer servers (`imedge peer add` adds one)"
    )


async def test_directory_search_finds_local_users(imedge: Cli) -> None:
    alice = await imedge.rs.add_user("alice")
    _header, *rows = table_rows(ok(await imedge("directory", "search", "ALICE")))
    assert [r[0] for r in rows] == [alice]
    assert rows[0][5:] == ["local", "yes"]
    out = ok(await imedge("directory", "search", "nobody-here"))
    assert out.strip() == "nobody in the directory matches 'nobody-here'"
