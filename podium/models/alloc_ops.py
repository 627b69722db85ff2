"""Answers of the day-two operations on an allocation (issue 16): restart, signal, and
its files (``/v1/allocation/{id}/restart|signal|fs/...``, docs/api.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RestartAnswer(BaseModel):
    """``POST /v1/allocation/{id}/restart``: the tasks being restarted."""

    model_config = ConfigDict(extra="ignore")

    restarted: list[str]


class SignalAnswer(BaseModel):
    """``POST /v1/allocation/{id}/signal``: the signal (its canonical name) and the tasks
    it was delivered to."""

    model_config = ConfigDict(extra="ignore")

    signal: str
    tasks: list[str]


class FileInfo(BaseModel):
    """One entry of an allocation's directory, never followed through a symlink."""

    model_config = ConfigDict(extra="ignore")

    name: str
    path: str
    """Relative to the allocation's directory (``""``: the directory itself)."""
    type: Literal["file", "dir", "symlink", "other"]
    is_dir: bool
    size: int
    mode: str
    """As ``ls -l`` writes it: ``-rw-r--r--``."""
    mod_time: float
    link_target: str | None = None
    """A symlink's target, as the task wrote it (shown, never followed)."""


class FsListing(BaseModel):
    """``GET /v1/allocation/{id}/fs/ls``: a directory's entries, by name."""

    model_config = ConfigDict(extra="ignore")

    path: str
    entries: list[FileInfo] = Field(default_factory=list)
    truncated: bool = False
    """More entries than one listing answers (10,000)."""
