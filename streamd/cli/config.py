"""`streamd config ...`: check and print configuration."""

from __future__ import annotations

from pathlib import Path

import click

from streamd.errors import ConfigError
from streamd.settings import dump_settings, load_settings


@click.group("config")
def command() -> None:
    """Check and print streamd configuration files."""


@command.command("check")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False), required=False)
def check(file: Path | None) -> None:
    """Validate FILE (plus STREAMD_* environment overrides) and print the resolved config.

    On error, prints one line per problem naming the key path and exits with status 2.
    """
    try:
        settings = load_settings(file)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(2) from None
    click.echo(dump_settings(settings), nl=False)
