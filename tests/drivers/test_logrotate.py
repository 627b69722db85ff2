"""Copy-truncate rotation and reading a log across its rotated files."""

from __future__ import annotations

import os
from pathlib import Path

from podium.drivers.logrotate import log_files, read_log, rotate_if_needed, rotated_files


def test_no_rotation_below_the_limit(tmp_path: Path) -> None:
    log = tmp_path / "t.stdout"
    assert not rotate_if_needed(str(log), 10, 3)  # missing file
    log.write_bytes(b"123")
    assert not rotate_if_needed(str(log), 10, 3)
    assert log_files(str(log)) == [str(log)]


def test_rotation_numbers_upwards_and_keeps_max_files(tmp_path: Path) -> None:
    log = str(tmp_path / "t.stdout")
    for i in range(1, 5):
        Path(log).write_text(f"chunk {i}\n")
        assert rotate_if_needed(log, 5, 3)
        assert os.path.getsize(log) == 0
    assert [n for n, _ in rotated_files(log)] == [3, 4]  # max_files - 1 rotated files
    assert Path(f"{log}.4").read_text() == "chunk 4\n"
    assert log_files(log) == [f"{log}.3", f"{log}.4", log]


def test_numeric_order_past_nine(tmp_path: Path) -> None:
    log = str(tmp_path / "x")
    for n in (9, 10, 11):
        Path(f"{log}.{n}").write_text(str(n))
    Path(f"{log}.10.tmp").write_text("partial copy")
    assert log_files(log) == [f"{log}.9", f"{log}.10", f"{log}.11", log]


def test_max_files_one_truncates(tmp_path: Path) -> None:
    log = tmp_path / "t"
    log.write_text("x" * 20)
    assert rotate_if_needed(str(log), 10, 1)
    assert log.read_text() == "" and rotated_files(str(log)) == []


def test_append_writer_continues_at_the_top(tmp_path: Path) -> None:
    log = tmp_path / "t"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, b"before rotation\n")
        assert rotate_if_needed(str(log), 1, 5)
        os.write(fd, b"after\n")
    finally:
        os.close(fd)
    assert log.read_bytes() == b"after\n"  # no hole of zeros: O_APPEND writes at the new end
    assert Path(f"{log}.1").read_bytes() == b"before rotation\n"


def test_read_log_spans_rotated_files(tmp_path: Path) -> None:
    log = str(tmp_path / "t")
    Path(f"{log}.1").write_bytes(b"aaaa")
    Path(f"{log}.2").write_bytes(b"bbbb")
    Path(log).write_bytes(b"cc")
    assert read_log(log) == b"aaaabbbbcc"
    assert read_log(log, 3) == b"abbbbcc"
    assert read_log(log, 3, "end") == b"bcc"
    assert read_log(log, 100, "end") == b"aaaabbbbcc"
    assert read_log(log, 2, "start", limit=4) == b"aabb"
    assert read_log(log, 50) == b""
    assert read_log(str(tmp_path / "missing")) == b""
