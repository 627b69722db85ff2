"""Property-based fuzzing of the HTTP API against its own OpenAPI document.

A real server process (``podium agent --dev --no-client``: the server alone, so no
fuzzed job ever runs a process) serves ``/v1/openapi.json``; schemathesis reads it and
sends generated requests, valid and invalid, to every operation, checking each answer:
no 5xx, only documented statuses, documented content types and headers, bodies that
match the documented schemas, invalid input refused; then its stateful phase chains
operations through the links it infers (register a job, read it, plan it, stop it...).
The run is bounded (examples per operation, fixed seed, no example database) so it
takes a couple of minutes on two busy cores, and it passes only with no failure at all.

By hand (docs/api.md)::

    podium agent --dev --no-client --http-addr 127.0.0.1:7634 &
    SCHEMATHESIS_HOOKS=tests.server.fuzz_hooks .venv/bin/schemathesis run \\
        http://127.0.0.1:7634/v1/openapi.json --checks all \\
        --exclude-checks positive_data_acceptance,ignored_auth,object_level_authorization \
        --suppress-health-check filter_too_much,too_slow --seed 1
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import PODIUM, free_port, stop_process, wait_until

ROOT = Path(__file__).resolve().parents[2]
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"

EXAMPLES = int(os.environ.get("PODIUM_FUZZ_EXAMPLES", "12"))
"""Generated cases per operation and phase (more by hand: PODIUM_FUZZ_EXAMPLES=200)."""
SEED = os.environ.get("PODIUM_FUZZ_SEED", "20261114")
EXCLUDED = ("/v1/event/stream",)
"""A stream without end: every valid case would hold the run until the request timeout.
Its parameters' refusals and its document are tests/server/test_events.py's and
test_api_document's."""

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "missing_required_header",
        "unsupported_method",
        "use_after_free",
        "ensure_resource_availability",
    ]
)
"""Every check but ``positive_data_acceptance`` (a job that fits the schema can still be
refused by a rule across fields, with 400 and the issue), ``ignored_auth`` and
``object_level_authorization`` (ACLs are off in this run) and ``allow_header_conformance``."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("fuzz")
    addr = f"127.0.0.1:{free_port()}"
    log = open(tmp / "server.log", "ab")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(
        [
            *PODIUM,
            "agent",
            "--dev",
            "--no-client",
            "--data-dir",
            str(tmp / "data"),
            "--http-addr",
            addr,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {(tmp / 'server.log').read_text()[-3000:]}")
        return httpx.get(f"http://{addr}/v1/status", timeout=2).status_code == 200

    try:
        wait_until(ready, timeout=60, what="the server to answer")
        yield f"http://{addr}"
    finally:
        stop_process(proc)


@pytest.mark.timeout(960)  # ~80 s alone; a loaded machine may take several times that
def test_fuzz_every_operation(server: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.server.fuzz_hooks",
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "NO_COLOR": "1",
        "COLUMNS": "120",
    }
    result = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{server}/v1/openapi.json",
            "--checks",
            CHECKS,
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            str(EXAMPLES),
            "--seed",
            SEED,
            "--generation-database",
            "none",
            "--workers",
            "1",
            "--request-timeout",
            "20",
            "--max-failures",
            "50",
            # operations whose only input is a path string: the negative mode filters out
            # most of what it draws for them, which is not a failure of the API; and on a
            # loaded machine drawing data is slow, which is not one either
            "--suppress-health-check",
            "filter_too_much,too_slow",
            *(arg for path in EXCLUDED for arg in ("--exclude-path", path)),
            "--no-color",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        cwd=tmp_path,  # schemathesis keeps a crash cache in its working directory
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-20000:]
    # The run covered every operation of the document and generated cases for them.
    doc = httpx.get(f"{server}/v1/openapi.json", timeout=10).json()
    operations = sum(len(ops) for path, ops in doc["paths"].items() if path not in EXCLUDED)
    tested = re.search(r"Tested:\s+(\d+)", out)
    assert tested is not None and int(tested.group(1)) == operations, out[-5000:]
    cases = re.search(r"(\d+) generated", out)
    assert cases is not None and int(cases.group(1)) >= operations * 3, out[-5000:]
    print(out[-3000:])
