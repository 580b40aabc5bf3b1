"""Small helpers on feature vectors shared by the embedders."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32 (an all-zero row stays zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def mirror_chip(chip: np.ndarray) -> np.ndarray:
    """The chip mirrored left to right (contiguous, so that it can be stacked and fed to a model)."""
    return np.ascontiguousarray(chip[:, ::-1])


def flip_average(embed: Callable[[list[np.ndarray]], np.ndarray], chips: Sequence[np.ndarray]) -> np.ndarray:
    """``normalise(embed(chip) + embed(mirror))`` per chip, where ``embed`` gives unit vectors.

    The chips and their mirrors go through ``embed`` in one call, so that a batching embedder runs
    them in the same batches. Summing unit vectors weighs both views alike whatever their raw norms.
    """
    chips = list(chips)
    if not chips:
        return embed(chips)
    both = np.asarray(embed(chips + [mirror_chip(c) for c in chips]), dtype=np.float32)
    n = len(chips)
    return l2_normalise(both[:n] + both[n:])
