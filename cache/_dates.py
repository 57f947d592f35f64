"""HTTP dates exactly as RFC 9110 §5.6.7 writes them: IMF-fixdate, rfc850-date and asctime-date.

`email.utils.parsedate_tz` is far more lenient (two-digit years in IMF-fixdate, any time zone,
missing commas, runs of spaces, one-digit hours); a cache that reads such a value as a date keeps
responses fresh that their origin meant to be expired (RFC 9111 §5.3). Day and month names are
case-sensitive (`%s"Mon"` in the grammar); the weekday is not checked against the date.
"""

from __future__ import annotations

import calendar
import re
import time

__all__ = ["http_date"]

_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAY = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH = r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = r"(\d\d):(\d\d):(\d\d)"
_IMF_FIXDATE = re.compile(rf"{_DAY}, (\d\d) {_MONTH} (\d{{4}}) {_TIME} GMT", re.ASCII)
_RFC850_DATE = re.compile(rf"{_LONG_DAY}, (\d\d)-{_MONTH}-(\d\d) {_TIME} GMT", re.ASCII)
_ASCTIME_DATE = re.compile(rf"{_DAY} {_MONTH} (\d\d| \d) {_TIME} (\d{{4}})", re.ASCII)
_MONTHS = {name: number for number, name in enumerate(calendar.month_abbr) if name}


def http_date(value: bytes, now: float) -> float | None:
    """Seconds since the epoch for one HTTP-date; None for anything else (a list, a near miss).

    `now` places rfc850-date's two-digit years: one that would lie more than 50 years ahead is
    the most recent past year with those digits (RFC 9110 §5.6.7).
    """
    text = value.decode("latin-1").strip(" \t")
    if (match := _IMF_FIXDATE.fullmatch(text)) is not None:
        day, month, year, hour, minute, second = match.groups()
        return _timestamp(int(year), month, day, hour, minute, second)
    if (match := _RFC850_DATE.fullmatch(text)) is not None:
        day, month, short_year, hour, minute, second = match.groups()
        this_year = time.gmtime(now).tm_year
        year = this_year - this_year % 100 + int(short_year)
        if year > this_year + 50:
            year -= 100
        return _timestamp(year, month, day, hour, minute, second)
    if (match := _ASCTIME_DATE.fullmatch(text)) is not None:
        month, day, hour, minute, second, year = match.groups()
        return _timestamp(int(year), month, day.strip(), hour, minute, second)
    return None


def _timestamp(year: int, month_name: str, day: str, hour: str, minute: str, second: str) -> float | None:
    month = _MONTHS[month_name]
    if not 1 <= int(day) <= calendar.monthrange(year, month)[1]:
        return None
    # second = 60 is a leap second (RFC 9110 §5.6.7); timegm counts it as the next minute's 0.
    if int(hour) > 23 or int(minute) > 59 or int(second) > 60:
        return None
    return float(calendar.timegm((year, month, int(day), int(hour), int(minute), int(second))))
