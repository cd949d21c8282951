"""Cron schedules: errors that name each bad field, due times in UTC across DST, catch-up."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from zoneinfo import ZoneInfo

import pytest

from servicebay.runtime.clock import ManualClock
from servicebay.runtime.schedule import (
    MACROS,
    MAX_CATCH_UP,
    CatchUp,
    CronSchedule,
    ScheduleError,
    parse_cron,
    plan_firings,
    time_zone,
)


def utc(*parts: int) -> datetime:
    year, month, day, hour, minute, second = (*parts, 0, 0, 0)[:6]
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def local(schedule: CronSchedule, dues: Iterator[datetime] | list[datetime]) -> list[str]:
    """Due times as the schedule's wall clock shows them, with the offset."""
    return [d.astimezone(ZoneInfo(schedule.timezone)).isoformat() for d in dues]


def between(schedule: CronSchedule, after: datetime, until: datetime) -> list[datetime]:
    return list(schedule.due_between(after, until))


# Validation ----------------------------------------------------------------------------


def test_the_articles_line_names_both_bad_fields_and_offers_a_fix() -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_cron("0 0 0 0 0")
    error = caught.value
    assert [(p.field, p.index) for p in error.problems] == [("day of month", 2), ("month", 3)]
    message = str(error)
    assert "day of month (field 3): 0 is out of range 1-31" in message
    assert "month (field 4): 0 is out of range 1-12" in message
    assert "'0 0 * * 0' (at 00:00 on Sunday)" in message
    assert "@weekly" in message
    assert "minute (field 1)" not in message


@pytest.mark.parametrize(
    ("expression", "field", "what"),
    [
        ("60 * * * *", "minute (field 1)", "60 is out of range 0-59"),
        ("0 24 * * *", "hour (field 2)", "24 is out of range 0-23"),
        ("0 0 32 * *", "day of month (field 3)", "32 is out of range 1-31"),
        ("0 0 * 13 *", "month (field 4)", "13 is out of range 1-12"),
        ("0 0 * * 8", "day of week (field 5)", "8 is out of range 0-7"),
        ("0 0 * * FRY", "day of week (field 5)", "'FRY' is not a number 0-7 or a name SUN-SAT"),
        ("0 0 * MON *", "month (field 4)", "'MON' is not a number 1-12 or a name JAN-DEC"),
        ("MON * * * *", "minute (field 1)", "'MON' is not a number 0-59"),
        ("*/0 * * * *", "minute (field 1)", "the step after '/' must be a whole number above 0"),
        ("*/x * * * *", "minute (field 1)", "the step after '/' must be a whole number"),
        ("0 */25 * * *", "hour (field 2)", "the step 25 is larger than the range 0-23"),
        ("0 17-9 * * *", "hour (field 2)", "range '17-9' runs backwards"),
        ("0 0 * * FRI-MON", "day of week (field 5)", "range 'FRI-MON' runs backwards"),
        ("1,,2 * * * *", "minute (field 1)", "'1,,2' has an empty list item"),
        (
            "0 0 ? * MON",
            "day of month (field 3)",
            "'?' is Quartz syntax; in five-field cron",
        ),
        ("0 0 15W * *", "day of month (field 3)", "'15W' is not supported"),
        ("0 0 * * 5L", "day of week (field 5)", "'FRI#1'"),
        ("0 0 * * FRI#6", "day of week (field 5)", "the week after '#' must be 1-5"),
        ("0 0 * * -1", "day of week (field 5)", "'' is not a number 0-7"),
    ],
)
def test_a_bad_field_is_named_with_what_is_wrong(expression: str, field: str, what: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_cron(expression)
    assert f"{field}: " in str(caught.value)
    assert what in str(caught.value)
    assert len(caught.value.problems) == 1


def test_every_bad_field_is_reported_at_once() -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_cron("61 25 32 13 8")
    assert [p.index for p in caught.value.problems] == [0, 1, 2, 3, 4]
    assert "Did you mean '0 0 * * *' (at 00:00 every day), also written @daily?" in str(
        caught.value
    )


@pytest.mark.parametrize(
    ("expression", "what"),
    [
        ("", "has no fields; cron needs five: minute hour day-of-month month day-of-week"),
        ("   ", "has no fields"),
        ("0 9 *", "has 3 fields; cron needs five"),
        ("0 0 9 * * 5", "has 6 fields: a seconds field is not supported"),
        ("0 0 9 * * 5", "without the seconds field that is '0 9 * * 5'"),
        ("0 0 9 * * 5 2026", "a seconds field and a year field is not supported"),
        ("@reboot", "'@reboot' is not a schedule"),
        ("@reboot", "server_deployment.json"),
        ("@dayly", "unknown cron macro '@dayly'. Did you mean @daily"),
        ("0 0 30 2 *", "never fires: day 30 never occurs in February (at most 29 days)"),
        ("0 0 31 4,6,9,11 *", "day 31 never occurs in April, June, September, November"),
    ],
)
def test_shapes_that_are_not_a_schedule_are_refused_with_why(expression: str, what: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_cron(expression)
    assert what in str(caught.value)


@pytest.mark.parametrize("macro", sorted(MACROS))
def test_every_macro_fires_like_its_five_fields(macro: str) -> None:
    schedule = parse_cron(macro.upper(), "Europe/Paris")
    spelled_out = parse_cron(MACROS[macro], "Europe/Paris")
    new_year_to_february = (utc(2026, 12, 31), utc(2027, 2, 2))
    assert schedule.expression == macro.upper()
    dues = between(schedule, *new_year_to_february)
    assert dues
    assert dues == between(spelled_out, *new_year_to_february)


@pytest.mark.parametrize(
    ("macro", "count"),
    [("@yearly", 1), ("@annually", 1), ("@monthly", 12), ("@weekly", 52), ("@daily", 365)],
)
def test_macros_fire_as_often_as_their_names_say(macro: str, count: int) -> None:
    year_2027 = (utc(2026, 12, 31, 23, 59), utc(2027, 12, 31, 23, 59))
    assert len(between(parse_cron(macro), *year_2027)) == count


def test_hourly_and_midnight() -> None:
    day = (utc(2027, 3, 1), utc(2027, 3, 2))
    assert len(between(parse_cron("@hourly"), *day)) == 24
    assert between(parse_cron("@midnight"), *day) == [utc(2027, 3, 2)]


def test_names_are_the_numbers_they_stand_for_in_any_case() -> None:
    window = (utc(2026, 1, 1), utc(2027, 1, 1))
    by_name = parse_cron("0 9 * jan,Jul MON-fri")
    by_number = parse_cron("0 9 * 1,7 1-5")
    assert between(by_name, *window) == between(by_number, *window)
    assert len(between(by_name, *window)) == 22 + 23  # weekdays in January and July 2026


def test_sunday_is_0_and_7() -> None:
    window = (utc(2026, 1, 1), utc(2026, 3, 1))
    assert between(parse_cron("0 0 * * 7"), *window) == between(parse_cron("0 0 * * 0"), *window)
    assert all(d.weekday() == 6 for d in between(parse_cron("0 0 * * SUN"), *window))


@pytest.mark.parametrize(
    ("minute_field", "minutes"),
    [
        ("*/15", [0, 15, 30, 45]),
        ("10-50/20", [10, 30, 50]),
        ("5/15", [5, 20, 35, 50]),
        ("0,7,59", [0, 7, 59]),
        ("1-3,40", [1, 2, 3, 40]),
    ],
)
def test_ranges_steps_and_lists(minute_field: str, minutes: list[int]) -> None:
    dues = between(parse_cron(f"{minute_field} 6 * * *"), utc(2026, 5, 1), utc(2026, 5, 1, 23))
    assert [d.minute for d in dues] == minutes
    assert {d.hour for d in dues} == {6}


def test_when_both_day_fields_are_restricted_either_matches() -> None:
    dues = between(parse_cron("0 0 13 * FRI"), utc(2026, 1, 1), utc(2026, 2, 1))
    assert [d.day for d in dues] == [2, 9, 13, 16, 23, 30]  # the 13th, and every Friday


def test_the_31st_fires_only_in_long_months() -> None:
    dues = between(parse_cron("0 12 31 * *"), utc(2026, 1, 1), utc(2027, 1, 1))
    assert [d.month for d in dues] == [1, 3, 5, 7, 8, 10, 12]


def test_l_is_the_last_day_of_each_month() -> None:
    dues = between(parse_cron("0 0 L * *"), utc(2023, 12, 31), utc(2024, 12, 31))
    assert [d.day for d in dues][:4] == [31, 29, 31, 30]  # 2024 is a leap year
    assert len(dues) == 12
    assert between(parse_cron("0 0 L 2 *"), utc(2023, 1, 1), utc(2024, 1, 1)) == [utc(2023, 2, 28)]


def test_february_29_fires_in_leap_years_only() -> None:
    dues = between(parse_cron("0 0 29 2 *"), utc(2023, 1, 1), utc(2033, 1, 1))
    assert dues == [utc(2024, 2, 29), utc(2028, 2, 29), utc(2032, 2, 29)]


def test_nth_weekday_of_the_month() -> None:
    dues = between(parse_cron("0 9 * * FRI#1", "Europe/Berlin"), utc(2026, 1, 1), utc(2026, 4, 1))
    assert [d.day for d in dues] == [2, 6, 6]
    assert all(d.hour == 8 for d in dues)  # 09:00 in Berlin winter time


@pytest.mark.parametrize(
    ("expression", "description"),
    [
        ("0 9 * * 5", "at 09:00 on Friday (America/New_York)"),
        ("30 7 * * MON-FRI", "at 07:30 on Monday, Tuesday, Wednesday, Thursday, Friday"),
        ("*/15 * * * *", "every 15 minutes (America/New_York)"),
        ("@hourly", "every hour on the hour (America/New_York)"),
        ("* * * * SUN", "every minute on Sunday"),
        ("0 0 L * *", "at 00:00 on the last day of the month"),
        ("0 6 1,15 JAN *", "at 06:00 on days 1, 15 of the month in January"),
        ("0 9-17 * * MON-FRI", "on cron schedule '0 9-17 * * MON-FRI' (America/New_York)"),
    ],
)
def test_describe_says_it_in_words(expression: str, description: str) -> None:
    assert description in parse_cron(expression, "America/New_York").describe()


def test_whitespace_is_normalised() -> None:
    schedule = parse_cron("  0\t9  * *  5 ")
    assert schedule.expression == "0 9 * * 5"
    assert schedule.timezone == "UTC"


# Time zones ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "suggested"),
    [
        ("America/NewYork", "'America/New_York'"),
        ("europe/london", "'Europe/London'"),
        ("Europe/Londn", "'Europe/London'"),
        ("asia/kolkata", "'Asia/Kolkata'"),
    ],
)
def test_an_unknown_time_zone_suggests_close_names(given: str, suggested: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_cron("0 9 * * 5", given)
    assert f"unknown time zone {given!r}. Did you mean {suggested}" in str(caught.value)


def test_a_time_zone_with_nothing_close_lists_examples() -> None:
    with pytest.raises(ScheduleError, match="IANA time zone name such as 'UTC'"):
        parse_cron("0 9 * * 5", "Mars/Olympus_Mons")


def test_a_time_zone_is_checked_on_its_own_too() -> None:
    assert time_zone("Europe/London") == ZoneInfo("Europe/London")
    with pytest.raises(ScheduleError, match="Did you mean 'Europe/London'"):
        time_zone("Europe/Londn")


def test_due_times_follow_the_zone_and_are_utc() -> None:
    schedule = parse_cron("0 9 * * 5", "America/New_York")
    winter, summer = schedule.next_after(utc(2026, 1, 1)), schedule.next_after(utc(2026, 7, 1))
    assert (winter, summer) == (utc(2026, 1, 2, 14), utc(2026, 7, 3, 13))
    assert winter.tzinfo is UTC


def test_next_after_is_strictly_after_and_takes_any_aware_datetime() -> None:
    schedule = parse_cron("0 9 * * *", "Asia/Tokyo")
    assert schedule.next_after(utc(2026, 5, 1, 0)) == utc(2026, 5, 2, 0)
    in_tokyo = datetime(2026, 5, 1, 8, 59, 59, 999999, tzinfo=ZoneInfo("Asia/Tokyo"))
    assert schedule.next_after(in_tokyo) == utc(2026, 5, 1, 0)


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="has no time zone"):
        parse_cron("@daily").next_after(datetime(2026, 1, 1))


def test_a_schedule_in_a_non_utc_zone_crosses_the_year_end() -> None:
    new_year_tokyo = parse_cron("0 0 1 1 *", "Asia/Tokyo")
    assert new_year_tokyo.next_after(utc(2026, 6, 1)) == utc(2026, 12, 31, 15)
    eve_la = parse_cron("30 23 31 12 *", "America/Los_Angeles")
    assert eve_la.next_after(utc(2026, 6, 1)) == utc(2027, 1, 1, 7, 30)
    daily_la = parse_cron("0 20 * * *", "America/Los_Angeles")
    dues = between(daily_la, utc(2026, 12, 31), utc(2027, 1, 3))
    assert local(daily_la, dues) == [
        f"{day}T20:00:00-08:00" for day in ("2026-12-30", "2026-12-31", "2027-01-01")
    ]
    assert [d.date().isoformat() for d in dues] == ["2026-12-31", "2027-01-01", "2027-01-02"]


# Daylight saving time --------------------------------------------------------------------

SPRING = {"America/New_York": (2026, 3, 8), "Europe/London": (2026, 3, 29)}
FALL = {"America/New_York": (2026, 11, 1), "Europe/London": (2026, 10, 25)}
# The wall-clock hour skipped in spring and the one repeated in the fall.
GAP_HOUR = {"America/New_York": 2, "Europe/London": 1}
REPEATED_HOUR = {"America/New_York": 1, "Europe/London": 1}


def day_window(zone: str, date: tuple[int, int, int]) -> tuple[datetime, datetime]:
    start = datetime(*date, tzinfo=ZoneInfo(zone)) - timedelta(days=1)
    return start, start + timedelta(days=3)


@pytest.mark.parametrize("zone", sorted(SPRING))
def test_a_time_in_the_spring_gap_fires_once_right_after_it(zone: str) -> None:
    hour = GAP_HOUR[zone]
    schedule = parse_cron(f"30 {hour} * * *", zone)
    dues = local(schedule, between(schedule, *day_window(zone, SPRING[zone])))
    year, month, day = SPRING[zone]
    winter, summer = ("-05:00", "-04:00") if zone.startswith("America") else ("+00:00", "+01:00")
    assert dues == [
        f"{year}-{month:02d}-{day - 1:02d}T{hour:02d}:30:00{winter}",
        f"{year}-{month:02d}-{day:02d}T{hour + 1:02d}:00:00{summer}",
        f"{year}-{month:02d}-{day + 1:02d}T{hour:02d}:30:00{summer}",
    ]


@pytest.mark.parametrize("zone", sorted(FALL))
def test_a_time_in_the_repeated_hour_fires_once_at_its_first_occurrence(zone: str) -> None:
    schedule = parse_cron(f"30 {REPEATED_HOUR[zone]} * * *", zone)
    dues = between(schedule, *day_window(zone, FALL[zone]))
    assert len(dues) == 3
    on_the_day = dues[1]
    year, month, day = FALL[zone]
    summer = "-04:00" if zone.startswith("America") else "+01:00"
    assert local(schedule, [on_the_day]) == [
        f"{year}-{month:02d}-{day:02d}T{REPEATED_HOUR[zone]:02d}:30:00{summer}"
    ]


@pytest.mark.parametrize("zone", sorted(FALL))
@pytest.mark.parametrize("season", ["spring", "fall"])
def test_every_15_minutes_keeps_15_real_minutes_through_dst(zone: str, season: str) -> None:
    date = (SPRING if season == "spring" else FALL)[zone]
    after, until = day_window(zone, date)
    dues = between(parse_cron("*/15 * * * *", zone), after, until)
    gaps = {later - earlier for earlier, later in pairwise(dues)}
    assert gaps == {timedelta(minutes=15)}
    assert dues[0] == after + timedelta(minutes=15)
    assert dues[-1] == until
    assert len(set(dues)) == len(dues)


def test_hourly_fires_25_times_on_the_long_day_and_23_on_the_short_one() -> None:
    zone = ZoneInfo("America/New_York")
    schedule = parse_cron("0 * * * *", "America/New_York")

    def count(date: tuple[int, int, int]) -> int:
        midnight = datetime(*date, tzinfo=zone)
        next_midnight = datetime.combine(midnight.date() + timedelta(days=1), midnight.time(), zone)
        return len(between(schedule, midnight - timedelta(seconds=1), next_midnight))

    assert count(FALL["America/New_York"]) == 25 + 1  # both midnights included
    assert count(SPRING["America/New_York"]) == 23 + 1


def test_minutes_within_a_fixed_repeated_hour_fire_in_its_first_pass_only() -> None:
    schedule = parse_cron("*/15 1 * * *", "America/New_York")
    dues = local(schedule, between(schedule, utc(2026, 11, 1, 4), utc(2026, 11, 1, 12)))
    assert dues == [f"2026-11-01T01:{m:02d}:00-04:00" for m in (0, 15, 30, 45)]


def test_next_after_inside_the_repeated_hour() -> None:
    every_30 = parse_cron("*/30 * * * *", "America/New_York")
    first_pass_0150 = utc(2026, 11, 1, 5, 50)  # 01:50 EDT
    assert every_30.next_after(first_pass_0150) == utc(2026, 11, 1, 6, 0)  # 01:00 EST
    second_pass_0110 = utc(2026, 11, 1, 6, 10)  # 01:10 EST
    assert every_30.next_after(second_pass_0110) == utc(2026, 11, 1, 6, 30)  # 01:30 EST
    at_0130 = parse_cron("30 1 * * *", "America/New_York")
    assert at_0130.next_after(utc(2026, 11, 1, 5, 30)) == utc(2026, 11, 2, 6, 30)


@pytest.mark.parametrize(
    "zone", ["UTC", "America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kathmandu"]
)
# Every one of these zones changes its clocks on a Sunday.
@pytest.mark.parametrize("expression", ["*/30 * * * SUN", "30 1,2 * * *", "0 2 * * 0", "@daily"])
def test_a_year_of_due_times_is_increasing_unique_utc_and_agrees_backwards(
    zone: str, expression: str
) -> None:
    schedule = parse_cron(expression, zone)
    after, until = utc(2026, 1, 1), utc(2027, 1, 1)
    dues = between(schedule, after, until)
    assert dues == sorted(set(dues))
    assert all(d.tzinfo is UTC and after < d <= until for d in dues)
    backwards = list(islice(schedule.due_before(until), len(dues) + 1))
    assert backwards[: len(dues)] == dues[::-1]
    assert backwards[-1] <= after
    pairs = list(pairwise(dues))[::7]
    assert all(schedule.next_after(d) == n for d, n in pairs)


# Catch-up ------------------------------------------------------------------------------


def hourly_after_downtime(down_until: timedelta) -> tuple[CronSchedule, datetime, ManualClock]:
    """An hourly job last due at 09:00 UTC, the scheduler back `down_until` after it."""
    clock = ManualClock(utc(2026, 4, 1, 9))
    last_due = clock.now()
    clock.advance(down_until)
    return parse_cron("@hourly"), last_due, clock


def hours(*values: int) -> list[datetime]:
    return [utc(2026, 4, 1, h) for h in values]


@pytest.mark.parametrize(
    ("catch_up", "fire", "missed"),
    [
        ("none", hours(14), hours(10, 11, 12, 13)),
        ("latest", hours(13, 14), hours(10, 11, 12)),
        ("all", hours(10, 11, 12, 13, 14), []),
    ],
)
def test_catch_up_after_downtime_with_one_due_time_on_time(
    catch_up: CatchUp, fire: list[datetime], missed: list[datetime]
) -> None:
    schedule, last_due, clock = hourly_after_downtime(timedelta(hours=5, seconds=30))
    plan = plan_firings(schedule, last_due, clock.now(), catch_up)
    assert (plan.fire, plan.missed, plan.unlisted_missed) == (fire, missed, False)


@pytest.mark.parametrize(
    ("catch_up", "fire", "missed"),
    [
        ("none", [], hours(10, 11, 12, 13, 14)),
        ("latest", hours(14), hours(10, 11, 12, 13)),
        ("all", hours(10, 11, 12, 13, 14), []),
    ],
)
def test_catch_up_when_no_due_time_is_within_grace(
    catch_up: CatchUp, fire: list[datetime], missed: list[datetime]
) -> None:
    schedule, last_due, clock = hourly_after_downtime(timedelta(hours=5, minutes=30))
    plan = plan_firings(schedule, last_due, clock.now(), catch_up)
    assert (plan.fire, plan.missed) == (fire, missed)


def test_grace_decides_what_is_on_time() -> None:
    schedule, last_due, clock = hourly_after_downtime(timedelta(hours=1, minutes=5))
    late = plan_firings(schedule, last_due, clock.now(), "none")
    lenient = plan_firings(schedule, last_due, clock.now(), "none", grace=timedelta(minutes=10))
    assert (late.fire, late.missed) == ([], hours(10))
    assert (lenient.fire, lenient.missed) == (hours(10), [])


def test_nothing_is_due_again_once_fired() -> None:
    schedule, last_due, clock = hourly_after_downtime(timedelta(minutes=59))
    assert plan_firings(schedule, last_due, clock.now(), "all").fire == []
    clock.advance(60)
    plan = plan_firings(schedule, last_due, clock.now(), "all")
    assert plan.fire == hours(10)
    assert plan_firings(schedule, plan.fire[-1], clock.advance(30), "all").fire == []


@pytest.mark.parametrize("catch_up", ["none", "latest", "all"])
def test_a_new_schedule_fires_only_what_is_on_time(catch_up: CatchUp) -> None:
    schedule = parse_cron("@hourly")
    just_due = plan_firings(schedule, None, utc(2026, 4, 1, 14, 0, 30), catch_up)
    assert (just_due.fire, just_due.missed) == (hours(14), [])
    mid_hour = plan_firings(schedule, None, utc(2026, 4, 1, 14, 30), catch_up)
    assert (mid_hour.fire, mid_hour.missed) == ([], [])


def test_catch_up_all_is_capped_and_a_long_outage_lists_only_recent_misses() -> None:
    clock = ManualClock(utc(2026, 4, 1))
    last_due = clock.now()
    clock.advance(timedelta(days=3, seconds=10))  # 4320 minutes missed
    plan = plan_firings(parse_cron("* * * * *"), last_due, clock.now(), "all")
    on_time = utc(2026, 4, 4)
    assert len(plan.fire) == 1 + MAX_CATCH_UP
    assert plan.fire[-1] == on_time
    assert plan.fire[0] == on_time - timedelta(minutes=MAX_CATCH_UP)
    assert len(plan.missed) == MAX_CATCH_UP
    assert plan.missed[-1] == plan.fire[0] - timedelta(minutes=1)
    assert plan.unlisted_missed


def test_catch_up_must_be_one_of_three() -> None:
    with pytest.raises(ValueError, match="catch_up must be 'none', 'latest' or 'all'"):
        plan_firings(parse_cron("@daily"), None, utc(2026, 1, 1), "some")  # type: ignore[arg-type]
