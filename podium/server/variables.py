"""Variables: put, get, list and delete small key/value documents at a path.

The store holds only :class:`~podium.models.EncryptedVariable` (see
:mod:`podium.server.keyring`); this module seals items on the way in and opens
them on the way out, so the API, the CLI and templates see plain
:class:`~podium.models.Variable` objects.  Writes can be conditional on the
variable's ``modify_index`` (check-and-set, ``cas=0`` meaning "only if it does
not exist yet"), and a reader can block until one variable changes.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Mapping

from podium.errors import Conflict, NotFound
from podium.models import EncryptedVariable, Variable, VariableMetadata
from podium.models.variable import check_var_path
from podium.server.keyring import Keyring, KeyringError, Sealed
from podium.state import StateStore
from podium.state.store import VARIABLES

ITEM_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
MAX_ITEMS_BYTES = 64 * 1024
"""The items' JSON may be at most this big (Nomad's limit too): variables are for
configuration and credentials, not files."""


def _what(path: str, namespace: str) -> str:
    return f"variable {path!r}" + (f" in namespace {namespace!r}" if namespace != "default" else "")


def check_items(items: Mapping[str, str]) -> dict[str, str]:
    if not items:
        raise ValueError("a variable needs at least one item (KEY=VALUE)")
    for key, value in items.items():
        if not ITEM_KEY_RE.match(key):
            raise ValueError(
                f"item key {key!r} must be 1-128 letters, digits, '_', '.' or '-' (such as db_url)"
            )
        if not isinstance(value, str):
            raise ValueError(f"item {key!r} must be a string, not {type(value).__name__}")
    data = dict(items)
    if len(_encode(data)) > MAX_ITEMS_BYTES:
        raise ValueError(f"a variable's items may take at most {MAX_ITEMS_BYTES // 1024} KiB")
    return data


def _encode(items: Mapping[str, str]) -> bytes:
    return json.dumps(items, sort_keys=True, separators=(",", ":")).encode()


class Variables:
    def __init__(self, store: StateStore, keyring: Keyring, clock: Callable[[], float]) -> None:
        self.store = store
        self.keyring = keyring
        self.clock = clock

    # ---------------------------------------------------------------- reading
    def open(self, sealed: EncryptedVariable) -> Variable:
        plain = self.keyring.open(
            sealed.namespace,
            sealed.path,
            Sealed(key_id=sealed.key_id, nonce=sealed.nonce, ciphertext=sealed.ciphertext),
        )
        try:
            items = json.loads(plain)
        except ValueError as exc:  # pragma: no cover - authenticated, so only a bug could
            raise KeyringError(f"variable {sealed.path!r} decrypted to invalid JSON") from exc
        meta = VariableMetadata.model_validate(sealed.model_dump())
        return Variable(**meta.model_dump(), items=items)

    def get(self, path: str, namespace: str = "default") -> Variable:
        check_var_path(path)
        sealed = self.store.variable(path, namespace)
        if sealed is None:
            raise NotFound(f"{_what(path, namespace)} not found")
        return self.open(sealed)

    def list(self, prefix: str = "", namespace: str = "default") -> list[VariableMetadata]:
        """Metadata only: listing never opens (or returns) a value."""
        return [
            VariableMetadata.model_validate(v.model_dump())
            for v in self.store.variables(prefix, namespace)
        ]

    async def wait(self, path: str, index: int, timeout: float, namespace: str = "default") -> None:
        """Block until the variable is newer than ``index`` (written after it), or is
        missing while the variables changed after it (deleted), or ``timeout`` passes.

        The store wakes on any variable's write; this keeps waiting through writes
        to other paths, so a template watching one variable is not woken by all.
        """
        store = self.store
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = index
        while True:
            current = store.variable(path, namespace)
            if current is not None and current.modify_index > index:
                return
            if current is None and store.table_index(VARIABLES) > index:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            seen = max(seen, store.table_index(VARIABLES))
            if await store.wait_for(seen, remaining, tables=(VARIABLES,)) <= seen:
                return  # timed out, or the server is closing

    # ---------------------------------------------------------------- writing
    def _check_cas(self, path: str, namespace: str, cas: int | None) -> EncryptedVariable | None:
        current = self.store.variable(path, namespace)
        if cas is not None:
            have = current.modify_index if current is not None else 0
            if have != cas:
                state = f"it is at index {have}" if current is not None else "it does not exist"
                raise Conflict(
                    f"{_what(path, namespace)} changed: check-and-set expected index {cas}, "
                    f"but {state}; read it again and retry"
                )
        return current

    def put(
        self,
        path: str,
        items: Mapping[str, str],
        *,
        cas: int | None = None,
        namespace: str = "default",
    ) -> Variable:
        check_var_path(path)
        data = check_items(items)
        current = self._check_cas(path, namespace, cas)
        txn = self.store.txn()
        now = self.clock()
        sealed = self.keyring.seal(namespace, path, _encode(data))
        record = EncryptedVariable(
            path=path,
            namespace=namespace,
            create_index=current.create_index if current is not None else txn.index,
            modify_index=txn.index,
            create_time=current.create_time if current is not None else now,
            modify_time=now,
            key_id=sealed.key_id,
            nonce=sealed.nonce,
            ciphertext=sealed.ciphertext,
        )
        txn.put_variable(record)
        self.store.commit(txn)
        meta = VariableMetadata.model_validate(record.model_dump())
        return Variable(**meta.model_dump(), items=data)

    def delete(self, path: str, *, cas: int | None = None, namespace: str = "default") -> int:
        check_var_path(path)
        current = self._check_cas(path, namespace, cas)
        if current is None:
            raise NotFound(f"{_what(path, namespace)} not found")
        txn = self.store.txn()
        txn.delete_variable(namespace, path)
        return self.store.commit(txn)
