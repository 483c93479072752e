"""`imedge serve`: run the server until SIGINT/SIGTERM, with a banner saying where it is."""

from __future__ import annotations

import errno
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

import typer

from imedge import __version__
from imedge.cli.common import ConfigOption, ExitCode, configured, fail, run, say, say_settings
from imedge.config import Config, Endpoint, describe
from imedge.server.tls import TlsConfigError
from imedge.store.ports import StoreError

if TYPE_CHECKING:
    from imedge.app import Server

log = logging.getLogger(__name__)

# describe()'s label for each listener -> the key of Server.bound.
LISTENER_LABELS = {
    "c2s": "c2s",
    "c2s direct tls": "c2s_tls",
    "s2s": "s2s",
    "s2s direct tls": "s2s_tls",
    "http": "http",
}
_HINTS = {
    errno.EADDRINUSE: "another program (another imedge?) already listens there",
    errno.EACCES: "ports below 1024 need privileges; choose another port in [listen]",
    errno.EADDRNOTAVAIL: "that address is not one of this machine's; check [listen]",
}


def _configured_endpoint(config: Config, key: str) -> Endpoint | None:
    endpoint: Endpoint | None = getattr(config.listen, key)
    return endpoint


def banner_rows(config: Config, bound: Mapping[str, Endpoint]) -> list[tuple[str, str]]:
    """describe(config), with each listener showing the address actually bound (port 0
    becomes the port the system chose) or saying it is configured but not listening."""
    rows: list[tuple[str, str]] = []
    for label, value in describe(config):
        key = LISTENER_LABELS.get(label)
        configured_at = _configured_endpoint(config, key) if key else None
        if key is None or configured_at is None:
            rows.append((label, value))
        elif key in bound:
            rows.append((label, value.replace(str(configured_at), str(bound[key]), 1)))
        else:
            rows.append((label, f"{value}, not listening (not available in this version)"))
    return rows


def print_banner(config: Config, bound: Mapping[str, Endpoint]) -> None:
    say(f"IM Edge {__version__} is running (Ctrl-C or SIGTERM stops it)")
    say_settings(banner_rows(config, bound))
    log.info(
        "IM Edge %s ready for %s: %s",
        __version__,
        config.domain,
        ", ".join(f"{name} on {where}" for name, where in bound.items()),
    )


def os_error_text(exc: OSError) -> str:
    """`[Errno 98] error while … address already in use` without the errno prefix, plus a hint."""
    text = exc.strerror or str(exc)
    if exc.filename is not None:
        text = f"{exc.filename}: {text}"
    hint = _HINTS.get(exc.errno or 0)
    return f"{text} ({hint})" if hint else text


def serve(ctx: typer.Context, config: ConfigOption = None) -> None:
    """Run the XMPP server until Ctrl-C or SIGTERM.

    Prints where everything is (configuration, data, certificate, the addresses it
    listens on), then logs to stderr. Exit status: 0 after a clean stop, 1 when it cannot
    start (address in use, database unreachable, TLS files unusable), 2 for an invalid
    configuration.
    """
    # The server and its dependencies load only for this command, to keep the others quick.
    from imedge.app import serve as serve_forever

    with configured(ctx, config) as cfg:

        def on_ready(server: Server) -> None:
            print_banner(cfg, server.bound)

        try:
            run(serve_forever(cfg, on_ready=on_ready))
        except TlsConfigError as exc:
            fail(str(exc))
        except StoreError as exc:
            fail(f"cannot use the database: {exc}")
        except OSError as exc:
            fail(f"cannot start: {os_error_text(exc)}")
        except KeyboardInterrupt:
            # Ctrl-C before the signal handlers were installed (while starting).
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        log.info("stopped")
