"""Opening below a directory a task writes, with no symlink followed: both ways (openat2,
and O_NOFOLLOW per component), and log rotation that neither reads, truncates nor
writes through a link the task planted."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from podium.drivers import beneath
from podium.drivers.logrotate import rotate_if_needed

SECRET = "do not touch\n" * 10


@pytest.fixture(params=[True, False], ids=["openat2", "nofollow"])
def use_openat2(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    if request.param and not beneath.openat2_available():
        pytest.skip("this kernel has no openat2 (Linux < 5.6, or a seccomp filter)")
    monkeypatch.setattr(beneath, "_openat2_works", bool(request.param))
    return bool(request.param)


def test_open_beneath_refuses_links_and_climbs(tmp_path: Path, use_openat2: bool) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_text("ok")
    (tmp_path / "secret").write_text(SECRET)
    (tmp_path / "a" / "link").symlink_to(tmp_path / "secret")
    (tmp_path / "a" / "dirlink").symlink_to(tmp_path / "a" / "b")
    root = beneath.open_dir(str(tmp_path / "a"))
    try:
        fd = beneath.open_beneath(root, "b/f", openat2=use_openat2)
        assert os.read(fd, 10) == b"ok"
        os.close(fd)
        for path, codes in (
            ("link", {errno.ELOOP}),
            ("dirlink/f", {errno.ELOOP, errno.ENOTDIR}),
            ("../secret", {errno.EINVAL}),
            ("/etc/passwd", {errno.EINVAL}),
            ("b/../../secret", {errno.EINVAL}),
        ):
            with pytest.raises(OSError) as err:
                beneath.open_beneath(root, path, openat2=use_openat2)
            assert err.value.errno in codes, (path, err.value)
    finally:
        os.close(root)


def alloc_with_logs(tmp_path: Path) -> tuple[str, Path]:
    root = tmp_path / "alloc-1"
    logs = root / "alloc" / "logs"
    logs.mkdir(parents=True)
    return str(root), logs


def test_rotation_does_not_truncate_through_a_planted_link(
    tmp_path: Path, use_openat2: bool
) -> None:
    root, logs = alloc_with_logs(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text(SECRET)
    (logs / "t.stdout").symlink_to(victim)
    assert not rotate_if_needed(str(logs / "t.stdout"), 10, 3, root=root)
    assert not rotate_if_needed(str(logs / "t.stdout"), 10, 1)
    assert victim.read_text() == SECRET


def test_rotation_does_not_write_through_a_planted_copy_name(
    tmp_path: Path, use_openat2: bool
) -> None:
    root, logs = alloc_with_logs(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text(SECRET)
    (logs / "t.stdout").write_text("x" * 100)
    (logs / "t.stdout.1.tmp").symlink_to(victim)  # the copy's temporary name
    assert rotate_if_needed(str(logs / "t.stdout"), 10, 3, root=root)
    assert victim.read_text() == SECRET
    assert (logs / "t.stdout.1").read_text() == "x" * 100
    assert not (logs / "t.stdout.1").is_symlink()


def test_rotation_does_not_follow_a_linked_log_directory(tmp_path: Path, use_openat2: bool) -> None:
    root, logs = alloc_with_logs(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "t.stdout").write_text(SECRET)
    logs.rmdir()
    logs.symlink_to(elsewhere)
    with pytest.raises(OSError):
        rotate_if_needed(str(logs / "t.stdout"), 10, 3, root=root)
    assert (elsewhere / "t.stdout").read_text() == SECRET
