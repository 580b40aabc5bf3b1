"""Camera sources: RTSP/HTTP/file through PyAV, USB/V4L2, supervised with reconnect and backoff.

Public API::

    from streamd.sources import CameraSettings, CameraSource, FrameQueue, END

    source = CameraSource(settings, metrics, on_state=callback).start()
    frame = source.queue.get(timeout=1.0)   # streamd.types.Frame, END when the camera ended, None on timeout
    source.state                            # CameraState snapshot: status, mode, next_retry_at, last_error...
    source.stop()

PyAV is imported only when ``CameraSource`` is first used, so that reading settings stays light.
"""

from typing import Any

from streamd.sources.config import BackoffSettings, CameraSettings, UsbSettings, ZoneSettings
from streamd.sources.queues import END, FrameQueue
from streamd.sources.redact import redact_text, redact_url
from streamd.sources.state import CameraState


def __getattr__(name: str) -> Any:
    if name == "CameraSource":
        from streamd.sources.supervisor import CameraSource

        return CameraSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "END",
    "BackoffSettings",
    "CameraSettings",
    "CameraSource",
    "CameraState",
    "FrameQueue",
    "UsbSettings",
    "ZoneSettings",
    "redact_text",
    "redact_url",
]
