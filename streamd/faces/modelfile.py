"""Model files on disk: identity (sha256) for fingerprints, and the development models folder."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


#: Where the development models sit inside a ``models`` folder laid out like ../shared/models.
DEV_MODEL_FILES = {
    "yunet": "yunet_2023mar/face_detection_yunet_2023mar.onnx",
    "scrfd": "scrfd_det_500m/det_500m.onnx",
    "scrfd_500m": "scrfd_det_500m/det_500m.onnx",
    "scrfd_2.5g": "scrfd_det_2.5g/det_2.5g.onnx",
    "mobilefacenet": "mobilefacenet_foamliu/MobileFaceNet.onnx",
}


def dev_models_dir() -> Path:
    """``../shared/models`` relative to the working directory (the layout beside a checkout)."""
    return Path.cwd().parent / "shared" / "models"


def find_dev_model(name: str) -> Path | None:
    """The development model ``name`` (a DEV_MODEL_FILES key) in ../shared/models, if present.

    Only the eval and bench commands use this, as a convenience on development machines; the
    daemon takes its model paths from settings alone.
    """
    rel = DEV_MODEL_FILES.get(name)
    if rel is None:
        return None
    path = dev_models_dir() / rel
    return path if path.is_file() else None
