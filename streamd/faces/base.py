"""The two engine Protocols every backend implements.

A detector turns a BGR image into faces; an embedder turns faces of an image into
L2-normalised float32 vectors. They are chosen independently in settings by ``type``.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from streamd.types import Face


@runtime_checkable
class FaceDetector(Protocol):
    """Finds faces in a BGR uint8 image of shape (H, W, 3)."""

    name: str

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces with box, score and, when the model gives them, five landmarks."""
        ...


@runtime_checkable
class FaceEmbedder(Protocol):
    """Turns faces of one image into L2-normalised float32 vectors of shape (N, dim)."""

    name: str
    dim: int
    #: Identifies the model weights and preprocessing; stored in the index so that an index
    #: built by another model is refused instead of silently giving wrong names.
    fingerprint: str
    #: The cosine-similarity threshold this model is calibrated for (used when
    #: ``rec_threshold`` is not set explicitly).
    default_threshold: float
    #: The cosine similarity above which two faces are taken for one person by the tracker
    #: (its same-person gate), calibrated on pairs of different people of the tuning half.
    same_person_threshold: float

    def embed(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """One normalised vector per face, aligned with landmarks or cropped from the box."""
        ...
