"""What a camera's supervisor needs from a video reader, whatever the backend (PyAV, OpenCV).

A reader is opened for one connection. ``frames()`` yields every decoded frame with its
timestamp and only converts a frame to a BGR array when asked (``Decoded.to_bgr()``), because
the colour conversion and scaling cost more than the decode itself and most frames are not
sampled. Readers raise :class:`streamd.errors.SourceError` with a ``kind`` on failure and are
closed by their supervisor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from streamd.sources.state import DecodeMode


@dataclass(frozen=True)
class Decoded:
    """One decoded frame before sampling.

    ``pts`` is stream time in seconds (continuous across file loops), ``unseen`` the frames of
    the source just before it that were not decoded (keyframe-only decoding), ``corrupt`` true
    when the decoder concealed damage in it, ``decode_s`` the decoder time it took.
    """

    pts: float
    unseen: int
    corrupt: bool
    convert: Callable[[], np.ndarray]
    decode_s: float = 0.0

    def to_bgr(self) -> np.ndarray:
        """The frame as BGR uint8 (H, W, 3), scaled to the camera's detection size if it has one."""
        return self.convert()


#: Called by a reader for each recoverable problem (kind, one-line message without secrets),
#: e.g. ("decode", "...") for a damaged packet that was skipped.
ErrorHook = Callable[[str, str], None]


class VideoReader(Protocol):
    """One open connection to a camera, file or device."""

    #: Decode mode now in force (None before the first frame).
    mode: DecodeMode | None
    #: Native size of the video.
    width: int
    height: int
    #: Measured keyframe interval in seconds, None until known.
    keyframe_interval: float | None
    #: Set by the supervisor after each frame: the earliest pts its sampler keeps next (None: any).
    #: A reader may leave frames before it undecoded when no later frame needs them.
    wanted_from: float | None

    def frames(self) -> Iterator[Decoded]:
        """Decoded frames until the end of a file (without loop); raises SourceError on failure."""
        ...

    def close(self) -> None:
        """Release the connection; safe to call twice."""
        ...
