"""The `streamd` command line. Commands only parse arguments and call into the library.

Each sub-command group lives in its own module and exposes ``command`` (a click command or
group); heavy imports (engines, faiss) happen inside the commands so that ``--help`` is instant.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from streamd import __version__
from streamd.errors import StreamdError

# Sub-command modules, in the order `streamd --help` lists them.
_COMMAND_MODULES = ("run", "config", "gallery", "infer", "models", "eval", "bench", "demo")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="streamd")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """streamd: face recognition on camera streams, with a PaddleX-compatible feature library."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


for _name in _COMMAND_MODULES:
    cli.add_command(importlib.import_module(f"streamd.cli.{_name}").command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors print one clean message, never a traceback."""
    try:
        cli.main(args=argv, prog_name="streamd", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except StreamdError as exc:
        from streamd.errors import ConfigError

        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_CONFIG if isinstance(exc, ConfigError) else EXIT_FAILURE)
