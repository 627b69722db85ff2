"""End to end: one tenant cannot read another's files (issue 14).

Two exec jobs render a password (from an encrypted variable) and a key under
``secrets/``: each runs as a uid of its own; the other's task finds neither (not in its
root) and the other's uid on the host is refused them; the files are 0600 and their
task user's; ``secrets/`` is a tmpfs that is gone from the host once the jobs are; the
password is in no log of the agent and no store.  A job asking for ``user: root`` is
not placed, and says why.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import DevAgent, wait_until, write_job

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the exec driver needs root")

OWN = """
job: {name}
groups:
  g:
    tasks:
      t:
        driver: exec
        config:
          command: /bin/sh
          args: ["-c", "echo uid=$(id -u); cat local/password secrets/db.key; echo; {pry} test -s secrets/podium_token && echo token-ok; exec sleep 1000"]
        templates:
          - destination: local/password
            data: '{{{{ var("db/{name}").password }}}}'
          - destination: secrets/db.key
            data: 'key-{{{{ var("db/{name}").password }}}}'
"""

ROOT = """
job: rooted
type: batch
groups:
  g:
    tasks:
      t:
        driver: exec
        user: root
        config: {command: /bin/true}
"""


def _logs(dev_agent: DevAgent, alloc_id: str, stream: str = "stdout") -> str:
    r = httpx.get(
        f"{dev_agent.addr}/v1/allocation/{alloc_id}/logs",
        params={"task": "t", "type": stream},
        timeout=10,
    )
    r.raise_for_status()
    return r.text


def _secrets_mounts(under: Path) -> list[str]:
    top = str(under.resolve())
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, tail = line.partition(" - ")
        if tail.split()[:2] == ["tmpfs", "podium-secrets"] and fields.split()[4].startswith(top):
            out.append(fields.split()[4])
    return out


def _as_uid(uid: int, *argv: str) -> subprocess.CompletedProcess[str]:
    ids = [f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    return subprocess.run(["setpriv", *ids, *argv], capture_output=True, text=True, timeout=10)


def _run_own(
    dev_agent: DevAgent, tmp_path: Path, name: str, pry: str = ""
) -> tuple[dict[str, Any], int, str]:
    """Run job ``name`` (its task reads its own files, after trying ``pry``); the
    allocation, its task's uid and its output."""
    dev_agent.cli("var", "put", f"db/{name}", f"password={name}-s3cret", check=True)
    job = OWN.format(name=name, pry=pry)
    dev_agent.cli("job", "run", write_job(tmp_path, job, f"{name}.yaml"), check=True)
    (alloc,) = dev_agent.wait_running(name, 1, timeout=60)
    out = wait_until(
        lambda: "token-ok" in (t := _logs(dev_agent, alloc["id"])) and t,
        timeout=30,
        what=f"{name}'s task to read its own files",
    )
    assert f"{name}-s3cret" in out and f"key-{name}-s3cret" in out, out
    return alloc, int(out.split("uid=")[1].split()[0]), out


def test_one_tenant_cannot_read_anothers_files(dev_agent: DevAgent, tmp_path: Path) -> None:
    node = dev_agent.get("/v1/nodes")[0]
    assert node["drivers"]["exec"]["healthy"], node["drivers"]["exec"]
    a, a_uid, _ = _run_own(dev_agent, tmp_path, "alpha")
    allocs = dev_agent.data_dir / "agent" / "allocs"
    a_alloc, a_task = allocs / a["id"], allocs / a["id"] / "t"
    a_files = [a_task / "local" / "password", a_task / "secrets" / "db.key"]
    a_files.append(a_task / "secrets" / "podium_token")

    # beta's task tries alpha's files by their host paths: in its own root they are not
    # there at all; it reads its own.
    files = " ".join(str(p) for p in a_files)
    pry = f"for f in {files}; do cat $f; done; ls {a_alloc};"
    b, b_uid, out = _run_own(dev_agent, tmp_path, "beta", pry)
    assert a_uid != b_uid and 70000 <= min(a_uid, b_uid) <= max(a_uid, b_uid) <= 79999
    assert "alpha-s3cret" not in out, out
    err = _logs(dev_agent, b["id"], "stderr")
    assert err.count("No such file or directory") == len(a_files) + 1, err
    for path in a_files:
        st = path.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (a_uid, 0o600), path
    st = (a_task / "secrets").stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (a_uid, 0o700)
    assert str((a_task / "secrets").resolve()) in _secrets_mounts(allocs)  # never on disk
    assert stat.S_IMODE(a_alloc.stat().st_mode) == 0o711

    # On the host, beta's uid can neither list alpha's allocation nor read its files.
    listed = _as_uid(b_uid, "ls", str(a_alloc))
    assert listed.returncode != 0 and "Permission denied" in listed.stderr, listed
    for path in a_files:
        read = _as_uid(b_uid, "cat", str(path))
        assert read.returncode != 0 and "Permission denied" in read.stderr, (path, read)

    # user: root is not placed, and the job says why.
    dev_agent.cli("job", "run", write_job(tmp_path, ROOT, "root.yaml"))
    status = wait_until(
        lambda: (
            "exec: user root is refused" in (s := dev_agent.cli("job", "status", "rooted")).stdout
            and s.stdout
        ),
        what="the refusal in the job's status",
    )
    assert "rooted" in status and not dev_agent.allocs("rooted")

    # Gone with the allocations: no tmpfs left on the host; the secret in no store or log.
    for job in ("alpha", "beta"):
        dev_agent.cli("job", "stop", job, "--purge", check=True)
    wait_until(lambda: not _secrets_mounts(allocs), timeout=30, what="the mounts to go")
    kept = [p for p in dev_agent.data_dir.rglob("*") if p.is_file() and allocs not in p.parents]
    assert any(p.name == "state.db" for p in kept) and any(p.name == "agent.db" for p in kept)
    for path in [dev_agent.log_path, *kept]:  # the allocations' dirs are gone (purged)
        data = path.read_bytes()
        assert b"alpha-s3cret" not in data and b"beta-s3cret" not in data, path
