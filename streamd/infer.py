"""What ``streamd infer`` reads and writes: inputs like PaddleX's predict, results like its save_to_*.

Inputs are image files, directories (their images, sorted), http(s) URLs, and video files (every
sampled frame is one result). Results follow PaddleX's face-recognition result: ``input_path``
and ``boxes``, each with ``labels``/``rec_scores`` (the top-k hits, or null when the face is
unknown, as PaddleX gives null below ``rec_threshold``), ``det_score`` and ``coordinate``; a few
extra keys (``identity``, ``reason``, ``margin``, ``frame_index``, ``pts``) that PaddleX readers ignore.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from streamd.errors import ImageError
from streamd.images import DEFAULT_MAX_PIXELS, decode_image, is_image_path, read_image
from streamd.recognize import FaceRecognition
from streamd.sources.redact import redact_text, redact_url

VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".ts", ".flv", ".mpg", ".mpeg"})
DEFAULT_MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
UNKNOWN = "Unknown"


def is_url(value: str) -> bool:
    """An http:// or https:// URL (PaddleX's rule for predict inputs)."""
    return value[:8].lower().startswith(("http://", "https://"))


def is_video_path(path: Path) -> bool:
    """True for file names with a video container extension (case-insensitive)."""
    return path.suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class InferInput:
    """One thing to recognise faces in. ``name`` is what the user sees (URLs without secrets)."""

    name: str
    kind: Literal["image", "video", "url"]
    location: str


def expand_inputs(values: Sequence[str]) -> tuple[list[InferInput], list[str]]:
    """The inputs named on the command line, directories expanded to their images (sorted).

    Returns the inputs and one problem line per argument that gives nothing to read.
    """
    inputs: list[InferInput] = []
    problems: list[str] = []
    for value in values:
        if is_url(value):
            inputs.append(InferInput(redact_url(value), "url", value))
            continue
        path = Path(value)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and is_image_path(p))
            if not images:
                problems.append(f"{path}: directory has no images ({', '.join(sorted({'.jpg', '.png', '.bmp', '.webp'}))}, ...)")
            inputs.extend(InferInput(str(p), "image", str(p)) for p in images)
        elif not path.exists():
            problems.append(f"{path}: file not found")
        elif is_video_path(path):
            inputs.append(InferInput(str(path), "video", str(path)))
        else:
            # Anything else is tried as an image: read_image says clearly what is wrong with it.
            inputs.append(InferInput(str(path), "image", str(path)))
    return inputs, problems


def fetch_url(
    url: str, *, timeout_s: float = 30.0, max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES
) -> bytes:
    """The body of an http(s) URL the user named, following redirects, capped in size and time."""
    import httpx

    name = redact_url(url)
    try:
        with httpx.Client(follow_redirects=True, timeout=timeout_s) as client:
            with client.stream("GET", url) as response:
                if response.status_code >= 400:
                    raise ImageError(f"{name}: HTTP {response.status_code} {response.reason_phrase}")
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise ImageError(f"{name}: download is over {max_bytes} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
    except httpx.TimeoutException:
        raise ImageError(f"{name}: no answer within {timeout_s:.0f} s") from None
    except httpx.HTTPError as exc:
        raise ImageError(f"{name}: cannot download ({type(exc).__name__}: {redact_text(str(exc), url)})") from None


def load_image(item: InferInput, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The BGR pixels of an image input (a file or a URL); ImageError names it on failure."""
    if item.kind == "url":
        return decode_image(fetch_url(item.location), name=item.name, max_pixels=max_pixels)
    return read_image(item.location, max_pixels=max_pixels)


@dataclass(frozen=True)
class VideoFrame:
    """A sampled frame of a video input: its number in the file, its time in seconds, its pixels."""

    index: int
    pts: float
    image: np.ndarray


def iter_video(path: Path | str, fps: float) -> Iterator[VideoFrame]:
    """Frames of a video file at about ``fps`` per second of video time (all frames when fps <= 0).

    Raises ImageError naming the file when it cannot be opened or decoded.
    """
    import av

    from streamd.sources.sampler import Sampler

    sampler = Sampler(fps) if fps > 0 else None
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise ImageError(f"{path}: not a readable video ({exc})") from None
    with container:
        if not container.streams.video:
            raise ImageError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for index, frame in enumerate(container.decode(stream)):
                pts = float(frame.time) if frame.time is not None else index / float(stream.average_rate or 25)
                if sampler is None or sampler.offer(pts):
                    yield VideoFrame(index, pts, frame.to_ndarray(format="bgr24"))
        except av.FFmpegError as exc:
            raise ImageError(f"{path}: video decoding failed ({exc})") from None


# ------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class InferResult:
    """The faces recognised in one image, or one sampled frame of a video."""

    input: InferInput
    faces: list[FaceRecognition]
    frame_index: int | None = None
    pts: float | None = None

    def to_json(self) -> dict:
        """The PaddleX face-recognition result layout (plus streamd's extra keys)."""
        data: dict = {"input_path": self.input.name}
        if self.frame_index is not None:
            data["frame_index"] = self.frame_index
            data["pts"] = round(float(self.pts or 0.0), 3)
        data["boxes"] = [_box_json(rec) for rec in self.faces]
        return data

    @property
    def stem(self) -> str:
        """The file-name stem PaddleX's save_to_* would use (frame number added for videos)."""
        stem = Path(self.input.name.split("?", 1)[0].rstrip("/")).stem or "image"
        return f"{stem}_f{self.frame_index:06d}" if self.frame_index is not None else stem


def _box_json(rec: FaceRecognition) -> dict:
    known = rec.label is not None
    hits = rec.matches
    return {
        "labels": [m.label for m in hits] if known else None,
        "rec_scores": [round(m.score, 6) for m in hits] if known else None,
        "det_score": round(rec.face.score, 6),
        "coordinate": [round(v, 2) for v in rec.face.box],
        "identity": rec.label,
        "reason": rec.reason,
        "score": round(rec.decision.score, 6) if rec.decision is not None else None,
        "margin": round(rec.decision.margin, 6) if rec.decision is not None else None,
        "topk": [{"id": m.id, "label": m.label, "score": round(m.score, 6)} for m in hits],
    }


def face_line(number: int, rec: FaceRecognition, *, threshold: float) -> str:
    """One face as a line: box, detection score, the decision and the top-k hits."""
    x1, y1, x2, y2 = (int(round(v)) for v in rec.face.box)
    head = f"  face {number}: box [{x1}, {y1}, {x2}, {y2}]  det {rec.face.score:.2f}  -> "
    if rec.decision is None:
        return head + f"{UNKNOWN} (not searched: quality gate {rec.rejected})"
    top = ", ".join(f"{m.label} {m.score:.3f}" for m in rec.matches)
    if rec.label is not None:
        return head + f"{rec.label} {rec.decision.score:.3f}  (top-{len(rec.matches)}: {top})"
    why = {
        "below_threshold": f"best score {rec.decision.score:.3f} < threshold {threshold:.3f}",
        "thin_margin": f"margin {rec.decision.margin:.3f} to the next person is too thin",
        "empty_index": "the index is empty",
    }.get(rec.decision.reason, rec.decision.reason)
    return head + f"{UNKNOWN} ({why})" + (f"  (top-{len(rec.matches)}: {top})" if top else "")


def frame_line(result: InferResult) -> str:
    """A video frame as one line: who is in it."""
    faces = ", ".join(
        f"{rec.label} {rec.decision.score:.2f}" if rec.label is not None and rec.decision is not None else UNKNOWN
        for rec in result.faces
    )
    return f"{result.input.name} frame {result.frame_index} t={result.pts or 0.0:.2f}s: {faces or 'no face'}"


@dataclass
class VideoSummary:
    """Who was recognised in a video: per name, the frames and the best score; unknown faces."""

    frames: int = 0
    faces: int = 0
    unknown_faces: int = 0
    named: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def add(self, result: InferResult) -> None:
        self.frames += 1
        for rec in result.faces:
            self.faces += 1
            if rec.label is None or rec.decision is None:
                self.unknown_faces += 1
            else:
                self.named.setdefault(rec.label, []).append((float(result.pts or 0.0), rec.decision.score))

    def lines(self, name: str, fps: float) -> list[str]:
        rate = f" at {fps:g} fps" if fps > 0 else ""
        out = [f"{name}: {self.frames} frames sampled{rate}, {self.faces} faces"]
        for label, seen in sorted(self.named.items(), key=lambda kv: min(t for t, _ in kv[1])):
            times = [t for t, _ in seen]
            out.append(
                f"  recognised {label}: {len(seen)} times, {min(times):.1f}-{max(times):.1f} s, "
                f"best {max(s for _, s in seen):.3f}"
            )
        if not self.named:
            out.append("  nobody recognised")
        out.append(f"  {UNKNOWN}: {self.unknown_faces} faces")
        return out


def draw_results(image: np.ndarray, faces: Sequence[FaceRecognition]) -> np.ndarray:
    """The image with a box and "label score" per face, like PaddleX's save_to_img (BGR in, BGR out)."""
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.fromarray(np.ascontiguousarray(image[..., ::-1]))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=int(0.018 * canvas.width) + 8)
    thickness = max(2, int(max(canvas.size) * 0.002))
    for rec in faces:
        known = rec.label is not None and rec.decision is not None
        text = f"{rec.label} {rec.decision.score:.2f}" if known else UNKNOWN  # type: ignore[union-attr]
        color = _label_color(rec.label) if known else (128, 128, 128)
        x1, y1, x2, y2 = rec.face.box
        draw.rectangle([x1, y1, x2, y2], outline=color, width=thickness)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 6, bottom - top + 6
        ty = y1 - th if y1 >= th else y1  # above the box, or inside it at the top edge
        draw.rectangle([x1, ty, x1 + tw, ty + th], fill=color)
        draw.text((x1 + 3 - left, ty + 3 - top), text, fill=(255, 255, 255), font=font)
    return np.ascontiguousarray(np.asarray(canvas)[..., ::-1])


def _label_color(label: str) -> tuple[int, int, int]:
    """A stable, saturated RGB colour per label (the same person has the same colour in every image)."""
    import colorsys
    import zlib

    hue = (zlib.crc32(label.encode("utf-8")) % 360) / 360.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.8, 0.75)
    return int(r * 255), int(g * 255), int(b * 255)
