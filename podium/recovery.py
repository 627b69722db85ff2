"""Offline store recovery for the CLI: what ``podium operator snapshot restore`` and
``podium operator store reset`` do to a stopped server's data dir.

The CLI may not import the store (import-linter: it goes through the client); these
work on files, not through a server, so they live here, beside ``podium.runtime``,
the other module that composes the store for a command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def restore_snapshot(snapshot: Path, data_dir: Path) -> dict[str, Any]:
    """Verify ``snapshot`` and install it as ``data_dir``'s store (the server stopped).
    Raises podium.state.errors.StoreError (StoreDamaged for a bad snapshot)."""
    from podium.state.snapshot import restore

    info, aside = restore(snapshot, data_dir)
    return {**info.as_dict(), "replaced": str(aside) if aside is not None else None}


def inspect_snapshot(snapshot: Path) -> dict[str, Any]:
    """What a snapshot file holds, after the checks a restore makes."""
    from podium.state.snapshot import verify

    return verify(snapshot).as_dict()


def reset_store(data_dir: Path) -> str | None:
    """Move ``data_dir``'s store aside and start a new, empty cluster there."""
    from podium.state.datadir import reset_store as reset

    aside = reset(data_dir)
    return str(aside) if aside is not None else None
