"""Where each part of a job file sits, and how a place in it is written down.

Validation works on plain data (dicts and lists) and reports places as paths of
keys and indexes; people want file lines and dotted names.  This module is the
bridge: :class:`Locations` maps a path to the line and column a YAML parser saw
it at, and :func:`format_path` turns a path into ``groups.web.tasks[0]``-style
text.  It knows nothing of YAML itself, so a JSON API body (no lines at all)
goes through the same code with an empty map.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

PathKey = tuple[object, ...]
"""A place in the data: mapping keys (as loaded, usually ``str``) and list indexes."""

Position = tuple[int, int]
"""A 1-based ``(line, column)``."""

_PLAIN_KEY = re.compile(r'^[^.\[\]\s"]+$')


@dataclass
class Locations:
    """Line and column of every value and every mapping key of a document.

    ``values`` points at where a value starts (for a mapping or list, its first
    item); ``keys`` points at the key that names it.  Unknown fields and bad
    keys are reported at ``keys``; wrong values at ``values``; a missing field
    at the key of the mapping it should have been in.
    """

    values: dict[PathKey, Position] = field(default_factory=dict)
    keys: dict[PathKey, Position] = field(default_factory=dict)

    def of_value(self, path: PathKey) -> Position | None:
        """Where the value at ``path`` is, or its nearest located ancestor."""
        for end in range(len(path), -1, -1):
            pos = self.values.get(path[:end])
            if pos is not None:
                return pos
        return None

    def of_key(self, path: PathKey) -> Position | None:
        """Where the key naming ``path`` is; falls back to the value's place."""
        pos = self.keys.get(path)
        return pos if pos is not None else self.of_value(path)

    def of_missing(self, path: PathKey) -> Position | None:
        """Where to point for a field that is absent: the key of the mapping it belongs in.

        Pointing at ``server:`` (the line that opens the task) reads better than
        at the task's first field, and works for flow mappings too.  When that
        mapping is absent as well (a ``config`` not written), the nearest
        ancestor that is there stands in.
        """
        for end in range(len(path) - 1, -1, -1):
            pos = self.keys.get(path[:end]) or self.values.get(path[:end])
            if pos is not None:
                return pos
        return None


def format_key(key: object) -> str:
    """A mapping key as it appears in a dotted path; odd ones are quoted."""
    if isinstance(key, str) and _PLAIN_KEY.match(key):
        return key
    if isinstance(key, str):
        return "[" + json.dumps(key, ensure_ascii=False) + "]"
    return str(key)


def format_path(path: PathKey, data: object = None) -> str:
    """``("groups", "web", "tasks", "t", "config", "args", 1)`` → ``groups.web.tasks.t.config.args[1]``.

    ``data`` is the document the path points into; it tells a list index (shown
    as ``[1]``) from an integer mapping key (shown as ``.1``).  Without it, ints
    are taken for list indexes.
    """
    out = ""
    node: object = data
    for part in path:
        is_index = isinstance(part, int) and not isinstance(part, bool)
        if isinstance(node, dict):
            is_index = False
        text = f"[{part}]" if is_index else format_key(part)
        if not out or text.startswith("["):
            out += text
        else:
            out += "." + text
        node = _child(node, part)
    return out


def _child(node: object, part: object) -> object:
    if isinstance(node, dict):
        try:
            return node.get(part)
        except TypeError:  # an unhashable part cannot be a key
            return None
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None
