from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from imedge.config import (
    ConfigError,
    DatabaseDialect,
    Endpoint,
    LogFormat,
    LogLevel,
    describe,
    load_config,
    render_defaults,
)

REPO = Path(__file__).resolve().parents[2]


def problems_of(overrides: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides=overrides)
    return dict(info.value.problems)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "imedge.toml"
    path.write_text(text)
    return path


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    assert config.domain == "localhost"
    assert config.hosts == ()
    assert config.data_dir == tmp_path.resolve() / "data"
    assert config.listen.c2s == Endpoint("0.0.0.0", 5222)
    assert config.listen.c2s_tls == Endpoint("0.0.0.0", 5223)
    assert config.listen.s2s == Endpoint("0.0.0.0", 5269)
    assert config.listen.s2s_tls == Endpoint("0.0.0.0", 5270)
    assert config.listen.http == Endpoint("127.0.0.1", 5280)
    assert config.tls.cert == config.data_dir / "tls" / "localhost.crt"
    assert config.tls.key == config.data_dir / "tls" / "localhost.key"
    assert config.tls.ca is None
    assert config.tls.self_signed
    assert config.database.url == f"sqlite+aiosqlite:///{config.data_dir}/imedge.db"
    assert config.database.dialect is DatabaseDialect.SQLITE
    assert config.limits.max_stanza_bytes == 262_144
    assert config.limits.c2s_idle_timeout == 300
    assert config.limits.offline_max_messages == 500
    assert config.accounts.registration is False
    assert config.accounts.scram_iterations == 4096
    assert config.log.level is LogLevel.INFO
    assert config.log.format is LogFormat.TEXT
    assert config.dns.nameservers == ()
    assert config.c2s.require_tls is True
    assert config.source is None
    assert config.local_domains == ("localhost",)


def test_file_values_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    for name in ("a.crt", "a.key", "ca.pem"):
        (tmp_path / "certs" / name).write_text("x")
    path = write(
        tmp_path,
        """
domain = "A.Test"
hosts = ["b.test"]
data_dir = "state"
[listen]
c2s = "[::1]:5222"
c2s_tls = false
s2s = ""
http = "127.0.0.2:0"
[tls]
cert = "certs/a.crt"
key = "certs/a.key"
ca = "certs/ca.pem"
[database]
url = "sqlite:///db/x.db"
[limits]
max_stanza_bytes = 1000
[log]
level = "DEBUG"
format = "json"
[dns]
nameservers = ["127.0.0.1:5353", "::1", "[::1]:53"]
[accounts]
registration = true
""",
    )
    config = load_config(path)
    assert config.source == path
    assert config.domain == "a.test"
    assert config.local_domains == ("a.test", "b.test")
    assert config.data_dir == tmp_path / "state"
    assert config.listen.c2s == Endpoint("::1", 5222)
    assert str(config.listen.c2s) == "[::1]:5222"
    assert config.listen.c2s_tls is None
    assert config.listen.s2s is None
    assert config.listen.s2s_tls == Endpoint("0.0.0.0", 5270)
    assert config.listen.http == Endpoint("127.0.0.2", 0)
    assert config.tls.cert == tmp_path / "certs" / "a.crt"
    assert config.tls.ca == tmp_path / "certs" / "ca.pem"
    assert not config.tls.self_signed
    assert config.database.url == f"sqlite+aiosqlite:///{tmp_path}/db/x.db"
    assert config.limits.max_stanza_bytes == 1000
    assert config.log.level is LogLevel.DEBUG
    assert config.log.format is LogFormat.JSON
    assert config.dns.nameservers == (
        Endpoint("127.0.0.1", 5353),
        Endpoint("::1", 53),
        Endpoint("::1", 53),
    )
    assert config.accounts.registration is True


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("domain", "bad domain", "not a valid XMPP domain"),
        ("domain", 5, "expected a string, got 5"),
        ("hosts", "b.test", "expected a list, got 'b.test'"),
        ("hosts", ["ok.test", "a b"], "item 1: not a valid XMPP domain"),
        ("hosts", ["localhost"], "listed twice"),
        ("data_dir", "", "expected a path"),
        ("listen.c2s", "abc", "expected host:port, got 'abc'"),
        ("listen.c2s_tls", "host:99999", "port 0-65535"),
        ("listen.s2s", "::1:5269", "IPv6 addresses need brackets"),
        ("listen.s2s_tls", "[nope]:5270", "not an IPv6 address"),
        ("listen.http", 5280, "expected host:port, or false to disable, got 5280"),
        ("listen.http", True, "got true"),
        ("tls.ca", "/nonexistent/ca.pem", "file not found: /nonexistent/ca.pem"),
        ("tls.cert", "/nonexistent/a.crt", "file not found: /nonexistent/a.crt"),
        ("tls.key", "/nonexistent/a.key", "file not found: /nonexistent/a.key"),
        ("database.url", "mysql://h/db", "unsupported database scheme 'mysql'"),
        ("database.url", "imedge.db", "expected a database URL"),
        ("database.url", "sqlite://x.db", "three slashes"),
        ("limits.max_stanza_bytes", 0, "expected an integer > 0, got 0"),
        ("limits.max_xml_depth", -3, "expected an integer > 0, got -3"),
        ("limits.c2s_idle_timeout", "300", "expected an integer > 0, got '300'"),
        ("limits.negotiation_timeout", 1.5, "got 1.5"),
        ("limits.c2s_keepalive_interval", True, "got true"),
        ("limits.offline_max_messages", 0, "> 0"),
        ("limits.login_failures_per_address", 0, "> 0"),
        ("limits.login_failures_per_account", 0, "> 0"),
        ("limits.login_window", 0, "> 0"),
        ("limits.max_c2s_connections_per_ip", 0, "> 0"),
        ("accounts.registration", "yes", "expected true or false, got 'yes'"),
        ("accounts.scram_iterations", 0, "> 0"),
        ("log.level", "verbose", "expected one of debug, info, warning, error; got 'verbose'"),
        ("log.format", "xml", "expected one of text, json"),
        ("dns.nameservers", ["dns.example"], "item 0: expected an IP address or IP:port"),
        ("dns.nameservers", "1.1.1.1", "expected a list"),
        ("c2s.require_tls", 1, "expected true or false, got 1"),
    ],
)
def test_each_key_is_validated(key: str, value: object, message: str) -> None:
    problems = problems_of({key: value})
    assert message in problems[key]


def test_all_problems_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
domain = "ok.test"
colour = "blue"
[listen]
c2s = "abc"
[limits]
max_stanza_byte = 10
max_xml_depth = 0
[nonsense]
""",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = dict(info.value.problems)
    assert problems == {
        "colour": "unknown key",
        "nonsense": "unknown key",
        "limits.max_stanza_byte": "unknown key",
        "listen.c2s": "expected host:port, got 'abc'",
        "limits.max_xml_depth": "expected an integer > 0, got 0",
    }
    text = str(info.value)
    assert text.startswith(f"5 problems in {path}")
    assert "listen.c2s: expected host:port, got 'abc'" in text


def test_cert_and_key_go_together(tmp_path: Path) -> None:
    cert = tmp_path / "a.crt"
    cert.write_text("x")
    problems = problems_of({"tls.cert": str(cert)})
    assert problems == {"tls.key": "set tls.cert and tls.key together, or neither"}


def test_section_must_be_a_table() -> None:
    assert "expected a table [limits]" in problems_of({"limits": 5})["limits"]


def test_duplicate_listen_addresses() -> None:
    problems = problems_of({"listen.s2s": "0.0.0.0:5222"})
    assert problems == {"listen.s2s": "same address as listen.c2s"}


def test_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, 'domain = "a.test"\n\n[listen\nc2s = "x"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "TOML syntax error at line 3, column" in str(info.value)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "absent.toml")


def test_overrides_dotted_and_nested(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "etc").mkdir()
    path = write(tmp_path / "etc", 'domain = "file.test"\ndata_dir = "from-file"\n')
    monkeypatch.chdir(tmp_path)
    config = load_config(
        path,
        overrides={
            "domain": "override.test",
            "listen.c2s": "127.0.0.1:0",
            "limits": {"login_window": 7},
            "data_dir": None,  # None leaves the file's value
        },
    )
    assert config.domain == "override.test"
    assert config.listen.c2s == Endpoint("127.0.0.1", 0)
    assert config.limits.login_window == 7
    assert config.data_dir == tmp_path / "etc" / "from-file"
    assert config.tls.cert.name == "override.test.crt"
    # Relative paths given as overrides are taken from the working directory.
    config = load_config(path, overrides={"data_dir": "here"})
    assert config.data_dir == tmp_path / "here"


def test_unknown_override_key() -> None:
    assert problems_of({"listen.c2": "1.2.3.4:5"}) == {"listen.c2": "unknown key"}


def test_database_urls(tmp_path: Path) -> None:
    pg = load_config(None, overrides={"database.url": "postgresql://u:pw@db/imedge"})
    assert pg.database.url == "postgresql+asyncpg://u:pw@db/imedge"
    assert pg.database.dialect is DatabaseDialect.POSTGRESQL
    assert ("database", "postgresql+asyncpg://u:***@db/imedge") in describe(pg)
    memory = load_config(None, overrides={"database.url": "sqlite+aiosqlite:///:memory:"})
    assert memory.database.url == "sqlite+aiosqlite:///:memory:"
    absolute = load_config(None, overrides={"database.url": f"sqlite:///{tmp_path}/x.db"})
    assert absolute.database.url == f"sqlite+aiosqlite:///{tmp_path}/x.db"


def test_require_tls_off_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="imedge.config"):
        config = load_config(None, overrides={"c2s.require_tls": False})
    assert config.c2s.require_tls is False
    assert "require_tls is false" in caplog.text


def test_rendered_defaults_load_to_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, render_defaults())
    assert load_config(path) == replace(load_config(None), source=path)


def test_example_file_is_current() -> None:
    assert (REPO / "docs" / "imedge.example.toml").read_text() == render_defaults()


def test_describe_mentions_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None, overrides={"listen.s2s": False})
    lines = dict(describe(config))
    assert lines["config"] == "built-in defaults"
    assert lines["domain"] == "localhost"
    assert lines["s2s"] == "disabled"
    assert lines["c2s"] == "0.0.0.0:5222 (STARTTLS required)"
    assert "generated when absent" in lines["tls certificate"]
    assert lines["data dir"] == str(tmp_path / "data")
