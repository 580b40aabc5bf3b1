"""Reading user images: each bad file gives one line naming it and what is wrong."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from streamd.errors import ImageError
from streamd.images import decode_image, encode_jpeg, read_image


def test_reads_a_jpeg_as_bgr(tmp_path):
    # given a red JPEG
    img = np.zeros((20, 30, 3), np.uint8)
    img[:, :, 2] = 255
    path = tmp_path / "red.jpg"
    path.write_bytes(encode_jpeg(img))
    # when
    out = read_image(path)
    # then
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert out[..., 2].mean() > 240 and out[..., 0].mean() < 15


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "empty file (0 bytes)"),
        (b"this is a text file, not a picture", "not an image"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 10, "not"),
    ],
)
def test_bad_files_are_named(tmp_path, content, expected):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError) as exc:
        read_image(path)
    assert str(path) in str(exc.value)
    assert expected in str(exc.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        read_image(tmp_path / "none.jpg")
    with pytest.raises(ImageError, match="is a directory"):
        read_image(tmp_path)


def test_pixel_cap_is_checked_before_decoding():
    # given a PNG of 2000x2000 and a cap of 1 Mpx
    ok, buf = cv2.imencode(".png", np.zeros((2000, 2000, 3), np.uint8))
    assert ok
    # when / then
    with pytest.raises(ImageError, match=r"2000x2000 = 4000000 pixels is over the cap of 1000000"):
        decode_image(buf.tobytes(), name="big.png", max_pixels=1_000_000)
