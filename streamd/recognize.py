"""The recognition step shared by ``streamd infer``, the HTTP API and the stream pipeline.

For each face in an image: analyze (detect, quality gate, embed) -> search the feature library
-> decide (a name, or unknown and why). The pieces stay apart (``FaceEngine``, ``FeatureLibrary``,
``decide``); this module only runs them in order for one image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np

from streamd.index.decision import decide
from streamd.types import Decision, Face, Match

if TYPE_CHECKING:
    from streamd.settings import Settings


class _Analysed(Protocol):
    face: Face
    vector: np.ndarray | None
    rejected: str | None


class RecognitionEngine(Protocol):
    """What recognition needs from a face engine (``streamd.faces.engine.FaceEngine`` fits)."""

    default_threshold: float

    def analyze(self, image: np.ndarray, *, largest_only: bool = False) -> Sequence[_Analysed]: ...


class SearchableLibrary(Protocol):
    """What recognition needs from a feature library (``streamd.index.library.FeatureLibrary`` fits)."""

    def search(self, vectors: np.ndarray, topk: int) -> list[list[Match]]: ...


@dataclass(frozen=True)
class FaceRecognition:
    """One face and what was decided about it.

    ``decision`` is None when the quality gate rejected the face (``rejected`` says why); such a
    face was not searched and is reported as unknown.
    """

    face: Face
    decision: Decision | None
    rejected: str | None = None

    def __post_init__(self) -> None:
        if (self.decision is None) == (self.rejected is None):
            raise ValueError("FaceRecognition needs either a decision or a rejection reason")

    @property
    def label(self) -> str | None:
        """The decided name, or None for unknown."""
        return self.decision.label if self.decision is not None else None

    @property
    def matches(self) -> tuple[Match, ...]:
        """The gallery hits, best first (empty for a rejected face)."""
        return self.decision.matches if self.decision is not None else ()

    @property
    def reason(self) -> str:
        """``known``, the decision's reason for unknown, or ``rejected:<gate reason>``."""
        return self.decision.reason if self.decision is not None else f"rejected:{self.rejected}"


def resolve_threshold(rec_threshold: float | None, engine: RecognitionEngine) -> float:
    """``index.rec_threshold`` when set, else the threshold the engine's embedder is calibrated for."""
    return float(rec_threshold) if rec_threshold is not None else float(engine.default_threshold)


def recognize(
    image: np.ndarray,
    engine: RecognitionEngine,
    library: SearchableLibrary,
    *,
    threshold: float,
    margin: float,
    topk: int,
) -> list[FaceRecognition]:
    """Every face in a BGR uint8 image with its open-set decision, in the detector's order."""
    analysed = engine.analyze(image)
    embedded = [r for r in analysed if r.vector is not None]
    hits: list[list[Match]] = []
    if embedded:
        hits = library.search(np.stack([np.asarray(r.vector, dtype=np.float32) for r in embedded]), topk)
    by_face = {id(r): h for r, h in zip(embedded, hits)}
    out = []
    for r in analysed:
        if r.vector is None:
            out.append(FaceRecognition(face=r.face, decision=None, rejected=r.rejected or "rejected"))
        else:
            out.append(FaceRecognition(face=r.face, decision=decide(by_face[id(r)], threshold, margin)))
    return out


@dataclass(frozen=True)
class Recognizer:
    """An engine and a library with the decision settings, called once per image."""

    engine: RecognitionEngine
    library: SearchableLibrary
    threshold: float
    margin: float
    topk: int

    def __call__(self, image: np.ndarray) -> list[FaceRecognition]:
        return recognize(
            image, self.engine, self.library, threshold=self.threshold, margin=self.margin, topk=self.topk
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        index_dir: Path | str | None = None,
        engine: RecognitionEngine | None = None,
        threshold: float | None = None,
        topk: int | None = None,
    ) -> Recognizer:
        """The engine the settings describe (unless given) and the library in ``index_dir``
        (default ``index.dir``), refused when it was built by another model.

        ``threshold`` and ``topk`` override ``index.rec_threshold`` and ``index.rec_topk``.
        """
        from streamd.faces.engine import FaceEngine
        from streamd.index.library import FeatureLibrary

        face_engine = engine if engine is not None else FaceEngine.from_settings(settings.engine)
        library = FeatureLibrary.load(
            index_dir if index_dir is not None else settings.index.dir,
            expected_dim=getattr(face_engine, "dim", None),
            expected_fingerprint=getattr(face_engine, "fingerprint", None),
        )
        return cls(
            engine=face_engine,
            library=library,
            threshold=resolve_threshold(threshold if threshold is not None else settings.index.rec_threshold, face_engine),
            margin=settings.index.margin,
            topk=topk if topk is not None else settings.index.rec_topk,
        )
