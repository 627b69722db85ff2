"""Command groups imported only when the command line names them.

``podium job run`` needs the job commands, rich, httpx and the models; it
does not need Compose's converter, the agent's start-up code or the
simulator.  Importing every command module up front cost about a third of
the command's start-up (``python -X importtime``; bench/process_tasks.py
times the whole command), paid on every invocation.  The root group
therefore holds, beside its own commands, a table of
``name -> "module:attribute"``, and builds an entry on first use exactly as
``app.add_typer`` (a :class:`typer.Typer`) or ``app.command`` (a function)
would have built it.  ``podium --help`` and completing a command name list
every entry, and so import them all: they are the only paths that need them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, ClassVar

import typer
from typer._click import Command
from typer.core import TyperGroup
from typer.main import get_command_from_info, get_group_from_info
from typer.models import CommandInfo, TyperInfo


class _LazyCommands(MutableMapping[str, Command]):
    """The group's name -> command mapping, building a lazy entry when it is looked up.

    Its keys include the entries not yet built, so "No such command" and its
    "did you mean" suggestions see every name without importing anything.
    """

    def __init__(
        self,
        built: MutableMapping[str, Command],
        lazy: dict[str, str],
        build: Callable[[str, str], Command],
    ) -> None:
        self._built = dict(built)
        self._lazy = {k: v for k, v in lazy.items() if k not in self._built}
        self._build = build

    def __getitem__(self, name: str) -> Command:
        cmd = self._built.get(name)
        if cmd is None:
            if name not in self._lazy:
                raise KeyError(name)
            cmd = self._built[name] = self._build(name, self._lazy[name])
            del self._lazy[name]
        return cmd

    def __setitem__(self, name: str, cmd: Command) -> None:
        self._lazy.pop(name, None)
        self._built[name] = cmd

    def __delitem__(self, name: str) -> None:
        if self._lazy.pop(name, None) is None:
            del self._built[name]

    def __iter__(self) -> Iterator[str]:
        yield from self._built
        yield from list(self._lazy)

    def __len__(self) -> int:
        return len(self._built) + len(self._lazy)

    def __contains__(self, name: object) -> bool:
        return name in self._built or name in self._lazy


class LazyGroup(TyperGroup):
    """A Typer group whose :attr:`lazy` entries are imported when first asked for.

    Subclass it with ``lazy`` set, and pass the subclass as ``typer.Typer(cls=...)``.
    Listing order: the group's own commands, then the lazy ones in table order.
    """

    lazy: ClassVar[dict[str, str]] = {}
    """Command name -> ``"package.module:attribute"``: a Typer app, or a command function."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _LazyCommands(self.commands, self.lazy, self._build)

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # names only: Typer's own walks the items, building all

    def _build(self, name: str, target: str) -> Command:
        module, _, attr = target.partition(":")
        obj = getattr(importlib.import_module(module), attr)
        # The same calls add_typer/app.command end in, with this group's settings.
        if isinstance(obj, typer.Typer):
            return get_group_from_info(
                TyperInfo(obj, name=name),
                pretty_exceptions_short=True,
                suggest_commands=self.suggest_commands,
                rich_markup_mode=self.rich_markup_mode,
            )
        return get_command_from_info(
            CommandInfo(name=name, callback=obj),
            pretty_exceptions_short=True,
            rich_markup_mode=self.rich_markup_mode,
        )
