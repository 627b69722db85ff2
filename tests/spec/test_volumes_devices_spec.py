"""Job files with host volumes and device requests: what is accepted, and how bad ones
are refused (path, line, message)."""

from __future__ import annotations

from textwrap import dedent

import pytest

from podium.errors import SpecError, SpecIssue
from podium.models import JobSpec, tasks_changed
from podium.spec import parse_job_text

GOOD = """\
job: j
groups:
  g:
    volumes:
      data: {type: host, source: pgdata, read_only: false}
    tasks:
      t:
        driver: exec
        config: {command: /bin/true}
        volume_mounts:
          - {volume: data, destination: /var/lib/pg}
        resources:
          devices:
            - name: nvidia/gpu
              count: 2
              constraints:
                - {attribute: "${device.attr.memory}", operator: ">=", value: "16000"}
              affinities:
                - {attribute: "${device.model}", value: "Tesla T4", weight: 50}
"""


def issue(text: str) -> SpecIssue:
    with pytest.raises(SpecError) as info:
        parse_job_text(dedent(text), "job.yaml")
    (only,) = info.value.issues
    return only


def test_volumes_mounts_and_devices_are_accepted() -> None:
    spec = parse_job_text(GOOD, "job.yaml")
    group = spec.groups["g"]
    assert group.volumes["data"].source == "pgdata"
    assert group.tasks["t"].volume_mounts[0].destination == "/var/lib/pg"
    (dev,) = group.tasks["t"].resources.devices
    assert (dev.name, dev.count) == ("nvidia/gpu", 2)
    # an empty list of devices or mounts is not written back (allocations carry resources)
    plain = JobSpec.model_validate({"job": "p", "groups": {"g": {"tasks": {"t": {"driver": "x"}}}}})
    dumped = plain.model_dump()["groups"]["g"]
    assert "volumes" not in dumped and "volume_mounts" not in dumped["tasks"]["t"]
    assert "devices" not in dumped["tasks"]["t"]["resources"]


def test_a_mount_of_an_unknown_volume_says_where() -> None:
    found = issue(GOOD.replace("{volume: data,", "{volume: dta,"))
    assert found.path.startswith("groups.g")
    assert "task 't': volume_mounts[0] names volume 'dta'" in found.message
    assert "known: data" in found.message


@pytest.mark.parametrize(
    ("old", "new", "path", "words"),
    [
        ("type: host,", "type: csi,", "groups.g.volumes.data.type", "host"),
        ("destination: /var/lib/pg", "destination: var/lib", "destination", "absolute"),
        ("destination: /var/lib/pg", "destination: /", "destination", "absolute"),
        ("count: 2", "count: 0", "devices[0].count", "must be at least 1"),
        ("name: nvidia/gpu", "name: nvidia//gpu", "name", "TYPE, VENDOR/TYPE"),
        ('"${device.attr.memory}"', '"${attr.memory}"', "attribute", "not a device attribute"),
    ],
)
def test_bad_volume_and_device_fields_are_refused(
    old: str, new: str, path: str, words: str
) -> None:
    assert old in GOOD
    found = issue(GOOD.replace(old, new))
    assert path in found.path, found
    assert words in found.message, found


def test_changing_volumes_is_a_destructive_update() -> None:
    spec = parse_job_text(GOOD, "job.yaml")
    other = parse_job_text(GOOD.replace("source: pgdata", "source: other"), "job.yaml")
    assert tasks_changed(spec.groups["g"], other.groups["g"])
    assert not tasks_changed(spec.groups["g"], spec.groups["g"])
