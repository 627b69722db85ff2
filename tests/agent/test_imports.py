"""What a running agent (and a dev agent's server) keeps out of its memory until needed.

Each check runs in a fresh interpreter: this test process has imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path


def modules_after(
    code: str, names: tuple[str, ...] = ("jinja2", "cryptography")
) -> dict[str, bool]:
    script = textwrap.dedent(code) + textwrap.dedent(
        f"""
        import json, sys
        print(json.dumps({{m: m in sys.modules for m in {names!r}}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    loaded: dict[str, bool] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_the_agent_imports_jinja2_only_in_its_render_worker() -> None:
    loaded = modules_after(
        """
        import podium.runtime, podium.agent.agent, podium.agent.runner, podium.agent.templates
        from podium.agent.templates import ServiceInstance, VariableItems
        """
    )
    assert not loaded["jinja2"]
    assert modules_after("import podium.agent.render_worker")["jinja2"]  # the check works


def test_a_server_imports_cryptography_only_once_it_seals_or_opens_a_variable(
    tmp_path: Path,
) -> None:
    start = f"""
        from pathlib import Path
        import podium.runtime, podium.server.api, podium.server.core
        from podium.server.keyring import Keyring
        ring = Keyring.load_or_create(Path({str(tmp_path)!r}))
        """
    assert not modules_after(start)["cryptography"]
    assert modules_after(start + "ring.seal('default', 'a/b', b'x')\n")["cryptography"]


def test_an_agent_of_a_server_in_its_own_process_talks_to_it_without_aiohttp() -> None:
    loaded = modules_after(
        """
        import sys
        from podium.client import AsyncClient
        from podium.runtime import AgentConfig, _loopback_transport
        for config in (AgentConfig(dev=True), AgentConfig(server=True)):
            transport = _loopback_transport("http://127.0.0.1:7634", config)
            assert transport is not None
            AsyncClient("http://127.0.0.1:7634", transport=transport)
        assert "aiohttp" not in sys.modules, "imported before any remote agent"
        remote = AgentConfig(servers=["http://10.0.0.1:7634"])
        assert _loopback_transport("http://10.0.0.1:7634", remote) is None
        AsyncClient("http://10.0.0.1:7634")  # an agent of remote servers: aiohttp
        """,
        ("aiohttp",),
    )
    assert loaded["aiohttp"]
