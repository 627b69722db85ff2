"""Writing key material: atomically, and never readable by others, not even for a moment.

A key file is created 0600 with ``O_EXCL`` under a temporary name and renamed over the
old one, so a reader sees the old file or the new one, never half of one, and a crash
leaves no world-readable copy behind.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """``path`` created if missing, and made 0700 (it holds keys)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)
    return path


def write_file(path: Path, data: bytes, mode: int = SECRET_MODE) -> None:
    """Write ``data`` to ``path`` atomically, created with ``mode`` from the start."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # the umask may have taken bits away from PUBLIC_MODE
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def mode_of(path: Path) -> int:
    return path.stat().st_mode & 0o777
