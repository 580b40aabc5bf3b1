"""Reading images users give us (gallery files, infer inputs, API uploads) with clear errors.

Every failure raises ImageError whose message names the file and says what is wrong:
missing, zero bytes, not an image, or over the pixel cap (a decompression bomb guard that
is checked from the header, before the pixels are decoded).
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from streamd.errors import ImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
DEFAULT_MAX_PIXELS = 50_000_000


def is_image_path(path: Path) -> bool:
    """True for file names with an image extension (case-insensitive)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def decode_image(data: bytes, *, name: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode encoded bytes (JPEG, PNG, WebP, ...) into a BGR uint8 array of shape (H, W, 3)."""
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image (unrecognised format)") from None
    except Exception as exc:  # Pillow raises many types on damaged headers
        raise ImageError(f"{name}: not a readable image ({exc})") from None
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: {width}x{height} = {width * height} pixels is over the cap of {max_pixels} "
            "(engine.max_image_pixels)"
        )
    array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if array is None:
        # OpenCV lacks a codec Pillow has (or the data is truncated): fall back to Pillow.
        try:
            with Image.open(io.BytesIO(data)) as img:
                array = cv2.cvtColor(np.asarray(img.convert("RGB")), cv2.COLOR_RGB2BGR)
        except Exception as exc:
            raise ImageError(f"{name}: image data is damaged ({exc})") from None
    return np.ascontiguousarray(array)


def read_image(path: Path | str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file into a BGR uint8 array, raising ImageError with the path on failure."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror})") from None
    return decode_image(data, name=str(path), max_pixels=max_pixels)


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """Encode a BGR image as JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ImageError("could not encode image as JPEG")
    return buf.tobytes()
