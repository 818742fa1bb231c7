"""Cron slots of a schedule: the UTC instants a cron expression fires at in a time zone, DST included.

croniter matches wall-clock times; here it is given naive local times, and each match is turned into an
instant with `fold=0` (PEP 495), so the daylight-saving transitions behave as people expect:

- a slot in the hour that is skipped in spring (02:30 in Europe/Berlin on the last Sunday of March) does
  not exist; `fold=0` reads it with the offset before the change, which is the instant 03:30 local time:
  it runs once, an hour "late" by the wall clock;
- a slot in the hour that repeats in autumn (02:30 on the last Sunday of October) exists twice; it runs
  once, at its first occurrence (summer time).

Naive local times map to instants monotonically except around such changes, where they can go back by
the size of the change. `iter_slots` therefore looks MARGIN around each window and yields each instant
once, in order; the scheduler's unique (schedule, slot) key makes the rest exactly-once.
"""

from __future__ import annotations

import functools
import heapq
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import croniter

# Larger than any UTC-offset change of a zone at one transition (DST is 1 h; a few zones changed by 2 h).
MARGIN = timedelta(hours=3)
ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_MONTHS = "JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC"
_DAYS = "SUN|MON|TUE|WED|THU|FRI|SAT"
_STEP = r"(?:/[1-9]\d?)?"


def _field(atom: str, extra: str = "") -> str:
    item = rf"(?:\*|(?:{atom})(?:-(?:{atom}))?){_STEP}" + (f"|{extra}" if extra else "")
    return rf"(?:{item})(?:,(?:{item}))*"


_FIELDS = (
    _field(r"[0-5]?\d"),  # minute
    _field(r"[01]?\d|2[0-3]"),  # hour
    _field(r"0?[1-9]|[12]\d|3[01]", "L"),  # day of month; L = the last day
    _field(rf"0?[1-9]|1[0-2]|{_MONTHS}"),  # month
    _field(rf"[0-7]|{_DAYS}"),  # day of week
)
# What the API documents: five fields (minute hour day-of-month month day-of-week) of values in range,
# ranges, steps, lists and names, or an @alias. croniter's extensions beyond that (`?`, `W`, `#`, which it
# refuses in many combinations, and the random `R` / hashed `H`, which would give every scheduler other
# slots) are not accepted, so an expression that fits the pattern is accepted.
CRON_PATTERN = "^(?:" + "|".join(ALIASES) + "|" + " ".join(f"(?:{f})" for f in _FIELDS) + ")$"
_CRON_RE = re.compile(CRON_PATTERN)
_PROBE = datetime(2026, 1, 1)
NEVER = datetime(9999, 12, 31, tzinfo=UTC)  # the next slot of an expression that never fires


class CronError(ValueError):
    """The cron expression or the time zone is not valid; the message says which and why."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


def parse_cron(expression: str) -> str:
    """The expression, normalised (single spaces); CronError (field "cron") when it is not valid."""
    text = " ".join(expression.split()) if isinstance(expression, str) else ""
    hint = (
        "expected five fields: minute (0-59) hour (0-23) day-of-month (1-31) month (1-12 or JAN-DEC) "
        "day-of-week (0-7 or SUN-SAT), e.g. '30 2 * * *' for 02:30 every day, or one of " + ", ".join(ALIASES)
    )
    if not _CRON_RE.fullmatch(text):
        raise CronError("cron", f"invalid cron expression {expression!r}: {hint}")
    try:
        croniter(text, _PROBE)
    except Exception as exc:  # noqa: BLE001 - croniter raises several unrelated types for bad fields
        raise CronError("cron", f"invalid cron expression {expression!r}: {exc}; {hint}") from None
    return text


def parse_timezone(name: str) -> ZoneInfo:
    """The IANA time zone `name`; CronError (field "timezone") when there is none of that name."""
    hint = "use an IANA time zone name such as Europe/Berlin, America/New_York or UTC"
    if not isinstance(name, str) or not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        raise CronError("timezone", f"unknown time zone {name!r}: {hint}")
    if name not in timezone_names():
        raise CronError("timezone", f"unknown time zone {name!r}: {hint}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CronError("timezone", f"unknown time zone {name!r}: {hint}") from None


@functools.cache
def timezone_names() -> frozenset[str]:
    """The IANA zone names this machine knows (the system database or the tzdata package)."""
    return frozenset(available_timezones())


def to_instant(naive_local: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant of a wall-clock time; in a repeated hour the first, in a skipped hour the shifted."""
    return naive_local.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _local(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def _steady(zone: ZoneInfo, instant: datetime) -> bool:
    return (instant - MARGIN).astimezone(zone).utcoffset() == (instant + MARGIN).astimezone(zone).utcoffset()


def iter_slots(cron: str, timezone: str, after: datetime) -> Iterator[datetime]:
    """The slots (UTC instants) strictly after `after`, ascending, each once."""
    zone = parse_timezone(timezone)
    # near an offset change, matches a little before local(after) can map after it: start MARGIN earlier
    matches = croniter(cron, _local(after, zone) - (timedelta(0) if _steady(zone, after) else MARGIN))
    pending: list[datetime] = []
    last = after
    while True:
        instant = to_instant(matches.get_next(datetime), zone)
        if not pending and instant > last and _steady(zone, instant):
            last = instant  # no offset change within MARGIN: nothing later can map before it
            yield last
            continue
        if instant > last and instant not in pending:
            heapq.heappush(pending, instant)
        # every later match maps to an instant after `instant - MARGIN`: smaller pending ones are final
        while pending and pending[0] <= instant - MARGIN:
            last = heapq.heappop(pending)
            yield last


def next_slot(cron: str, timezone: str, after: datetime) -> datetime:
    """The first slot strictly after `after`; NEVER for an expression that cannot fire (30 February)."""
    try:
        return next(iter_slots(cron, timezone, after))
    except CronError:
        raise
    except Exception:  # noqa: BLE001 - croniter found no match in its search window
        return NEVER


def latest_slot(cron: str, timezone: str, at: datetime) -> datetime | None:
    """The newest slot at or before `at` (None if the expression never fired before)."""
    zone = parse_timezone(timezone)
    steady = _steady(zone, at)
    matches = croniter(cron, _local(at, zone) + (timedelta(seconds=1) if steady else MARGIN))
    best: datetime | None = None
    for _ in range(100_000):
        try:
            instant = to_instant(matches.get_prev(datetime), zone)
        except Exception:  # noqa: BLE001 - croniter found no earlier match
            return best
        if instant <= at and (best is None or instant > best):
            best = instant
            if steady and _steady(zone, instant):
                return best
        if best is not None and instant + MARGIN < best:
            return best  # every earlier match maps to an instant before this one + MARGIN
    return best
