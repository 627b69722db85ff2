"""End to end on a real engine: host volumes and fake GPUs with the docker driver.

The agent runs with the production defaults (``podium agent --server``), which refuse a
job's own host binds (tests/e2e/test_docker.py): a host volume the operator declared
(``--host-volume``) is still bound, because it is the approved way.  A fake GPU
(``--device-file``) reaches the container as ``CUDA_VISIBLE_DEVICES`` only: no device
request is made, which this engine (no nvidia runtime) would refuse.  Skipped where no
engine answers, as the other docker tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import free_port, wait_until, write_job
from tests.e2e.test_docker import IMAGE, SKIP, ServerAgent
from tests.e2e.test_volumes_devices import replace_and_check, volume_job

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]


def test_docker_host_volume_outlives_its_allocation_where_binds_are_refused(
    tmp_path: Path,
) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    gpus = tmp_path / "gpus.json"
    gpus.write_text(
        json.dumps(
            {
                "devices": [
                    {
                        "vendor": "nvidia",
                        "type": "gpu",
                        "name": "Fake",
                        "instances": [{"id": "GPU-fake-docker", "index": "0"}],
                    }
                ]
            }
        )
    )
    agent = ServerAgent(
        addr=f"http://127.0.0.1:{free_port()}",
        data_dir=tmp_path / "data",
        log_path=tmp_path / "agent.log",
        extra_args=["--host-volume", f"data={vol}", "--device-file", str(gpus)],
    )
    agent.start()
    try:
        node = agent.get("/v1/nodes")[0]
        assert node["drivers"]["docker"]["attributes"]["volumes.enabled"] == "false"
        agent.cli("job", "run", write_job(tmp_path, volume_job("docker", image=IMAGE)), check=True)
        replace_and_check(agent, vol)
        agent.cli("job", "stop", "keeper", "--purge", check=True)

        job = f"""
job: cuda
groups:
  g:
    tasks:
      t:
        driver: docker
        resources:
          cpu: 100
          memory: 32
          devices: [{{name: gpu}}]
        config:
          image: {IMAGE}
          command: /bin/sh
          args: ["-c", "echo cuda=$CUDA_VISIBLE_DEVICES; exec sleep 3600"]
"""
        agent.cli("job", "run", write_job(tmp_path, job, "cuda.yaml"), check=True)
        (alloc,) = agent.wait_running("cuda", 1, timeout=60)
        wait_until(
            lambda: "cuda=GPU-fake-docker" in agent.cli("alloc", "logs", alloc["id"]).stdout,
            timeout=30,
            what="the container to see its GPU id",
        )
    finally:
        agent.cleanup()
