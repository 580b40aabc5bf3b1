"""`streamd gallery ...`: build, append to, remove from and list a feature library.

Mirrors PaddleX's build_index / append_index / remove_index on the same on-disk layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

_DIR = click.Path(path_type=Path, file_okay=False)
_config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="streamd YAML config (engine, gallery.multiple_faces, index.dir); STREAMD_* env applies too.",
)
_index_dir_option = click.option(
    "--index-dir",
    type=_DIR,
    help="Directory of vector.index + id_map.yaml. Default: index.dir of the config.",
)
_data_root_option = click.option(
    "--data-root",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    required=True,
    help="Gallery root: gallery.txt (`path label` or `path<TAB>label` per line) or images/<ID>/*.jpg.",
)
_quiet_option = click.option("-q", "--quiet", is_flag=True, help="Print only skipped images and the summary.")


@click.group("gallery")
def command() -> None:
    """Build and maintain the face gallery (a PaddleX-compatible feature library)."""


def _settings(config_file: Path | None):
    from streamd.settings import load_settings

    return load_settings(config_file)


def _resolve_index_dir(index_dir: Path | None, settings) -> Path:
    return index_dir if index_dir is not None else Path(settings.index.dir)


def _engine(settings):
    from streamd.faces.engine import FaceEngine

    return FaceEngine.from_settings(settings.engine)


def _enrol(run, verb: str, data_root: Path, index_dir: Path | None, config_file: Path | None, quiet: bool, **kwargs) -> None:
    """Run build/append with the configured engine and a tqdm bar; per-image lines go above the bar."""
    from tqdm import tqdm

    from streamd.index.gallery import read_gallery

    settings = _settings(config_file)
    target = _resolve_index_dir(index_dir, settings)
    gallery = read_gallery(data_root)  # fails fast on an empty or missing data_root
    for problem in gallery.problems:
        click.echo(f"skip  {problem}")
    engine = _engine(settings)
    with tqdm(total=len(gallery.items), unit="img", desc="enrolling", dynamic_ncols=True, leave=False) as bar:

        def progress(report) -> None:
            if not (quiet and report.enrolled):
                bar.write(report.line())
            bar.update(1)

        summary = run(
            engine=engine,
            data_root=data_root,
            index_dir=target,
            multiple_faces=settings.gallery.multiple_faces,
            max_pixels=settings.engine.max_image_pixels,
            progress=progress,
            **kwargs,
        )
    _print_summary(summary, verb)


def _print_summary(summary, verb: str) -> None:
    lib = summary.library
    skipped = summary.skipped
    skipped_text = ", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items()))
    click.echo(
        f"{verb} {summary.enrolled} vectors for {len(summary.per_label)} labels"
        + (f"; skipped {sum(skipped.values())} ({skipped_text})" if skipped else "")
    )
    if summary.ids:
        click.echo(f"new ids {summary.ids[0]}..{summary.ids[-1]}")
    click.echo(
        f"saved {summary.index_dir}: {lib.ntotal} vectors, {len(lib.label_counts())} labels, "
        f"{lib.index_type}/{lib.metric_type}, dim {lib.dim}"
    )
    _print_label_table(summary.per_label, header="vectors added")


def _print_label_table(counts, *, header: str) -> None:
    if not counts:
        return
    width = max(len("label"), *(len(label) for label in counts))
    click.echo(f"{'label':<{width}}  {header}")
    for label, count in sorted(counts.items()):
        click.echo(f"{label:<{width}}  {count}")


@command.command("build")
@_data_root_option
@_index_dir_option
@click.option(
    "--index-type",
    type=click.Choice(["Flat", "IVF", "HNSW32"]),
    default="Flat",
    show_default=True,
    help="Flat: exact, supports remove. IVF: faster on large galleries, supports remove. "
    "HNSW32: fastest on large galleries, no remove.",
)
@click.option(
    "--metric",
    "metric_type",
    type=click.Choice(["IP", "L2"]),
    default="IP",
    show_default=True,
    help="IP (cosine on unit vectors) or L2; scores are reported as similarity either way.",
)
@_config_option
@_quiet_option
def build(data_root: Path, index_dir: Path | None, index_type: str, metric_type: str, config_file: Path | None, quiet: bool) -> None:
    """Build a new feature library from the gallery at --data-root (replaces any at --index-dir).

    Each image reports the faces found; images with no face, several faces (when
    gallery.multiple_faces is skip) or that cannot be read are reported and skipped.
    """
    from streamd.index.builder import build_index

    _enrol(build_index, "enrolled", data_root, index_dir, config_file, quiet, index_type=index_type, metric_type=metric_type)


@command.command("append")
@_data_root_option
@_index_dir_option
@_config_option
@_quiet_option
def append(data_root: Path, index_dir: Path | None, config_file: Path | None, quiet: bool) -> None:
    """Add the images of --data-root to an existing library (same model only); new ids follow the largest."""
    from streamd.index.builder import append_index

    _enrol(append_index, "appended", data_root, index_dir, config_file, quiet)


@command.command("remove")
@_index_dir_option
@click.option("--ids", "ids_flag", is_flag=True, help="Remove the ids given as arguments: --ids 3 7.")
@click.argument("ids", nargs=-1, type=int, metavar="[ID]...")
@click.option(
    "--ids-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="File with one id per line (the first field of each line, as PaddleX reads it).",
)
@click.option("--label", "labels", multiple=True, help="Remove every vector of this label (repeatable).")
@_config_option
def remove(
    index_dir: Path | None, ids_flag: bool, ids: tuple[int, ...], ids_file: Path | None, labels: tuple[str, ...], config_file: Path | None
) -> None:
    """Remove vectors by id (--ids 3 7, --ids-file FILE) or by --label NAME. Not for HNSW32 indexes."""
    from streamd.index.builder import read_ids_file, remove_from_index

    if ids and not ids_flag:
        raise click.UsageError("ids given without --ids: use `--ids 3 7`")
    if ids_flag and not ids:
        raise click.UsageError("--ids needs at least one id: `--ids 3 7`")
    if not (ids or ids_file or labels):
        raise click.UsageError("give --ids ID..., --ids-file FILE or --label NAME")
    settings = _settings(config_file)
    target = _resolve_index_dir(index_dir, settings)
    wanted = list(ids) + (read_ids_file(ids_file) if ids_file else [])
    summary = remove_from_index(target, ids=wanted, labels=labels)
    for missing in summary.not_found:
        click.echo(f"not found: id {missing}")
    click.echo(f"removed {len(summary.removed)} vectors; {summary.remaining} left in {summary.index_dir}")


@command.command("list")
@_index_dir_option
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def list_(index_dir: Path | None, config_file: Path | None, as_json: bool) -> None:
    """Show a library: labels with vector counts, index type, metric, dimension, model fingerprint."""
    from streamd.index.library import FeatureLibrary

    settings = _settings(config_file)
    target = _resolve_index_dir(index_dir, settings)
    lib = FeatureLibrary.load(target)
    counts = lib.label_counts()
    info = {
        "index_dir": str(target),
        "index_type": lib.index_type,
        "metric_type": lib.metric_type,
        "ivf_nlist": lib.ivf_nlist,
        "dim": lib.dim,
        "fingerprint": lib.fingerprint or None,
        "created_at": lib.created_at,
        "vectors": lib.ntotal,
        "labels": dict(sorted(counts.items())),
    }
    if as_json:
        click.echo(json.dumps(info, ensure_ascii=False, indent=2))
        return
    kind = lib.index_type + (f" (nlist {lib.ivf_nlist})" if lib.ivf_nlist else "")
    click.echo(f"index:       {target}")
    click.echo(f"type:        {kind}, metric {lib.metric_type}")
    click.echo(f"dimension:   {lib.dim}")
    click.echo(f"fingerprint: {lib.fingerprint or 'none (built by PaddleX?)'}")
    click.echo(f"created_at:  {lib.created_at or 'unknown'}")
    click.echo(f"vectors:     {lib.ntotal} in {len(counts)} labels")
    _print_label_table(counts, header="vectors")

