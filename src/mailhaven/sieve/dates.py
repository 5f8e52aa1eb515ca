"""The date and currentdate tests' date-parts (RFC 5260 4.2) and zones (4.1.1), no I/O: the
caller gives the current time and the local zone."""

from __future__ import annotations

import datetime as dt
import email.utils
import re

DATE_PARTS = frozenset({"year", "month", "day", "date", "julian", "hour", "minute", "second",
                        "time", "iso8601", "std11", "zone", "weekday"})
_ZONE = re.compile(r"([+-])([0-9]{2})([0-9]{2})\Z")                # RFC 5260 4.1.1: "+hhmm"
_MJD_EPOCH = dt.date(1858, 11, 17)                                  # RFC 5260 4.2: Modified Julian Day 0
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def parse_zone(text: str) -> dt.timezone | None:
    """``+0200`` -> that offset; None when the text is not a zone (the test is then false)."""
    m = _ZONE.match(text)
    if m is None or int(m.group(3)) > 59:
        return None
    minutes = int(m.group(2)) * 60 + int(m.group(3))
    return dt.timezone(dt.timedelta(minutes=-minutes if m.group(1) == "-" else minutes))


def header_date(value: str) -> dt.datetime | None:
    """RFC 5260 4.1: a date-time as in RFC 2822 3.3; in Received, the part after the last ';'."""
    if ";" in value:
        value = value.rpartition(";")[2]
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:                                         # "-0000": UTC, zone unknown
        when = when.replace(tzinfo=dt.UTC)
    return when


def _zone_text(when: dt.datetime) -> str:
    offset = when.utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


def date_part(when: dt.datetime, part: str) -> str:
    """RFC 5260 4.2, of a date-time already in the zone the test asked for."""
    if part == "year":
        return f"{when.year:04d}"
    if part == "month":
        return f"{when.month:02d}"
    if part == "day":
        return f"{when.day:02d}"
    if part == "date":
        return f"{when.year:04d}-{when.month:02d}-{when.day:02d}"
    if part == "julian":
        return str((when.date() - _MJD_EPOCH).days)
    if part == "hour":
        return f"{when.hour:02d}"
    if part == "minute":
        return f"{when.minute:02d}"
    if part == "second":
        return f"{when.second:02d}"
    if part == "time":
        return f"{when.hour:02d}:{when.minute:02d}:{when.second:02d}"
    if part == "iso8601":
        zone = _zone_text(when)
        return f"{date_part(when, 'date')}T{date_part(when, 'time')}{zone[:3]}:{zone[3:]}"
    if part == "std11":
        return (f"{_DAYS[when.weekday()]}, {when.day:02d} {_MONTHS[when.month - 1]} {when.year:04d} "
                f"{date_part(when, 'time')} {_zone_text(when)}")
    if part == "zone":
        return _zone_text(when)
    if part == "weekday":
        return str((when.weekday() + 1) % 7)                        # RFC 5260 4.2: 0 is Sunday
    raise ValueError(part)


def in_zone(when: dt.datetime, zone: str | None, original: bool, local: dt.tzinfo) -> dt.datetime | None:
    """The date-time to take parts of: ``:originalzone`` as written, ``:zone`` converted,
    otherwise in the local zone (RFC 5260 4.1.1)."""
    if original:
        return when
    if zone is not None:
        tz = parse_zone(zone)
        return when.astimezone(tz) if tz is not None else None
    return when.astimezone(local)
