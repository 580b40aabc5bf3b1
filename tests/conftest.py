"""Shared fixtures.

Real models and face data live in ``../shared`` beside the checkout (never in the repo).
Tests that need them use the ``shared_dir`` fixture (or ``models_dir`` / ``faces_dir``): they
skip with a clear reason when ``../shared`` is absent, except under ``CI=true`` where a
missing ``../shared`` is a failure, because CI must exercise the real parts.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = Path(os.environ.get("STREAMD_SHARED_DIR", PROJECT_ROOT.parent / "shared"))


def _require(path: Path, what: str) -> Path:
    if path.exists():
        return path
    message = f"{what} not found at {path} (the ../shared folder beside the checkout)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(SHARED_DIR, "shared test data")


@pytest.fixture(scope="session")
def models_dir(shared_dir: Path) -> Path:
    return _require(shared_dir / "models", "shared face models")


@pytest.fixture(scope="session")
def faces_dir(shared_dir: Path) -> Path:
    return _require(shared_dir / "data" / "faces", "shared face data")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
