"""RFC 4511 / RFC 2696: fetch a peer server's people from its LDAP directory, page by page.

ldap3 is synchronous, so one fetch runs in a worker thread (`asyncio.to_thread`) with its
own connection: connect, TLS (RFC 4513 §3: StartTLS on ldap://, or ldaps://), a simple
bind as the configured DN, then a subtree search with the simple paged results control
(RFC 2696) so a directory of 100,000 entries comes back in pages the server allows.
Between pages the worker reports the running count to the event loop and stops if asked.

Every failure becomes an `LdapError` whose `kind` the sync report and the API use, and
whose message names what to fix. The bind password never appears in a message or a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import ssl
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import urlsplit

from imedge.directory.model import LdapRecord, LdapSource

# COMPAT: ldap3 2.9.1 imports `tagMap`/`typeMap` from pyasn1 >= 0.6.1, which warns that they
# are deprecated aliases on that import; nothing else is affected.
with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", r".* is deprecated\. Please use .* instead", DeprecationWarning
    )
    import ldap3
    from ldap3.core import exceptions as ldap_exc

log = logging.getLogger(__name__)

# RFC 2696 §2: pagedResultsControl.
PAGED_RESULTS_OID = "1.2.840.113556.1.4.319"
DEFAULT_PORTS = {"ldap": 389, "ldaps": 636}

# RFC 4511 Appendix A.1: the result codes this module explains.
SUCCESS = 0
TIME_LIMIT_EXCEEDED = 3
SIZE_LIMIT_EXCEEDED = 4
REFERRAL = 10
ADMIN_LIMIT_EXCEEDED = 11
UNAVAILABLE_CRITICAL_EXTENSION = 12
CONFIDENTIALITY_REQUIRED = 13
NO_SUCH_OBJECT = 32
INVALID_DN_SYNTAX = 34
INAPPROPRIATE_AUTHENTICATION = 48
INVALID_CREDENTIALS = 49
INSUFFICIENT_ACCESS_RIGHTS = 50
BUSY = 51
UNAVAILABLE = 52
UNWILLING_TO_PERFORM = 53
FILTER_ERROR = 87


class LdapErrorKind(StrEnum):
    """Why a fetch failed, as the sync report and the API name it."""

    UNREACHABLE = "unreachable"
    TLS = "tls"
    CREDENTIALS = "credentials"
    BAD_FILTER = "bad_filter"
    NO_SUCH_BASE = "no_such_base"
    TIMEOUT = "timeout"
    OTHER = "other"


class LdapError(Exception):
    """A fetch or connection test failed; `message` says what an administrator can do."""

    def __init__(self, kind: LdapErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __repr__(self) -> str:
        return f"LdapError({self.kind.value!r}, {self.message!r})"


class LdapInterrupted(Exception):
    """The fetch was cancelled between two pages; nothing it read is to be used."""

    def __init__(self, fetched: int) -> None:
        super().__init__(f"the LDAP fetch was interrupted after {fetched} entries")
        self.fetched = fetched


@dataclass(frozen=True, slots=True)
class _Target:
    """Where the source's URL points; `url` is its normalised form for messages."""

    host: str
    port: int
    use_ssl: bool

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'ldaps' if self.use_ssl else 'ldap'}://{host}:{self.port}"


def _target(source: LdapSource) -> _Target:
    try:
        parts = urlsplit(source.url.strip())
        port = parts.port
    except ValueError as e:
        raise LdapError(
            LdapErrorKind.OTHER, f"the LDAP URL {source.url!r} is not valid: {e}"
        ) from e
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise LdapError(
            LdapErrorKind.OTHER,
            f"the LDAP URL {source.url!r} must look like ldap://host[:port] or ldaps://host[:port]",
        )
    return _Target(parts.hostname, port or DEFAULT_PORTS[scheme], scheme == "ldaps")


def _timeout(source: LdapSource) -> int:
    # ldap3 packs the receive timeout into SO_RCVTIMEO as whole seconds.
    return max(1, math.ceil(source.timeout))


def _ca_file(source: LdapSource) -> str | None:
    return source.ca_file or None


class _VerifiedTls(ldap3.Tls):
    """TLS the stdlib way: chain AND host name verified (RFC 6125) by OpenSSL itself.

    ldap3's own check calls `ssl.match_hostname`, deprecated since Python 3.7 and gone in
    3.12, and cannot match IP-address certificates; we keep its hooks but wrap the socket
    with a default context. The failure is kept so it is reported as a TLS problem.
    """

    def __init__(self, ca_file: str | None, host: str) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED, ca_certs_file=ca_file)
        self._context = ssl.create_default_context(cafile=ca_file)
        self._host = host
        self.failure: Exception | None = None

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        try:
            connection.socket = self._context.wrap_socket(
                connection.socket, server_hostname=self._host, do_handshake_on_connect=True
            )
        except (ssl.SSLError, ssl.CertificateError, OSError) as e:
            self.failure = e
            raise


def _tls_message(target: _Target, error: Exception, ca_file: str | None) -> str:
    trust = f"the CA file {ca_file}" if ca_file else "the system's trusted CAs"
    if isinstance(error, ssl.SSLCertVerificationError):
        return (
            f"the certificate of {target.url} was not accepted ({error.verify_message}); "
            f"check that it names {target.host} and is issued by a CA in {trust}"
        )
    if isinstance(error, FileNotFoundError | IsADirectoryError | PermissionError):
        return f"cannot read the CA file {ca_file}: {error.strerror}"
    reason = getattr(error, "reason", None) or str(error) or type(error).__name__
    return f"TLS with {target.url} failed: {reason}"


# -- connecting and binding -------------------------------------------------------------


@contextlib.contextmanager
def _bound(source: LdapSource) -> Iterator[tuple[ldap3.Connection, _Target, str]]:
    """A connection bound as `source.bind_dn` over the configured TLS; unbound after.

    Yields the connection, the target and a few words on how TLS was set up.
    """
    target = _target(source)
    ca_file = _ca_file(source)
    tls: _VerifiedTls | None = None
    if target.use_ssl or source.start_tls:
        try:
            tls = _VerifiedTls(ca_file, target.host)
        except OSError as e:
            raise LdapError(LdapErrorKind.TLS, _tls_message(target, e, ca_file)) from e
    server = ldap3.Server(
        target.host,
        port=target.port,
        use_ssl=target.use_ssl,
        tls=tls,
        get_info=ldap3.NONE,
        connect_timeout=_timeout(source),
    )
    bind_dn = source.bind_dn.strip() if source.bind_dn else ""
    conn = ldap3.Connection(
        server,
        user=bind_dn or None,
        password=source.bind_password or None,
        authentication=ldap3.SIMPLE if bind_dn else ldap3.ANONYMOUS,
        client_strategy=ldap3.SYNC,
        read_only=True,
        auto_referrals=False,
        receive_timeout=_timeout(source),
        raise_exceptions=False,
    )
    try:
        try:
            conn.open()
            if source.start_tls and not target.use_ssl:
                # RFC 4513 §3.1: StartTLS before the bind, so the password is encrypted.
                conn.start_tls()
        except ldap_exc.LDAPException as e:
            if tls is not None and tls.failure is not None:
                raise LdapError(
                    LdapErrorKind.TLS, _tls_message(target, tls.failure, ca_file)
                ) from e
            raise _communication_error(e, target, source, "connect") from e
        if not conn.bind():
            raise _bind_error(conn.result, target, bind_dn)
        if tls is not None:
            how = f"TLS ({'ldaps' if target.use_ssl else 'StartTLS'}, certificate verified)"
        elif bind_dn:
            how = "no TLS: the password travels in clear"
        else:
            how = "no TLS"
        yield conn, target, how
    except ldap_exc.LDAPPasswordIsMandatoryError as e:
        # RFC 4513 §5.1.2: a DN with an empty password is an "unauthenticated bind" that
        # many servers accept as anonymous; ldap3 refuses it, and so do we.
        raise LdapError(
            LdapErrorKind.CREDENTIALS, f"the bind DN {bind_dn} needs a password (none is set)"
        ) from e
    except ldap_exc.LDAPException as e:
        raise _communication_error(e, target, source, "talk to") from e
    finally:
        with contextlib.suppress(Exception):
            conn.unbind()
        # ldap3 leaves the socket open when connect() or the TLS handshake fails.
        sock = getattr(conn, "socket", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


def _communication_error(
    error: Exception, target: _Target, source: LdapSource, doing: str
) -> LdapError:
    """ldap3's socket errors subclass the OSError they wrap: classify by that."""
    if isinstance(error, ldap_exc.LDAPStartTLSError):
        return LdapError(
            LdapErrorKind.TLS,
            f"{target.url} refused StartTLS ({error}); enable TLS on the server or use ldaps://",
        )
    if isinstance(error, TimeoutError | socket.timeout) or "timed out" in str(error):
        if doing == "connect":
            return LdapError(
                LdapErrorKind.UNREACHABLE,
                f"cannot reach {target.url}: no answer within {_timeout(source)} s",
            )
        return LdapError(
            LdapErrorKind.TIMEOUT, f"{target.url} did not answer within {_timeout(source)} s"
        )
    if isinstance(error, ConnectionRefusedError):
        return LdapError(
            LdapErrorKind.UNREACHABLE, f"cannot reach {target.url}: connection refused"
        )
    if isinstance(error, socket.gaierror) or "invalid server address" in str(error):
        return LdapError(
            LdapErrorKind.UNREACHABLE, f"cannot reach {target.url}: {target.host} does not resolve"
        )
    if isinstance(error, ldap_exc.LDAPSocketOpenError | OSError):
        return LdapError(LdapErrorKind.UNREACHABLE, f"cannot reach {target.url}: {error}")
    if isinstance(
        error,
        ldap_exc.LDAPSessionTerminatedByServerError
        | ldap_exc.LDAPSocketReceiveError
        | ldap_exc.LDAPSocketSendError,
    ):
        return LdapError(
            LdapErrorKind.UNREACHABLE, f"the connection to {target.url} was lost: {error}"
        )
    if isinstance(error, ldap_exc.LDAPResponseTimeoutError):
        return LdapError(
            LdapErrorKind.TIMEOUT, f"{target.url} did not answer within {_timeout(source)} s"
        )
    return LdapError(LdapErrorKind.OTHER, f"could not {doing} {target.url}: {error}")


def _server_says(result: Mapping[str, Any]) -> str:
    """The server's diagnostic message, or the result code's name."""
    text = str(result.get("message") or "").strip()
    return text or str(result.get("description") or f"result code {result.get('result')}")


def _bind_error(result: Mapping[str, Any], target: _Target, bind_dn: str) -> LdapError:
    code = result.get("result")
    who = f"the bind DN {bind_dn}" if bind_dn else "an anonymous bind"
    if code == CONFIDENTIALITY_REQUIRED:
        return LdapError(
            LdapErrorKind.TLS, f"{target.url} requires TLS for the bind: use StartTLS or ldaps://"
        )
    if code == INVALID_CREDENTIALS:
        # RFC 4513 §6.3.1: the same answer for an unknown DN and a wrong password.
        return LdapError(
            LdapErrorKind.CREDENTIALS,
            f"the LDAP server refused {who}: invalid credentials (check the DN and password)",
        )
    if code == INVALID_DN_SYNTAX:
        return LdapError(LdapErrorKind.CREDENTIALS, f"{who} is not a valid DN")
    if code in (INAPPROPRIATE_AUTHENTICATION, UNWILLING_TO_PERFORM, INSUFFICIENT_ACCESS_RIGHTS):
        return LdapError(
            LdapErrorKind.CREDENTIALS, f"the LDAP server refused {who}: {_server_says(result)}"
        )
    if code in (BUSY, UNAVAILABLE):
        return LdapError(
            LdapErrorKind.UNREACHABLE, f"{target.url} is unavailable: {_server_says(result)}"
        )
    return LdapError(
        LdapErrorKind.OTHER, f"the bind as {bind_dn or 'anonymous'} failed: {_server_says(result)}"
    )


# -- searching --------------------------------------------------------------------------


def _search_error(result: Mapping[str, Any], target: _Target, source: LdapSource) -> LdapError:
    code = result.get("result")
    says = _server_says(result)
    if code == NO_SUCH_OBJECT:
        # Servers also answer this when access controls hide the base from the bind DN.
        who = source.bind_dn or "an anonymous bind"
        return LdapError(
            LdapErrorKind.NO_SUCH_BASE,
            f"the base DN {source.base_dn} does not exist on {target.url} "
            f"(or is not visible to {who})",
        )
    if code == INVALID_DN_SYNTAX:
        return LdapError(
            LdapErrorKind.NO_SUCH_BASE, f"the base DN {source.base_dn!r} is not a valid DN"
        )
    if code == FILTER_ERROR:
        return LdapError(
            LdapErrorKind.BAD_FILTER,
            f"the LDAP server rejected the filter {source.filter!r}: {says}",
        )
    if code == TIME_LIMIT_EXCEEDED:
        return LdapError(
            LdapErrorKind.TIMEOUT,
            f"{target.url} stopped the search at its time limit; narrow the filter or raise "
            "the server's limit",
        )
    if code in (SIZE_LIMIT_EXCEEDED, ADMIN_LIMIT_EXCEEDED):
        return LdapError(
            LdapErrorKind.OTHER,
            f"{target.url} stopped the search at its size limit ({says}); lower the page size "
            f"(now {source.page_size}) or raise the server's limit for the bind DN",
        )
    if code == UNAVAILABLE_CRITICAL_EXTENSION:
        return LdapError(
            LdapErrorKind.OTHER, f"{target.url} does not support paged results (RFC 2696): {says}"
        )
    if code == INSUFFICIENT_ACCESS_RIGHTS:
        return LdapError(
            LdapErrorKind.CREDENTIALS,
            f"the bind DN {source.bind_dn} may not search {source.base_dn}: {says}",
        )
    if code == REFERRAL:
        return LdapError(
            LdapErrorKind.OTHER,
            f"{target.url} does not hold {source.base_dn} and refers elsewhere: "
            f"{', '.join(result.get('referrals') or []) or says}",
        )
    if code == CONFIDENTIALITY_REQUIRED:
        return LdapError(LdapErrorKind.TLS, f"{target.url} requires TLS: use StartTLS or ldaps://")
    if code in (BUSY, UNAVAILABLE):
        return LdapError(LdapErrorKind.UNREACHABLE, f"{target.url} is unavailable: {says}")
    return LdapError(LdapErrorKind.OTHER, f"the search on {target.url} failed: {says}")


def _bad_filter(source: LdapSource) -> LdapError:
    return LdapError(
        LdapErrorKind.BAD_FILTER,
        f"the filter {source.filter!r} is not valid LDAP filter syntax (RFC 4515), "
        "e.g. (&(objectClass=inetOrgPerson)(uid=*))",
    )


def _search(
    conn: ldap3.Connection,
    source: LdapSource,
    target: _Target,
    attributes: Sequence[str],
    *,
    base: str,
    scope: Literal["BASE", "LEVEL", "SUBTREE"],
    search_filter: str,
    paged_size: int | None = None,
    cookie: bytes | None = None,
    size_limit: int = 0,
) -> Mapping[str, Any]:
    try:
        conn.search(
            base,
            search_filter,
            search_scope=scope,
            attributes=list(attributes) or [ldap3.NO_ATTRIBUTES],
            paged_size=paged_size,
            paged_cookie=cookie,
            size_limit=size_limit,
            time_limit=_timeout(source),
        )
    except ldap_exc.LDAPInvalidFilterError as e:
        raise _bad_filter(source) from e
    except ldap_exc.LDAPInvalidDnError as e:
        raise LdapError(
            LdapErrorKind.NO_SUCH_BASE, f"the base DN {base!r} is not a valid DN"
        ) from e
    result: Mapping[str, Any] = conn.result
    return result


def _record(entry: Mapping[str, Any], spelling: Mapping[str, str]) -> LdapRecord:
    # RFC 4512 §2.5: attribute names are case-insensitive; hand them back as requested.
    # RFC 4517 §3.2: directory strings are UTF-8.
    attrs = {
        spelling.get(name.lower(), name): tuple(v.decode("utf-8", "replace") for v in values)
        for name, values in entry["raw_attributes"].items()
        if values
    }
    return LdapRecord(dn=str(entry["dn"]), attributes=attrs)


def _page_cookie(result: Mapping[str, Any]) -> bytes | None:
    control = (result.get("controls") or {}).get(PAGED_RESULTS_OID) or {}
    cookie = (control.get("value") or {}).get("cookie")
    return bytes(cookie) if cookie else None


def _fetch_blocking(
    source: LdapSource,
    attributes: Sequence[str],
    report: Callable[[int], None],
    should_stop: Callable[[], bool],
) -> list[LdapRecord]:
    spelling = {a.lower(): a for a in attributes}
    records: list[LdapRecord] = []
    with _bound(source) as (conn, target, _how):
        cookie: bytes | None = None
        pages = 0
        while True:
            if should_stop():
                if cookie is not None:
                    # RFC 2696 §3: a page size of zero with the cookie abandons the search.
                    with contextlib.suppress(Exception):
                        conn.search(
                            source.base_dn, source.filter, paged_size=0, paged_cookie=cookie
                        )
                log.info(
                    "LDAP fetch from %s interrupted after %d entries", target.url, len(records)
                )
                raise LdapInterrupted(len(records))
            result = _search(
                conn,
                source,
                target,
                attributes,
                base=source.base_dn,
                scope=ldap3.SUBTREE,
                search_filter=source.filter,
                paged_size=max(1, source.page_size),
                cookie=cookie,
            )
            if result.get("result") != SUCCESS:
                raise _search_error(result, target, source)
            records.extend(
                _record(e, spelling)
                for e in conn.response or ()
                if e.get("type") == "searchResEntry"
            )
            pages += 1
            report(len(records))
            cookie = _page_cookie(result)
            if cookie is None:
                break
    log.info(
        "LDAP fetch from %s (%s): %d entries in %d pages",
        target.url,
        source.base_dn,
        len(records),
        pages,
    )
    return records


async def fetch(
    source: LdapSource,
    attributes: Sequence[str],
    *,
    progress: Callable[[int], None] | None = None,
    cancel: asyncio.Event | None = None,
) -> list[LdapRecord]:
    """Every entry under `source.base_dn` matching `source.filter`, with `attributes`.

    `progress(count)` runs on the event loop after each page with the running total.
    Setting `cancel` (or cancelling the awaiting task) stops the worker before its next
    page: `LdapInterrupted`. Any other failure: `LdapError`. Attribute names in the
    records are spelled as in `attributes`; values are decoded UTF-8.
    """
    loop = asyncio.get_running_loop()
    stop = threading.Event()

    def report(count: int) -> None:
        if progress is not None and not stop.is_set():
            # The loop may be gone if the awaiting task was cancelled; nobody listens then.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(progress, count)

    def should_stop() -> bool:
        # Reading an asyncio.Event's flag from the worker is a plain attribute read.
        return stop.is_set() or (cancel is not None and cancel.is_set())

    try:
        return await asyncio.to_thread(
            _fetch_blocking, source, tuple(attributes), report, should_stop
        )
    except asyncio.CancelledError:
        stop.set()
        raise


def _test_blocking(source: LdapSource) -> str:
    with _bound(source) as (conn, target, how):
        who = f"as {source.bind_dn}" if source.bind_dn else "anonymously"
        base = _search(
            conn,
            source,
            target,
            (),
            base=source.base_dn,
            scope=ldap3.BASE,
            search_filter="(objectClass=*)",
        )
        if base.get("result") != SUCCESS:
            raise _search_error(base, target, source)
        sample = _search(
            conn,
            source,
            target,
            (),
            base=source.base_dn,
            scope=ldap3.SUBTREE,
            search_filter=source.filter,
            size_limit=1,
        )
        if sample.get("result") not in (SUCCESS, SIZE_LIMIT_EXCEEDED):
            raise _search_error(sample, target, source)
        matches = "matches entries" if conn.response else "matches no entry"
        return (
            f"bound to {target.url} {who} over {how}; base DN {source.base_dn} exists; "
            f"the filter {source.filter} {matches}"
        )


async def test_connection(source: LdapSource) -> str:
    """Bind and check the base DN and the filter; a one-line summary, or `LdapError`."""
    return await asyncio.to_thread(_test_blocking, source)
