"""The `imedge` command: run the server and administer it (Typer + Rich).

Commands stay thin: parse arguments, call a service, print. Exit status 0 for success,
1 when the work could not be done, 2 for an invalid configuration or command line.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Annotated

import typer

from imedge import __version__
from imedge.cli.common import CONFIG_ENV, CliState, ConfigOption, configured, say, say_settings
from imedge.cli.database import db
from imedge.cli.directory import directory
from imedge.cli.federation import federation
from imedge.cli.partners import partners
from imedge.cli.peers import peers
from imedge.cli.policy import policy
from imedge.cli.s2s import s2s
from imedge.cli.serve import serve
from imedge.cli.users import users
from imedge.config import describe

EPILOG = f"""\
**Examples**

    imedge serve --config /etc/imedge/imedge.toml
    imedge check-config /etc/imedge/imedge.toml
    imedge user add alice@example.org
    echo "$PASSWORD" | imedge user add bob@example.org --password-stdin
    imedge user list --domain example.org
    imedge db upgrade
    imedge s2s list
    imedge s2s test partner.example
    imedge partner add Contoso -d contoso.example -d '*.contoso.example' --edge edge.contoso.example
    imedge partner edit Contoso --filter all --sasl-external required
    imedge partner block Contoso
    imedge partner list
    imedge partner test Contoso
    imedge federation status
    imedge federation set --open on --blocked-domain spam.example
    imedge user set alice@example.org --public-im on --verified-subscriptions allow
    imedge policy explain --from bob@contoso.example --to alice@example.org --kind subscribe
    imedge peer add OCS -d ocs.example --ldap-url ldaps://ldap.ocs.example --base-dn ou=people,dc=ocs,dc=example --bind-dn cn=imedge,dc=ocs,dc=example --im-template '{{uid}}@ocs.example' --every 60
    imedge peer test OCS
    imedge peer sync OCS --dry-run
    imedge peer sync OCS
    imedge peer reports OCS
    imedge directory search smith

--config works before or after the command name; ${CONFIG_ENV} sets it for every command.
Without any configuration the server runs for domain "localhost" with its data in ./data.
"""  # noqa: E501 -- an example command is one line, as it is typed

app = typer.Typer(
    name="imedge",
    help="IM Edge: an XMPP server whose federation the administrator controls.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    # Locals in a traceback could hold passwords or database URLs.
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        version()
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            envvar=CONFIG_ENV,
            help="Configuration file (TOML) for every command. Default: the built-in defaults.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    ctx.obj = CliState(config)


app.command("serve")(serve)
app.add_typer(users)
app.add_typer(db)
app.add_typer(s2s)
app.add_typer(partners)
app.add_typer(federation)
app.add_typer(policy)
app.add_typer(peers)
app.add_typer(directory)


@app.command("check-config")
def check_config(
    ctx: typer.Context,
    file: Annotated[
        Path | None,
        typer.Argument(
            metavar="[FILE]",
            help="The file to check; default: --config, else the built-in defaults.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Validate a configuration and print the effective settings, or every problem.

    Exit status 0 when valid, 2 when not.
    """
    with configured(ctx, file or config) as cfg:
        say_settings(describe(cfg))
        say("configuration is valid")


@app.command("version")
def version() -> None:
    """Show the version of IM Edge and of Python."""
    say(f"IM Edge {__version__} (Python {platform.python_version()})")


def main() -> None:
    """Entry point of the `imedge` script and of `python -m imedge`."""
    app()
