"""`streamd models`: prepare face models for an engine (fetch the onnx engine's files, convert Paddle models)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("models")
def command() -> None:
    """Prepare face models for an engine."""


def _dims(shape: tuple[int | str, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


@command.command("convert")
@click.argument("model_dir", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.argument("output", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--opset", type=click.IntRange(7, 21), default=11, show_default=True,
              help="ONNX opset version to export.")
@click.option("--no-check", "skip_check", is_flag=True,
              help="Skip running the converted graph against paddle2onnx's plain output.")
def convert(model_dir: Path, output: Path, opset: int, skip_check: bool) -> None:
    """Convert the Paddle inference model in MODEL_DIR (inference.pdmodel or inference.json, with
    inference.pdiparams) to the ONNX file OUTPUT, for the onnx engine (PaddleX: `paddlex --paddle2onnx`).

    The graph is prepared for onnxruntime's CPU kernels (weights as initializers, PReLU rewritten
    exactly) and checked against paddle2onnx's plain conversion. Needs `pip install 'streamd[convert]'`.
    A recogniser then goes in the config as engine.embedder {type: onnx, model_path: OUTPUT} with
    its preprocessing (insightface/PaddlePaddle MobileFaceNet: mean 127.5, std 127.5, RGB).
    """
    from streamd.faces.convert import convert_paddle_model

    click.echo(f"converting {model_dir} ...")
    report = convert_paddle_model(model_dir, output, opset=opset, check=not skip_check)
    click.echo(f"wrote {report.output} (paddle2onnx {report.paddle2onnx_version}, opset {report.opset})")
    for name, shape in report.inputs:
        click.echo(f"  input  {name} {_dims(shape)}")
    for name, shape in report.outputs:
        click.echo(f"  output {name} {_dims(shape)}")
    click.echo(f"  {report.constants_moved} constant(s) made initializers, {report.prelu_rewritten} PRelu rewritten")
    if report.max_relative_difference is not None:
        click.echo(f"  checked against paddle2onnx's plain graph: largest relative difference "
                   f"{report.max_relative_difference:.1e}")


@command.command("fetch")
@click.argument("preset", type=click.Choice(["onnx"]), default="onnx")
@click.option("--dir", "target", type=click.Path(path_type=Path, file_okay=False), default=Path("/var/lib/streamd/models"),
              show_default=True, help="Where the model files go.")
@click.option("--from", "source_dir", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Copy the files from this folder (e.g. a USB stick) instead of downloading them.")
@click.option("--base-url", help="Download <URL>/<file name> instead of from the upstream repositories (a local mirror).")
@click.option("--config", "config", type=click.Path(path_type=Path, dir_okay=False),
              help="Also switch this settings file's engine to the fetched models (comments kept, the old file "
              "saved as <name>.bak, the result validated before it replaces the file).")
def fetch(preset: str, target: Path, source_dir: Path | None, base_url: str | None, config: Path | None) -> None:
    """Fetch the model files of the onnx engine (YuNet + MobileFaceNet), checked by sha256.

    The default engine (dlib) needs no download. The onnx engine is several times faster and more
    accurate; its two files (about 4 MB) come from their upstream repositories:
    OpenCV Zoo's YuNet (MIT) and foamliu's MobileFaceNet (Apache-2.0, trained on MS-Celeb-1M, whose
    terms are research-only). Then restart the daemon (`systemctl restart streamd`); indexes built
    with another embedder must be rebuilt (`streamd gallery build`).
    """
    from tqdm import tqdm

    from streamd.errors import StreamdError
    from streamd.faces.fetch import CATALOGUE, PRESETS, fetch_models, onnx_engine_section, switch_config

    keys = PRESETS[preset]
    bars: dict[str, tqdm] = {}

    def progress(model, done: int) -> None:  # type: ignore[no-untyped-def]
        bar = bars.get(model.key)
        if bar is None:
            bar = bars[model.key] = tqdm(total=model.size, unit="B", unit_scale=True, desc=model.filename,
                                         leave=False, dynamic_ncols=True, disable=None)
        bar.update(done - bar.n)

    try:
        fetched = fetch_models(keys, target, base_url=base_url, source_dir=source_dir, progress=progress)
    except StreamdError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        for bar in bars.values():
            bar.close()
    for f in fetched:
        state = "already there, checked" if f.already_there else "fetched, sha256 checked"
        click.echo(f"{f.path}: {CATALOGUE[f.model.key].what}, {f.model.licence} ({state})")
    engine = onnx_engine_section(fetched)
    if config is None:
        import yaml

        click.echo("\nTo switch a box to them, put this in its settings file (or run again with --config FILE):\n")
        click.echo(yaml.safe_dump({"engine": engine}, sort_keys=False).rstrip())
        return
    try:
        backup = switch_config(config, engine)
    except StreamdError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{config}: engine switched to onnx (previous file kept as {backup}); restart the daemon and "
               "rebuild the gallery index with the new engine (streamd gallery build)")
