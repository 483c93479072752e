"""What every command shares: the --config option, loading the configuration, consoles,
running a coroutine, and failing with one readable line and a meaningful exit status."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from imedge.cli.logging_setup import early_logs, logging_to_stderr
from imedge.config import Config, ConfigError, LogConfig, load_config

T = TypeVar("T")

CONFIG_ENV = "IMEDGE_CONFIG"


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1  # the command could not do its work (store, network, TLS, bad argument)
    CONFIG = 2  # the configuration is invalid; nothing was started
    INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help=f"Configuration file (TOML). Default: ${CONFIG_ENV}, else the built-in defaults.",
        dir_okay=False,
        show_default=False,
    ),
]


@dataclass(frozen=True, slots=True)
class CliState:
    """Options given before the command name (`imedge --config F user add …`)."""

    config: Path | None = None


def stdout() -> Console:
    # Created per use: test runners replace sys.stdout between invocations.
    return Console(highlight=False, soft_wrap=True)


def stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def say(message: str) -> None:
    """A line for the user on stdout, printed as is (no markup)."""
    stdout().print(message, markup=False)


def say_settings(rows: list[tuple[str, str]]) -> None:
    """Labelled lines, aligned; plain text so that long values never wrap mid-path."""
    width = max((len(label) for label, _ in rows), default=0)
    for label, value in rows:
        say(f"  {label:<{width}}  {value}")


def fail(message: str, code: ExitCode = ExitCode.FAILURE) -> NoReturn:
    """Print `error: message` on stderr and end the command with `code`."""
    stderr().print(f"error: {message}", markup=False)
    raise typer.Exit(int(code))


def config_path(ctx: typer.Context, given: Path | None) -> Path | None:
    """The per-command --config if given, else the global one (or $IMEDGE_CONFIG)."""
    if given is not None:
        return given
    state = ctx.find_object(CliState)
    return state.config if state is not None else None


def report_config_error(error: ConfigError) -> None:
    console = stderr()
    where = str(error.source) if error.source is not None else "the configuration"
    count = len(error.problems)
    console.print(f"error: {count} problem{'s' if count != 1 else ''} in {where}:", markup=False)
    for key, problem in error.problems:
        console.print(f"  {key}: {problem}" if key else f"  {problem}", markup=False)


@contextlib.contextmanager
def configured(
    ctx: typer.Context, given: Path | None, *, minimum: int = logging.NOTSET
) -> Iterator[Config]:
    """Load and validate the configuration, then log to stderr as it says for the block.

    On a ConfigError print every problem and exit with 2. The loader's own warnings are
    held until the logging format is known, then shown in it; `minimum` raises the level.
    """
    path = config_path(ctx, given)
    error: ConfigError | None = None
    with early_logs() as early:
        try:
            config = load_config(path)
        except ConfigError as exc:
            error = exc
    if error is not None:
        with logging_to_stderr(LogConfig(), early=early):
            pass
        report_config_error(error)
        raise typer.Exit(int(ExitCode.CONFIG))
    with logging_to_stderr(config.log, minimum=minimum, early=early):
        yield config


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` in a fresh event loop, on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover -- uvloop is a dependency, but optional in spirit
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)
