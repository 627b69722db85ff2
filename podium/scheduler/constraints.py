"""Constraint and affinity maths: node attribute interpolation and the operators.

A constraint compares a *target* (usually an interpolation such as
``${attr.cpu.arch}``) with a value (a literal, or an interpolation too) using
one of the operators of :data:`podium.models.job.ConstraintOperator`.  These
functions are pure and per node; :mod:`podium.scheduler.feasible` caches their
verdict per (group, node) for one schedule call.

Missing attributes follow Nomad's ``checkConstraint``: every operator fails on
a missing attribute (or value) except ``is_not_set``, and ``!=``, which holds
because "nothing" differs from any value.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

from podium.models import Node

_NODE_TARGETS: dict[str, Callable[[Node], str]] = {
    "node.id": lambda n: n.id,
    "node.unique.id": lambda n: n.id,
    "node.name": lambda n: n.name,
    "node.unique.name": lambda n: n.name,
    "node.datacenter": lambda n: n.datacenter,
    "node.pool": lambda n: n.node_pool,
    "node.class": lambda n: "",
}

ORDER_OPERATORS = frozenset({">", ">=", "<", "<="})
PLACEMENT_OPERATORS = frozenset({"distinct_hosts", "distinct_property"})
"""Operators whose answer depends on where other allocations are, not on the node alone."""


def resolve(target: str, node: Node) -> str | None:
    """The value ``target`` names on ``node``: a literal as-is, an interpolation looked up.

    ``${node.id}``, ``${node.name}``, ``${node.datacenter}``, ``${node.pool}``,
    ``${node.class}`` (always empty), ``${attr.X}`` (node attributes) and
    ``${meta.X}`` (node metadata).  None when the node lacks it.
    """
    if not target.startswith("${"):
        return target
    if not target.endswith("}"):
        return None
    key = target[2:-1].strip()
    getter = _NODE_TARGETS.get(key)
    if getter is not None:
        return getter(node)
    if key.startswith("attr."):
        return node.attributes.get(key[5:])
    if key.startswith("meta."):
        return node.meta.get(key[5:])
    return None


def valid_target(target: str) -> bool:
    """Whether ``target`` is a literal or an interpolation :func:`resolve` understands."""
    if not target.startswith("${"):
        return True
    if not target.endswith("}"):
        return False
    key = target[2:-1].strip()
    return key in _NODE_TARGETS or (
        (key.startswith("attr.") or key.startswith("meta.")) and len(key) > 5
    )


def check(operator: str, left: str | None, right: str | None) -> bool:
    """Whether ``left <operator> right`` holds (``None``: not set on the node)."""
    if operator == "is_set":
        return left is not None
    if operator == "is_not_set":
        return left is None
    if operator == "!=":
        return left != right
    if left is None or right is None:
        return False
    if operator == "=":
        return left == right
    if operator in ORDER_OPERATORS:
        return _ordered(operator, left, right)
    if operator == "regexp":
        pattern = _regex(right)
        return pattern is not None and pattern.search(left) is not None
    if operator == "version":
        return version_matches(left, right)
    if operator == "set_contains":
        have = {part.strip() for part in left.split(",")}
        return all(part.strip() in have for part in right.split(",") if part.strip())
    return False


def _ordered(operator: str, left: str, right: str) -> bool:
    """Numeric comparison when both sides are numbers, otherwise lexical."""
    a: int | float | str
    b: int | float | str
    try:
        a, b = int(left), int(right)
    except ValueError:
        try:
            a, b = float(left), float(right)
        except ValueError:
            a, b = left, right
    if operator == ">":
        return a > b  # type: ignore[operator]
    if operator == ">=":
        return a >= b  # type: ignore[operator]
    if operator == "<":
        return a < b  # type: ignore[operator]
    return a <= b  # type: ignore[operator]


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


# -- versions -----------------------------------------------------------------

Version = tuple[tuple[int, ...], str]
"""Dotted numeric segments and a pre-release tag ("" for a release)."""

_VERSION_RE = re.compile(r"^v?(\d+(?:\.\d+)*)(?:-([0-9A-Za-z.\-]+))?(?:\+[0-9A-Za-z.\-]+)?$")
_VERSION_CONSTRAINT_RE = re.compile(r"^(=|!=|>=|<=|>|<|~>)?\s*(\S+)$")


@functools.lru_cache(maxsize=1024)
def parse_version(text: str) -> Version | None:
    """``"1.2.3"``, ``"v1.2"``, ``"5.15.0-91-generic"`` (pre-release ``91-generic``), or None."""
    m = _VERSION_RE.match(text.strip())
    if m is None:
        return None
    return tuple(int(s) for s in m.group(1).split(".")), m.group(2) or ""


def compare_versions(a: Version, b: Version) -> int:
    """-1, 0 or 1.  Missing segments count as 0; a pre-release sorts before its release."""
    sa, sb = a[0], b[0]
    width = max(len(sa), len(sb))
    pa = sa + (0,) * (width - len(sa))
    pb = sb + (0,) * (width - len(sb))
    if pa != pb:
        return -1 if pa < pb else 1
    ra, rb = a[1], b[1]
    if ra == rb:
        return 0
    if not ra:
        return 1
    if not rb:
        return -1
    return -1 if ra < rb else 1


def version_matches(value: str, constraints: str) -> bool:
    """Whether version ``value`` meets every comma-separated constraint (``">= 1.2, < 2.0"``).

    Operators ``=`` (the default), ``!=``, ``>``, ``>=``, ``<``, ``<=`` and
    ``~>`` (pessimistic: ``~> 1.2`` is ``>= 1.2, < 2.0``; ``~> 1.2.3`` is
    ``>= 1.2.3, < 1.3``).  An unparsable version or constraint never matches.
    """
    version = parse_version(value)
    if version is None:
        return False
    parts = [p.strip() for p in constraints.split(",")]
    if not any(parts):
        return False
    for part in parts:
        m = _VERSION_CONSTRAINT_RE.match(part)
        if m is None:
            return False
        op = m.group(1) or "="
        bound = parse_version(m.group(2))
        if bound is None:
            return False
        c = compare_versions(version, bound)
        if op == "=":
            ok = c == 0
        elif op == "!=":
            ok = c != 0
        elif op == ">":
            ok = c > 0
        elif op == ">=":
            ok = c >= 0
        elif op == "<":
            ok = c < 0
        elif op == "<=":
            ok = c <= 0
        else:  # ~>
            segments = bound[0]
            prefix = segments[: max(1, len(segments) - 1)]
            padded = version[0] + (0,) * max(0, len(prefix) - len(version[0]))
            ok = c >= 0 and padded[: len(prefix)] == prefix
        if not ok:
            return False
    return True
