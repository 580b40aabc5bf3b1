"""`streamd models`: prepare face models for an engine (convert Paddle models to ONNX)."""

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
