"""Dispatching a parameterized job: a child job with the caller's meta and payload.

Any server may accept a dispatch (a write: followers forward it to the leader, as
every write).  The request is checked against the job's ``parameterized`` rules
(:func:`podium.models.dispatch.check_dispatch`) before anything is written, and with
an idempotency token a repeated dispatch (a client retrying after a lost answer)
answers the child the first one made instead of making another, for as long as that
child is stored (until garbage collection removes it, finished).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from podium.errors import Conflict, NotFound
from podium.models.dispatch import MAX_TOKEN_CHARS, check_dispatch, dispatch_id
from podium.server import children, namespaces
from podium.server.broker import EvalBroker
from podium.state import StateStore


@dataclass
class Dispatched:
    dispatched_job_id: str
    eval_id: str
    index: int
    existing: bool = False
    """An earlier dispatch with the same idempotency token made this child."""


class Dispatcher:
    def __init__(self, store: StateStore, broker: EvalBroker, clock: Callable[[], float]) -> None:
        self.store = store
        self.broker = broker
        self.clock = clock

    def dispatch(
        self,
        job_id: str,
        namespace: str = "default",
        *,
        meta: dict[str, str] | None = None,
        payload: bytes | None = None,
        token: str = "",
    ) -> Dispatched:
        meta = dict(meta or {})
        job = self.store.job(job_id, namespace)
        if job is None:
            raise NotFound(f"job {job_id!r} not found")
        rules = job.spec.parameterized
        if rules is None:
            raise ValueError(
                f"job {job.id} is not parameterized: only a job with a parameterized block "
                "can be dispatched"
            )
        if job.stop:
            raise Conflict(f"job {job.id} is stopped: run it again before dispatching it")
        if len(token) > MAX_TOKEN_CHARS:
            raise ValueError(f"the idempotency token is longer than {MAX_TOKEN_CHARS} characters")
        problems = check_dispatch(rules, meta, payload)
        if problems:
            raise ValueError(f"cannot dispatch job {job.id}: " + "; ".join(problems))
        if token:
            for child in children.children(self.store, job):
                if child.dispatch_token == token:
                    evs = sorted(
                        self.store.evals_by_job(child.id, child.namespace),
                        key=lambda e: e.create_index,
                    )
                    return Dispatched(
                        dispatched_job_id=child.id,
                        eval_id=evs[0].id if evs else "",
                        index=self.store.index,
                        existing=True,
                    )
        now = self.clock()
        cid = dispatch_id(job.id, now, secrets.token_hex(4))
        spec = children.child_spec(job, cid, meta, payload)
        namespaces.admit(self.store, job.namespace, spec, None)
        txn = self.store.txn()
        _, ev = children.put_child(
            txn, job, spec, now, why=f"dispatched from {job.id}", token=token
        )
        index = self.store.commit(txn)
        self.broker.enqueue(ev)
        return Dispatched(dispatched_job_id=cid, eval_id=ev.id, index=index)
