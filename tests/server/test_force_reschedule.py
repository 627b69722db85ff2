"""Registering an unchanged job again with ``force_reschedule`` replaces what failed.

This is how ``podium compose up`` converges after a failed first attempt, as
``docker compose up`` restarts the containers that exited: the job's spec is
unchanged (no new version), but its failed allocations, which their policy
would leave failed, are placed again.
"""

from __future__ import annotations

from podium.models import ClientStatus, JobSpec
from tests.server.conftest import Cluster, mock_job


def _failing() -> JobSpec:
    spec = mock_job(
        "once",
        run_for="10ms",
        exit_code=1,
        restart={"attempts": 0, "mode": "fail"},
        reschedule={"attempts": 0, "unlimited": False},
    )
    return JobSpec.model_validate(spec)


async def test_force_reschedule_replaces_a_failed_allocation_of_an_unchanged_job(
    cluster: Cluster,
) -> None:
    await cluster.add_agent()
    spec = _failing()
    await cluster.client.register_job(spec)
    first = await cluster.until(
        lambda: [a for a in cluster.allocs("once") if a.client_status == ClientStatus.FAILED],
        what="the first allocation to fail",
    )

    plain = await cluster.client.register_job(spec)
    assert not plain.changed
    await cluster.until(
        lambda: (ev := cluster.store.evaluation(plain.eval_id)) and ev.terminal(),
        what="the plain registration's evaluation",
    )
    assert [a.id for a in cluster.allocs("once")] == [first[0].id]  # the policy says never

    forced = await cluster.client.register_job(spec, force_reschedule=True)
    assert not forced.changed and forced.version == plain.version
    ev = await cluster.until(
        lambda: (e := cluster.store.evaluation(forced.eval_id)) and e.terminal() and e,
        what="the forced evaluation",
    )
    assert ev.force_reschedule
    allocs = cluster.allocs("once")
    assert len(allocs) == 2
    replacement = next(a for a in allocs if a.id != first[0].id)
    assert replacement.previous_allocation == first[0].id
    await cluster.until(
        lambda: (a := cluster.store.alloc(replacement.id)) and a.client_status.terminal,
        what="the replacement to run (and fail again)",
    )
