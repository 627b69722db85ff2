"""Whole-loop properties: determinism, convergence, and randomized invariants."""

from __future__ import annotations

import random

import pytest

from podium.models import Allocation, ClientStatus, DesiredStatus, JobSpec, JobType, NodeStatus
from podium.scheduler import schedule
from podium.scheduler.harness import (
    Harness,
    id_sequence,
    make_eval,
    make_group,
    make_job,
    make_node,
)


def build(prefix: str = "id") -> Harness:
    h = Harness(id_prefix=prefix)
    for i in range(8):
        h.add_node(make_node(f"n{i}", cpu=2000 + 500 * (i % 3), memory=4096 + 1024 * (i % 2)))
    h.register(
        make_job(
            "web",
            groups={
                "api": make_group(5, cpu=300, memory=512),
                "cache": make_group(3, cpu=200, memory=1024),
            },
        )
    )
    h.register(make_job("etl", type=JobType.BATCH, count=4, cpu=500, memory=700))
    return h


def test_same_inputs_give_the_same_output() -> None:
    a, b = build(), build()
    ev = make_eval("web", eval_id="eval-1")
    ra = schedule(a, ev, 1000.0, new_id=id_sequence("x"))
    rb = schedule(b, ev, 1000.0, new_id=id_sequence("x"))
    assert ra.model_dump() == rb.model_dump()
    # And again on the very same snapshot (nothing was written).
    rc = schedule(a, ev, 1000.0, new_id=id_sequence("x"))
    assert rc.model_dump() == ra.model_dump()


def test_whole_histories_are_reproducible() -> None:
    def history() -> list[dict[str, object]]:
        h = build()
        out = []
        for job in ("web", "etl"):
            out += [r.model_dump() for r in h.converge(job)]
        h.set_node("node-n3", status=NodeStatus.DOWN)
        out += [r.model_dump() for r in h.converge("web")]
        return out

    assert history() == history()


def test_schedule_never_writes_to_the_snapshot() -> None:
    h = build()
    before = (h.index, [a.model_dump() for a in h.allocs()], dict(h.evals))
    schedule(h, make_eval("web", eval_id="e"), 1000.0, new_id=id_sequence())
    assert (h.index, [a.model_dump() for a in h.allocs()], dict(h.evals)) == before


def test_loop_converges_to_an_empty_plan() -> None:
    h = build()
    for job in ("web", "etl"):
        results = h.converge(job)
        assert results[-1].plan.empty()
        assert len(results) <= 3
    assert [a.index for a in h.live("web", "api")] == [0, 1, 2, 3, 4]
    assert [a.index for a in h.live("web", "cache")] == [0, 1, 2]
    assert h.overcommitted() == []


def test_converge_reports_a_scheduler_that_never_settles() -> None:
    h = Harness()
    h.add_node(make_node("a"))
    h.register(make_job("web"))
    with pytest.raises(RuntimeError, match="did not converge"):
        h.converge("web", max_rounds=1)


# -- randomized --------------------------------------------------------------


def check_invariants(h: Harness, jobs: dict[str, JobType]) -> None:
    assert h.overcommitted() == []
    for job_id in jobs:
        job = h.job(job_id)
        for group in {a.group for a in h.allocs_by_job(job_id)}:
            live = h.live(job_id, group)
            idx = [a.index for a in live]
            assert len(idx) == len(set(idx)), f"{job_id}.{group}: duplicate index among {idx}"
            if job is None or job.stop or group not in job.spec.groups:
                assert live == []
            else:
                assert len(live) <= job.spec.groups[group].count


def random_spec(rng: random.Random, job_id: str, job_type: JobType, version: int) -> JobSpec:
    groups = {
        f"g{k}": make_group(
            rng.randint(0, 6),
            cpu=rng.choice([100, 250, 500, 900]),
            memory=rng.choice([128, 512, 1000, 2000]),
            config={"v": version if rng.random() < 0.5 else 0},
        )
        for k in range(rng.randint(1, 2))
    }
    return make_job(job_id, type=job_type, groups=groups)


@pytest.mark.parametrize("seed", range(25))
def test_random_histories_keep_invariants(seed: int) -> None:
    rng = random.Random(seed)
    h = Harness(id_prefix=f"s{seed}", now=0.0)
    for i in range(rng.randint(2, 10)):
        h.add_node(
            make_node(f"n{i}", cpu=rng.choice([1000, 2000, 4000]), memory=rng.choice([2048, 4096]))
        )
    jobs: dict[str, JobType] = {}
    for j in range(rng.randint(1, 4)):
        job_type = JobType.SERVICE if rng.random() < 0.7 else JobType.BATCH
        jobs[f"job{j}"] = job_type
        h.register(random_spec(rng, f"job{j}", job_type, 0))

    now = 0.0
    for _step in range(40):
        now += rng.uniform(0, 120)
        h.now = now
        event = rng.random()
        job_id = rng.choice(sorted(jobs))
        if event < 0.2:
            h.register(random_spec(rng, job_id, jobs[job_id], int(now)))
        elif event < 0.3:
            node = rng.choice(h.nodes())
            status = NodeStatus.DOWN if node.ready() else NodeStatus.READY
            h.set_node(node.id, status=status)
        elif event < 0.45:
            running = [a for a in h.live(job_id) if a.client_status == ClientStatus.RUNNING]
            if running:
                victim = rng.choice(running)
                outcome = ClientStatus.FAILED
                if jobs[job_id] == JobType.BATCH and rng.random() < 0.5:
                    outcome = ClientStatus.COMPLETE
                h.client_update(victim.id, outcome)
        elif event < 0.5 and h.job(job_id) is not None:
            h.stop_job(job_id)
        elif event < 0.55 and h.job(job_id) is not None:
            h.purge_job(job_id)
        elif event < 0.75:
            h.run_pending()
        for jid in sorted(jobs):
            h.evaluate(jid)
        check_invariants(h, jobs)
        # The applier never had to reject a placement: nothing over-committed.
        assert [r.rejected_nodes for r in h.plan_results if r.rejected_nodes] == []

    # Every instance asked for was either placed or queued.
    for result, applied in zip(h.results, h.plan_results, strict=True):
        asked = sum(ch.place + ch.destructive_update for ch in result.plan.changes.values())
        queued = sum(result.eval_update.queued_allocations.values())
        assert applied.committed_placements + queued == asked

    # Heal: every node back, plenty of room, every job re-registered and
    # running, failures long past their delay.  Each instance must then be
    # placed exactly once.
    for node in h.nodes():
        h.set_node(node.id, status=NodeStatus.READY)
    for i in range(10):
        h.add_node(make_node(f"big{i}", cpu=64000, memory=262144))
    now += 10 * 3600
    h.now = now
    for jid, job_type in sorted(jobs.items()):
        if job_type == JobType.BATCH:
            continue  # batch instances may be done or out of attempts; checked above
        spec = random_spec(rng, jid, job_type, 10**6)
        h.register(spec)
        h.converge(jid)
        h.run_pending()
        assert h.evaluate(jid).plan.empty()
        for name, group in spec.groups.items():
            live = h.live(jid, name)
            # Distinct and exactly `count` of them.  Not necessarily 0..count-1:
            # a kept instance keeps its index, so after losses and scale-downs
            # the set can have a gap that a later scale-up fills.
            indexes = [a.index for a in live]
            assert len(set(indexes)) == len(indexes) == group.count, (jid, name, indexes)
            assert all(a.job_version == h.job(jid).version for a in live)  # type: ignore[union-attr]
            assert all(a.desired_status == DesiredStatus.RUN for a in live)
    check_invariants(h, jobs)


def test_output_does_not_depend_on_the_order_allocations_are_listed() -> None:
    class Reversed(Harness):
        def allocs_by_job(self, job_id: str, namespace: str = "default") -> list[Allocation]:
            return super().allocs_by_job(job_id, namespace)[::-1]

        def allocs_by_node(self, node_id: str) -> list[Allocation]:
            return super().allocs_by_node(node_id)[::-1]

    def scenario(h: Harness) -> dict[str, object]:
        h.add_nodes(4)
        h.register(make_job("web", count=6))
        h.converge("web")
        for alloc in h.live("web")[:3]:
            h.client_update(alloc.id, ClientStatus.FAILED, now=1000.0)
        h.set_node("node-n1", status=NodeStatus.DOWN)
        h.register(make_job("web", count=4, config={"v": 2}))
        ev = make_eval("web", eval_id="final")
        return schedule(h, ev, 1010.0, new_id=id_sequence("z")).model_dump()

    assert scenario(Harness()) == scenario(Reversed())
