"""`imedge s2s list` and `imedge s2s test` against an in-process running server.

The command runs in a worker thread (Typer's CliRunner is synchronous) while the server
keeps serving in the test's event loop; the command finds the server through a config
file naming the server's `data_dir` (for admin.token) and its HTTP port.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import trustme
from typer.testing import CliRunner, Result

from imedge.cli.main import app
from tests.helpers import Inbox, RunningServer, federated_server, free_port, running_server

A, B = "a.test", "b.test"
# Addresses of this module only, so that it can run beside the other federation tests.
A_IP, B_IP = "127.0.0.38", "127.0.0.39"
EDGES = {
    "s2s.edge_addresses": {A: f"{A_IP}:5269", B: f"{B_IP}:5269", "down.test": "127.0.0.99:5269"}
}


@pytest.fixture(autouse=True)
def _no_env_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMEDGE_CONFIG", raising=False)


def config_for(
    tmp: Path, data_dir: Path, http: str, name: str = "cli.toml", domain: str = "localhost"
) -> Path:
    path = tmp / name
    path.write_text(
        f"""\
domain = "{domain}"
data_dir = "{data_dir}"

[listen]
http = "{http}"
"""
    )
    return path


def cli_config(rs: RunningServer) -> Path:
    http = rs.server.bound["http"]
    return config_for(
        rs.tmp, rs.server.config.data_dir, f"{http.host}:{http.port}", domain=rs.domain
    )


async def imedge(*args: str) -> Result:
    """Run `imedge ARGS` in a thread, so the in-process server can answer it meanwhile."""
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, app, list(args), env={"COLUMNS": "200"}, catch_exceptions=False
    )


def table_rows(output: str) -> list[list[str]]:
    """The cells of a Rich table, row by row (box-drawing lines left out)."""
    rows = []
    for raw in output.splitlines():
        line = raw.strip().replace("┃", "│")  # the header row has heavy bars
        if line.startswith("│"):
            rows.append([c.strip() for c in line.strip("│").split("│")])
    return rows


async def test_list_says_when_there_are_no_streams(server: RunningServer) -> None:
    result = await imedge("s2s", "list", "--config", str(cli_config(server)))
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "no server-to-server streams"


async def test_list_and_test_between_two_servers(tmp_path: Path) -> None:
    ca = trustme.CA()
    async with (
        federated_server(tmp_path / "a", A, A_IP, ca, **EDGES) as a,
        federated_server(tmp_path / "b", B, B_IP, ca, **EDGES) as b,
    ):
        alice = await a.add_user("alice")
        bob = await b.add_user("bob")
        inbox = Inbox(await b.client(bob))
        (await a.client(alice)).send_message(mto=bob, mbody="hi", mtype="chat")
        await inbox.get(lambda m: m["body"] == "hi", timeout=10)

        config = str(cli_config(a))
        listed = await imedge("s2s", "list", "--config", config)
        as_json = await imedge("s2s", "list", "--json", "--config", config)
        tested = await imedge("s2s", "test", B, "--config", config)

    assert listed.exit_code == 0, listed.output
    header, *rows = table_rows(listed.output)
    assert header == ["remote", "dir", "peer", "TLS", "auth", "certificate", "in", "out", "age"]
    out = [r for r in rows if r[1] == "out"]
    assert len(out) == 1, listed.output
    remote, _, peer, tls, auth, cert, _in, sent, age = out[0]
    assert (remote, peer, auth, cert) == (B, f"{B_IP}:5269", "sasl-external", "valid")
    assert tls in ("TLSv1.2", "TLSv1.3")
    assert int(sent) >= 1
    assert age.count(":") == 2

    assert as_json.exit_code == 0
    streams: list[dict[str, Any]] = json.loads(as_json.output)
    assert {s["direction"] for s in streams if s["remote"] == B} >= {"out"}

    assert tested.exit_code == 0, tested.output
    lines = tested.output.splitlines()
    assert [line.split()[:2] for line in lines[:4]] == [
        ["ok", "dns"],
        ["ok", "connect"],
        ["ok", "tls"],
        ["ok", "authentication"],
    ]
    assert lines[4] == ""
    summary = " ".join(lines[5:])
    assert summary.startswith(f"{A} can federate with {B}: its configured edge address")
    assert "accepted us by SASL EXTERNAL" in summary


async def test_test_of_an_unreachable_domain_explains_and_exits_1(tmp_path: Path) -> None:
    async with running_server(tmp_path, **EDGES) as rs:
        result = await imedge("s2s", "test", "down.test", "--config", str(cli_config(rs)))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].split()[:2] == ["ok", "dns"]
    assert lines[1].split()[:2] == ["FAIL", "connect"]
    assert lines[1].endswith("127.0.0.99:5269: connection refused")
    summary = " ".join(lines[3:])
    assert summary.startswith("localhost cannot federate with down.test:")
    assert "Check that the XMPP server of down.test is running" in summary


async def test_test_with_an_invalid_domain_names_the_problem(server: RunningServer) -> None:
    result = await imedge("s2s", "test", "not a domain", "--config", str(cli_config(server)))
    assert result.exit_code == 1
    assert "error: the server refused the request (422): domain:" in result.output
    assert "not a valid XMPP domain" in result.output


async def test_commands_explain_a_server_that_is_not_running(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "admin.token").write_text("some-token\n")
    port = free_port()  # nothing listens there
    config = config_for(tmp_path, data, f"127.0.0.1:{port}")
    for args in (["s2s", "list"], ["s2s", "test", "b.test"]):
        result = await imedge(*args, "--config", str(config))
        assert result.exit_code == 1
        assert f"cannot reach the server at http://127.0.0.1:{port}/api/v1/s2s/" in result.output
        assert "(is `imedge serve` running?)" in result.output


async def test_commands_explain_a_missing_token(server: RunningServer, tmp_path: Path) -> None:
    http = server.server.bound["http"]
    config = config_for(tmp_path, tmp_path / "elsewhere", f"{http.host}:{http.port}")
    result = await imedge("s2s", "list", "--config", str(config))
    assert result.exit_code == 1
    assert f"cannot read the admin token {tmp_path / 'elsewhere' / 'admin.token'}" in result.output
    assert "No such file or directory" in result.output


async def test_commands_explain_a_wrong_token(server: RunningServer, tmp_path: Path) -> None:
    http = server.server.bound["http"]
    data = tmp_path / "other"
    data.mkdir()
    (data / "admin.token").write_text("stale-token\n")
    config = config_for(tmp_path, data, f"{http.host}:{http.port}")
    result = await imedge("s2s", "list", "--config", str(config))
    assert result.exit_code == 1
    assert "error: the server refused the admin token: the admin token is not valid" in (
        result.output
    )
