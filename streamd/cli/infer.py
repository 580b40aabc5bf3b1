"""`streamd infer`: name the faces in images, directories, URLs and video files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    import numpy as np

    from streamd.infer import InferInput, InferResult
    from streamd.recognize import Recognizer

EXIT_SOME_FAILED = 1


@click.command("infer")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option(
    "--index-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="The feature library (vector.index + id_map.yaml). Default: index.dir of the config.",
)
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), help="streamd YAML config.")
@click.option(
    "--pipeline",
    "pipeline_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="A PaddleX face_recognition pipeline file: its models, device, thresholds and index replace "
    "the config's (see configs/face_recognition.yaml).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path),
    help="Write results: a FILE.json gets a list of results; any other path is a directory that "
    "gets <stem>_res.json per image, as PaddleX's save_to_json does.",
)
@click.option(
    "--save-img",
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory for copies of the inputs with boxes and labels drawn (<stem>_res.<ext>).",
)
@click.option("--topk", type=click.IntRange(1, 100), help="Gallery hits per face (default index.rec_topk).")
@click.option(
    "--threshold",
    type=float,
    help="Minimum similarity for a name (default index.rec_threshold, else the model's calibrated value).",
)
@click.option(
    "--video-fps",
    type=float,
    default=2.0,
    show_default=True,
    help="Frames per second of video time recognised in video inputs (0 = every frame).",
)
def command(
    inputs: tuple[str, ...],
    index_dir: Path | None,
    config_file: Path | None,
    pipeline_file: Path | None,
    json_path: Path | None,
    save_img: Path | None,
    topk: int | None,
    threshold: float | None,
    video_fps: float,
) -> None:
    """Recognise the faces in each INPUT: an image file, a directory (its images, sorted), an
    http(s) URL, or a video file (every sampled frame).

    Prints each face's box, detection score and top-k gallery hits, and the name, or Unknown when
    the best score is under the threshold or too close to another person's. Unreadable inputs are
    reported and skipped; the exit status is 1 when any input failed.
    """
    from streamd.errors import ImageError
    from streamd.infer import expand_inputs
    from streamd.recognize import Recognizer
    from streamd.settings import load_settings

    settings = load_settings(config_file)
    if pipeline_file is not None:
        from streamd.pipeline_config import settings_from_pipeline

        settings = settings_from_pipeline(pipeline_file, settings)
    items, problems = expand_inputs(inputs)
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    failed = len(problems)
    results: list[InferResult] = []
    if items:
        recognizer = Recognizer.from_settings(settings, index_dir=index_dir, threshold=threshold, topk=topk)
        writer = _ImageWriter(save_img) if save_img else None
        for item in items:
            try:
                if item.kind == "video":
                    results += _infer_video(item, recognizer, video_fps, writer)
                else:
                    results.append(_infer_image(item, recognizer, settings.engine.max_image_pixels, writer))
            except ImageError as exc:
                click.echo(f"error: {exc}", err=True)
                failed += 1
    if json_path is not None:
        _write_json(json_path, results)
    if failed:
        click.echo(f"{failed} of {len(items) + len(problems)} inputs failed", err=True)
        raise SystemExit(EXIT_SOME_FAILED)


def _infer_image(item: InferInput, recognizer: Recognizer, max_pixels: int, writer: _ImageWriter | None) -> InferResult:
    from streamd.infer import InferResult, face_line, load_image

    image = load_image(item, max_pixels=max_pixels)
    result = InferResult(item, recognizer(image))
    click.echo(f"{item.name}: {len(result.faces)} face{'s' if len(result.faces) != 1 else ''}")
    for number, rec in enumerate(result.faces, 1):
        click.echo(face_line(number, rec, threshold=recognizer.threshold))
    if writer is not None:
        writer.write(result, image)
    return result


def _infer_video(item: InferInput, recognizer: Recognizer, fps: float, writer: _ImageWriter | None) -> list[InferResult]:
    from streamd.infer import InferResult, VideoSummary, frame_line, iter_video

    summary = VideoSummary()
    results = []
    for frame in iter_video(item.location, fps):
        result = InferResult(item, recognizer(frame.image), frame_index=frame.index, pts=frame.pts)
        click.echo(frame_line(result))
        summary.add(result)
        results.append(result)
        if writer is not None:
            writer.write(result, frame.image)
    for line in summary.lines(item.name, fps):
        click.echo(line)
    return results


class _ImageWriter:
    """Writes <stem>_res.<ext> files, numbering stems that repeat (two inputs named a.jpg)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.used: set[str] = set()

    def write(self, result: InferResult, image: np.ndarray) -> Path:
        import cv2

        from streamd.errors import ImageError
        from streamd.images import is_image_path
        from streamd.infer import draw_results

        source = Path(result.input.name.split("?", 1)[0])
        suffix = source.suffix.lower() if is_image_path(source) and result.frame_index is None else ".jpg"
        path = _unique(self.directory, f"{result.stem}_res", suffix, self.used)
        self.directory.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), draw_results(image, result.faces)):
            raise ImageError(f"{path}: could not write the annotated image")
        return path


def _unique(directory: Path, stem: str, suffix: str, used: set[str]) -> Path:
    name, n = f"{stem}{suffix}", 1
    while name in used:
        n += 1
        name = f"{stem}_{n}{suffix}"
    used.add(name)
    return directory / name


def _write_json(path: Path, results: list[InferResult]) -> None:
    if path.suffix.lower() == ".json":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([r.to_json() for r in results], indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return
    path.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for result in results:
        target = _unique(path, f"{result.stem}_res", ".json", used)
        target.write_text(json.dumps(result.to_json(), indent=4, ensure_ascii=False) + "\n", encoding="utf-8")
