"""Offline store recovery for the CLI: what ``podium operator snapshot restore`` and
``podium operator store reset`` do to a stopped server's data dir, and what ``podium
operator migrate`` and ``snapshot restore --etcd`` install into etcd (with every server
of the cluster stopped).

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


def migrate_to_etcd(data_dir: Path, endpoints: list[str], cluster: str) -> dict[str, Any]:
    """Move the stopped server's store at ``data_dir`` into etcd as cluster ``cluster``
    (which must hold nothing), with the id of the server's keyring key, so that servers
    on etcd without that key are refused (they could not open its variables).  Raises
    podium.state.errors.StoreError when refused, KeyringError for an unreadable key."""
    from podium.state.etcd import EtcdBackend
    from podium.state.etcd_admin import migrate

    keys = keyring_files(data_dir)
    keyring_id = _active_key(keys) if keys else None
    backend = EtcdBackend(endpoints, cluster=cluster)
    try:
        info = migrate(data_dir, backend, keyring_id=keyring_id).as_dict()
    finally:
        backend.close()
    key_file = [str(k) for k in keys if k.stem == keyring_id]
    return {**info, "etcd": endpoints, "keyring_file": key_file[0] if key_file else None}


def keyring_files(data_dir: Path) -> list[Path]:
    """The server's keyring key files in its data dir (none when it ran with
    ``--keyring-file``)."""
    return sorted((data_dir / "server" / "keyring").glob("*.key"))  # as podium.runtime


def _active_key(files: list[Path]) -> str:
    """The id of the key the server seals with (the newest of its keyring)."""
    from podium.server.keyring import Keyring, read_key_file

    return Keyring([read_key_file(f) for f in files], where=str(files[0].parent)).active.id


def restore_snapshot_etcd(snapshot: Path, endpoints: list[str], cluster: str) -> dict[str, Any]:
    """Verify ``snapshot`` and make it what etcd holds for ``cluster`` (no server may
    lead it).  Raises podium.state.errors.StoreError (StoreDamaged for a bad snapshot)."""
    from podium.state.etcd import EtcdBackend
    from podium.state.etcd_admin import restore

    backend = EtcdBackend(endpoints, cluster=cluster)
    try:
        return {**restore(snapshot, backend).as_dict(), "etcd": endpoints}
    finally:
        backend.close()
