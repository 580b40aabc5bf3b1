"""Run the offline demo: make its files, build the index, recognise the video, compare with the truth.

The demo passes when every enrolled person is named at least once, no enrolled person is given
another's name, and no never-enrolled person (or anything that is not a face of the cast) gets a
name. Per-frame decisions are checked (no track vote), so the check is stricter than the daemon.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from streamd.demo.make import DemoFiles, make_demo
from streamd.infer import InferInput, InferResult, frame_line, iter_video
from streamd.recognize import Recognizer

#: A detection belongs to a ground-truth face when their boxes overlap at least this much.
MATCH_IOU = 0.3


@dataclass
class PersonOutcome:
    """What happened to one person of the cast over the sampled frames."""

    label: str
    enrolled: bool
    fully_visible: int = 0
    detected: int = 0
    named_right: int = 0
    unknown: int = 0
    named_as: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        if self.enrolled:
            return self.named_right > 0 and not self.named_as
        return not self.named_as

    def line(self) -> str:
        kind = "enrolled" if self.enrolled else "never enrolled"
        seen = f"detected in {self.detected} frames ({self.fully_visible} sampled frames fully in view)"
        if self.enrolled:
            what = f"named correctly {self.named_right}, Unknown {self.unknown}"
        else:
            what = f"Unknown {self.unknown}"
        wrong = ", ".join(f"{n} x{c}" for n, c in self.named_as.most_common())
        if wrong:
            what += f", WRONGLY named {wrong}"
        return f"  {'ok  ' if self.ok else 'FAIL'}  {self.label:<15} {kind:<15} {seen}: {what}"


@dataclass
class DemoReport:
    """The outcome per person, names given to things that are no cast face, and timings."""

    people: list[PersonOutcome]
    stray_names: Counter[str] = field(default_factory=Counter)
    frames: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(p.ok for p in self.people) and not self.stray_names

    def lines(self) -> list[str]:
        out = [p.line() for p in self.people]
        if self.stray_names:
            out.append("  FAIL  names given to detections that are no face of the cast: "
                       + ", ".join(f"{n} x{c}" for n, c in self.stray_names.most_common()))
        enrolled = [p for p in self.people if p.enrolled]
        others = [p for p in self.people if not p.enrolled]
        recognised = sum(p.named_right > 0 for p in enrolled)
        named_strangers = [p.label for p in others if p.named_as]
        verdict = "PASS" if self.passed else "FAIL"
        out.append(
            f"{verdict}: {recognised}/{len(enrolled)} enrolled people recognised; "
            + (f"never-enrolled people given a name: {', '.join(named_strangers)}"
               if named_strangers else f"all {len(others)} never-enrolled people stayed Unknown")
        )
        return out


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def evaluate(results: Sequence[InferResult], truth: dict) -> DemoReport:
    """Compare per-frame recognitions with ground_truth.json (detections matched by box overlap)."""
    people = {p["label"]: PersonOutcome(p["label"], bool(p["enrolled"])) for p in truth["people"]}
    report = DemoReport(list(people.values()), frames=len(results))
    frames = truth["frames"]
    for result in results:
        if result.frame_index is None or result.frame_index >= len(frames):
            continue
        faces = frames[result.frame_index]["faces"]
        for face in faces:
            if face["visible"] >= 1.0:
                people[face["label"]].fully_visible += 1
        pairs = sorted(
            ((iou(rec.face.box, face["box"]), d, t) for d, rec in enumerate(result.faces) for t, face in enumerate(faces)),
            reverse=True,
        )
        used_d: set[int] = set()
        used_t: set[int] = set()
        for overlap, d, t in pairs:  # greedy one-to-one matching, best overlaps first
            if overlap < MATCH_IOU or d in used_d or t in used_t:
                continue
            used_d.add(d)
            used_t.add(t)
            person, label = people[faces[t]["label"]], result.faces[d].label
            person.detected += 1
            if label is None:
                person.unknown += 1
            elif label == person.label:
                person.named_right += 1
            else:
                person.named_as[label] += 1
        for d, rec in enumerate(result.faces):
            if d not in used_d and rec.label is not None:
                report.stray_names[rec.label] += 1
    return report


def run_demo(
    out_dir: Path | str = "demo-output",
    *,
    config: Path | str | None = None,
    force: bool = False,
    download_dir: Path | str | None = None,
    video_fps: float = 2.0,
    show_frames: bool = True,
    log: Callable[[str], None] = print,
) -> DemoReport:
    """Make the demo files (if needed), build the index with the configured engine, recognise the
    video and return the comparison with the ground truth (``report.passed``)."""
    from streamd.faces.engine import FaceEngine
    from streamd.index.builder import build_index
    from streamd.settings import load_settings

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    files: DemoFiles = make_demo(out_dir, download_dir=download_dir, force=force, log=log)
    timings["make"] = time.perf_counter() - t0

    settings = load_settings(config)
    t0 = time.perf_counter()
    engine = FaceEngine.from_settings(settings.engine)
    timings["engine"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    summary = build_index(
        engine,
        files.gallery,
        files.index,
        multiple_faces=settings.gallery.multiple_faces,
        max_pixels=settings.engine.max_image_pixels,
    )
    timings["index"] = time.perf_counter() - t0
    for image_report in summary.reports:
        if not image_report.enrolled:
            log(f"gallery: {image_report.line()}")
    recognizer = Recognizer.from_settings(settings, index_dir=files.index, engine=engine)
    log(
        f"index: {summary.enrolled} gallery images of {len(summary.per_label)} people -> {files.index}; "
        f"engine {engine.detector.name} + {engine.embedder.name}, threshold {recognizer.threshold:.3f}, "
        f"margin {recognizer.margin:.3f}"
    )

    t0 = time.perf_counter()
    item = InferInput(str(files.video), "video", str(files.video))
    results = []
    for frame in iter_video(files.video, video_fps):
        result = InferResult(item, recognizer(frame.image), frame_index=frame.index, pts=frame.pts)
        results.append(result)
        if show_frames:
            log(frame_line(result))
    timings["recognise"] = time.perf_counter() - t0

    report = evaluate(results, json.loads(files.truth.read_text()))
    report.seconds = timings
    log(f"{len(results)} frames at {video_fps:g} fps compared with {files.truth}:")
    for line in report.lines():
        log(line)
    log("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return report
