"""Opening files inside a directory a task can write to, without following its symlinks.

The agent runs as root and reads (and rotates) task logs in the allocation's
directory, which the task itself writes.  A task that replaced ``alloc/logs`` or
``web.stdout`` with a symlink to ``/etc/shadow`` must not make the agent read,
truncate or overwrite that file.  So every path under such a directory is opened
*relative to a directory fd* and no component is followed through a symlink:

* ``openat2(2)`` with ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`` (Linux 5.6+),
  called through ``syscall(2)`` with ctypes (Python has no binding), where the
  kernel has it;
* otherwise one ``openat`` per component with ``O_NOFOLLOW`` (``O_DIRECTORY`` for
  the directories on the way).

Both refuse ``..``, absolute paths and symlinks anywhere on the way with an
:class:`OSError` (``ELOOP``/``EXDEV``/``EINVAL``); the tests run both paths.
"""

from __future__ import annotations

import ctypes
import errno
import os

SYS_OPENAT2 = 437
"""The same number on every architecture (the syscall table was unified by then)."""
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08


class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


_openat2_works: bool | None = None
_libc: ctypes.CDLL | None = None


def _syscall_openat2(dir_fd: int, path: str, flags: int, mode: int) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    # openat2 refuses a mode without O_CREAT/O_TMPFILE (EINVAL)
    creates = flags & os.O_CREAT or (flags & os.O_TMPFILE) == os.O_TMPFILE
    mode = mode if creates else 0
    how = _OpenHow(flags | os.O_CLOEXEC, mode, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)
    fd = int(
        _libc.syscall(
            ctypes.c_long(SYS_OPENAT2),
            ctypes.c_int(dir_fd),
            ctypes.c_char_p(os.fsencode(path)),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


def openat2_available() -> bool:
    """Whether this kernel (and any seccomp filter around us) lets us call openat2."""
    global _openat2_works
    if _openat2_works is None:
        try:
            root = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.close(_syscall_openat2(root, ".", os.O_RDONLY | os.O_DIRECTORY, 0))
            finally:
                os.close(root)
            _openat2_works = True
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EPERM, errno.EINVAL):
                raise
            _openat2_works = False
        except (AttributeError, TypeError):  # no libc syscall() (not Linux/glibc-like)
            _openat2_works = False
    return _openat2_works


def _components(path: str) -> list[str]:
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise OSError(errno.EINVAL, "not a plain relative path", path)
    return parts


def open_beneath(
    dir_fd: int,
    path: str,
    flags: int = os.O_RDONLY,
    mode: int = 0o644,
    *,
    openat2: bool | None = None,
) -> int:
    """An fd for ``path`` under ``dir_fd``, no component followed through a symlink.

    ``path`` is relative, made of plain names (no ``..``, ``.`` or empty parts).
    ``openat2`` forces one implementation (tests); None picks openat2 where it works.
    """
    parts = _components(path)
    if openat2 is None:
        openat2 = openat2_available()
    if openat2:
        return _syscall_openat2(dir_fd, path, flags, mode)
    fd = dir_fd
    try:
        for part in parts[:-1]:
            nxt = os.open(
                part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
            )
            if fd != dir_fd:
                os.close(fd)
            fd = nxt
        return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=fd)
    finally:
        if fd != dir_fd:
            os.close(fd)


def open_dir(path: str) -> int:
    """A directory fd for an absolute path the agent itself made (its last component is
    not followed through a symlink)."""
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
