"""Durations: the one reading of every timeout and interval the public API takes.

dask.distributed accepts seconds as numbers, strings with a unit (``"100ms"``,
``"2s"``, ``"1 minute"``, ``"1.5h"``) and ``datetime.timedelta``; code moving to
actorrt passes the same values, so every public ``timeout=``/``interval=`` goes
through :func:`parse_duration` at the call, before anything is sent or started.

Where dask is loose we are strict, on purpose: an unknown unit or a word with no
number (``"soon"``, ``"ms"``) is a ``ValueError`` naming the parameter, not dask's
``KeyError`` or a silent "one of that unit"; a negative or NaN duration is a
``ValueError`` too (dask passes it on, and a negative timeout then means "already
expired" in some places and "wait forever" in others).
"""
from __future__ import annotations

import datetime
import math
import numbers
import re
from typing import Any

#: Seconds per unit, by every spelling dask's ``parse_timedelta`` accepts.
UNITS: dict[str, float] = {}
for _seconds, _names in (
        (1e-9, ("ns", "nanosecond", "nanoseconds")),
        (1e-6, ("us", "µs", "microsecond", "microseconds")),
        (1e-3, ("ms", "millisecond", "milliseconds")),
        (1.0, ("s", "sec", "secs", "second", "seconds")),
        (60.0, ("m", "min", "mins", "minute", "minutes")),
        (3600.0, ("h", "hr", "hrs", "hour", "hours")),
        (86400.0, ("d", "day", "days")),
        (604800.0, ("w", "week", "weeks"))):
    for _name in _names:
        UNITS[_name] = _seconds
del _seconds, _names, _name

# A number (sign allowed, so "-1s" is read and refused as negative, not as a bad unit),
# optional spaces, an optional unit.
_TEXT = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([a-zA-Zµ]*)\s*")


def parse_duration(value: Any, name: str = "timeout", *, allow_none: bool = True,
                   default_unit: str = "s") -> float | None:
    """Seconds as a float, from a number, a string with a unit, or a ``timedelta``.

    ``None`` (no limit) passes through where ``allow_none``; ``math.inf`` means the
    same there. ``name`` is the parameter named in errors: ``TypeError`` for a value
    of the wrong type, ``ValueError`` for nonsense, a negative or NaN duration.

    >>> parse_duration("100ms"), parse_duration("1 minute"), parse_duration(2)
    (0.1, 60.0, 2.0)
    """
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{name} must be a duration (seconds, '2s', a timedelta), got None")
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):  # (an int subclass, but True seconds is a mistake)
        raise TypeError(f"{name} must be a duration (seconds, '2s', a timedelta), got {value!r}")
    elif isinstance(value, numbers.Real):  # (numpy's numbers too)
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_text(value, name, default_unit)
    else:
        raise TypeError(f"{name} must be a duration (a number of seconds, a string such as "
                        f"'2s' or '100ms', or a timedelta), got {type(value).__name__}: {value!r}")
    return _checked(seconds, value, name, allow_none)


def _parse_text(text: str, name: str, default_unit: str) -> float:
    match = _TEXT.fullmatch(text)
    if match is None:
        raise ValueError(f"{name} must be a duration such as '2s', '100ms' or '1 minute', "
                         f"got {text!r}")
    number, unit = match.groups()
    unit = unit or default_unit
    scale = UNITS.get(unit) or UNITS.get(unit.lower())
    if scale is None:
        raise ValueError(f"{name}: unknown time unit {unit!r} in {text!r}; use one of "
                         "ns, us, ms, s, m (minutes), h, d, w or their names")
    # Divide by the inverse of a sub-second unit: 10 * 1e-6 is 9.999999999999999e-06,
    # 10 / 1e6 is 1e-05.
    return float(number) / round(1 / scale) if scale < 1 else float(number) * scale


def _checked(seconds: float, given: Any, name: str, allow_none: bool) -> float | None:
    if math.isnan(seconds):
        raise ValueError(f"{name} must be a duration, got {given!r}")
    if seconds < 0:
        raise ValueError(f"{name} must not be negative, got {given!r}")
    if math.isinf(seconds):
        if allow_none:
            return None  # (asyncio's timers take no infinity: it means "no limit")
        raise ValueError(f"{name} must be a finite duration, got {given!r}")
    return seconds


def parse_timeout(value: Any, name: str = "timeout") -> float | None:
    """A timeout: a duration, or ``None`` for none (the usual case, on every blocking
    call's path: answered without the parser)."""
    if value is None:
        return None
    return parse_duration(value, name)


def parse_interval(value: Any, name: str = "interval") -> float:
    """An interval between repeats: a duration greater than zero."""
    seconds = parse_duration(value, name, allow_none=False)
    assert seconds is not None
    if seconds == 0:
        raise ValueError(f"{name} must be greater than zero, got {value!r}")
    return seconds


__all__ = ["UNITS", "parse_duration", "parse_interval", "parse_timeout"]
