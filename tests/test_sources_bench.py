"""`streamd bench decode` runs end to end on a real clip and prints its table (figures are not asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from rtsp import HAMILTON

from streamd.cli import cli

pytestmark = pytest.mark.shared


def test_bench_decode_prints_full_and_keyframe_rows(faces_dir: Path) -> None:
    # given
    args = ["bench", "decode", "--video", str(faces_dir / HAMILTON), "--gops", "5", "--seconds", "1",
            "--repeat", "1", "--preset", "ultrafast"]

    # when
    result = CliRunner().invoke(cli, args)

    # then
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines() if line.strip().startswith("5 ")]
    assert [(r[0], r[1], r[3]) for r in rows] == [("5", "full", "25"), ("5", "keyframes", "5")]
    assert "gop 5: keyframe-only decoding costs" in result.output
    assert "decode: auto picks keyframes" in result.output
