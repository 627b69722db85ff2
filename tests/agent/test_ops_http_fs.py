"""The agent's file serving for ``alloc fs`` (podium.agent.ops_http), on a real directory:
within the allocation's directory only, through both ways of opening beneath a directory
fd (openat2, and one O_NOFOLLOW open per component)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from podium.agent import ops_http
from podium.agent.ops_http import FsError, check_path, fs_list, fs_open_file, fs_stat
from podium.drivers import beneath

TASKS = ["web"]


@pytest.fixture(params=["openat2", "per-component"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[int]:
    if request.param == "openat2" and not beneath.openat2_available():
        pytest.skip("openat2 is not available here")
    saved = beneath._openat2_works
    beneath._openat2_works = request.param == "openat2"
    alloc = tmp_path / "alloc-1"
    (alloc / "alloc" / "logs").mkdir(parents=True)
    (alloc / "web" / "secrets").mkdir(parents=True)
    (alloc / "web" / "out.txt").write_text("hello\n")
    (alloc / "web" / "secrets" / "token").write_text("s3cret")
    (alloc / "web" / "shadow").symlink_to("/etc/shadow")
    (alloc / "web" / "up").symlink_to("..")
    (alloc / "web" / "linked").write_text("twice")
    os.link(alloc / "web" / "linked", alloc / "web" / "hard")
    os.mkfifo(alloc / "web" / "pipe")
    fd = beneath.open_dir(str(alloc))
    try:
        yield fd
    finally:
        os.close(fd)
        beneath._openat2_works = saved


def refused(fn: object, *args: object) -> FsError:
    with pytest.raises(FsError) as exc:
        fn(*args)  # type: ignore[operator]
    return exc.value


@pytest.mark.parametrize(
    ("path", "status", "word"),
    [
        ("/etc/shadow", 400, "absolute"),
        ("../x", 400, "'..'"),
        ("web/../../x", 400, "'..'"),
        ("web//out.txt", 400, "empty"),
        ("web/./out.txt", 400, "'.'"),
        ("web/secrets", 403, "secrets"),
        ("web/secrets/token", 403, "secrets"),
        ("web/out.txt\x00", 400, "NUL"),
    ],
)
def test_bad_paths_are_refused_before_anything_is_opened(path: str, status: int, word: str) -> None:
    err = refused(check_path, path, TASKS)
    assert err.status == status and word in str(err)


def test_plain_paths_pass() -> None:
    assert check_path("", TASKS) == "" and check_path(".", TASKS) == ""
    assert check_path("web/", TASKS) == "web"
    assert check_path("alloc/logs/web.stdout", TASKS) == "alloc/logs/web.stdout"
    assert check_path("secrets/x", TASKS) == "secrets/x", "only a task's secrets/"


def test_listing_shows_symlinks_without_following_them(root: int) -> None:
    top = fs_list(root, "")
    assert [e["name"] for e in top["entries"]] == ["alloc", "web"]
    web = {e["name"]: e for e in fs_list(root, "web")["entries"]}
    assert web["shadow"]["type"] == "symlink" and web["shadow"]["link_target"] == "/etc/shadow"
    assert web["out.txt"]["type"] == "file" and web["out.txt"]["size"] == 6
    assert web["pipe"]["type"] == "other"
    assert fs_stat(root, "web/shadow")["type"] == "symlink"
    assert fs_stat(root, "")["is_dir"]


def test_reading_is_within_the_directory_only(root: int) -> None:
    fd = fs_open_file(root, "web/out.txt")
    try:
        assert os.read(fd, 100) == b"hello\n"
    finally:
        os.close(fd)
    assert refused(fs_open_file, root, "web/shadow").status == 403
    assert refused(fs_list, root, "web/up").status in (400, 403)
    assert refused(fs_open_file, root, "web/up/web/out.txt").status in (400, 403)
    assert "hard links" in str(refused(fs_open_file, root, "web/hard"))
    assert "not a regular file" in str(refused(fs_open_file, root, "web/pipe"))
    assert "directory" in str(refused(fs_open_file, root, "web"))
    assert refused(fs_open_file, root, "web/missing").status == 404
    assert refused(fs_list, root, "web/out.txt").status == 400


def test_max_list_cuts_a_long_listing(root: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops_http, "MAX_LIST", 2)
    listing = fs_list(root, "web")
    assert len(listing["entries"]) == 2 and listing["truncated"]
