"""Cron schedules: validation that names every bad field, and due times in real (UTC) time.

An expression is five fields, ``minute hour day-of-month month day-of-week``, or one of
the macros ``@yearly @annually @monthly @weekly @daily @midnight @hourly``. Fields take
``*``, numbers, ranges ``a-b``, steps ``*/n`` ``a-b/n`` ``a/n``, comma lists, the names
``JAN``-``DEC`` and ``SUN``-``SAT`` (7 is Sunday too), ``L`` (last day of the month) in
the day-of-month field and ``DAY#n`` (the n-th such weekday of the month) in the
day-of-week field. When both day fields are restricted a day matching either fires, as
in Vixie cron. Everything is validated here so that each error can say which field is
wrong and how to fix it; croniter computes the matching wall-clock times.

The fields are matched against the wall clock of the schedule's IANA time zone, then
turned into UTC instants. Daylight saving time:

- A wall-clock time that does not exist (the spring-forward gap) fires once, at the
  first instant after the gap: a 02:30 daily job fires at 03:00 local on that day.
  Several times inside one gap (``*/15`` at 02:00, 02:15...) still fire only once.
- A wall-clock time that happens twice (fall-back) fires once, at its first occurrence,
  when the hour field names particular hours (``30 1 * * *``, ``*/15 1 * * *``).
- When the hour field matches every hour (``*/15 * * * *``, ``5 * * * *``) the schedule
  is about elapsed time rather than a time of day, so it fires at both occurrences:
  ``*/15`` keeps firing every 15 real minutes through the repeated hour.

Either way every due time is an aware UTC datetime, and a schedule's due times are
strictly increasing: none is produced twice.

`plan_firings` decides, after an interruption, which due times run and which are
recorded as missed: see its docstring.
"""

from __future__ import annotations

import calendar
import difflib
import heapq
import math
import re
import zoneinfo
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Literal

from croniter import croniter

MACROS: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
FIELD_ORDER = "minute hour day-of-month month day-of-week"
MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_MONTH_WORDS = tuple(calendar.month_name[1:])
_DAY_WORDS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_NUMBER = re.compile(r"[0-9]+")
_ITEM = re.compile(r"(?P<base>[^/]*)(?:/(?P<step>.*))?")
_UNSUPPORTED = re.compile(r"[0-9]*(?:L|W|LW)[0-9]*", re.IGNORECASE)

CatchUp = Literal["none", "latest", "all"]
DEFAULT_GRACE = timedelta(seconds=60)
MAX_CATCH_UP = 1000
"""Most past due times that `catch_up="all"` fires, and most missed ones that are listed."""


@dataclass(frozen=True)
class _Spec:
    """One of the five fields: its name, its range and the names it accepts."""

    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    name_start: int = 0

    def value(self, text: str) -> int:
        """`text` as a number in range, or a name; ValueError says what is wrong."""
        if _NUMBER.fullmatch(text):
            number = int(text)
            if not self.low <= number <= self.high:
                raise ValueError(f"{number} is out of range {self.low}-{self.high}")
            return number
        if text.upper() in self.names:
            return self.names.index(text.upper()) + self.name_start
        raise ValueError(f"{text!r} is not {self._accepts()}")

    def _accepts(self) -> str:
        what = f"a number {self.low}-{self.high}"
        if self.names:
            what += f" or a name {self.names[0]}-{self.names[-1]}"
        return what


SPECS = (
    _Spec("minute", 0, 59),
    _Spec("hour", 0, 23),
    _Spec("day of month", 1, 31),
    _Spec("month", 1, 12, MONTH_NAMES, name_start=1),
    _Spec("day of week", 0, 7, DAY_NAMES),
)
_MINUTE, _HOUR, _DOM, _MONTH, _DOW = range(5)
# What a bad field is replaced with in the suggested fix: a time of day stays a time of
# day (00), a date part that cannot be read matches every day.
_FIX_VALUE = ("0", "0", "*", "*", "*")


@dataclass(frozen=True)
class FieldProblem:
    """What is wrong with one field: `index` is 0-based, `field` its name."""

    index: int
    field: str
    text: str
    message: str

    def __str__(self) -> str:
        return f"{self.field} (field {self.index + 1}): {self.message}"


class ScheduleError(ValueError):
    """A cron expression or time zone that cannot be used, and how to fix it."""

    def __init__(
        self,
        message: str,
        *,
        expression: str = "",
        problems: tuple[FieldProblem, ...] = (),
        fix: str = "",
    ) -> None:
        self.expression = expression
        self.problems = problems
        self.fix = fix
        super().__init__(f"{message} {fix}".strip())


@dataclass(frozen=True)
class _Field:
    """A validated field: the set it matches, or None when it uses `L` or `#`."""

    text: str
    values: frozenset[int] | None
    every: bool


def _parse_field(spec: _Spec, text: str) -> _Field:
    """Validate one field; ValueError says what is wrong with it."""
    if text == "?":
        raise ValueError("'?' is Quartz syntax; in five-field cron write '*'")
    values: set[int] = set()
    special = False
    for item in text.split(","):
        if not item:
            raise ValueError(f"{text!r} has an empty list item (two commas, or one at an end)")
        if spec is SPECS[_DOM] and item.upper() == "L":
            special = True
            continue
        if spec is SPECS[_DOW] and "#" in item:
            day, _, nth = item.partition("#")
            spec.value(day)
            if not (_NUMBER.fullmatch(nth) and 1 <= int(nth) <= 5):
                raise ValueError(f"in {item!r} the week after '#' must be 1-5")
            special = True
            continue
        values.update(_parse_item(spec, item))
    full = set(range(spec.low, spec.high + 1))
    if spec is SPECS[_DOW]:
        values = {v % 7 for v in values}
        full = set(range(7))
    return _Field(text, None if special else frozenset(values), not special and values == full)


def _parse_item(spec: _Spec, item: str) -> range:
    """The values one list item (`*`, `5`, `1-5`, `*/15`, `10-50/20`, `MON`) matches."""
    match = _ITEM.fullmatch(item)
    assert match is not None  # the pattern matches any string
    base, step_text = match["base"], match["step"]
    if _UNSUPPORTED.fullmatch(base):
        raise ValueError(
            f"{item!r} is not supported: of the 'L' and 'W' forms only a lone 'L' in the "
            "day-of-month field (the last day of the month) is; for the n-th weekday of "
            "the month write e.g. 'FRI#1' in the day-of-week field"
        )
    if base == "*":
        low, high = spec.low, spec.high
    elif "-" in base:
        first, _, last = base.partition("-")
        low, high = spec.value(first), spec.value(last)
        if low > high:
            raise ValueError(f"range {base!r} runs backwards; write it low to high, or as a list")
    else:
        low = spec.value(base)
        high = spec.high if step_text is not None else low
    step = 1
    if step_text is not None:
        if not _NUMBER.fullmatch(step_text) or int(step_text) == 0:
            raise ValueError(f"in {item!r} the step after '/' must be a whole number above 0")
        step = int(step_text)
        if step > spec.high - spec.low + 1:
            raise ValueError(
                f"in {item!r} the step {step} is larger than the range {spec.low}-{spec.high}"
            )
    return range(low, high + 1, step)


def _shape_error(expression: str, fields: list[str]) -> ScheduleError:
    """An expression with the wrong number of fields, or an unknown macro."""
    count = len(fields)
    if count == 1 and expression.startswith("@"):
        if expression.lower() == "@reboot":
            return ScheduleError(
                "'@reboot' is not a schedule: a cron deployment runs at due times.",
                expression=expression,
                fix="For a process that starts and keeps running, deploy it with "
                "server_deployment.json; for a daily job write '@daily'.",
            )
        close = difflib.get_close_matches(expression.lower(), list(MACROS), n=2)
        hint = f"Did you mean {' or '.join(close)}? " if close else ""
        return ScheduleError(
            f"unknown cron macro {expression!r}.",
            expression=expression,
            fix=f"{hint}Macros are {', '.join(MACROS)}.",
        )
    if count in (6, 7):
        shorter = " ".join(fields[1:6])
        return ScheduleError(
            f"cron expression {expression!r} has {count} fields: a seconds field"
            f"{' and a year field' if count == 7 else ''} is not supported, "
            "schedules have minute resolution.",
            expression=expression,
            fix=f"Write five fields ({FIELD_ORDER}); without the seconds field that is "
            f"{shorter!r}.",
        )
    got = "no fields" if count == 0 else f"{count} field{'s' * (count != 1)}"
    return ScheduleError(
        f"cron expression {expression!r} has {got}; cron needs five: {FIELD_ORDER}.",
        expression=expression,
        fix="For example '0 9 * * 5' runs at 09:00 every Friday; macros like '@daily' also work.",
    )


def _never_fires(fields: tuple[_Field, ...]) -> str | None:
    """Why days of month and months chosen can never meet (`31 * in APR`), if they can't."""
    dom, month, dow = fields[_DOM], fields[_MONTH], fields[_DOW]
    if dom.values is None or month.values is None or not dow.every or dom.every:
        return None
    first_day = min(dom.values)
    longest = max(29 if m == 2 else calendar.monthrange(2001, m)[1] for m in month.values)
    if first_day <= longest:
        return None
    months = ", ".join(_MONTH_WORDS[m - 1] for m in sorted(month.values))
    return f"day {first_day} never occurs in {months} (at most {longest} days)"


@cache
def _timezone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def time_zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA zone `name`; an unknown one is a ScheduleError suggesting close names."""
    names = _timezone_names()
    if name in names:
        return zoneinfo.ZoneInfo(name)
    by_lower = {n.lower(): n for n in names}
    exact = by_lower.get(name.strip().lower().replace(" ", "_"))
    close = [exact] if exact else []
    close += [by_lower[n] for n in difflib.get_close_matches(name.lower(), by_lower, n=3)]
    close = list(dict.fromkeys(close))[:3]
    hint = f"Did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise ScheduleError(
        f"unknown time zone {name!r}.",
        fix=f"{hint}Use an IANA time zone name such as 'UTC', 'Europe/London' or "
        "'America/New_York'.",
    )


def parse_cron(expression: str, timezone: str = "UTC") -> CronSchedule:
    """Validate `expression` in `timezone`; a ScheduleError names every bad field."""
    text = " ".join(expression.split())
    fields_text = text.split(" ") if text else []
    if len(fields_text) == 1 and text.lower() in MACROS:
        five = MACROS[text.lower()].split(" ")
    elif len(fields_text) == 5:
        five = fields_text
    else:
        raise _shape_error(text, fields_text)
    parsed: list[_Field | None] = []
    problems: list[FieldProblem] = []
    for index, (spec, part) in enumerate(zip(SPECS, five, strict=True)):
        try:
            parsed.append(_parse_field(spec, part))
        except ValueError as exc:
            parsed.append(None)
            problems.append(FieldProblem(index, spec.name, part, str(exc)))
    if problems:
        raise _field_error(text, five, problems)
    fields = tuple(f for f in parsed if f is not None)
    never = _never_fires(fields)
    if never is not None:
        raise ScheduleError(
            f"cron expression {text!r} never fires: {never}.",
            expression=text,
            fix="Pick a day that every chosen month has, or 'L' for the last day of the month.",
        )
    return CronSchedule(text, timezone, time_zone(timezone), " ".join(five), fields)


def _field_error(text: str, five: list[str], problems: list[FieldProblem]) -> ScheduleError:
    """One error naming every bad field, with a corrected expression when one exists."""
    bad = {p.index for p in problems}
    fix = f"Fields are: {FIELD_ORDER}."
    suggestion = " ".join(_FIX_VALUE[i] if i in bad else part for i, part in enumerate(five))
    try:
        corrected = parse_cron(suggestion)
    except ScheduleError:
        pass
    else:
        same = [m for m, e in MACROS.items() if e == suggestion][:1]
        also = f", also written {same[0]}" if same else ""
        fix += f" Did you mean {suggestion!r} ({corrected.describe(zone=False)}){also}?"
    return ScheduleError(
        f"invalid cron expression {text!r}: {'; '.join(str(p) for p in problems)}.",
        expression=text,
        problems=tuple(problems),
        fix=fix,
    )


@dataclass(frozen=True)
class CronSchedule:
    """A validated cron expression in an IANA time zone; build it with `parse_cron`."""

    expression: str
    """As written (whitespace normalised); a macro stays a macro."""
    timezone: str
    zone: zoneinfo.ZoneInfo = field(repr=False)
    fields_text: str = field(repr=False)
    """The five fields croniter matches (a macro expanded)."""
    fields: tuple[_Field, ...] = field(repr=False)

    @property
    def every_hour(self) -> bool:
        """Whether the hour field matches every hour: see the module docstring on DST."""
        return self.fields[_HOUR].every

    def describe(self, *, zone: bool = True) -> str:
        """A short sentence ("at 09:00 on Friday (America/New_York)"), else the expression."""
        sentence = _describe(self.fields) or f"on cron schedule {self.expression!r}"
        return f"{sentence} ({self.timezone})" if zone else sentence

    def next_after(self, instant: datetime) -> datetime:
        """The first due time strictly after `instant` (aware), in UTC."""
        for due in self._forward(instant):
            return due
        raise ScheduleError(
            f"{self.expression!r} has no due time after {instant.isoformat()}: the calendar "
            "ends in year 9999."
        )

    def due_between(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """Due times in (`after`, `until`], increasing, in UTC."""
        for due in self._forward(after):
            if due > until:
                return
            yield due

    def due_before(self, until: datetime) -> Iterator[datetime]:
        """Due times at or before `until`, most recent first, in UTC."""
        return self._backward(until)

    def _forward(self, after: datetime) -> Iterator[datetime]:
        """Due times strictly after `after`, increasing.

        Croniter walks the wall clock; each wall time maps to one instant, or two in a
        repeated hour (see the module docstring), and `_occurrences` merges them.
        """
        local = _aware(after).astimezone(self.zone)
        wall = local.replace(tzinfo=None, fold=0)
        first, second = self._instants_of(wall)
        # In the first pass of a repeated hour, the second pass of earlier wall times
        # is still ahead: start the walk at the top of the repeated stretch.
        start = wall - timedelta(seconds=second - first) if local.fold == 0 else wall
        for due in self._occurrences(start, forward=True):
            if due > after.timestamp():
                yield datetime.fromtimestamp(due, UTC)

    def _backward(self, until: datetime) -> Iterator[datetime]:
        """Due times at or before `until`, decreasing (the mirror of `_forward`)."""
        local = _aware(until).astimezone(self.zone)
        wall = local.replace(tzinfo=None, fold=0)
        first, second = self._instants_of(wall)
        start = wall + timedelta(seconds=second - first) if local.fold == 1 else wall
        for due in self._occurrences(start, forward=False):
            if due <= until.timestamp():
                yield datetime.fromtimestamp(due, UTC)

    def _instants_of(self, wall: datetime) -> tuple[float, float]:
        """POSIX times of `wall` read with fold 0 and fold 1 (PEP 495).

        Equal when `wall` happens once; first < second in a repeated hour; first > second
        in a gap (fold 0 reads it with the offset from before the change).
        """
        return (
            wall.replace(tzinfo=self.zone, fold=0).timestamp(),
            wall.replace(tzinfo=self.zone, fold=1).timestamp(),
        )

    def _occurrences(self, start: datetime, *, forward: bool) -> Iterator[float]:
        """Due POSIX times from wall time `start` (inclusive) onwards or backwards.

        Each direction's instants come from two monotone streams (first passes and
        second passes of wall times), so a heap releases an instant once no later wall
        time can produce one before it; equal instants (a gap) are released once.
        """
        sign = 1 if forward else -1
        cursor = croniter(self.fields_text, start - timedelta(microseconds=1) * sign, day_or=True)
        step: Callable[[], datetime] = (
            (lambda: cursor.get_next(datetime)) if forward else (lambda: cursor.get_prev(datetime))
        )
        pending: list[float] = []
        last: float | None = None
        while True:
            try:
                wall: datetime | None = step()
            except (OverflowError, ValueError):  # the calendar ends (years 1 and 9999)
                wall = None
            if wall is None:
                horizon = math.inf
            else:
                first, second = self._instants_of(wall)
                if first > second:
                    instants = [self._gap_end(second, first)]
                    latest = instants[0]
                else:
                    both = first < second and self.every_hour
                    instants = [first, second] if both else [first]
                    latest = second
                for instant in instants:
                    heapq.heappush(pending, instant * sign)
                # Later wall times never map before this one's first instant; earlier
                # ones never after its last (with or without a repeated hour's second
                # pass).
                horizon = (instants[0] if forward else latest) * sign
            while pending and pending[0] <= horizon:
                due = heapq.heappop(pending) * sign
                if due != last:
                    last = due
                    yield due
            if wall is None:
                return

    def _gap_end(self, earlier: float, later: float) -> float:
        """The instant the clock jumps forward, between two readings of a gap wall time."""
        offset_after = datetime.fromtimestamp(later, self.zone).utcoffset()
        low, high = earlier, later
        while high - low > 1:
            middle = (low + high) // 2
            if datetime.fromtimestamp(middle, self.zone).utcoffset() == offset_after:
                high = middle
            else:
                low = middle
        return high


def _aware(instant: datetime) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{instant!r} has no time zone: schedules need aware datetimes")
    return instant


def _describe(fields: tuple[_Field, ...]) -> str | None:
    """A sentence for the common shapes; None when the fields are too irregular."""
    time = _describe_time(fields[_MINUTE], fields[_HOUR])
    days = _describe_days(fields[_DOM], fields[_DOW])
    month = fields[_MONTH]
    if time is None or days is None or month.values is None:
        return None
    periodic = time.startswith("every") and days == "every day"
    parts = [time] if periodic else [time, days]
    if not month.every:
        parts.append("in " + _words(_MONTH_WORDS, month.values, offset=1))
    return " ".join(p for p in parts if p)


def _describe_time(minute: _Field, hour: _Field) -> str | None:
    minutes, hours = sorted(minute.values or ()), sorted(hour.values or ())
    if len(minutes) == 1 and 0 < len(hours) <= 4:
        return "at " + ", ".join(f"{h:02d}:{minutes[0]:02d}" for h in hours)
    if not hour.every:
        return None
    if minute.every:
        return "every minute"
    if len(minutes) == 1:
        return "every hour on the hour" if minutes[0] == 0 else f"every hour at :{minutes[0]:02d}"
    step = minutes[1] - minutes[0]
    if minutes[0] == 0 and 60 % step == 0 and minutes == list(range(0, 60, step)):
        return f"every {step} minutes"
    return None


def _describe_days(dom: _Field, dow: _Field) -> str | None:
    if dom.every and dow.every:
        return "every day"
    parts = []
    if not dom.every:
        if dom.text.upper() == "L":
            parts.append("on the last day of the month")
        elif dom.values is None:
            return None
        else:
            days = sorted(dom.values)
            parts.append(f"on day{'s' * (len(days) > 1)} {', '.join(map(str, days))} of the month")
    if not dow.every:
        if dow.values is None:
            return None
        parts.append("on " + _words(_DAY_WORDS, dow.values))
    return " or ".join(parts)


def _words(names: tuple[str, ...], values: frozenset[int], offset: int = 0) -> str:
    return ", ".join(names[v - offset] for v in sorted(values))


@dataclass(frozen=True)
class FiringPlan:
    """Which due times run now and which are recorded as missed (both increasing)."""

    fire: list[datetime]
    missed: list[datetime]
    unlisted_missed: bool = False
    """True when more than `MAX_CATCH_UP` due times were missed and the oldest are not
    listed (after a long outage of a frequent schedule)."""


def plan_firings(
    schedule: CronSchedule,
    last_due: datetime | None,
    now: datetime,
    catch_up: CatchUp,
    grace: timedelta = DEFAULT_GRACE,
) -> FiringPlan:
    """Sort the due times in (`last_due`, `now`] into fired and missed.

    A due time within `grace` of `now` is on time and fires. Older ones were missed
    (the scheduler was down or late): `catch_up` "none" records them all as missed,
    "latest" fires the most recent of them and records the rest, "all" fires them all
    up to the `MAX_CATCH_UP` most recent, recording any older ones as missed. A new
    schedule (`last_due` None) has missed nothing: only a due time within `grace` fires.
    At most `MAX_CATCH_UP` missed due times are listed, the most recent ones.
    """
    if catch_up not in ("none", "latest", "all"):
        raise ValueError(f"catch_up must be 'none', 'latest' or 'all', not {catch_up!r}")
    on_time_after = now - grace
    floor = on_time_after if last_due is None else last_due
    firing = {"none": 0, "latest": 1, "all": MAX_CATCH_UP}[catch_up]
    on_time: list[datetime] = []
    late: list[datetime] = []
    exhausted = True
    for due in schedule.due_before(now):
        if due <= floor:
            break
        if due > on_time_after:
            on_time.append(due)
        elif len(late) == firing + MAX_CATCH_UP:
            exhausted = False
            break
        else:
            late.append(due)
    caught_up, missed = late[:firing], late[firing:]
    return FiringPlan(
        fire=sorted(caught_up + on_time),
        missed=sorted(missed),
        unlisted_missed=not exhausted,
    )
