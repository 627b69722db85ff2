"""The web UI's package data and its pure half: templates, one stylesheet, one script.

The UI is served by every server (podium.server.ui_routes) and rendered on the server
from its in-memory state, so there is no JavaScript build and nothing to install apart
from Podium.  This package knows only models and Jinja2 (import-linter holds it to
that): :mod:`podium.ui.views` turns models into what a page shows (bars, counts, the
topology), :mod:`podium.ui.render` renders the templates.  docs/ui.md says why.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
