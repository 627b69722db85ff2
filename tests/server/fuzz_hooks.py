"""schemathesis hooks for the API fuzz run (tests/server/test_fuzz_api.py; also by hand:
``SCHEMATHESIS_HOOKS=tests.server.fuzz_hooks schemathesis run ...``, see docs/api.md).

A blocking query (``index``) waits up to ``wait`` (default 5m) when nothing changes, and a
fuzzer picks indexes past the store's: each such case would hold the run for minutes.  A
*valid* ``wait`` is cut to a few milliseconds here, and one is added where ``index`` comes
without it; an invalid ``wait`` is left alone, so the server's refusal of it is still
tested.  Nothing else of a generated case is touched.  (A ``map_case`` hook: schemathesis
applies it in every phase, the coverage phase included.)
"""

from __future__ import annotations

from typing import Any

import schemathesis

from podium.models import parse_duration

SHORT_WAIT = "20ms"
MONITOR = "/v1/agent/monitor"


def _valid_wait(value: Any) -> bool:
    if not isinstance(value, str) or len(value) > 64:
        return False
    try:
        parse_duration(value)
    except ValueError:
        return False
    return True


@schemathesis.hook
def map_case(context: schemathesis.HookContext, case: Any) -> Any:
    if case.path == MONITOR and case.query is None:
        case.query = {}
    query = case.query
    if not isinstance(query, dict):
        return case
    shorten = _valid_wait(query["wait"]) if "wait" in query else "index" in query
    if shorten:
        query["wait"] = SHORT_WAIT
    # the live log streams until the client goes away: a valid (or no) duration is cut
    # short the same way, so each case ends
    if case.path == MONITOR and ("duration" not in query or _valid_wait(query["duration"])):
        query["duration"] = SHORT_WAIT
    return case
