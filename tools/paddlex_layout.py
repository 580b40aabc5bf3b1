#!/usr/bin/env python3
"""Make a legacy Paddle face export loadable by PaddleX 3 (and streamd's ``paddlex`` engine).

Copies inference.pdmodel + inference.pdiparams to DST and writes the inference.yml PaddleX reads
(Global.model_name + pre/post-processing). The source folder is not changed.

    python tools/paddlex_layout.py ../shared/models/blazeface_fpn_ssh_1000e_v1.0_infer models/BlazeFace-FPN-SSH BlazeFace-FPN-SSH
    python tools/paddlex_layout.py ../shared/models/mobileface_v1.0_infer models/MobileFaceNet MobileFaceNet
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streamd.faces.paddle_models import to_paddlex_layout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="folder of the legacy export")
    parser.add_argument("dst", type=Path, help="folder to create (PaddleX layout)")
    parser.add_argument("model_name", help="PaddleX model name, e.g. BlazeFace-FPN-SSH or MobileFaceNet")
    args = parser.parse_args()
    try:
        out = to_paddlex_layout(args.src, args.dst, args.model_name)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{out}: ready for paddlex.create_model(model_name={args.model_name!r}, model_dir={str(out)!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
