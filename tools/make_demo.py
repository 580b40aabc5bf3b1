#!/usr/bin/env python3
"""Build the offline demo's gallery, video, ground truth and ATTRIBUTION.txt (no recognition).

    python tools/make_demo.py [--out demo-output] [--download-dir DIR] [--force]

The pictures come from PyPI packages fetched with ``pip download`` (face_recognition 1.3.0 and
insightface 2.1 source archives, the scikit-image 0.26.0 wheel) into OUT/downloads; nothing is
installed. ``streamd demo`` (or tools/demo.py) runs this and then recognises the video.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="output directory (default demo-output)")
    parser.add_argument("--download-dir", type=Path, help="package cache (default OUT/downloads)")
    parser.add_argument("--force", action="store_true", help="rebuild even when OUT holds a complete demo")
    parser.add_argument(
        "--no-installed", action="store_true", help="read every picture from downloaded archives, never installed packages"
    )
    args = parser.parse_args(argv)

    from streamd.demo.make import make_demo
    from streamd.errors import StreamdError

    try:
        make_demo(args.out, download_dir=args.download_dir, force=args.force, use_installed=not args.no_installed)
    except StreamdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
