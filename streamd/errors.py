"""Errors a user reads. Each message says what is wrong and where, in one line."""


class StreamdError(Exception):
    """Base class of every error streamd reports to a user (CLI exits non-zero with its message)."""


class ConfigError(StreamdError):
    """The configuration is missing, malformed or inconsistent."""


class ModelError(StreamdError):
    """A face model is missing, unloadable, or not of the shape streamd expects."""


class EngineUnavailable(ModelError):
    """An optional engine's package is not installed; the message names the extra to install."""


class ImageError(StreamdError):
    """An input image is unreadable, empty, not an image, or over the pixel cap."""


class FeatureLibraryError(StreamdError):
    """A feature library on disk is missing, corrupt, inconsistent or made by another model."""


class SourceError(StreamdError):
    """A camera or video source cannot be opened or read; ``kind`` says how (a metric label).

    Kinds: ``open`` (cannot connect or open), ``timeout`` (no answer within the connect
    timeout), ``no_video`` (no video stream), ``device`` (USB device missing or busy), ``stall``
    (no data within the stall timeout), ``read`` (the connection failed mid-stream), ``eof`` (a
    live stream ended), ``decode`` (too many undecodable packets in a row), ``interrupted``
    (stopped). Cameras also count ``corrupt`` frames and ``internal`` errors in
    ``streamd_stream_errors_total``.
    The message names the camera and never holds a password.
    """

    def __init__(self, message: str, kind: str = "open") -> None:
        super().__init__(message)
        self.kind = kind
