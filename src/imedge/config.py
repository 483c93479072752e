"""The server's configuration: one TOML file, validated as a whole.

Every problem in a file is collected and reported together, each named by its dotted key
(`listen.c2s`). Unknown keys are errors: a typo must not silently fall back to a default.
Relative paths written in the file are resolved against the file's directory; relative
paths from the built-in defaults and from overrides against the working directory.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from imedge.domain.jid import Jid, JidMalformed, prep_domain

log = logging.getLogger(__name__)

T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)

DEFAULT_DOMAIN = "localhost"
DEFAULT_DATA_DIR = "./data"
MIN_SCRAM_ITERATIONS = 4096


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def number(self) -> int:
        """The `logging` module's level number."""
        return int(logging.getLevelName(self.value.upper()))


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class DatabaseDialect(StrEnum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


class ConfigError(Exception):
    """The configuration is invalid; `problems` holds every (dotted key, problem) found."""

    def __init__(self, problems: list[tuple[str, str]], source: Path | None = None) -> None:
        self.problems = problems
        self.source = source
        where = str(source) if source is not None else "the configuration"
        lines = [f"{key}: {problem}" if key else problem for key, problem in problems]
        count = len(problems)
        head = f"{count} problem{'s' if count != 1 else ''} in {where}"
        super().__init__(head + ":\n  " + "\n  ".join(lines))


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A host and port to listen on or connect to; `host` is without IPv6 brackets."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ListenConfig:
    """Listening addresses; None means the listener is disabled."""

    c2s: Endpoint | None = Endpoint("0.0.0.0", 5222)  # noqa: S104 -- reachable by clients
    c2s_tls: Endpoint | None = Endpoint("0.0.0.0", 5223)  # noqa: S104
    s2s: Endpoint | None = Endpoint("0.0.0.0", 5269)  # noqa: S104
    s2s_tls: Endpoint | None = Endpoint("0.0.0.0", 5270)  # noqa: S104
    http: Endpoint | None = Endpoint("127.0.0.1", 5280)


@dataclass(frozen=True, slots=True)
class TlsConfig:
    cert: Path
    key: Path
    ca: Path | None = None
    # True when cert and key are the defaults under data_dir: generate them when absent.
    self_signed: bool = True


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """`url` is normalised to the async driver (`sqlite+aiosqlite`, `postgresql+asyncpg`)."""

    url: str
    dialect: DatabaseDialect


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_stanza_bytes: int = 262_144
    max_xml_depth: int = 64
    c2s_idle_timeout: int = 300
    negotiation_timeout: int = 30
    c2s_keepalive_interval: int = 60
    offline_max_messages: int = 500
    login_failures_per_address: int = 10
    login_failures_per_account: int = 5
    login_window: int = 60
    max_c2s_connections_per_ip: int = 64
    sm_resume_timeout: int = 300


@dataclass(frozen=True, slots=True)
class AccountsConfig:
    registration: bool = False
    scram_iterations: int = 4096
    # Bare JIDs of local accounts that may use the admin REST API with their password
    # (HTTP Basic), besides the admin token; every change they make is recorded as theirs.
    admins: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: LogLevel = LogLevel.INFO
    format: LogFormat = LogFormat.TEXT


@dataclass(frozen=True, slots=True)
class DnsConfig:
    """Empty `nameservers` means the system resolver."""

    nameservers: tuple[Endpoint, ...] = ()


@dataclass(frozen=True, slots=True)
class C2sConfig:
    require_tls: bool = True


@dataclass(frozen=True, slots=True)
class S2sConfig:
    """Server-to-server federation (RFC 6120 §13, XEP-0220, XEP-0368)."""

    require_tls: bool = True
    dialback: bool = True  # accept and use Server Dialback (XEP-0220)
    proxy_protocol: bool = False  # the s2s listeners expect a PROXY header (HAProxy v1/v2)
    connect_timeout: int = 10
    negotiation_timeout: int = 30
    idle_timeout: int = 600
    max_queue: int = 1000  # stanzas held per remote domain while connecting
    max_stanzas_per_second: int = 500  # per inbound stream, averaged over a few seconds
    # domain -> "host[:port]": where to connect instead of the DNS lookup (edge address)
    edge_addresses: tuple[tuple[str, Endpoint], ...] = ()

    def edge_address(self, domain: str) -> Endpoint | None:
        for name, where in self.edge_addresses:
            if name == domain:
                return where
        return None


@dataclass(frozen=True, slots=True)
class Config:
    domain: str
    hosts: tuple[str, ...]
    data_dir: Path
    listen: ListenConfig
    tls: TlsConfig
    database: DatabaseConfig
    limits: LimitsConfig
    accounts: AccountsConfig
    log: LogConfig
    dns: DnsConfig
    c2s: C2sConfig
    s2s: S2sConfig = S2sConfig()
    source: Path | None = None

    @property
    def local_domains(self) -> tuple[str, ...]:
        """The main domain first, then the extra hosts."""
        return (self.domain, *self.hosts)


# --- schema --------------------------------------------------------------------------------

_SECTIONS: dict[str, frozenset[str]] = {
    "listen": frozenset({"c2s", "c2s_tls", "s2s", "s2s_tls", "http"}),
    "tls": frozenset({"cert", "key", "ca"}),
    "database": frozenset({"url"}),
    "limits": frozenset(LimitsConfig.__dataclass_fields__),
    "accounts": frozenset({"registration", "scram_iterations", "admins"}),
    "log": frozenset({"level", "format"}),
    "dns": frozenset({"nameservers"}),
    "c2s": frozenset({"require_tls"}),
    "s2s": frozenset(S2sConfig.__dataclass_fields__),
}
_TOP_KEYS = frozenset({"domain", "hosts", "data_dir"})
# Keys whose value is a table of arbitrary names (domains may contain dots).
_TABLE_VALUED = frozenset({"s2s.edge_addresses"})


class _Invalid(Exception):
    """One value is wrong; the message is the problem, without the key."""


_MISSING: Any = object()


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


# --- value parsers (raise _Invalid) --------------------------------------------------------


def _parse_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"expected an integer > 0, got {_show(value)}")
    if value <= 0:
        raise _Invalid(f"expected an integer > 0, got {value}")
    return value


def _parse_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {_show(value)}")
    return value


def _parse_str(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_show(value)}")
    return value


def _choice(enum: type[E]) -> Callable[[object], E]:
    names = [member.value for member in enum]

    def parse(value: object) -> E:
        if not isinstance(value, str) or value.lower() not in names:
            raise _Invalid(f"expected one of {', '.join(names)}; got {_show(value)}")
        return enum(value.lower())

    return parse


def _parse_domain(value: object) -> str:
    text = _parse_str(value)
    try:
        return prep_domain(text)
    except JidMalformed as exc:
        raise _Invalid(f"not a valid XMPP domain ({exc}), got {text!r}") from None


def _parse_host(host: str, original: str, expected: str) -> str:
    if not host:
        raise _Invalid(f"expected {expected}, got {original!r}")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if all(
        label and len(label) <= 63 and re.fullmatch(r"[A-Za-z0-9_-]+", label) for label in labels
    ):
        return host.lower()
    raise _Invalid(f"expected {expected}, got {original!r}")


def _split_host_port(text: str, expected: str) -> tuple[str, str | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise _Invalid(f"expected {expected}, got {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _Invalid(f"not an IPv6 address inside brackets in {text!r}") from None
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise _Invalid(f"expected {expected}, got {text!r}")
        return host, rest[1:]
    if text.count(":") > 1:
        raise _Invalid(f"IPv6 addresses need brackets, as in [::1]:5222; got {text!r}")
    host, sep, port = text.partition(":")
    return host, (port if sep else None)


def _parse_port(port: str, text: str, expected: str) -> int:
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise _Invalid(f"expected {expected} with a port 0-65535, got {text!r}")
    return int(port)


def _parse_listener(value: object) -> Endpoint | None:
    expected = "host:port"
    if value is False or value == "":
        return None
    if not isinstance(value, str):
        raise _Invalid(f"expected host:port, or false to disable, got {_show(value)}")
    host, port = _split_host_port(value, expected)
    if port is None:
        raise _Invalid(f"expected host:port, got {value!r}")
    return Endpoint(_parse_host(host, value, expected), _parse_port(port, value, expected))


def _admin_parser(local_domains: tuple[str, ...]) -> Callable[[object], str]:
    """An administrator: the bare JID of an account of one of our own domains."""

    def parse(value: object) -> str:
        text = _parse_str(value)
        try:
            jid = Jid.parse(text.strip())
        except JidMalformed as exc:
            raise _Invalid(f"not a valid JID ({exc}), got {text!r}") from None
        if jid.local is None or not jid.is_bare:
            raise _Invalid(
                f"expected a bare user JID such as admin@{local_domains[0]}, got {text!r}"
            )
        if jid.domain not in local_domains:
            raise _Invalid(f"{jid} is not an account of this server's domains")
        return str(jid)

    return parse


def _parse_edge(value: object) -> Endpoint:
    expected = "host or host:port"
    text = _parse_str(value)
    host, port = _split_host_port(text, expected)
    return Endpoint(
        _parse_host(host, text, expected),
        5269 if port is None else _parse_port(port, text, expected),
    )


def _parse_edges(value: object) -> tuple[tuple[str, Endpoint], ...]:
    if not isinstance(value, dict):
        raise _Invalid(f'expected a table of domain = "host:port", got {_show(value)}')
    out: list[tuple[str, Endpoint]] = []
    for domain, where in value.items():
        try:
            out.append((_parse_domain(domain), _parse_edge(where)))
        except _Invalid as exc:
            raise _Invalid(f"{domain}: {exc}") from None
    return tuple(out)


def _parse_nameserver(value: object) -> Endpoint:
    expected = "an IP address or IP:port"
    text = _parse_str(value)
    try:
        return Endpoint(str(ipaddress.ip_address(text)), 53)
    except ValueError:
        pass
    host, port = _split_host_port(text, expected)
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        raise _Invalid(f"expected {expected}, got {text!r}") from None
    return Endpoint(address, 53 if port is None else _parse_port(port, text, expected))


def _parse_list(item: Callable[[object], T]) -> Callable[[object], tuple[T, ...]]:
    def parse(value: object) -> tuple[T, ...]:
        if not isinstance(value, list):
            raise _Invalid(f"expected a list, got {_show(value)}")
        out: list[T] = []
        for index, element in enumerate(value):
            try:
                out.append(item(element))
            except _Invalid as exc:
                raise _Invalid(f"item {index}: {exc}") from None
        return tuple(out)

    return parse


def _path_parser(base: Path) -> Callable[[object], Path]:
    def parse(value: object) -> Path:
        text = _parse_str(value)
        if not text:
            raise _Invalid("expected a path, got ''")
        path = Path(text).expanduser()
        return path if path.is_absolute() else (base / path).resolve()

    return parse


_DRIVERS: dict[str, DatabaseDialect] = {
    "sqlite": DatabaseDialect.SQLITE,
    "sqlite+aiosqlite": DatabaseDialect.SQLITE,
    "postgresql": DatabaseDialect.POSTGRESQL,
    "postgres": DatabaseDialect.POSTGRESQL,
    "postgresql+asyncpg": DatabaseDialect.POSTGRESQL,
}
_ASYNC_SCHEME = {
    DatabaseDialect.SQLITE: "sqlite+aiosqlite",
    DatabaseDialect.POSTGRESQL: "postgresql+asyncpg",
}


def _database_parser(base: Path) -> Callable[[object], DatabaseConfig]:
    def parse(value: object) -> DatabaseConfig:
        url = _parse_str(value)
        scheme, sep, rest = url.partition("://")
        if not sep:
            raise _Invalid(f"expected a database URL such as sqlite:///PATH, got {url!r}")
        dialect = _DRIVERS.get(scheme.lower())
        if dialect is None:
            raise _Invalid(
                f"unsupported database scheme {scheme!r}; "
                "use sqlite:///PATH or postgresql://USER@HOST/DB"
            )
        if dialect is DatabaseDialect.POSTGRESQL:
            if not rest:
                raise _Invalid(f"expected postgresql://USER@HOST/DB, got {url!r}")
            return DatabaseConfig(f"{_ASYNC_SCHEME[dialect]}://{rest}", dialect)
        if not rest.startswith("/"):
            raise _Invalid(f"expected sqlite:///PATH (three slashes), got {url!r}")
        path, qsep, query = rest[1:].partition("?")
        if path and path != ":memory:" and not path.startswith("/"):
            path = str((base / path).resolve())
        return DatabaseConfig(f"{_ASYNC_SCHEME[dialect]}:///{path}{qsep}{query}", dialect)

    return parse


# --- loading -------------------------------------------------------------------------------


def _merge_overrides(
    tree: dict[str, Any],
    overrides: Mapping[str, Any],
    problems: list[tuple[str, str]],
    prefix: str = "",
) -> set[str]:
    """Apply `overrides` (dotted keys or nested mappings) in place; return the keys set."""
    touched: set[str] = set()
    for raw_key, value in overrides.items():
        if value is None:
            continue
        parts = [p for p in str(raw_key).split(".") if p]
        node = tree
        path = prefix
        ok = True
        for part in parts[:-1]:
            path = f"{path}.{part}" if path else part
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append((path, f"expected a table, got {_show(child)}"))
                ok = False
                break
            node = child
        if not ok or not parts:
            continue
        leaf = parts[-1]
        dotted = f"{path}.{leaf}" if path else leaf
        if isinstance(value, Mapping) and dotted not in _TABLE_VALUED:
            child = node.setdefault(leaf, {})
            if not isinstance(child, dict):
                problems.append((dotted, f"expected a table, got {_show(child)}"))
                continue
            touched |= _merge_overrides(child, value, problems, dotted)
        else:
            node[leaf] = dict(value) if isinstance(value, Mapping) else value
            touched.add(dotted)
    return touched


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([("", "configuration file not found")], path) from None
    except OSError as exc:
        raise ConfigError([("", f"cannot read configuration file: {exc.strerror}")], path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([("", f"not UTF-8 text at byte {exc.start}")], path) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
        if found:
            detail = message[: found.start()]
            where = f"line {found.group(1)}, column {found.group(2)}"
            problem = f"TOML syntax error at {where}: {detail}"
        else:
            problem = f"TOML syntax error: {message}"
        raise ConfigError([("", problem)], path) from None


def _check_unknown(tree: Mapping[str, Any], problems: list[tuple[str, str]]) -> None:
    for key, value in tree.items():
        if key in _TOP_KEYS:
            continue
        keys = _SECTIONS.get(key)
        if keys is None:
            problems.append((key, "unknown key"))
        elif not isinstance(value, dict):
            problems.append((key, f"expected a table [{key}], got {_show(value)}"))
        else:
            problems.extend((f"{key}.{sub}", "unknown key") for sub in value if sub not in keys)


class _Reader:
    def __init__(
        self,
        tree: Mapping[str, Any],
        problems: list[tuple[str, str]],
        file_base: Path,
        override_keys: set[str],
        has_file: bool,
    ) -> None:
        self.tree = tree
        self.problems = problems
        self.file_base = file_base
        self.override_keys = override_keys
        self.has_file = has_file
        self.cwd = Path.cwd()

    def raw(self, dotted: str) -> Any:
        node: Any = self.tree
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return _MISSING
            node = node[part]
        return node

    def is_set(self, dotted: str) -> bool:
        return self.raw(dotted) is not _MISSING

    def base(self, dotted: str) -> Path:
        """Where a relative path in this key is resolved from."""
        if self.has_file and dotted not in self.override_keys:
            return self.file_base
        return self.cwd

    def get(self, dotted: str, default: T, parse: Callable[[object], T]) -> T:
        value = self.raw(dotted)
        if value is _MISSING:
            return default
        try:
            return parse(value)
        except _Invalid as exc:
            self.problems.append((dotted, str(exc)))
            return default

    def path(self, dotted: str) -> Path | None:
        return self.get(dotted, None, _path_parser(self.base(dotted)))


def _read_listen(r: _Reader) -> ListenConfig:
    defaults = ListenConfig()
    values = {
        name: r.get(f"listen.{name}", getattr(defaults, name), _parse_listener)
        for name in sorted(_SECTIONS["listen"])
    }
    seen: dict[Endpoint, str] = {}
    for name in ("c2s", "c2s_tls", "s2s", "s2s_tls", "http"):
        endpoint = values[name]
        if endpoint is None or endpoint.port == 0:
            continue
        if endpoint in seen:
            r.problems.append((f"listen.{name}", f"same address as listen.{seen[endpoint]}"))
        else:
            seen[endpoint] = name
    return ListenConfig(**values)


def _read_tls(r: _Reader, domain: str, data_dir: Path) -> TlsConfig:
    cert = r.path("tls.cert")
    key = r.path("tls.key")
    ca = r.path("tls.ca")
    if ca is not None and not ca.is_file():
        r.problems.append(("tls.ca", f"file not found: {ca}"))
    self_signed = cert is None and key is None
    if (cert is None) != (key is None):
        missing = "tls.key" if key is None else "tls.cert"
        r.problems.append((missing, "set tls.cert and tls.key together, or neither"))
    for name, path in (("tls.cert", cert), ("tls.key", key)):
        if path is not None and not path.is_file():
            r.problems.append((name, f"file not found: {path}"))
    tls_dir = data_dir / "tls"
    return TlsConfig(
        cert=cert or tls_dir / f"{domain}.crt",
        key=key or tls_dir / f"{domain}.key",
        ca=ca,
        self_signed=self_signed,
    )


def load_config(path: Path | None, *, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read and validate `path` (None: the built-in defaults), then apply `overrides`.

    Overrides use dotted keys (`{"listen.c2s": "127.0.0.1:0"}`) or nested mappings; a
    None value leaves the key as it is. Raises ConfigError listing every problem.
    """
    source = path.resolve() if path is not None else None
    tree: dict[str, Any] = _read_file(source) if source is not None else {}
    problems: list[tuple[str, str]] = []
    override_keys = _merge_overrides(tree, overrides or {}, problems)
    _check_unknown(tree, problems)

    file_base = source.parent if source is not None else Path.cwd()
    r = _Reader(tree, problems, file_base, override_keys, source is not None)

    domain = r.get("domain", DEFAULT_DOMAIN, _parse_domain)
    no_hosts: tuple[str, ...] = ()
    hosts = r.get("hosts", no_hosts, _parse_list(_parse_domain))
    unique: list[str] = []
    for host in hosts:
        if host == domain or host in unique:
            problems.append(("hosts", f"{host!r} is listed twice (or repeats domain)"))
        else:
            unique.append(host)

    data_dir = r.path("data_dir") or (Path.cwd() / DEFAULT_DATA_DIR).resolve()
    default_db = DatabaseConfig(
        f"sqlite+aiosqlite:///{data_dir / 'imedge.db'}", DatabaseDialect.SQLITE
    )
    database = r.get("database.url", default_db, _database_parser(r.base("database.url")))

    limits_defaults = LimitsConfig()
    limits = LimitsConfig(
        **{
            name: r.get(f"limits.{name}", getattr(limits_defaults, name), _parse_int)
            for name in LimitsConfig.__dataclass_fields__
        }
    )
    accounts = AccountsConfig(
        registration=r.get("accounts.registration", False, _parse_bool),
        scram_iterations=r.get("accounts.scram_iterations", 4096, _parse_int),
        admins=r.get("accounts.admins", (), _parse_list(_admin_parser((domain, *unique)))),
    )
    if len(set(accounts.admins)) != len(accounts.admins):
        problems.append(("accounts.admins", "an account is listed twice"))
    log_config = LogConfig(
        level=r.get("log.level", LogLevel.INFO, _choice(LogLevel)),
        format=r.get("log.format", LogFormat.TEXT, _choice(LogFormat)),
    )
    dns = DnsConfig(r.get("dns.nameservers", (), _parse_list(_parse_nameserver)))
    c2s = C2sConfig(require_tls=r.get("c2s.require_tls", True, _parse_bool))
    s2s_defaults = S2sConfig()
    s2s_values: dict[str, Any] = {}
    for name in S2sConfig.__dataclass_fields__:
        default = getattr(s2s_defaults, name)
        if name == "edge_addresses":
            parser: Callable[[object], Any] = _parse_edges
        elif isinstance(default, bool):
            parser = _parse_bool
        else:
            parser = _parse_int
        s2s_values[name] = r.get(f"s2s.{name}", default, parser)
    s2s = S2sConfig(**s2s_values)

    config = Config(
        domain=domain,
        hosts=tuple(unique),
        data_dir=data_dir,
        listen=_read_listen(r),
        tls=_read_tls(r, domain, data_dir),
        database=database,
        limits=limits,
        accounts=accounts,
        log=log_config,
        dns=dns,
        c2s=c2s,
        s2s=s2s,
        source=source,
    )
    if problems:
        raise ConfigError(problems, source)
    if not c2s.require_tls:
        log.warning("c2s.require_tls is false: clients may log in without TLS (benchmarks only)")
    if accounts.scram_iterations < MIN_SCRAM_ITERATIONS:
        log.warning(
            "accounts.scram_iterations = %d is below the %d that RFC 7677 recommends",
            accounts.scram_iterations,
            MIN_SCRAM_ITERATIONS,
        )
    return config


# --- presentation --------------------------------------------------------------------------


def _redact_url(url: str) -> str:
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", url)


def _listener(endpoint: Endpoint | None, note: str) -> str:
    return "disabled" if endpoint is None else f"{endpoint} ({note})"


def describe(config: Config) -> list[tuple[str, str]]:
    """Labelled lines saying where everything is, for the startup banner."""
    tls_note = "STARTTLS required" if config.c2s.require_tls else "STARTTLS optional!"
    cert_note = " (self-signed, generated when absent)" if config.tls.self_signed else ""
    return [
        ("config", str(config.source) if config.source else "built-in defaults"),
        ("domain", config.domain),
        ("extra hosts", ", ".join(config.hosts) or "none"),
        ("data dir", str(config.data_dir)),
        ("database", _redact_url(config.database.url)),
        ("tls certificate", f"{config.tls.cert}{cert_note}"),
        ("tls key", str(config.tls.key)),
        ("tls trust", f"{config.tls.ca} and the system CAs" if config.tls.ca else "system CAs"),
        ("c2s", _listener(config.listen.c2s, tls_note)),
        ("c2s direct tls", _listener(config.listen.c2s_tls, "XEP-0368")),
        ("s2s", _listener(config.listen.s2s, "federation")),
        ("s2s direct tls", _listener(config.listen.s2s_tls, "XEP-0368")),
        ("http", _listener(config.listen.http, "REST API and admin console")),
        ("registration", "open (XEP-0077)" if config.accounts.registration else "closed"),
        (
            "dns",
            ", ".join(str(ns) for ns in config.dns.nameservers) or "system resolver",
        ),
        ("log", f"{config.log.level}, {config.log.format}"),
    ]


def render_defaults() -> str:
    """A commented example configuration; loading it gives the built-in defaults."""
    listen = ListenConfig()
    limits = LimitsConfig()
    accounts = AccountsConfig()

    def endpoint(value: Endpoint | None) -> str:
        return "false" if value is None else f'"{value}"'

    return f"""\
# IM Edge configuration (TOML). Every key is optional; shown here with its default.
# Relative paths are resolved against this file's directory. Unknown keys are errors.

# The XMPP domain this server is authoritative for (the part after @ in a JID).
domain = "{DEFAULT_DOMAIN}"
# Further local domains served by this instance.
hosts = []
# Where the database, generated certificates and other state live.
data_dir = "{DEFAULT_DATA_DIR}"

[listen]
# "host:port" (IPv6 as "[::1]:5222"); "" or false disables a listener; port 0 picks one.
c2s = {endpoint(listen.c2s)}          # clients, STARTTLS (RFC 6120)
c2s_tls = {endpoint(listen.c2s_tls)}      # clients, direct TLS (XEP-0368)
s2s = {endpoint(listen.s2s)}          # other servers, STARTTLS
s2s_tls = {endpoint(listen.s2s_tls)}      # other servers, direct TLS (XEP-0368)
http = {endpoint(listen.http)}       # REST API and admin console: loopback by default

[tls]
# Certificate and key (PEM). When both are left out, a self-signed pair is generated
# in <data_dir>/tls/<domain>.crt and .key. Set both or neither.
# cert = "/etc/imedge/tls/example.org.crt"
# key = "/etc/imedge/tls/example.org.key"
# Extra trust store (PEM) for verifying peer servers, on top of the system CAs.
# ca = "/etc/imedge/tls/ca.pem"

[database]
# sqlite:///PATH (default: <data_dir>/imedge.db) or postgresql://USER:PASSWORD@HOST/DB
# url = "sqlite:///data/imedge.db"

[limits]
max_stanza_bytes = {limits.max_stanza_bytes}
max_xml_depth = {limits.max_xml_depth}
c2s_idle_timeout = {limits.c2s_idle_timeout}              # seconds without traffic
negotiation_timeout = {limits.negotiation_timeout}            # seconds to finish TLS, SASL, bind
c2s_keepalive_interval = {limits.c2s_keepalive_interval}         # seconds between whitespace pings
offline_max_messages = {limits.offline_max_messages}          # stored per user
login_failures_per_address = {limits.login_failures_per_address}     # within login_window
login_failures_per_account = {limits.login_failures_per_account}      # within login_window
login_window = {limits.login_window}                   # seconds
max_c2s_connections_per_ip = {limits.max_c2s_connections_per_ip}
sm_resume_timeout = {limits.sm_resume_timeout}             # seconds to resume (XEP-0198)

[accounts]
# In-band registration (XEP-0077).
registration = {"true" if accounts.registration else "false"}
scram_iterations = {accounts.scram_iterations}
# Accounts (bare JIDs of local users) that may use the admin REST API with their
# password (HTTP Basic), besides the token in <data_dir>/admin.token.
admins = []

[log]
level = "{LogLevel.INFO}"                  # debug, info, warning, error
format = "{LogFormat.TEXT}"                 # text, json

[dns]
# Resolvers for s2s lookups, "IP" or "IP:port"; empty means the system resolver.
nameservers = []

[c2s]
# Require STARTTLS before authentication. Turn off only for benchmarks.
require_tls = true

[s2s]
require_tls = true                    # STARTTLS (or direct TLS) on every server link
dialback = true                       # Server Dialback (XEP-0220) when certificates don't do
proxy_protocol = false                # s2s listeners sit behind a PROXY-protocol connector
connect_timeout = 10                  # seconds to open a TCP connection to a peer
negotiation_timeout = 30              # seconds to finish TLS and authentication
idle_timeout = 600                    # close a server link idle this long
max_queue = 1000                      # stanzas held per remote domain while connecting
max_stanzas_per_second = 500          # per inbound server link

[s2s.edge_addresses]
# Connect to these addresses instead of looking the domain up in DNS.
# "partner.example" = "edge.partner.example:5269"
"""
