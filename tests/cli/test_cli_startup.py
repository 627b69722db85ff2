"""What a podium command imports at start-up, and that lazily loaded groups behave as eager ones.

Each import check runs in a fresh interpreter: this test process has imported
everything already.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import textwrap

import typer
from typer._click import Command
from typer.testing import CliRunner

from podium.cli.lazy import LazyGroup
from podium.cli.main import PodiumGroup, app
from podium.client._http import tls_context

# Modules a `podium job ...` command has no use for, each a measurable part of the start.
NOT_FOR_JOB = [
    "aiohttp",  # the async SDK's transport
    "asyncio",
    "podium.cli.compose",
    "podium.spec.compose",
    "podium.cli.agent",
    "podium.server",
    "uvicorn",
]


def loaded_after(argv: list[str]) -> dict[str, bool]:
    code = textwrap.dedent(
        f"""
        import json, sys
        from typer.testing import CliRunner
        from podium.cli.main import app
        CliRunner().invoke(app, {argv!r})
        import podium.spec  # what `job run` itself imports to read the file
        from podium.spec import load_job_file
        names = {[*NOT_FOR_JOB, "podium.cli.job", "httpx"]!r}
        out = {{n: sys.modules.get(n) is not None for n in names}}
        out["httpx._main"] = sys.modules.get("httpx._main") is not None
        print(json.dumps(out))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    loaded: dict[str, bool] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_a_job_command_imports_neither_compose_nor_the_async_sdk_nor_the_agent() -> None:
    loaded = loaded_after(["job", "run", "--help"])
    assert loaded["podium.cli.job"] and loaded["httpx"]  # the check itself works
    assert [m for m in NOT_FOR_JOB if loaded[m]] == []
    assert not loaded["httpx._main"]  # httpx's own command-line tool


def test_help_lists_every_group_and_each_builds_as_add_typer_would() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in PodiumGroup.lazy:
        assert f" {name} " in result.output
    for name, args in [("job", ["job", "--help"]), ("agent", ["agent", "--help"])]:
        sub = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
        assert sub.exit_code == 0, sub.output
        assert f"Usage: podium {name} [OPTIONS]" in sub.output
    assert "run " in CliRunner().invoke(app, ["job", "--help"]).output


def test_a_mistyped_group_is_suggested_before_it_was_ever_loaded() -> None:
    result = CliRunner().invoke(app, ["jbo"])
    assert result.exit_code == 2
    assert "Did you mean 'job'?" in result.output


def test_a_lazy_group_builds_each_entry_once_and_only_when_named() -> None:
    built: list[str] = []

    class Group(LazyGroup):
        lazy = {
            "sub": "tests.cli.test_cli_startup:SUB_APP",
            "one": "tests.cli.test_cli_startup:one",
        }

        def _build(self, name: str, target: str) -> Command:
            built.append(name)
            return super()._build(name, target)

    root = typer.Typer(cls=Group)

    @root.callback()
    def main() -> None:
        """Root."""

    group = typer.main.get_command(root)
    assert isinstance(group, Group)
    ctx = typer.Context(group)
    assert group.list_commands(ctx) == ["sub", "one"] and built == []
    first = group.get_command(ctx, "one")
    assert first is not None and group.get_command(ctx, "one") is first
    assert built == ["one"]
    assert group.get_command(ctx, "nosuch") is None
    assert built == ["one"]
    # and they run as eagerly registered ones do
    runner = CliRunner()
    assert runner.invoke(root, ["one", "--who", "x"]).output == "one x\n"
    assert runner.invoke(root, ["sub", "hello"]).output == "hello\n"
    assert runner.invoke(root, ["nosuch"]).exit_code == 2


SUB_APP = typer.Typer()


@SUB_APP.command()
def hello() -> None:
    typer.echo("hello")


@SUB_APP.command()
def bye() -> None:
    typer.echo("bye")


def one(who: str = typer.Option(...)) -> None:
    typer.echo(f"one {who}")


def test_a_plain_http_address_loads_no_certificates_and_https_keeps_verification() -> None:
    ctx = tls_context("http://127.0.0.1:7634")
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.cert_store_stats()["x509_ca"] == 0  # trusts no one, rather than anyone
    assert tls_context("https://podium.example:7634") is True
