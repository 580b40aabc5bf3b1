#!/usr/bin/env python3
"""The offline demo, end to end: the same as ``streamd demo`` (see ``streamd demo --help``).

    python tools/demo.py [--out demo-output] [--config FILE] [--force] [--quiet]

Makes the demo files if needed (tools/make_demo.py), builds the index with the configured engine
(default: dlib), recognises the demo video and checks the names against the ground truth. Exits 0
only when every enrolled person is recognised and no never-enrolled person is named.
"""

from __future__ import annotations

import sys

from streamd.cli import main

if __name__ == "__main__":
    main(["demo", *sys.argv[1:]])
