"""Every route of the API is classified for access control (deny by default)."""

from __future__ import annotations

from pathlib import Path

from podium.server import acl
from podium.server.api import create_app
from podium.server.core import Server
from podium.state import StateStore
from podium.tls.server import ServerTLS


def app_routes(tmp_path: Path) -> set[tuple[str, str]]:
    """Every route of a server's app with every part on (TLS adds its routes)."""
    app = create_app(Server(StateStore()), tls=ServerTLS.open(tmp_path / "tls"))
    found = {(method, path) for method, path, _ in acl.app_routes(app.routes)}
    assert ("GET", "/v1/acl/tokens") in found, "routes of included routers are walked too"
    assert ("POST", "/v1/agent/join") in found, "the TLS routes are there"
    return found


def test_every_route_of_the_app_has_a_rule(tmp_path: Path) -> None:
    missing = sorted(app_routes(tmp_path) - set(acl.RULES))
    assert not missing, (
        "routes without an access rule (add them to podium.server.acl.RULES): "
        + ", ".join(f"{m} {p}" for m, p in missing)
    )


def test_no_rule_names_a_route_that_does_not_exist(tmp_path: Path) -> None:
    stale = sorted(set(acl.RULES) - app_routes(tmp_path))
    assert not stale, f"rules for routes the app does not have: {stale}"
