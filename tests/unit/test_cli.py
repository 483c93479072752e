"""The `imedge` command line, in process (Typer's CliRunner) against a SQLite file in tmp_path."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from imedge.cli.logging_setup import JsonFormatter, TextFormatter, early_logs, logging_to_stderr
from imedge.cli.main import app
from imedge.cli.serve import banner_rows, os_error_text
from imedge.config import Endpoint, LogConfig, LogFormat, LogLevel, load_config
from imedge.domain.jid import Jid
from imedge.store.ports import ScramCredential
from imedge.store.sql import open_store

CONFIG = """\
domain = "example.org"
hosts = ["chat.example.org"]
data_dir = "data"

[listen]
c2s = "127.0.0.1:0"
c2s_tls = "127.0.0.1:0"
s2s = ""
s2s_tls = ""
http = "127.0.0.1:0"
"""


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("IMEDGE_CONFIG", raising=False)
    path = tmp_path / "imedge.toml"
    path.write_text(CONFIG)
    return path


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=input)


def ok(*args: str, input: str | None = None) -> Result:
    result = invoke(*args, input=input)
    assert result.exit_code == 0, result.output
    return result


def credential(config_file: Path, jid: str) -> ScramCredential | None:
    async def read() -> ScramCredential | None:
        store = await open_store(load_config(config_file).database.url)
        try:
            return await store.accounts.get_credential(Jid.parse(jid), "SCRAM-SHA-256")
        finally:
            await store.close()

    return asyncio.run(read())


# --- user ---------------------------------------------------------------------------------


def test_user_add_list_passwd_delete(config_file: Path) -> None:
    cfg = str(config_file)
    result = ok("user", "add", "alice@example.org", "--password", "s3cret", "--config", cfg)
    assert "created account alice@example.org" in result.stdout
    assert (config_file.parent / "data" / "imedge.db").is_file()
    ok("user", "add", "bob@chat.example.org", "-p", "pw", "-c", cfg)

    listing = ok("user", "list", "--config", cfg).stdout
    assert "alice@example.org" in listing
    assert "bob@chat.example.org" in listing
    assert "2 accounts" in listing
    only = ok("user", "list", "--domain", "chat.example.org", "-c", cfg).stdout
    assert "bob@chat.example.org" in only
    assert "alice@example.org" not in only

    before = credential(config_file, "alice@example.org")
    result = ok("user", "passwd", "alice@example.org", "-c", cfg, input="new\nnew\n")
    assert "changed the password of alice@example.org" in result.stdout
    after = credential(config_file, "alice@example.org")
    assert before is not None
    assert after is not None
    assert after.stored_key != before.stored_key

    result = ok("user", "delete", "alice@example.org", "--yes", "-c", cfg)
    assert "deleted account alice@example.org" in result.stdout
    listing = ok("user", "list", "-c", cfg).stdout
    assert "alice@example.org" not in listing
    assert "1 account" in listing


def test_add_prompts_for_the_password_twice(config_file: Path) -> None:
    result = invoke(
        "user", "add", "carol@example.org", "-c", str(config_file), input="a\nb\na\na\n"
    )
    assert result.exit_code == 0, result.output
    assert "do not match" in result.output
    assert result.output.count("Password:") == 2  # asked again after the mismatch
    assert result.output.count("Repeat the password:") == 2
    assert credential(config_file, "carol@example.org") is not None


def test_add_reads_the_password_from_stdin(config_file: Path) -> None:
    ok("user", "add", "dave@example.org", "--password-stdin", "-c", str(config_file), input="pw\n")
    assert credential(config_file, "dave@example.org") is not None


def test_add_refuses_a_password_twice(config_file: Path) -> None:
    result = invoke(
        "user", "add", "x@example.org", "-p", "a", "--password-stdin", "-c", str(config_file)
    )
    assert result.exit_code == 1
    assert "not both" in result.stderr


def test_global_config_before_the_command_and_from_the_environment(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok("--config", str(config_file), "user", "add", "erin@example.org", "-p", "pw")
    monkeypatch.setenv("IMEDGE_CONFIG", str(config_file))
    assert "erin@example.org" in ok("user", "list").stdout


def test_duplicate_add_fails_before_asking_for_a_password(config_file: Path) -> None:
    cfg = str(config_file)
    ok("user", "add", "alice@example.org", "-p", "pw", "-c", cfg)
    result = invoke("user", "add", "alice@example.org", "-c", cfg, input="")
    assert result.exit_code == 1
    assert "account alice@example.org already exists" in result.stderr
    assert "Password" not in result.output
    assert "Traceback" not in result.output


def test_bad_jid(config_file: Path) -> None:
    result = invoke("user", "add", "bad@@example.org", "-p", "pw", "-c", str(config_file))
    assert result.exit_code == 1
    assert "'bad@@example.org' is not a valid address" in result.stderr
    result = invoke("user", "add", "example.org", "-p", "pw", "-c", str(config_file))
    assert result.exit_code == 1
    assert "is not a user address" in result.stderr


def test_wrong_domain(config_file: Path) -> None:
    result = invoke("user", "add", "mallory@elsewhere.net", "-p", "pw", "-c", str(config_file))
    assert result.exit_code == 1
    assert "does not serve 'elsewhere.net'" in result.stderr
    result = invoke("user", "list", "--domain", "elsewhere.net", "-c", str(config_file))
    assert result.exit_code == 1
    assert "does not serve 'elsewhere.net'" in result.stderr


def test_passwd_and_delete_of_a_missing_account(config_file: Path) -> None:
    for command in ("passwd", "delete"):
        result = invoke("user", command, "ghost@example.org", "-c", str(config_file), input="")
        assert result.exit_code == 1
        assert "no account ghost@example.org" in result.stderr


def test_delete_asks_first(config_file: Path) -> None:
    cfg = str(config_file)
    ok("user", "add", "alice@example.org", "-p", "pw", "-c", cfg)
    result = invoke("user", "delete", "alice@example.org", "-c", cfg, input="n\n")
    assert result.exit_code == 1
    assert "Delete alice@example.org" in result.output
    assert "alice@example.org" in ok("user", "list", "-c", cfg).stdout
    ok("user", "delete", "alice@example.org", "-c", cfg, input="y\n")
    assert "no accounts" in ok("user", "list", "-c", cfg).stdout


# --- check-config -------------------------------------------------------------------------


def test_check_config_good(config_file: Path) -> None:
    result = ok("check-config", str(config_file))
    assert "configuration is valid" in result.stdout
    assert "example.org" in result.stdout
    assert str(config_file.parent / "data") in result.stdout
    assert ok("check-config", "--config", str(config_file)).stdout == result.stdout


def test_check_config_bad_names_each_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('domain = "example.org"\nlisten_c2s = 1\n[listen]\nc2s = "nowhere"\n')
    result = invoke("check-config", str(bad))
    assert result.exit_code == 2
    assert "2 problems" in result.stderr
    assert "listen_c2s: unknown key" in result.stderr
    assert "listen.c2s:" in result.stderr
    assert "configuration is valid" not in result.output


def test_check_config_missing_file(tmp_path: Path) -> None:
    result = invoke("check-config", str(tmp_path / "nope.toml"))
    assert result.exit_code == 2
    assert "configuration file not found" in result.stderr


def test_serve_with_a_bad_config_starts_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('domain = "example.org"\n[log]\nlevel = "loud"\n')
    result = invoke("serve", "--config", str(bad))
    assert result.exit_code == 2
    assert "log.level" in result.stderr
    assert not (tmp_path / "data").exists()


# --- db -----------------------------------------------------------------------------------


def test_db_upgrade_twice_and_status(config_file: Path) -> None:
    cfg = str(config_file)
    status = invoke("db", "status", "-c", cfg)
    assert status.exit_code == 1
    assert "none (empty database)" in status.stdout
    first = ok("db", "upgrade", "-c", cfg)
    assert "applied revision" in first.stdout
    second = ok("db", "upgrade", "-c", cfg)
    assert "already up to date" in second.stdout
    assert "up to date" in ok("db", "status", "-c", cfg).stdout


def test_version() -> None:
    from imedge import __version__

    assert __version__ in ok("version").stdout
    assert __version__ in ok("--version").stdout


def test_help_lists_the_commands_and_examples() -> None:
    text = ok("--help").stdout
    for command in ("serve", "check-config", "user", "db", "version", "Examples"):
        assert command in text


# --- banner and error text ----------------------------------------------------------------


def test_banner_shows_bound_ports_and_listeners_not_started(config_file: Path) -> None:
    config = load_config(config_file)
    rows = dict(
        banner_rows(
            config,
            {"c2s": Endpoint("127.0.0.1", 40001), "http": Endpoint("127.0.0.1", 40003)},
        )
    )
    assert rows["c2s"].startswith("127.0.0.1:40001 (STARTTLS required)")
    assert rows["http"].startswith("127.0.0.1:40003")
    assert "not listening" in rows["c2s direct tls"]
    assert rows["s2s"] == "disabled"
    assert rows["domain"] == "example.org"


def test_os_error_text_is_one_readable_line() -> None:
    exc = OSError(
        errno.EADDRINUSE,
        "error while attempting to bind on address ('0.0.0.0', 5222): address already in use",
    )
    text = os_error_text(exc)
    assert text.startswith("error while attempting to bind on address ('0.0.0.0', 5222)")
    assert "already listens" in text
    assert "Errno" not in text


# --- logging ------------------------------------------------------------------------------


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "imedge.server.c2s.stream", logging.INFO, __file__, 1, "bound %s", ("a@b/c",), None
    )
    record.__dict__.update(extra)
    return record


def test_text_format_carries_stream_and_peer() -> None:
    line = TextFormatter().format(_record(stream="s1", peer="127.0.0.1:4000"))
    _date, _time, level, name, rest = line.split(" ", 4)
    assert (level, name) == ("INFO", "imedge.server.c2s.stream")
    assert rest == "[stream=s1 peer=127.0.0.1:4000] bound a@b/c"
    assert TextFormatter().format(_record()).endswith("imedge.server.c2s.stream bound a@b/c")


def test_json_format_is_one_object_per_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = _record(stream="s1", peer="p")
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "INFO"
    assert entry["logger"] == "imedge.server.c2s.stream"
    assert entry["message"] == "bound a@b/c"
    assert (entry["stream"], entry["peer"]) == ("s1", "p")
    assert "ValueError: boom" in entry["exception"]
    assert "T" in entry["time"]


def test_early_warnings_are_replayed_in_the_configured_format(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = logging.getLogger("imedge.test_cli")
    with early_logs() as early:
        logger.warning("before the configuration: %s", 42)
    config = LogConfig(level=LogLevel.INFO, format=LogFormat.JSON)
    with logging_to_stderr(config, early=early):
        logger.debug("hidden")
        logger.info("after")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [entry["message"] for entry in lines] == ["before the configuration: 42", "after"]
