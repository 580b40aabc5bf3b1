"""Calibrated figures of the embedders streamd ships defaults for, chosen on the tuning half only.

Every figure here was chosen on the tuning half of the face data (``streamd.eval.split``) and is
reported on the other half; docs/accuracy.md gives the curves they were read from and the
commands that print them. Nothing here is derived from another figure by a constant.

A *same-person threshold* is the tracker's gate (``tracking.min_similarity`` unset): the cosine
similarity that pairs of photos of *different* people reach at most 0.1 % of the time
(``streamd eval gate --far 0.001``). Below it, a face is not the person a track follows.
"""

from __future__ import annotations

#: dlib's ResNet (L2-normalised vectors; cosine = 1 - d^2 / (2 * 1.43^2) for dlib's distance d, the
#: raw descriptors' norm being 1.43): the naming threshold where at most 1 % of strangers' probes
#: are named on the tuning half (`streamd eval ident --half tune`), stricter than dlib's own
#: "distance < 0.6" (cosine 0.91), which is a verification rule and names many more strangers.
DLIB_DEFAULT_THRESHOLD = 0.94

#: dlib's ResNet: the tracker's same-person gate.
DLIB_SAME_PERSON_THRESHOLD = 0.93

#: ArcFace-style 112x112 MobileFaceNets on the onnx engine (foamliu's, and the insightface /
#: PaddlePaddle MobileFace converted to ONNX, whose different-person tails lie close together).
ONNX_SAME_PERSON_THRESHOLD = 0.35

#: Paddle MobileFace through Paddle Inference or PaddleX (the same weights as the converted one).
PADDLE_SAME_PERSON_THRESHOLD = 0.33
