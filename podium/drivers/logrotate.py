"""Size-based rotation of task logs, by copy-and-truncate.

Tasks write their stdout/stderr straight to files the agent opened with
``O_APPEND`` (no pipe, no log-shipping process per task, nothing that breaks
when the agent restarts).  Rotation therefore cannot rename the file away
from under the writer; instead it copies the file to ``<path>.<n>`` and
truncates the original.  Every ``O_APPEND`` write lands at the current end of
file, so after the truncate the task simply continues at offset 0.

The price: a line written between the end of the copy and the truncate is
lost.  The copy re-checks the size before truncating, which makes that window
a few microseconds, not the duration of the copy.

Rotated files are numbered upwards (``.1``, ``.2``, ...; the newest has the
highest number, numbers are never reused) so a reader that is following the
log can tell which file holds what it has not seen yet.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from typing import Literal

CHUNK = 1 << 20
CATCH_UP = 16
"""Copy passes at most, for a task that writes faster than we copy."""


def rotated_files(path: str) -> list[tuple[int, str]]:
    """``(n, path.n)`` of the rotated files, oldest (lowest n) first."""
    folder, base = os.path.split(path)
    pattern = re.compile(re.escape(base) + r"\.(\d+)$")
    found = []
    try:
        names = os.listdir(folder or ".")
    except FileNotFoundError:
        return []
    for name in names:
        m = pattern.match(name)
        if m:
            found.append((int(m.group(1)), os.path.join(folder, name)))
    return sorted(found)


def log_files(path: str) -> list[str]:
    """The log's files oldest to newest: rotated ones, then ``path`` itself."""
    return [p for _n, p in rotated_files(path)] + [path]


def rotate_if_needed(path: str, max_bytes: int, max_files: int) -> bool:
    """Rotate ``path`` when it has reached ``max_bytes``; True if it did.

    Keeps at most ``max_files`` files in all: the current one plus
    ``max_files - 1`` rotated ones (with ``max_files == 1`` the log is just
    truncated).
    """
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return False
    if size < max(1, max_bytes):
        return False
    keep = max(0, max_files - 1)
    rotated = rotated_files(path)
    if keep:
        n = rotated[-1][0] + 1 if rotated else 1
        target = f"{path}.{n}"
        _copy_then_truncate(path, target)
        rotated.append((n, target))
    else:
        os.truncate(path, 0)
    for _n, old in rotated[: max(0, len(rotated) - keep)]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(old)
    return True


def _copy_then_truncate(path: str, target: str) -> None:
    with open(path, "rb") as src, open(target + ".tmp", "wb") as dst:
        for _ in range(CATCH_UP):
            shutil.copyfileobj(src, dst, CHUNK)
            # Appended during the copy?  Copy that too, then truncate at once.
            if os.fstat(src.fileno()).st_size <= src.tell():
                break
        os.truncate(path, 0)
    os.replace(target + ".tmp", target)


def read_log(
    path: str,
    offset: int = 0,
    origin: Literal["start", "end"] = "start",
    limit: int | None = None,
) -> bytes:
    """Read the log as one stream: the rotated files, oldest first, then ``path``.

    ``origin="start"`` skips ``offset`` bytes from the beginning of the oldest
    file kept; ``origin="end"`` returns the last ``offset`` bytes.  At most
    ``limit`` bytes are returned.  (A follower should track its position in
    ``path`` itself: when the file shrinks, it was rotated, and the unread rest
    is at the end of the newest rotated file.)
    """
    files = [p for p in log_files(path) if os.path.exists(p)]
    sizes = []
    for p in files:
        try:
            sizes.append(os.path.getsize(p))
        except FileNotFoundError:
            sizes.append(0)
    total = sum(sizes)
    skip = max(0, offset) if origin == "start" else max(0, total - max(0, offset))
    want = total - skip if limit is None else min(max(0, limit), max(0, total - skip))
    out = bytearray()
    for p, size in zip(files, sizes, strict=True):
        if want <= 0:
            break
        if skip >= size:
            skip -= size
            continue
        try:
            with open(p, "rb") as f:
                f.seek(skip)
                data = f.read(min(size - skip, want))
        except FileNotFoundError:
            data = b""
        out += data
        want -= len(data)
        skip = 0
    return bytes(out)
