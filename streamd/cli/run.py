"""`streamd run --config FILE`: the daemon in the foreground, until SIGTERM or SIGINT.

This command only reads the configuration, sets up logging and hands over to the main loop
(:class:`streamd.service.Service`: signals, systemd notifications, watchdog, SIGHUP reload and
the drain) with :class:`streamd.app.App` as the daemon. Exit status: see ``streamd.exitcodes``
(0 clean stop, 1 failure or a drain that ran out of time, 2 configuration error, 3 engine or
model unavailable).
"""

from __future__ import annotations

import logging
from pathlib import Path

import click


@click.command("run")
@click.option(
    "-c",
    "--config",
    "config",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The daemon's YAML config file (STREAMD_* environment variables override it).",
)
@click.pass_context
def command(ctx: click.Context, config: Path) -> None:
    """Watch the configured cameras and publish who is in front of them, until SIGTERM or Ctrl-C.

    SIGHUP re-reads FILE: cameras added, removed or changed are applied without a restart.
    """
    from streamd.app import App
    from streamd.logging_setup import secrets_from_settings, setup_logging
    from streamd.reload import ConfigReloader
    from streamd.service import Service
    from streamd.settings import load_settings

    settings = load_settings(config)
    verbose = int(ctx.find_root().params.get("verbose") or 0)
    logs = setup_logging(
        settings.log,
        secrets=secrets_from_settings(settings),
        level=(logging.INFO if verbose == 1 else logging.DEBUG) if verbose else None,
    )

    def reloader(app: App) -> ConfigReloader:
        return ConfigReloader(
            config,
            settings,
            app,
            on_log_settings=logs.apply,
            on_secrets=lambda new: logs.add_secrets(*secrets_from_settings(new)),
        )

    service = Service.from_env(stop_timeout_s=settings.pipeline.stop_timeout_s)
    raise SystemExit(service.run(lambda: App.from_settings(settings), make_reloader=reloader))
