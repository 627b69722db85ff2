"""Reading YAML (and JSON) text into plain data plus a map of where things are.

PyYAML's ``safe_load`` has three habits that hurt job files, fixed here:

* It speaks YAML 1.1, where ``on``, ``yes`` and ``off`` are booleans, ``1:30`` is
  the integer 90, ``017`` is octal and ``2024-01-01`` is a date.  A job file
  with ``kill_signal: on`` or ``kill_timeout: 1:30`` would silently mean
  something else.  :class:`JobLoader` resolves plain scalars by the YAML 1.2
  core schema instead (``true``/``false``, ``null``, decimal/``0o``/``0x``
  integers, floats); everything else stays a string.  That is also the schema
  under which every JSON document is YAML, so ``1e5`` is a number, as in JSON.
* It keeps the last of two equal keys without a word.  We walk the composed
  node tree before constructing it and report each duplicate.
* It forgets positions.  The same walk records the line and column of every
  key and value (:class:`~podium.spec.locations.Locations`), so later
  validation errors can name a line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from podium.errors import SpecError, SpecIssue
from podium.spec.locations import Locations, PathKey, Position, format_path

_MERGE_TAG = "tag:yaml.org,2002:merge"

# More expanded nodes than any honest job file has; guards the walk (and the
# validation after it) against alias bombs ("billion laughs").
MAX_NODES = 200_000


class JobLoader(yaml.SafeLoader):
    """A safe loader that resolves plain scalars by the YAML 1.2 core schema."""

    yaml_implicit_resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}


def _construct_int(loader: JobLoader, node: Node) -> int:
    # SafeConstructor reads "017" as octal and "1:30" as base 60 (YAML 1.1).
    text = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    if text[:2] in ("0o", "0x"):
        return int(text, 0)
    return int(text, 10)


for _tag, _regexp, _first in [
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+.0123456789",
    ),
    ("merge", r"^(?:<<)$", "<"),
]:
    JobLoader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_regexp), list(_first))
JobLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


@dataclass
class Parsed:
    """A document read from text: its data, where its parts are, and any duplicates."""

    data: object
    locations: Locations
    issues: list[SpecIssue] = field(default_factory=list)
    empty: bool = False


def load_yaml(text: str, source: str | None = None) -> Parsed:
    """Parse ``text``; a syntax error raises :class:`SpecError` with its line.

    Duplicate keys do not stop parsing: they come back in ``Parsed.issues`` so
    they are reported together with whatever validation finds.
    """
    try:
        try:
            return _load(text, source)
        except yaml.MarkedYAMLError as exc:
            if "\t" not in text or not _is_json(text):
                raise
            # JSON allows tabs as whitespace where YAML does not.  A literal tab
            # cannot occur inside a JSON string, so in text that is valid JSON
            # every tab is whitespace and a space keeps lines and columns.
            try:
                return _load(text.replace("\t", " "), source)
            except yaml.YAMLError:
                raise exc from None
    except yaml.MarkedYAMLError as exc:
        raise SpecError([_syntax_issue(exc)], source=source) from None
    except yaml.reader.ReaderError as exc:  # a control character, say
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        char = exc.character
        shown = f"U+{char:04X}" if isinstance(char, int) else repr(char)
        message = f"invalid YAML: character {shown} is not allowed ({exc.reason})"
        raise SpecError([SpecIssue("", message, line, column)], source=source) from None
    except yaml.YAMLError as exc:
        raise SpecError([SpecIssue("", f"invalid YAML: {exc}")], source=source) from None
    except RecursionError:
        raise SpecError(
            [SpecIssue("", "the document is nested too deeply")], source=source
        ) from None


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _load(text: str, source: str | None) -> Parsed:
    loader = JobLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Parsed(None, Locations(), empty=True)
        walker = _Walker(loader)
        walker.walk(node, (), overwrite=True)
        if walker.too_big:
            issue = SpecIssue(
                "",
                f"the document expands to more than {MAX_NODES} values",
                hint="are aliases (*name) nested inside each other?",
            )
            raise SpecError([issue], source=source)
        data = loader.construct_document(node)
    finally:
        loader.dispose()
    issues = [
        SpecIssue(
            format_path(path, data),
            f"duplicate key {_show_key(path[-1])}",
            line,
            col,
            hint=f"already given on line {first[0]}",
        )
        for path, (line, col), first in walker.duplicates
    ]
    return Parsed(data, walker.locations, issues, empty=data is None)


def _show_key(key: object) -> str:
    return repr(key) if isinstance(key, str) else str(key)


def _pos(node: Node) -> Position:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _Walker:
    """Records positions and duplicate keys of a composed node tree."""

    def __init__(self, loader: JobLoader) -> None:
        self.loader = loader
        self.locations = Locations()
        self.duplicates: list[tuple[PathKey, Position, Position]] = []
        self.visited = 0
        self.too_big = False
        self._stack: set[int] = set()

    def walk(self, node: Node, path: PathKey, *, overwrite: bool) -> None:
        if id(node) in self._stack:  # an alias inside itself; construction will say so
            return
        self.visited += 1
        if self.visited > MAX_NODES:
            self.too_big = True
            return
        self._put(self.locations.values, path, _pos(node), overwrite)
        self._stack.add(id(node))
        try:
            if isinstance(node, MappingNode):
                self._mapping(node, path, overwrite=overwrite)
            elif isinstance(node, SequenceNode):
                for index, item in enumerate(node.value):
                    self.walk(item, (*path, index), overwrite=overwrite)
        finally:
            self._stack.discard(id(node))

    def _mapping(self, node: MappingNode, path: PathKey, *, overwrite: bool) -> None:
        seen: dict[object, Position] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            key = self._key(key_node)
            if key is _UNKNOWN:
                continue
            child = (*path, key)
            if key in seen:
                self.duplicates.append((child, _pos(key_node), seen[key]))
            else:
                seen[key] = _pos(key_node)
            # The last of equal keys is the one PyYAML keeps, so its place wins.
            self._put(self.locations.keys, child, _pos(key_node), overwrite)
            self.walk(value_node, child, overwrite=overwrite)
        # Merged keys (``<<: *base``) never override explicit ones; among a list
        # of merged mappings the first one given wins, as in PyYAML.
        for merged in merges:
            parts = merged.value if isinstance(merged, SequenceNode) else [merged]
            for part in parts:
                if isinstance(part, MappingNode) and id(part) not in self._stack:
                    self._stack.add(id(part))
                    try:
                        self._mapping(part, path, overwrite=False)
                    finally:
                        self._stack.discard(id(part))

    def _key(self, key_node: Node) -> object:
        if not isinstance(key_node, ScalarNode):
            return _UNKNOWN  # a complex key; construction rejects it if unhashable
        try:
            return self.loader.construct_object(key_node, deep=True)
        except yaml.YAMLError:
            return _UNKNOWN

    @staticmethod
    def _put(table: dict[PathKey, Position], path: PathKey, pos: Position, overwrite: bool) -> None:
        try:
            if overwrite:
                table[path] = pos
            else:
                table.setdefault(path, pos)
        except TypeError:  # an unhashable key somewhere in the path
            pass


_UNKNOWN = object()


def _syntax_issue(exc: yaml.MarkedYAMLError) -> SpecIssue:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    column = mark.column + 1 if mark is not None else None
    problem = exc.problem or exc.context or "invalid YAML"
    hint: str | None = None
    if exc.context == "expected a single document in the stream":
        problem = "a job file holds a single YAML document, but another one starts here"
    elif "'\\t'" in problem:
        hint = "indent with spaces; YAML does not allow tabs there"
    elif exc.context and exc.context_mark is not None and exc.problem:
        cm = exc.context_mark
        hint = f"{exc.context} that starts at line {cm.line + 1}, column {cm.column + 1}"
    return SpecIssue("", f"invalid YAML: {problem}", line, column, hint)
