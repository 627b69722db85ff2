"""Variables: small key/value documents (configuration, credentials) at a path.

People and templates see :class:`Variable` (items in the clear).  The store
only ever holds :class:`EncryptedVariable`: the items sealed with AES-GCM under
a key kept outside the store, so the store file alone reveals no value.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

VAR_PATH_RE = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")


def check_var_path(path: str) -> str:
    if len(path) > 256 or not VAR_PATH_RE.match(path) or ".." in path.split("/"):
        raise ValueError(
            f"variable path {path!r} must be segments of letters, digits, '_', '.' and '-' "
            "separated by '/' (such as app/config), at most 256 characters"
        )
    return path


class VariableMetadata(BaseModel):
    model_config = ConfigDict(extra="ignore")

    path: str
    namespace: str = "default"
    create_index: int = 0
    modify_index: int = 0
    create_time: float = 0.0
    modify_time: float = 0.0


class Variable(VariableMetadata):
    items: dict[str, str] = Field(default_factory=dict)


class EncryptedVariable(VariableMetadata):
    """What the store holds: ``ciphertext`` (base64) of the items' JSON, sealed under
    key ``key_id`` with ``nonce`` (base64), the path bound in as associated data."""

    key_id: str
    nonce: str
    ciphertext: str
