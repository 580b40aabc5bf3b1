"""Fetching the onnx engine's model files: from their upstream repositories, or from a local folder.

The default engine (dlib) needs no download: its weights come in a PyPI package. The onnx engine
(YuNet + MobileFaceNet) is faster and more accurate, but its files live in the upstream model
repositories. :func:`fetch_models` downloads each file (or copies it from a folder, for boxes
without internet), checks its size and sha256 against the catalogue, and moves it into place
atomically, so that a broken or half-done download never becomes a model file.
:func:`switch_config` then points a settings file's ``engine`` at them, keeping its comments.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamd.errors import ModelError


@dataclass(frozen=True)
class ModelFile:
    """One model file of the catalogue: where it comes from and what it must be."""

    key: str
    filename: str
    url: str
    sha256: str
    size: int
    licence: str
    what: str


#: The permissively licensed onnx stack: YuNet (MIT) finds faces, foamliu's MobileFaceNet
#: (Apache-2.0; trained on MS-Celeb-1M, whose terms are research-only) describes them.
CATALOGUE: dict[str, ModelFile] = {
    "yunet": ModelFile(
        key="yunet",
        filename="face_detection_yunet_2023mar.onnx",
        url="https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/face_detection_yunet_2023mar.onnx",
        sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
        size=232589,
        licence="MIT",
        what="YuNet face detector with 5 landmarks (OpenCV Zoo)",
    ),
    "mobilefacenet": ModelFile(
        key="mobilefacenet",
        filename="MobileFaceNet.onnx",
        url="https://github.com/foamliu/MobileFaceNet/raw/a6cc9032a659b615f477833e1a70b5e7931bcccc/weights/MobileFaceNet.onnx",
        sha256="b7120c095d60094f28a4a54ba6a8bf51b297a6273fb40ef6350dfec1f63d9507",
        size=3998070,
        licence="Apache-2.0 (weights trained on MS-Celeb-1M: research terms)",
        what="MobileFaceNet 128-d face features (foamliu)",
    ),
}

#: What `streamd models fetch onnx` brings: the detector and the recogniser of the onnx engine.
PRESETS: dict[str, tuple[str, ...]] = {"onnx": ("yunet", "mobilefacenet")}

#: Called with (file, bytes done) while a file comes in.
Progress = Callable[[ModelFile, int], None]


@dataclass(frozen=True)
class Fetched:
    """A model file in place: its path, and whether it was already there (checked, not fetched)."""

    model: ModelFile
    path: Path
    already_there: bool


def fetch_models(
    keys: tuple[str, ...],
    target: Path,
    *,
    base_url: str | None = None,
    source_dir: Path | None = None,
    progress: Progress | None = None,
    timeout_s: float = 60.0,
) -> list[Fetched]:
    """Bring the catalogue files ``keys`` into ``target`` (checked by size and sha256).

    ``source_dir``: copy them from this folder (file name as in the catalogue) instead of
    downloading. ``base_url``: download ``<base_url>/<filename>`` instead of the upstream URL
    (a mirror on the local network). A file already in ``target`` with the right sha256 is kept.
    """
    target.mkdir(parents=True, exist_ok=True)
    done = []
    for key in keys:
        model = CATALOGUE[key]
        path = target / model.filename
        if path.is_file() and _sha256_of(path) == model.sha256:
            done.append(Fetched(model, path, True))
            continue
        handle, partial_name = tempfile.mkstemp(prefix=f".{model.filename}.", suffix=".partial", dir=target)
        partial = Path(partial_name)
        try:
            with os.fdopen(handle, "wb") as out:
                digest = hashlib.sha256()
                received = 0
                for chunk in _chunks(model, base_url, source_dir, timeout_s):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    if progress is not None:
                        progress(model, received)
                out.flush()
                os.fsync(out.fileno())
            if received != model.size or digest.hexdigest() != model.sha256:
                raise ModelError(
                    f"{model.filename}: got {received} bytes with sha256 {digest.hexdigest()[:12]}..., expected "
                    f"{model.size} bytes with sha256 {model.sha256[:12]}... (a wrong or damaged file; nothing "
                    "was installed)"
                )
            os.chmod(partial, 0o644)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        done.append(Fetched(model, path, False))
    return done


def _chunks(model: ModelFile, base_url: str | None, source_dir: Path | None, timeout_s: float) -> Iterator[bytes]:
    if source_dir is not None:
        source = source_dir / model.filename
        if not source.is_file():
            raise ModelError(f"{source}: not found (--from expects the files {_names()} in that folder)")
        with open(source, "rb") as fh:
            yield from iter(lambda: fh.read(1 << 16), b"")
        return
    import httpx

    url = f"{base_url.rstrip('/')}/{model.filename}" if base_url else model.url
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=timeout_s) as response:
            if response.status_code != 200:
                raise ModelError(f"{url}: HTTP {response.status_code} (could not download {model.filename})")
            yield from response.iter_bytes(1 << 16)
    except httpx.HTTPError as exc:
        raise ModelError(
            f"{url}: {exc} (no route to the model's host? copy the files onto the box and use --from DIR)"
        ) from None


def _names() -> str:
    return ", ".join(m.filename for m in CATALOGUE.values())


def _sha256_of(path: Path) -> str:
    from streamd.faces.modelfile import file_sha256

    return file_sha256(path)


def onnx_engine_section(fetched: list[Fetched]) -> dict[str, Any]:
    """The ``engine.detector`` / ``engine.embedder`` settings that use the fetched onnx files."""
    paths = {f.model.key: str(f.path) for f in fetched}
    return {
        "detector": {"type": "onnx", "model": "yunet", "model_path": paths["yunet"]},
        "embedder": {"type": "onnx", "model_path": paths["mobilefacenet"], "mean": 127.5, "std": 128.0},
    }


def switch_config(config: Path, engine: dict[str, Any]) -> Path:
    """Point ``config``'s ``engine.detector`` and ``engine.embedder`` at ``engine``'s; the backup's path.

    The file is edited round-trip (its comments and other sections kept), validated as a whole,
    and replaced atomically; the previous version is kept beside it as ``<name>.bak``. Raises
    ConfigError (and changes nothing) when the result would not load.
    """
    from ruamel.yaml import YAML

    from streamd.settings import load_settings

    yaml = YAML()
    yaml.preserve_quotes = True
    text = config.read_text(encoding="utf-8") if config.exists() else ""
    data = yaml.load(text) if text.strip() else None
    if data is None:
        data = {}
    section = data.setdefault("engine", {})
    if section is None:
        section = data["engine"] = {}
    section.pop("pipeline", None)  # a PaddleX pipeline file would override the detector and embedder
    for key in ("detector", "embedder"):
        section[key] = engine[key]
    handle, staged_name = tempfile.mkstemp(prefix=f".{config.name}.", suffix=".new", dir=config.parent)
    staged = Path(staged_name)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            yaml.dump(data, out)
        load_settings(staged)  # the whole file must still load, or nothing changes
        backup = config.with_name(config.name + ".bak")
        if config.exists():
            shutil.copy2(config, backup)
            shutil.copymode(config, staged)
        os.replace(staged, config)
    finally:
        staged.unlink(missing_ok=True)
    return backup
