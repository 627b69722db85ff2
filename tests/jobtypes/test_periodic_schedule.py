"""The periodic schedule, pure: next launches with seconds, time zones and DST, and the
dispatcher's decision (catch-up after an outage, no double launch, prohibit_overlap),
all with a fixed clock."""

from __future__ import annotations

import itertools
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from podium.models.periodic import Periodic, decide, latest_launch, launch_id, next_launch

PARIS = ZoneInfo("Europe/Paris")


def at(*args: int, tz: ZoneInfo = PARIS) -> float:
    return datetime(*args, tzinfo=tz).timestamp()  # type: ignore[misc]


def local(t: float, tz: ZoneInfo = PARIS) -> str:
    return datetime.fromtimestamp(t, tz).strftime("%Y-%m-%d %H:%M:%S%z")


def launches(p: Periodic, start: float, n: int) -> list[str]:
    out, t = [], start
    for _ in range(n):
        nxt = next_launch(p, t)
        assert nxt is not None and nxt > t
        out.append(local(nxt, ZoneInfo(p.time_zone)))
        t = nxt
    return out


def test_six_fields_put_seconds_first() -> None:
    p = Periodic(cron="*/2 * * * * *")
    start = at(2026, 1, 1, 0, 0, 0, tz=ZoneInfo("UTC"))
    assert [next_launch(p, start + i) for i in (0, 0.5, 1, 2)] == [
        start + 2,
        start + 2,
        start + 2,
        start + 4,
    ]
    five = Periodic(cron="*/5 * * * *")
    assert next_launch(five, start) == start + 300


def test_time_zone_is_the_wall_clock_of_the_expression() -> None:
    p = Periodic(cron="0 9 * * *", time_zone="Europe/Paris")
    utc = Periodic(cron="0 9 * * *")
    jan = at(2026, 1, 10, 12, 0, 0, tz=ZoneInfo("UTC"))
    assert local(next_launch(p, jan) or 0) == "2026-01-11 09:00:00+0100"
    assert next_launch(utc, jan) == at(2026, 1, 11, 9, 0, 0, tz=ZoneInfo("UTC"))


def test_spring_forward_skips_nothing() -> None:
    # Paris 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that night
    fixed = Periodic(cron="30 2 * * *", time_zone="Europe/Paris")
    assert launches(fixed, at(2026, 3, 27, 12, 0, 0), 4) == [
        "2026-03-28 02:30:00+0100",
        "2026-03-29 03:30:00+0200",  # as far past the jump as it was meant to be
        "2026-03-30 02:30:00+0200",
        "2026-03-31 02:30:00+0200",
    ]
    hourly = Periodic(cron="0 * * * *", time_zone="Europe/Paris")
    assert launches(hourly, at(2026, 3, 29, 0, 30, 0), 3) == [
        "2026-03-29 01:00:00+0100",
        "2026-03-29 03:00:00+0200",  # one real hour later: 02:00 and 03:00 are one launch
        "2026-03-29 04:00:00+0200",
    ]
    every30 = Periodic(cron="*/30 * * * *", time_zone="Europe/Paris")
    got = [next_launch(every30, at(2026, 3, 29, 1, 0, 0))]
    for _ in range(4):
        got.append(next_launch(every30, got[-1] or 0))
    steps = [b - a for a, b in itertools.pairwise(got)]  # type: ignore[operator]
    assert steps == [1800.0] * 4  # every 30 real minutes through the jump


def test_fall_back_does_not_double_a_named_time() -> None:
    # Paris 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice
    fixed = Periodic(cron="30 2 * * *", time_zone="Europe/Paris")
    assert launches(fixed, at(2026, 10, 23, 12, 0, 0), 3) == [
        "2026-10-24 02:30:00+0200",
        "2026-10-25 02:30:00+0200",  # the first 02:30 only
        "2026-10-26 02:30:00+0100",
    ]


def test_fall_back_keeps_the_rhythm_of_a_wildcard_hour() -> None:
    every30 = Periodic(cron="*/30 * * * *", time_zone="Europe/Paris")
    assert launches(every30, at(2026, 10, 25, 1, 50, 0), 6) == [
        "2026-10-25 02:00:00+0200",
        "2026-10-25 02:30:00+0200",
        "2026-10-25 02:00:00+0100",
        "2026-10-25 02:30:00+0100",
        "2026-10-25 03:00:00+0100",
        "2026-10-25 03:30:00+0100",
    ]


@pytest.mark.parametrize("cron", ["30 2 * * *", "*/30 * * * *", "0 * * * *", "15 1-3 * * *"])
@pytest.mark.parametrize("day", [(2026, 3, 28), (2026, 10, 24)])
def test_ticking_through_a_dst_night_launches_each_instant_once(
    cron: str, day: tuple[int, int, int]
) -> None:
    """The dispatcher's loop, with a fixed clock moved a minute at a time through the
    night: what it launches is exactly the schedule, in order, never twice.  As the
    dispatcher, it asks again once ``next_at`` has come, and also every 17 minutes
    whatever ``next_at`` says (asking early must change nothing)."""
    p = Periodic(cron=cron, time_zone="Europe/Paris")
    start = at(*day, 12, 0, 0)
    end = start + 2 * 86400
    last: float | None = None
    launched: list[float] = []
    now = start
    next_at: float | None = start
    minute = 0
    while now < end:
        if (next_at is not None and now >= next_at) or minute % 17 == 0:
            d = decide(p, last, start, now, running_child=False)
            if d.launch is not None:
                launched.append(d.launch)
            if d.record is not None:
                last = d.record
            assert not d.missed
            next_at = d.next_at
        now += 60
        minute += 1
    assert launched == sorted(set(launched))
    expected, t = [], start
    while (t := next_launch(p, t) or end) < end - 60:
        expected.append(t)
    assert launched == expected
    if cron == "30 2 * * *":
        assert len(launched) == 2  # one a night, through the jump either way


def test_catch_up_after_an_outage_runs_the_newest_missed_launch_once() -> None:
    p = Periodic(cron="*/5 * * * *")
    t0 = at(2026, 5, 1, 10, 0, 0, tz=ZoneInfo("UTC"))
    # launched at 10:00; the leader is away until 11:02: 12 launches were missed
    d = decide(p, t0, t0 - 3600, t0 + 3720, running_child=False)
    assert d.launch == t0 + 3600 and d.record == t0 + 3600 and d.missed
    assert d.next_at == t0 + 3900
    # the next leader (or the next tick) decides from the record: nothing more is due
    again = decide(p, d.record, t0 - 3600, t0 + 3721, running_child=False)
    assert again.launch is None and again.record is None and again.next_at == t0 + 3900


def test_catch_up_is_cheap_for_a_cron_of_seconds_after_a_long_outage() -> None:
    p = Periodic(cron="* * * * * *")
    t0 = at(2026, 5, 1, 10, 0, 0, tz=ZoneInfo("UTC"))
    due, missed = latest_launch(p, t0, t0 + 30 * 86400 + 0.5)
    assert due == t0 + 30 * 86400 and missed


def test_no_launch_before_its_time_and_none_twice() -> None:
    p = Periodic(cron="*/2 * * * * *")
    t0 = 1_800_000_000.0  # an even second
    assert decide(p, None, t0 + 0.1, t0 + 1.9, running_child=False).launch is None
    d = decide(p, None, t0 + 0.1, t0 + 2.0, running_child=False)
    assert d.launch == t0 + 2 and not d.missed
    assert decide(p, d.record, t0 + 0.1, t0 + 2.0, running_child=False).launch is None
    assert decide(p, d.record, t0 + 0.1, t0 + 3.9, running_child=False).launch is None
    assert decide(p, d.record, t0 + 0.1, t0 + 4.0, running_child=False).launch == t0 + 4


def test_prohibit_overlap_skips_and_records_the_launch() -> None:
    p = Periodic(cron="*/2 * * * * *", prohibit_overlap=True)
    t0 = 1_800_000_000.0
    d = decide(p, t0, t0 - 10, t0 + 2, running_child=True)
    assert d.launch is None and d.overlap and d.record == t0 + 2
    # without prohibit_overlap a running child changes nothing
    free = Periodic(cron="*/2 * * * * *")
    assert decide(free, t0, t0 - 10, t0 + 2, running_child=True).launch == t0 + 2


def test_a_new_version_does_not_launch_what_was_due_before_it() -> None:
    p = Periodic(cron="*/5 * * * *")
    t0 = at(2026, 5, 1, 10, 0, 0, tz=ZoneInfo("UTC"))
    # last launch at 10:00, the job re-registered (say, stopped and run again) at 11:02
    d = decide(p, t0, t0 + 3720, t0 + 3721, running_child=False)
    assert d.launch is None and d.next_at == t0 + 3900


def test_disabled_launches_nothing() -> None:
    p = Periodic(cron="* * * * * *", enabled=False)
    assert decide(p, None, 0, 1e9, running_child=False).launch is None


def test_a_cron_that_never_matches_never_launches() -> None:
    p = Periodic(cron="0 0 31 2 *")  # 31 February
    assert next_launch(p, 1_800_000_000.0) is None
    assert decide(p, None, 0, 1_800_000_000.0, running_child=False).next_at is None


def test_launch_ids() -> None:
    assert launch_id("report", 1_800_000_000.0) == "report/periodic-1800000000"
