"""Strict checks of a recipe's ``schedule`` (cron expression and timezone), without Dagster.

Accepted: five fields (minute hour day-of-month month day-of-week), each ``*`` or a comma
list of values, ``a-b`` ranges and ``/step``s; month and weekday names (``jan``, ``mon``);
and the macros ``@hourly``, ``@daily``, ``@midnight``, ``@weekly``, ``@monthly``,
``@yearly``, ``@annually``. This is what Dagster's schedules accept (checked by the tests).
"""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

MACROS = ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# name, lowest, highest, names (mapped onto lowest..)
FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_ITEM = re.compile(r"^(?P<base>\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(?P<step>\d+))?$")


def _value(text: str, low: int, high: int, names: tuple[str, ...], label: str) -> int:
    if text in names:
        return low + names.index(text)
    if not text.isdigit():
        allowed = f"{low}..{high}" + (f" or {names[0]}..{names[-1]}" if names else "")
        raise ValueError(f"{label}: {text!r} is not a number ({allowed})")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{label}: {value} is out of range {low}..{high}")
    return value


def _check_field(text: str, label: str, low: int, high: int, names: tuple[str, ...]) -> None:
    for item in text.split(","):
        match = _ITEM.match(item)
        if not match:
            raise ValueError(f"{label}: {item!r} is not *, a value, a range a-b or a step /n")
        base, step = match["base"], match["step"]
        if step is not None and int(step) < 1:
            raise ValueError(f"{label}: the step in {item!r} must be at least 1")
        if base == "*":
            continue
        first, _, last = base.partition("-")
        start = _value(first, low, high, names, label)
        if last:
            end = _value(last, low, high, names, label)
            if end < start:
                raise ValueError(f"{label}: the range {base!r} runs backwards")


def cron_problem(expression: str) -> str | None:
    """Why ``expression`` is not an accepted cron schedule, or None when it is."""
    text = expression.strip().lower()
    if text.startswith("@"):
        return None if text in MACROS else f"unknown macro {expression!r}; use one of {MACROS}"
    parts = text.split()
    if len(parts) != 5:
        return (
            f"{expression!r} has {len(parts)} fields; a cron schedule has 5: "
            "minute hour day-of-month month day-of-week (e.g. '0 2 * * *': every day at 02:00)"
        )
    try:
        for part, (label, low, high, names) in zip(parts, FIELDS, strict=True):
            _check_field(part, label, low, high, names)
    except ValueError as exc:
        return f"{expression!r}: {exc}"
    days, months = parts[2], parts[3]
    if months in ("2", "feb") and days in ("30", "31"):
        return f"{expression!r} never fires: February has no day {days}"
    return None


def timezone_problem(name: str) -> str | None:
    """Why ``name`` is not an IANA timezone, or None when it is."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: 'America' is a folder
        close = sorted(tz for tz in available_timezones() if name.lower() in tz.lower())[:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        return f"{name!r} is not an IANA timezone such as 'UTC' or 'Europe/Paris'{hint}"
    return None
