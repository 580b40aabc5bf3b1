"""`streamd bench ...`: speed benchmarks that print their figures."""

from __future__ import annotations

import importlib

import click

# Modules under streamd.bench that export a click command named ``command``.
_SUBCOMMANDS: tuple[str, ...] = (
    "decode", "engines", "index", "mqtt", "paddle", "pipeline", "scenes_run", "seed", "reload",
)


@click.group("bench")
def command() -> None:
    """Benchmarks: engines, index, pipeline. Each prints its figures; run on a quiet machine."""


for _name in _SUBCOMMANDS:
    command.add_command(importlib.import_module(f"streamd.bench.{_name}").command)
