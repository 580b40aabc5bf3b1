"""Camera passwords are masked in URLs, error strings and log records."""

from __future__ import annotations

import logging

import pytest

from streamd.sources.redact import RedactingFilter, redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://admin:secret@10.0.0.5:554/stream1", "rtsp://admin:***@10.0.0.5:554/stream1"),
        ("rtsp://admin:p%40ss@cam/live", "rtsp://admin:***@cam/live"),
        ("rtsp://admin:p@ss@cam/live", "rtsp://admin:***@cam/live"),
        ("rtsp://admin@cam/live", "rtsp://admin@cam/live"),
        ("rtsp://cam/live", "rtsp://cam/live"),
        ("http://cam/snap.cgi?user=admin&password=secret&x=1", "http://cam/snap.cgi?user=admin&password=***&x=1"),
        ("https://nvr/hls.m3u8?token=abc123", "https://nvr/hls.m3u8?token=***"),
        ("/videos/door.mp4", "/videos/door.mp4"),
        ("", ""),
    ],
)
def test_redact_url_masks_passwords_and_secret_parameters(url: str, expected: str) -> None:
    # given / when / then
    assert redact_url(url) == expected


def test_redact_text_masks_urls_ffmpeg_echoes_in_its_errors() -> None:
    # given an FFmpeg error string that repeats the URL it failed on
    url = "rtsp://admin:s3cr3t@10.0.0.5/stream1"
    error = f"[Errno 1094995529] Invalid data found when processing input: '{url}'"

    # when
    text = redact_text(error)

    # then
    assert "s3cr3t" not in text
    assert "rtsp://admin:***@10.0.0.5/stream1" in text


def test_redact_text_masks_the_known_password_even_outside_a_url() -> None:
    # given a message that quotes the password on its own
    url = "rtsp://admin:Tr1cky!pw@cam/live"

    # when
    text = redact_text("auth failed for password Tr1cky!pw", url)

    # then
    assert text == "auth failed for password ***"


def test_the_logging_filter_masks_library_log_records(caplog: pytest.LogCaptureFixture) -> None:
    # given a logger of a library (PyAV forwards FFmpeg messages under libav.*) with the filter
    logger = logging.getLogger("libav.rtsp")
    handler_filter = RedactingFilter()
    caplog.handler.addFilter(handler_filter)
    try:
        # when
        with caplog.at_level(logging.INFO, logger="libav.rtsp"):
            logger.info("Opening '%s' for reading", "rtsp://admin:secret@cam/live")
    finally:
        caplog.handler.removeFilter(handler_filter)

    # then
    assert "secret" not in caplog.text
    assert "rtsp://admin:***@cam/live" in caplog.text
