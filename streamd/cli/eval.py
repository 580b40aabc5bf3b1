"""`streamd eval ...`: accuracy on labelled face data."""

from __future__ import annotations

import importlib

import click

# Modules under streamd.eval that export a click command named ``command``.
_SUBCOMMANDS: tuple[str, ...] = ("pairs", "ident", "gate", "levers", "tracks")


@click.group("eval")
def command() -> None:
    """Measure recognition accuracy (verification pairs, open-set identification) and calibrate the tracker's gate."""


for _name in _SUBCOMMANDS:
    command.add_command(importlib.import_module(f"streamd.eval.{_name}").command)
