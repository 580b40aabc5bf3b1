"""Where a secret file named in the config is: systemd credentials first for relative paths.

A unit with ``LoadCredential=mqtt-password:/etc/streamd/mqtt-password`` gets the file in the
directory ``$CREDENTIALS_DIRECTORY`` (readable by the service only, even under DynamicUser), so the
config can say ``password_file: mqtt-password``. Outside systemd a relative path is relative to
the working directory, as usual.
"""

from __future__ import annotations

import os
from pathlib import Path


def credential_path(path: Path) -> Path:
    """``path`` under ``$CREDENTIALS_DIRECTORY`` when it is relative and systemd set that variable."""
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if not path.is_absolute() and creds:
        return Path(creds) / path
    return path
