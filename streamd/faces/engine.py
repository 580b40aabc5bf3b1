"""The face engine facade: detect, gate, embed, in one call.

Everything that needs features (the gallery builder, ``infer``, the pipeline, ``eval``) calls
:meth:`FaceEngine.analyze` instead of wiring a detector, the quality gate and an embedder itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamd.faces.base import FaceDetector, FaceEmbedder
from streamd.faces.quality import QualityGate
from streamd.settings import EngineSettings
from streamd.types import Face


@dataclass(frozen=True)
class FaceResult:
    """One detected face and its feature.

    ``vector`` is the L2-normalised float32 feature of shape (dim,), or None when the quality gate
    rejected the face; ``rejected`` is then the gate's reason (``too_small``, ``blurry``, ...).
    """

    face: Face
    vector: np.ndarray | None
    rejected: str | None = None

    def __post_init__(self) -> None:
        if (self.vector is None) == (self.rejected is None):
            raise ValueError("FaceResult needs either a vector or a rejection reason, not both or neither")
        if self.vector is not None:
            vec = np.asarray(self.vector, dtype=np.float32)
            if vec.ndim != 1:
                raise ValueError(f"FaceResult.vector must have shape (dim,), got {vec.shape}")
            vec.setflags(write=False)
            object.__setattr__(self, "vector", vec)


class FaceEngine:
    """A detector, an optional quality gate and an embedder used together.

    ``dim``, ``fingerprint`` and ``default_threshold`` are the embedder's: the feature dimension,
    the identity of the model and preprocessing (stored in the index), and the cosine similarity
    the model is calibrated for.
    """

    def __init__(self, detector: FaceDetector, embedder: FaceEmbedder, gate: QualityGate | None) -> None:
        self.detector = detector
        self.embedder = embedder
        self.gate = gate

    @classmethod
    def from_settings(cls, engine: EngineSettings) -> "FaceEngine":
        """Build the detector, embedder and gate the ``engine`` settings describe."""
        from streamd.faces.factory import create_detector, create_embedder

        detector = create_detector(engine.detector, device=engine.device)
        embedder = create_embedder(engine.embedder, device=engine.device)
        return cls(detector, embedder, QualityGate(engine.quality))

    @property
    def dim(self) -> int:
        return int(self.embedder.dim)

    @property
    def fingerprint(self) -> str:
        return self.embedder.fingerprint

    @property
    def default_threshold(self) -> float:
        return float(self.embedder.default_threshold)

    @property
    def same_person_threshold(self) -> float:
        """The tracker's same-person gate for this embedder (see :class:`~streamd.faces.base.FaceEmbedder`)."""
        return float(self.embedder.same_person_threshold)

    def detect(self, image: np.ndarray, *, largest_only: bool = False) -> list[Face]:
        """The detector's faces, largest first when ``largest_only`` (then at most one)."""
        faces = self.detector.detect(image)
        if largest_only and faces:
            return [max(faces, key=lambda f: f.area)]
        return faces

    def analyze(self, image: np.ndarray, *, largest_only: bool = False, apply_gate: bool = True) -> list[FaceResult]:
        """Detect faces in a BGR uint8 image, gate them and embed those that pass.

        ``largest_only`` keeps only the largest detected face (gallery enrolment, eval).
        ``apply_gate=False`` embeds every face (also when the engine has no gate).
        """
        faces = self.detect(image, largest_only=largest_only)
        reasons: list[str | None] = [None] * len(faces)
        if apply_gate and self.gate is not None:
            reasons = [self.gate.check(image, face) for face in faces]
        to_embed = [face for face, reason in zip(faces, reasons) if reason is None]
        vectors = iter(self.embedder.embed(image, to_embed)) if to_embed else iter(())
        results = []
        for face, reason in zip(faces, reasons):
            if reason is None:
                results.append(FaceResult(face=face, vector=next(vectors), rejected=None))
            else:
                results.append(FaceResult(face=face, vector=None, rejected=reason))
        return results
