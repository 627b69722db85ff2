"""Compose's variables: ``.env`` files and ``${VAR}`` interpolation.

Kept apart from the conversion in :mod:`podium.spec.compose` because both the
compose file and its ``env_file`` entries go through the same two steps, and
because the rules are Compose's own, pinned down by their own tests:

* ``$$`` is a literal ``$``; ``$VAR`` and ``${VAR}`` are the variable's value,
  or an empty string (with a warning) when it is not set;
* ``${VAR:-default}`` uses ``default`` when VAR is unset *or empty*,
  ``${VAR-default}`` only when it is unset;
* ``${VAR:?message}`` is an error when VAR is unset or empty, ``${VAR?message}``
  only when unset; ``${VAR:+alt}`` / ``${VAR+alt}`` are ``alt`` when VAR is set
  (and, for ``:+``, not empty);
* defaults and messages may hold further interpolations (``${A:-${B}}``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class InterpolationError(ValueError):
    """A template that cannot be expanded; the message names the variable."""


@dataclass
class Interpolator:
    """Expands templates against ``env``; names used but unset land in ``unset``."""

    env: Mapping[str, str]
    unset: list[str] = field(default_factory=list)

    def expand(self, text: str) -> str:
        out, end = self._expand(text, 0, stop_at_brace=False)
        if end != len(text):  # pragma: no cover - only nested calls stop early
            raise InterpolationError(f"unexpected '}}' in {text!r}")
        return out

    def _expand(self, text: str, pos: int, *, stop_at_brace: bool) -> tuple[str, int]:
        out: list[str] = []
        n = len(text)
        while pos < n:
            ch = text[pos]
            if ch == "}" and stop_at_brace:
                return "".join(out), pos
            if ch != "$":
                out.append(ch)
                pos += 1
                continue
            nxt = text[pos + 1] if pos + 1 < n else ""
            if nxt == "$":
                out.append("$")
                pos += 2
            elif nxt == "{":
                value, pos = self._braced(text, pos + 2)
                out.append(value)
            else:
                m = _NAME.match(text, pos + 1)
                if m is None:
                    raise InterpolationError(
                        f"invalid interpolation in {text!r}: a '$' must start a variable "
                        "($VAR or ${VAR}); write $$ for a literal dollar sign"
                    )
                out.append(self._lookup(m.group(0)))
                pos = m.end()
        if stop_at_brace:
            raise InterpolationError(f"invalid interpolation in {text!r}: a '${{' is never closed")
        return "".join(out), pos

    def _braced(self, text: str, pos: int) -> tuple[str, int]:
        """``text[pos:]`` follows ``${``; returns the value and the index after ``}``."""
        m = _NAME.match(text, pos)
        if m is None:
            raise InterpolationError(
                f"invalid interpolation in {text!r}: '${{' must be followed by a variable name"
            )
        name, pos = m.group(0), m.end()
        if pos == len(text):
            raise InterpolationError(f"invalid interpolation in {text!r}: a '${{' is never closed")
        if text[pos] == "}":
            return self._lookup(name), pos + 1
        op = ""
        for candidate in (":-", ":?", ":+", "-", "?", "+"):
            if text.startswith(candidate, pos):
                op = candidate
                break
        if not op:
            raise InterpolationError(
                f"invalid interpolation in {text!r}: after ${{{name} write '}}', ':-default', "
                "'-default', ':?error', '?error', ':+alt' or '+alt'"
            )
        # The word after the operator is expanded only when it is used, as in a shell.
        checker = Interpolator(self.env)
        word, end = checker._expand(text, pos + len(op), stop_at_brace=True)
        present = name in self.env
        filled = present and self.env[name] != ""
        is_set = filled if op.startswith(":") else present
        kind = op[-1]
        if kind == "-":
            if is_set:
                return self.env[name], end + 1
            self.unset.extend(checker.unset)
            return word, end + 1
        if kind == "+":
            if is_set:
                self.unset.extend(checker.unset)
                return word, end + 1
            return "", end + 1
        # "?": required
        if is_set:
            return self.env[name], end + 1
        why = "is not set" if not present else "is empty"
        message = f"required variable {name} {why}"
        if word:
            message += f": {word}"
        raise InterpolationError(message)

    def _lookup(self, name: str) -> str:
        if name in self.env:
            return self.env[name]
        if name not in self.unset:
            self.unset.append(name)
        return ""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Expand one template; unset variables become empty strings."""
    return Interpolator(env).expand(text)


@dataclass
class DotenvLine:
    """A problem in a ``.env`` file, at a 1-based line."""

    line: int
    message: str


def parse_dotenv(
    text: str, env: Mapping[str, str] | None = None
) -> tuple[dict[str, str], list[DotenvLine]]:
    """Read ``KEY=VALUE`` lines as Compose does; returns the values and any bad lines.

    ``# comments`` and blank lines are skipped, ``export KEY=VALUE`` is allowed,
    single-quoted values are literal, double-quoted ones understand ``\\n``,
    ``\\t``, ``\\"`` and ``\\\\``, and unquoted ones lose a trailing `` # comment``.
    Unquoted and double-quoted values are interpolated against ``env`` and the
    lines above them; a line ``KEY`` with no ``=`` takes KEY from ``env``.
    """
    base = dict(env or {})
    values: dict[str, str] = {}
    problems: list[DotenvLine] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        number = i + 1
        raw = lines[i].strip()
        i += 1
        if not raw or raw.startswith("#"):
            continue
        if raw.startswith("export ") or raw.startswith("export\t"):
            raw = raw[7:].lstrip()
        key, eq, rest = raw.partition("=")
        key = key.strip()
        if not _NAME.fullmatch(key):
            problems.append(DotenvLine(number, f"{key!r} is not a variable name"))
            continue
        if not eq:
            if key in base:
                values[key] = base[key]
            continue
        rest = rest.strip()
        quote = rest[:1]
        if quote in ("'", '"'):
            body = rest[1:]
            # a quoted value may run over several lines
            while _closing(body, quote) < 0 and i < len(lines):
                body += "\n" + lines[i]
                i += 1
            close = _closing(body, quote)
            if close < 0:
                problems.append(DotenvLine(number, f"the {quote} quote is never closed"))
                continue
            value = body[:close]
            if quote == '"':
                value = _unescape(value)
        else:
            value = re.split(r"\s+#", rest, maxsplit=1)[0].rstrip()
        if quote != "'":
            try:
                value = interpolate(value, {**base, **values})
            except InterpolationError as exc:
                problems.append(DotenvLine(number, str(exc)))
                continue
        values[key] = value
    return values, problems


def _closing(body: str, quote: str) -> int:
    i = 0
    while i < len(body):
        if body[i] == "\\" and quote == '"':
            i += 2
            continue
        if body[i] == quote:
            return i
        i += 1
    return -1


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$$"}


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), value)
