"""Calibrated figures of the embedders streamd ships defaults for, chosen on the tuning half only.

Every figure here was chosen on the tuning half of the face data (``streamd.eval.split``) and is
reported on the other half; docs/accuracy.md gives the curves they were read from and the
commands that print them. Nothing here is derived from another figure by a constant.

A *same-person threshold* is the tracker's gate (``tracking.min_similarity`` unset): the cosine
similarity that pairs of photos of *different* people reach at most 0.1 % of the time
(``streamd eval gate --far 0.001``). Below it, a face is not the person a track follows.
"""

from __future__ import annotations

#: ArcFace-style 112x112 MobileFaceNets on the onnx engine (foamliu's, and the insightface /
#: PaddlePaddle MobileFace converted to ONNX, whose different-person tails lie close together).
ONNX_SAME_PERSON_THRESHOLD = 0.40

#: Paddle MobileFace through Paddle Inference or PaddleX (the same weights as the converted one).
PADDLE_SAME_PERSON_THRESHOLD = 0.40
