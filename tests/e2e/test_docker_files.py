"""End to end: a container's rendered templates and ``secrets/`` (issue 14).

With a numeric ``user`` the files are that uid's alone (0600) and the container, running
as it, reads them, the secrets through the agent's tmpfs (Docker's bind of the task dir
at ``/local`` is recursive); with the image's default user (unknown to the agent) they
are readable by any user (0644), as documented.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import DevAgent, wait_until, write_job
from tests.e2e.test_docker import IMAGE, SKIP

pytestmark = pytest.mark.skipif(
    SKIP is not None or os.geteuid() != 0, reason=SKIP or "the secrets tmpfs needs root"
)

JOB = """
job: {name}
type: batch
groups:
  g:
    restart: {{attempts: 0, mode: fail}}
    tasks:
      t:
        driver: docker
        resources: {{memory: 32, cpu: 100}}
        config:
          image: {image}
          {user}
          command: /bin/sh
          args: ["-c", "id -u; cat /local/local/app.conf /local/secrets/db.key; echo; sleep 30"]
        templates:
          - destination: local/app.conf
            data: 'conf-{name}'
          - destination: secrets/db.key
            data: 'key-{name}'
"""


def _mounted(path: Path) -> bool:
    target = str(path.resolve())
    return any(
        line.split()[4] == target and " podium-secrets " in line
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
    )


@pytest.mark.parametrize(("user", "uid", "mode"), [("1234:1234", 1234, 0o600), (None, None, 0o644)])
def test_a_containers_files_are_its_users(
    dev_agent: DevAgent, tmp_path: Path, user: str | None, uid: int | None, mode: int
) -> None:
    name = "numeric" if user else "default"
    line = f'user: "{user}"' if user else ""
    job = JOB.format(name=name, image=IMAGE, user=line)
    dev_agent.cli("job", "run", write_job(tmp_path, job), check=True, timeout=90)
    (alloc,) = dev_agent.wait_running(name, 1, timeout=60)

    def out() -> str:
        r = httpx.get(f"{dev_agent.addr}/v1/allocation/{alloc['id']}/logs", timeout=10)
        r.raise_for_status()
        return r.text

    text = wait_until(lambda: f"key-{name}" in (t := out()) and t, what="the container's output")
    assert f"conf-{name}" in text
    if uid is not None:
        assert text.split()[0] == str(uid)
    task = dev_agent.data_dir / "agent" / "allocs" / alloc["id"] / "t"
    assert _mounted(task / "secrets")
    for path in (task / "local" / "app.conf", task / "secrets" / "db.key"):
        st = path.stat()
        assert stat.S_IMODE(st.st_mode) == mode, path
        if uid is not None:
            assert (st.st_uid, st.st_gid) == (uid, uid), path
