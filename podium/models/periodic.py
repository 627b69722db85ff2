"""Periodic jobs: the ``periodic`` block of a batch job, and when it launches.

Everything here is pure (no clock, no store): :func:`next_launch` and :func:`decide`
take the time as an argument, so the periodic dispatcher (``podium.server.periodic``)
is a thin loop around them and the tests drive them with a fixed clock, across
daylight-saving transitions included.

Cron expressions are parsed by ``croniter`` (imported on first use: it costs ~35 ms,
which a CLI that never touches a periodic job should not pay).  Five fields are the
usual ``minute hour day-of-month month day-of-week``; six put **seconds first**
(``*/2 * * * * *``: every two seconds), as Nomad and Quartz write them.

Time zones and daylight saving (the rule ``decide`` follows, the one Vixie cron
follows; docs/periodic.md shows it with examples):

- the expression is matched against the wall clock of ``time_zone`` (default UTC);
- a wall time that does not exist (the hour skipped when clocks go forward) launches
  at the same distance past the jump (``02:30`` on the spring-forward night in Paris
  runs at ``03:30`` CEST): nothing is skipped, and a time that falls on a real launch
  (``0 * * * *``'s ``02:00`` and ``03:00``) is one launch;
- a wall time that happens twice (the hour repeated when clocks go back) launches once
  (the first time) when the expression names its minute and hour; one whose minute or
  hour field is a wildcard (``*/5 * * * *``, ``0 * * * *``) runs by the clock, in both
  passes, so that it keeps its real-time rhythm.
"""

from __future__ import annotations

import calendar
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

DAY = 86400.0
_SEARCH_YEARS = 5
"""A cron that matches nothing within this many years never launches (``0 0 30 2 *``)."""
_TRANSITION_HORIZON = 400 * DAY
_AFFECTED = 6 * 3600.0
"""How far after a UTC-offset change its skipped or repeated wall times can reach."""


class Periodic(BaseModel):
    """``periodic:`` on a batch job: launch a child job on a cron schedule.

    The job itself is a template that is never placed; each launch is a child job
    ``<job>/periodic-<unix time>`` with its own allocations and history.
    """

    model_config = ConfigDict(extra="forbid")

    cron: str = Field(min_length=1, max_length=256)
    """Five fields (minute hour day month weekday), or six with seconds first."""
    time_zone: str = Field(default="UTC", max_length=64)
    """An IANA time zone (``Europe/Paris``) whose wall clock the expression follows."""
    prohibit_overlap: bool = False
    """Skip a launch while an earlier launch still runs (it is not run later)."""
    enabled: bool = True
    """``false`` keeps the job but launches nothing (``job periodic force`` still does)."""

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        check_cron(v)
        return " ".join(v.split())

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        zone(v)
        return v


def check_cron(expr: str) -> None:
    """ValueError unless ``expr`` is a cron expression of five or six fields."""
    fields = expr.split()
    if len(fields) not in (5, 6):
        raise ValueError(
            f"cron {expr!r} has {len(fields)} fields: write five (minute hour day month "
            "weekday, such as '*/5 * * * *') or six with seconds first ('*/2 * * * * *')"
        )
    from croniter import croniter

    try:
        croniter(expr, datetime(2000, 1, 1), second_at_beginning=len(fields) == 6)
    except (ValueError, KeyError) as exc:  # croniter's errors derive from ValueError
        raise ValueError(f"cron {expr!r} is not a valid expression: {exc}") from None


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``, or a ValueError that says so."""
    try:
        return _zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"time_zone {name!r} is not a known IANA time zone (such as UTC, "
            "Europe/Paris, America/New_York)"
        ) from None


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


# --------------------------------------------------------------------------- the schedule
def _offset(tz: ZoneInfo, t: float) -> float:
    """``tz``'s UTC offset at instant ``t`` (seconds east of UTC)."""
    off = datetime.fromtimestamp(t, tz).utcoffset()
    return off.total_seconds() if off is not None else 0.0


def _transition_after(tz: ZoneInfo, t: float, horizon: float) -> float | None:
    """The first instant after ``t`` (to the second) at which ``tz``'s offset changes,
    looked for within ``horizon`` seconds; None when it does not change there."""
    first = datetime.fromtimestamp(t, UTC).year
    last = datetime.fromtimestamp(t + horizon, UTC).year
    for year in range(first, last + 1):
        for b in _year_transitions(tz.key, year):
            if b > t:
                return b if b <= t + horizon else None
    return None


@lru_cache(maxsize=1024)
def _year_transitions(name: str, year: int) -> tuple[float, ...]:
    """The instants in (or ending) UTC year ``year`` at which zone ``name``'s offset
    changes: sampled a day at a time (offsets never change twice in a day), bisected
    to the second, and remembered."""
    tz = _zone(name)
    lo = float(calendar.timegm((year, 1, 1, 0, 0, 0)))
    end = float(calendar.timegm((year + 1, 1, 1, 0, 0, 0)))
    out: list[float] = []
    while lo < end:
        hi = min(lo + DAY, end)
        o = _offset(tz, lo)
        if _offset(tz, hi) != o:
            a, b = int(lo), int(hi)  # offset(a) == o, offset(b) != o
            while b - a > 1:
                mid = (a + b) // 2
                if _offset(tz, mid) == o:
                    a = mid
                else:
                    b = mid
            out.append(float(b))
        lo = hi
    return tuple(out)


def _naive(wall: float) -> datetime:
    return datetime(1970, 1, 1) + timedelta(seconds=wall)


def _wall_seconds(dt: datetime) -> float:
    return float(calendar.timegm(dt.timetuple()))


class Cron:
    """A parsed expression over wall-clock seconds (``calendar.timegm`` of the naive
    local time); ``fixed``: its minute and hour are both named (not wildcards)."""

    def __init__(self, expr: str) -> None:
        from croniter import croniter

        fields = expr.split()
        self.expr = expr
        self.seconds = len(fields) == 6
        minute, hour = (fields[1], fields[2]) if self.seconds else (fields[0], fields[1])
        self.fixed = not (minute.startswith("*") or hour.startswith("*"))
        self._it: Any = croniter(expr, datetime(2000, 1, 1), second_at_beginning=self.seconds)

    def after(self, wall: float) -> float:
        """The first matching wall time strictly after ``wall`` (whole seconds)."""
        from croniter import CroniterBadDateError

        self._it.set_current(_naive(math.floor(wall)), force=True)
        try:
            nxt: Any = self._it.get_next(datetime)
        except CroniterBadDateError:  # matches nothing for decades (31 February)
            return math.inf
        return _wall_seconds(nxt)


@lru_cache(maxsize=1024)
def _cron(expr: str) -> Cron:
    """Parsed once per expression (parsing is most of croniter's cost)."""
    return Cron(expr)


def next_launch(periodic: Periodic, after: float) -> float | None:
    """The first launch instant (unix seconds) strictly after ``after``, by the rules
    of the module's docstring; None when the expression matches nothing for years."""
    cron = _cron(periodic.cron)
    tz = zone(periodic.time_zone)
    # The segment of constant UTC offset that holds ``after``: where it began, if a
    # change happened recently enough for its skipped or repeated hour to matter.
    start: float | None = None
    before: float | None = None
    if _offset(tz, after - _AFFECTED) != _offset(tz, after):
        start = _transition_after(tz, after - _AFFECTED, _AFFECTED)
        before = _offset(tz, after - _AFFECTED)
    lo = after
    limit = after + _SEARCH_YEARS * 366 * DAY
    while lo < limit:
        o = _offset(tz, lo)
        end = _transition_after(tz, lo, _TRANSITION_HORIZON)
        seg_end = end if end is not None else lo + _TRANSITION_HORIZON
        best = _in_segment(cron, after, start, before, o, seg_end)
        if best == math.inf:  # croniter found no match for decades
            return None
        if best is not None:
            return best
        if end is None:
            start, before = None, None
        else:
            start, before = end, o
        lo = seg_end
    return None


def _in_segment(
    cron: Cron, after: float, start: float | None, before: float | None, o: float, end: float
) -> float | None:
    """The first launch after ``after`` among the instants ``[start, end)`` of offset
    ``o`` (the offset before ``start`` was ``before``; both None: no change that
    matters), or None."""
    found: list[float] = []
    # Wall times that exist in this segment, each at instant wall - o.
    wall_from = after + o
    if start is not None:
        wall_from = max(wall_from, start + o - 1)
        if before is not None and before > o and cron.fixed:
            # clocks went back: the repeated walls already launched in the last segment
            wall_from = max(wall_from, start + before - 1)
    w = cron.after(wall_from)
    if w == math.inf:
        return w
    if w - o < end:
        found.append(w - o)
    # Clocks went forward at ``start``: the skipped walls launch as far past the jump.
    if start is not None and before is not None and before < o:
        gap_from = max(after + before, start + before - 1)
        g = cron.after(gap_from)
        if g < start + o and g - before > after:
            found.append(g - before)
    return min(found) if found else None


def latest_launch(periodic: Periodic, after: float, now: float) -> tuple[float | None, bool]:
    """The last launch instant in ``(after, now]``, and whether earlier ones in that
    span were passed over (None, False: none is due)."""
    first = next_launch(periodic, after)
    if first is None or first > now:
        return None, False
    # Look back over growing windows so that an outage of months with a cron of seconds
    # costs a few dozen steps, not millions.
    for window in (60.0, 3600.0, DAY, 32 * DAY, 367 * DAY, math.inf):
        frm = max(after, now - window)
        t = first if frm <= after else next_launch(periodic, frm)
        if t is None or t > now:
            continue
        last = t
        while True:
            nxt = next_launch(periodic, last)
            if nxt is None or nxt > now:
                break
            last = nxt
        return last, last != first
    return first, False  # pragma: no cover  (the infinite window always returns)


class ForceAnswer(BaseModel):
    """``POST /v1/job/{id}/periodic/force``: the child launched now."""

    job_id: str
    eval_id: str
    index: int


@dataclass(frozen=True)
class Decision:
    """What the periodic dispatcher does for one job at one instant."""

    launch: float | None = None
    """Launch a child for this scheduled instant now (its id: ``periodic-<int>``)."""
    record: float | None = None
    """Store this as the job's last launch (set whenever a launch was due: run or not)."""
    missed: bool = False
    """Earlier launches were due too (the leader was away): they are not run."""
    overlap: bool = False
    """A launch was due but an earlier child still runs (``prohibit_overlap``): skipped."""
    next_at: float | None = None
    """When a launch is next due (None: never)."""


def decide(
    periodic: Periodic,
    last_launch: float | None,
    since: float,
    now: float,
    *,
    running_child: bool,
) -> Decision:
    """The dispatcher's decision for one periodic job, a pure function.

    ``last_launch``: the scheduled instant of its last launch (durable, on the job);
    ``since``: when the current version was registered (launches before are not due);
    ``running_child``: an earlier launch has not finished.  At most one launch is due
    at a time: after an outage the newest missed instant runs once and older ones are
    dropped (``missed``), and an instant is recorded before its child exists, so a new
    leader never runs it again.
    """
    if not periodic.enabled:
        return Decision()
    base = since if last_launch is None else max(last_launch, since)
    due, missed = latest_launch(periodic, base, now)
    if due is None:
        return Decision(next_at=next_launch(periodic, base))
    following = next_launch(periodic, due)
    if periodic.prohibit_overlap and running_child:
        return Decision(record=due, missed=missed, overlap=True, next_at=following)
    return Decision(launch=due, record=due, missed=missed, next_at=following)


def launch_id(parent: str, at: float) -> str:
    """The child job of a launch scheduled at ``at``: ``<parent>/periodic-<unix time>``."""
    return f"{parent}/periodic-{int(at)}"


def describe_next(periodic: Periodic, now: float) -> str:
    """The next launch as people read it (for ``job status``), in the job's zone."""
    nxt = next_launch(periodic, now)
    if nxt is None:
        return "never (the expression matches no time in the next years)"
    local = datetime.fromtimestamp(nxt, zone(periodic.time_zone))
    utc = datetime.fromtimestamp(nxt, UTC)
    return f"{local.isoformat()} ({utc.strftime('%H:%M:%S')} UTC)"
