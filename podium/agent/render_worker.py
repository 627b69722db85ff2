"""The template render worker: a child process that renders one template under hard limits.

The agent (:mod:`podium.agent.templates`) never runs a job author's template on its own
event loop: a loop nested in a loop, or ``{{ "a" * 10**9 }}``, would stop its heartbeats.
It starts ``python -m podium.agent.render_worker`` (this module imports only Jinja2, the standard
library and :mod:`podium.agent.template_values`) and talks to it in JSON lines over stdin/stdout:

1. agent → worker: ``{"template": text, "env": {...}, "limits": {"cpu_s", "memory_bytes",
   "output_bytes"}}``.  The worker lowers its own limits first (``RLIMIT_CPU``,
   ``RLIMIT_AS``, no core files), then parses and compiles the template in the sandbox and
   answers ``{"lookups": {"var": [paths], "service": [names]}}``: every ``var(...)`` and
   ``service(...)`` call, whose argument must be a string literal; or ``{"error": ...}``.
2. agent → worker: what those are, fetched by the agent from the server:
   ``{"vars": {path: {"items": {...}} | {"error": msg}}, "services": {name: {"instances":
   [{"address", "port", "tags", "alloc_id", "node_id", "healthy"}]} | {"error": msg}}}``.
   The worker renders and answers ``{"text": ..., "used": [[kind, name], ...]}`` or
   ``{"error": ..., "used": [...]}``: ``used`` is what the render actually called, which the
   agent watches.  A failed lookup fails the render only when the template calls it.

Errors are messages without the template's name (the agent adds it).  Past its CPU time the
worker gets ``SIGXCPU`` (answered as an error when Python code is running) and a second
later ``SIGKILL``; past its memory an allocation fails (``MemoryError``); past the output
size the render stops.  The agent adds a wall-clock limit and kills the worker on overrun.
"""

from __future__ import annotations

import json
import math
import resource
import signal
import sys
from collections.abc import Iterator, Mapping
from types import FrameType
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from podium.agent.template_values import ServiceInstance, VariableItems

LITERAL_ONLY = 'var() and service() take a literal path, such as var("app/config")'
LOOKUP_NAMES = ("var", "service")


class _StrictUndefined(jinja2.StrictUndefined):
    """StrictUndefined that names the variable and its items when an item is missing."""

    @property
    def _undefined_message(self) -> str:
        obj = self._undefined_obj
        missing = self._undefined_exception is not SecurityError  # not a refused attribute
        if missing and isinstance(obj, VariableItems) and isinstance(self._undefined_name, str):
            return (
                f"variable {obj.path!r} has no item {self._undefined_name!r} "
                f"(it has: {', '.join(sorted(obj)) or 'none'})"
            )
        return str(super()._undefined_message)


def environment() -> ImmutableSandboxedEnvironment:
    """The sandbox templates render in: no ``__class__``/``_private`` attributes, no
    mutating lists or dicts, ``range`` bounded, undefined names an error."""
    return ImmutableSandboxedEnvironment(
        undefined=_StrictUndefined, keep_trailing_newline=True, autoescape=False
    )


class LookupFailed(Exception):
    """``var()`` or ``service()`` could not answer."""


def lookups_of(ast: nodes.Template) -> dict[str, list[str]]:
    """The paths and names the template's ``var()``/``service()`` calls read; each argument
    must be a string literal (what is fetched is known before rendering)."""
    found: dict[str, list[str]] = {name: [] for name in LOOKUP_NAMES}
    for call in ast.find_all(nodes.Call):
        fn = call.node
        if not isinstance(fn, nodes.Name) or fn.name not in found:
            continue
        args = call.args
        if (
            len(args) != 1
            or call.kwargs
            or call.dyn_args is not None
            or call.dyn_kwargs is not None
            or not isinstance(args[0], nodes.Const)
            or not isinstance(args[0].value, str)
        ):
            raise LookupFailed(LITERAL_ONLY)
        if args[0].value not in found[fn.name]:
            found[fn.name].append(args[0].value)
    return found


class _Values:
    """``var()`` and ``service()`` inside the worker: answers from what the agent fetched,
    remembering what was called."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._vars: dict[str, Any] = dict(values.get("vars") or {})
        self._services: dict[str, Any] = dict(values.get("services") or {})
        self._var_cache: dict[str, VariableItems] = {}
        self._service_cache: dict[str, list[ServiceInstance]] = {}
        self.used: list[list[str]] = []

    def _use(self, kind: str, name: str) -> None:
        if [kind, name] not in self.used:
            self.used.append([kind, name])

    def var(self, path: Any) -> VariableItems:
        entry = self._vars.get(path) if isinstance(path, str) else None
        if entry is None:
            raise LookupFailed(LITERAL_ONLY)
        self._use("var", path)
        if "error" in entry:
            raise LookupFailed(str(entry["error"]))
        if path not in self._var_cache:
            self._var_cache[path] = VariableItems(path, entry.get("items") or {})
        return self._var_cache[path]

    def service(self, name: Any) -> list[ServiceInstance]:
        entry = self._services.get(name) if isinstance(name, str) else None
        if entry is None:
            raise LookupFailed(LITERAL_ONLY)
        self._use("service", name)
        if "error" in entry:
            raise LookupFailed(str(entry["error"]))
        if name not in self._service_cache:
            self._service_cache[name] = [
                ServiceInstance.from_json(i) for i in entry.get("instances") or ()
            ]
        return list(self._service_cache[name])


# --------------------------------------------------------------------------- limits


class CpuExceeded(BaseException):
    """SIGXCPU: the worker used its CPU time (a BaseException: nothing on the way catches it)."""


def _on_sigxcpu(signum: int, frame: FrameType | None) -> None:
    raise CpuExceeded


def _lower(which: int, value: int, hard_extra: int = 0) -> None:
    _soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
        new_hard = min(value + hard_extra, hard)
    else:
        new_hard = value + hard_extra
    resource.setrlimit(which, (value, new_hard))


def apply_limits(cpu_s: float, memory_bytes: int) -> None:
    """Lower this process's own limits: CPU seconds (SIGXCPU at the soft limit, SIGKILL a
    second later), address space, and no core file when it is killed."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGXCPU, _on_sigxcpu)
    _lower(resource.RLIMIT_CPU, max(1, math.ceil(cpu_s)), hard_extra=1)
    if memory_bytes > 0:
        _lower(resource.RLIMIT_AS, memory_bytes)


# --------------------------------------------------------------------------- the worker


def describe(exc: BaseException) -> str:
    """An error as the agent shows it (after ``template NAME: ``)."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"syntax error on line {exc.lineno}: {exc.message}"
    if isinstance(exc, SecurityError):
        return f"refused by the sandbox: {exc}"
    if isinstance(exc, jinja2.UndefinedError):
        return str(exc.message)
    if isinstance(exc, LookupFailed):
        return str(exc)
    if isinstance(exc, RecursionError):
        return "the template nests too deeply (RecursionError)"
    return f"{type(exc).__name__}: {exc}"


def render_text(
    compiled: jinja2.Template, values: _Values, env: Mapping[str, str], max_output: int
) -> dict[str, Any]:
    chunks: list[str] = []
    size = 0
    for chunk in compiled.generate(var=values.var, service=values.service, env=dict(env)):
        size += len(chunk)
        if size > max_output:
            return {"error": f"rendering produced more than {_size(max_output)} and was stopped"}
        chunks.append(chunk)
    text = "".join(chunks)
    try:
        encoded = len(text.encode())
    except UnicodeEncodeError:
        return {"error": "the rendered text is not valid UTF-8 (it holds a lone surrogate)"}
    if encoded > max_output:
        return {"error": f"rendering produced more than {_size(max_output)} and was stopped"}
    return {"text": text}


def _size(n: int) -> str:
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    if n >= 1 << 10 and n % (1 << 10) == 0:
        return f"{n >> 10} KiB"
    return f"{n} bytes"


def _reply(message: Mapping[str, Any]) -> None:
    out = sys.stdout.buffer
    out.write(json.dumps(message).encode() + b"\n")
    out.flush()


def _serve(request: Mapping[str, Any], values_line: Any) -> Iterator[dict[str, Any]]:
    """The two answers (see the module docstring); ``values_line`` reads the agent's values."""
    env = environment()
    limits = request.get("limits") or {}
    try:
        ast = env.parse(str(request["template"]))
        lookups = lookups_of(ast)
        compiled = env.from_string(ast)
    except MemoryError:
        raise
    except Exception as exc:
        yield {"error": describe(exc)}
        return
    yield {"lookups": lookups}
    raw = values_line()
    if not raw:
        return  # the agent gave up
    values = _Values(json.loads(raw))
    try:
        result = render_text(
            compiled,
            values,
            request.get("env") or {},
            int(limits.get("output_bytes") or 1 << 20),
        )
    except MemoryError:
        raise
    except Exception as exc:
        result = {"error": describe(exc)}
    result["used"] = values.used
    yield result


def main() -> int:
    stdin = sys.stdin.buffer
    first = stdin.readline()
    if not first:
        return 0
    request = json.loads(first)
    limits = request.get("limits") or {}
    cpu_s = float(limits.get("cpu_s") or 2)
    memory = int(limits.get("memory_bytes") or 0)
    apply_limits(cpu_s, memory)
    try:
        for answer in _serve(request, stdin.readline):
            _reply(answer)
    except CpuExceeded:
        _reply({"error": f"rendering used more than {cpu_s:g}s of CPU time and was stopped"})
    except MemoryError:
        _reply({"error": f"rendering used more than {_size(memory)} of memory and was stopped"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
