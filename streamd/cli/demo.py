"""`streamd demo`: the offline demo (gallery and video from PyPI packages' images, recognised end to end)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("demo")
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=Path("demo-output"),
    show_default=True, help="Directory for the demo gallery, video, ground truth, index and downloads.",
)
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
              help="streamd YAML config (default: the built-in one, the dlib engine).")
@click.option("--force", is_flag=True, help="Rebuild the demo files even when they are there.")
@click.option("--download-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Cache for the packages the pictures come from (default OUT/downloads).")
@click.option("--video-fps", type=float, default=2.0, show_default=True,
              help="Frames per second of the video that are recognised.")
@click.option("--quiet", is_flag=True, help="No per-frame lines, only the summary.")
def command(
    out_dir: Path, config_file: Path | None, force: bool, download_dir: Path | None, video_fps: float, quiet: bool
) -> None:
    """Build a small gallery and a 12 s video from face images that PyPI packages ship
    (face_recognition, insightface, scikit-image), build the index, recognise the video and
    check the names against the ground truth.

    Exits 0 when every enrolled person was recognised and nobody who was never enrolled was
    given a name; 1 otherwise. Needs the package index (pip) only the first time.
    """
    from streamd.demo.run import run_demo

    report = run_demo(
        out_dir, config=config_file, force=force, download_dir=download_dir, video_fps=video_fps,
        show_frames=not quiet, log=click.echo,
    )
    if not report.passed:
        raise SystemExit(1)
