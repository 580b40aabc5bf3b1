"""How well a face's look (streamd.faces.look) tells a change of person, for the tracker's change_* settings.

Same face: consecutive samples (5 per second) of one face in the real videos of
``../shared/data/faces/video/faces`` (largest-overlap face of the next sample). Different people:
the largest face of one photo of each of 120 people of the *tuning* half of the identities.

Run from the project root::

    .venv/bin/python tools/look_calibration.py

It prints the quantiles of both distributions and, for a grid of (look similarity, colour
distance) thresholds, the share of different-people pairs caught and of same-face pairs flagged.
"""

from __future__ import annotations

import random
from pathlib import Path

import av
import cv2
import numpy as np

from streamd.eval.split import identity_folders
from streamd.faces.factory import create_detector
from streamd.faces.look import FaceLook, face_look
from streamd.settings import OnnxDetectorSettings
from streamd.tracking.geometry import iou_matrix

FACES = Path("../shared/data/faces")
MIN_FACE_PX = 40


def same_face_pairs(detector) -> tuple[list[float], list[float]]:  # type: ignore[no-untyped-def]
    sims, cols = [], []
    for path in sorted((FACES / "video" / "faces").glob("*.mp4")):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            step = max(1, round(float(stream.average_rate or 25) / 5))
            previous: list[tuple[tuple[float, ...], FaceLook | None]] = []
            for i, frame in enumerate(container.decode(stream)):
                if i % step:
                    continue
                image = frame.to_ndarray(format="bgr24")
                faces = [f for f in detector.detect(image) if min(f.width, f.height) >= MIN_FACE_PX]
                current = [(f.box, face_look(image, f.box)) for f in faces]
                if previous and current:
                    overlap = iou_matrix(np.array([b for b, _ in previous]), np.array([b for b, _ in current]))
                    for a, (_, before) in enumerate(previous):
                        b = int(np.argmax(overlap[a]))
                        now = current[b][1]
                        if overlap[a, b] > 0.4 and before is not None and now is not None:
                            sims.append(before.similarity(now))
                            cols.append(before.colour_distance(now))
                previous = current
    return sims, cols


def different_people_pairs(detector, people: int = 120) -> tuple[list[float], list[float]]:  # type: ignore[no-untyped-def]
    folders = random.Random(0).sample(identity_folders(FACES / "identities", "tune"), people)
    looks = []
    for folder in folders:
        image = cv2.imread(str(sorted(folder.iterdir())[0]))
        faces = detector.detect(image) if image is not None else []
        if faces:
            largest = max(faces, key=lambda f: f.area)
            look = face_look(image, largest.box)
            if look is not None:
                looks.append(look)
    sims, cols = [], []
    for i, a in enumerate(looks):
        for b in looks[i + 1 :]:
            sims.append(a.similarity(b))
            cols.append(a.colour_distance(b))
    return sims, cols


def main() -> None:
    model = next((Path("../shared/models/yunet_2023mar")).glob("*.onnx"))
    detector = create_detector(OnnxDetectorSettings(type="onnx", model="yunet", model_path=model))
    same_sim, same_col = (np.array(v) for v in same_face_pairs(detector))
    diff_sim, diff_col = (np.array(v) for v in different_people_pairs(detector))
    print(f"same-face consecutive pairs: {len(same_sim)}; different-people pairs: {len(diff_sim)}")
    for name, values in (("same look", same_sim), ("different look", diff_sim),
                         ("same colour", same_col), ("different colour", diff_col)):
        q = np.quantile(values, [0.01, 0.05, 0.5, 0.95, 0.99])
        print(f"  {name:<17} q01 {q[0]:7.3f}  q05 {q[1]:7.3f}  q50 {q[2]:7.3f}  q95 {q[3]:7.3f}  q99 {q[4]:7.3f}")
    print("  look <  colour > | different people caught | same face flagged")
    for look in (0.3, 0.4, 0.5, 0.6, 0.7):
        for colour in (25.0, 30.0, 40.0):
            caught = float(np.mean((diff_sim < look) | (diff_col > colour)))
            flagged = float(np.mean((same_sim < look) | (same_col > colour)))
            print(f"  {look:6.2f} {colour:8.0f} | {100 * caught:22.1f} % | {100 * flagged:15.1f} %")


if __name__ == "__main__":
    main()
