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

The log directory is the task's to write: a task may plant a symlink named like
its log (or like a rotated copy, or the copy's ``.tmp``) pointing at any file on
the node.  The agent runs as root, so every file here is opened relative to the
log directory's fd with ``O_NOFOLLOW`` (and the directory itself, given the
allocation's root, with :func:`podium.drivers.beneath.open_beneath`): a symlink
is never read, truncated or written through, and anything but a regular file is
left alone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from typing import Literal

from podium.drivers.beneath import open_beneath, open_dir

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


LOG_SUBDIR = "alloc/logs"
"""Where an allocation's task logs are, relative to its directory."""


def open_log_dir(alloc_dir: str, *, openat2: bool | None = None) -> int:
    """An fd for ``<alloc_dir>/alloc/logs``, with no symlink followed on the way below
    the allocation's directory (which the agent made).  Raises OSError."""
    root = open_dir(alloc_dir)
    try:
        return open_beneath(root, LOG_SUBDIR, os.O_RDONLY | os.O_DIRECTORY, openat2=openat2)
    finally:
        os.close(root)


def segment_names(dir_fd: int, base: str) -> list[str]:
    """The log ``base``'s files in the directory, oldest to newest: ``base.<n>`` by n,
    then ``base`` itself (each only when present)."""
    pattern = re.compile(re.escape(base) + r"\.(\d+)$")
    found = []
    names = os.listdir(dir_fd)
    for name in names:
        m = pattern.match(name)
        if m:
            found.append((int(m.group(1)), name))
    return [n for _i, n in sorted(found)] + ([base] if base in names else [])


def open_segment(
    dir_fd: int, name: str, flags: int = os.O_RDONLY, *, openat2: bool | None = None
) -> int | None:
    """An fd for the regular file ``name`` in the log directory; None when it is gone,
    a symlink, or anything but a regular file (never opened through a link, never
    blocking on a FIFO)."""
    try:
        fd = open_beneath(dir_fd, name, flags | os.O_NONBLOCK, openat2=openat2)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.EXDEV, errno.ENXIO, errno.EINVAL):
            return None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def rotate_if_needed(path: str, max_bytes: int, max_files: int, *, root: str | None = None) -> bool:
    """Rotate ``path`` when it has reached ``max_bytes``; True if it did.

    Keeps at most ``max_files`` files in all: the current one plus
    ``max_files - 1`` rotated ones (with ``max_files == 1`` the log is just
    truncated).  With ``root`` (the allocation's directory, which holds ``path``),
    no directory between ``root`` and the log is followed through a symlink either.
    A log that is a symlink or not a regular file is left alone (False).
    """
    folder, base = os.path.split(path)
    try:
        if root is not None:
            rel = os.path.relpath(folder, root)
            top = open_dir(root)
            try:
                dir_fd = open_beneath(top, rel, os.O_RDONLY | os.O_DIRECTORY)
            finally:
                os.close(top)
        else:
            dir_fd = open_dir(folder or ".")
    except FileNotFoundError:
        return False
    try:
        src = open_segment(dir_fd, base, os.O_RDWR)
        if src is None:
            return False
        try:
            if os.fstat(src).st_size < max(1, max_bytes):
                return False
            keep = max(0, max_files - 1)
            rotated = (
                segment_names(dir_fd, base)[:-1]
                if keep
                else [n for n in segment_names(dir_fd, base) if n != base]
            )
            if keep:
                numbers = [int(n.rsplit(".", 1)[1]) for n in rotated]
                target = f"{base}.{(max(numbers) + 1) if numbers else 1}"
                _copy_then_truncate(dir_fd, src, target)
                rotated.append(target)
            else:
                os.ftruncate(src, 0)
        finally:
            os.close(src)
        for old in rotated[: max(0, len(rotated) - keep)]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(old, dir_fd=dir_fd)
        return True
    finally:
        os.close(dir_fd)


def _copy_then_truncate(dir_fd: int, src: int, target: str) -> None:
    tmp = target + ".tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dir_fd)  # a leftover, or a planted symlink: removed, not followed
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    dst = os.open(tmp, flags, 0o644, dir_fd=dir_fd)
    try:
        os.lseek(src, 0, os.SEEK_SET)
        for _ in range(CATCH_UP):
            while chunk := os.read(src, CHUNK):
                os.write(dst, chunk)
            # Appended during the copy?  Copy that too, then truncate at once.
            if os.fstat(src).st_size <= os.lseek(src, 0, os.SEEK_CUR):
                break
        os.ftruncate(src, 0)
    finally:
        os.close(dst)
    os.replace(tmp, target, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


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
