"""ACL policy files: YAML text in, :class:`~podium.models.acl.PolicyRules` out.

The same reader as job files (:func:`podium.spec.yamlsource.load_yaml`: YAML 1.2
scalars, duplicate keys reported, positions kept), so a mistake is reported with
its line and column, every mistake at once::

    namespaces:
      default: {policy: read}                       # read | write | deny
      team-a:
        capabilities: [submit-job, read-logs]
        variables: {"app/*": [read, write]}
    node: read
    operator: deny

The CLI validates a file before sending it; the server validates it again (an API
caller may skip the CLI) and stores the text with its parsed rules.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from podium.errors import SpecError, SpecIssue
from podium.models.acl import CAPABILITIES, VAR_OPS, Level, NamespaceRule, PolicyRules
from podium.spec.locations import Locations, PathKey, format_path
from podium.spec.yamlsource import load_yaml

POLICY_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_NS_GLOB_RE = re.compile(r"^[A-Za-z0-9_.\-*?]{1,128}$")
_VAR_GLOB_RE = re.compile(r"^[A-Za-z0-9_.\-/*?]{1,256}$")
_LEVELS = [lv.value for lv in Level]


def check_policy_name(name: str) -> str:
    if not POLICY_NAME_RE.match(name):
        raise ValueError(
            f"policy name {name!r} must be 1-128 letters, digits, '_', '.' or '-' (such as team-a)"
        )
    return name


class _Checker:
    def __init__(self, locations: Locations) -> None:
        self.locations = locations
        self.issues: list[SpecIssue] = []

    def issue(
        self, path: PathKey, message: str, hint: str | None = None, key: bool = False
    ) -> None:
        pos = self.locations.of_key(path) if key else self.locations.of_value(path)
        line, column = pos if pos is not None else (None, None)
        self.issues.append(SpecIssue(format_path(path), message, line, column, hint))

    def unknown(self, path: PathKey, key: object, known: list[str]) -> None:
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(known)
        self.issue((*path, str(key)), f"unknown field {key!r}", hint, key=True)

    def level(self, path: PathKey, value: object) -> Level | None:
        if isinstance(value, str) and value in _LEVELS:
            return Level(value)
        self.issue(path, f"must be one of {', '.join(_LEVELS)}, not {value!r}")
        return None

    def names(self, path: PathKey, value: object, known: tuple[str, ...], what: str) -> list[str]:
        if not isinstance(value, list):
            self.issue(path, f"must be a list of {what}s, such as [{known[0]}]")
            return []
        out: list[str] = []
        for i, item in enumerate(value):
            if isinstance(item, str) and item in known:
                out.append(item)
                continue
            close = difflib.get_close_matches(str(item), list(known), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(known)
            self.issue((*path, i), f"unknown {what} {item!r}", hint)
        return out

    def namespace(self, path: PathKey, value: object) -> NamespaceRule | None:
        if not isinstance(value, dict):
            self.issue(path, "must be a mapping such as {policy: read}")
            return None
        rule = NamespaceRule()
        for key, item in value.items():
            where = (*path, str(key))
            if key == "policy":
                rule.policy = self.level(where, item)
            elif key == "capabilities":
                rule.capabilities = self.names(where, item, CAPABILITIES, "capability")
            elif key == "variables":
                rule.variables = self.variables(where, item)
            else:
                self.unknown(path, key, ["policy", "capabilities", "variables"])
        return rule

    def variables(self, path: PathKey, value: object) -> dict[str, list[str]]:
        if not isinstance(value, dict):
            self.issue(path, 'must map path globs to operations, such as {"app/*": [read]}')
            return {}
        out: dict[str, list[str]] = {}
        for glob, ops in value.items():
            where = (*path, str(glob))
            if not isinstance(glob, str) or not _VAR_GLOB_RE.match(glob):
                self.issue(
                    where,
                    f"variable path glob {glob!r} may hold letters, digits, '_', '.', '-', "
                    "'/', '*' and '?'",
                    key=True,
                )
                continue
            out[glob] = self.names(where, ops, VAR_OPS, "variable operation")
        return out


def parse_policy(text: str, source: str | None = None) -> PolicyRules:
    """Parse and check a policy file; :class:`SpecError` lists every problem with its line."""
    parsed = load_yaml(text, source)
    checker = _Checker(parsed.locations)
    checker.issues.extend(parsed.issues)
    data: Any = parsed.data
    rules = PolicyRules()
    if parsed.empty:
        data = {}
    if not isinstance(data, dict):
        checker.issue((), "a policy file is a mapping with namespaces, node and operator")
        raise SpecError(checker.issues, source=source)
    for key, value in data.items():
        path: PathKey = (str(key),)
        if key == "namespaces":
            if not isinstance(value, dict):
                checker.issue(path, "must map namespace names (or globs) to rules")
                continue
            for ns, rule_data in value.items():
                where = (*path, str(ns))
                if not isinstance(ns, str) or not _NS_GLOB_RE.match(ns):
                    checker.issue(
                        where,
                        f"namespace {ns!r} must be a name or a glob of letters, digits, "
                        "'_', '.', '-', '*' and '?'",
                        key=True,
                    )
                    continue
                rule = checker.namespace(where, rule_data)
                if rule is not None:
                    rules.namespaces[ns] = rule
        elif key in ("node", "operator"):
            level = checker.level(path, value)
            if level is not None:
                setattr(rules, str(key), level)
        else:
            checker.unknown((), key, ["namespaces", "node", "operator"])
    if checker.issues:
        raise SpecError(checker.issues, source=source)
    return rules
