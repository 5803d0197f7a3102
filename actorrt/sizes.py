"""Byte sizes a person writes or reads: the one parser (``memory_limit="4GiB"``, every
layer that takes a size) and the one formatter (logs, warnings, pages, reports)."""
from __future__ import annotations

import math
import re

# Decimal units as dask and the SI spell them, binary ones with an 'i'; one letter is
# the decimal unit ("4G" == "4GB"), as in dask's parse_bytes.
_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "kib": 2**10,
    "m": 10**6, "mb": 10**6, "mib": 2**20,
    "g": 10**9, "gb": 10**9, "gib": 2**30,
    "t": 10**12, "tb": 10**12, "tib": 2**40,
    "p": 10**15, "pb": 10**15, "pib": 2**50,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_bytes(text: str | int | float) -> int:
    """``"4GiB"`` -> 4294967296, ``"500MB"`` -> 500000000, ``"1.5 kB"`` -> 1500, ``7`` -> 7.

    ``ValueError`` names the text for anything else (a negative size, an unknown unit).
    """
    if isinstance(text, bool):
        raise TypeError(f"a size in bytes cannot be a bool, got {text!r}")
    if isinstance(text, (int, float)):
        number, unit = float(text), ""
    else:
        match = _SIZE.match(str(text))
        if match is None:
            raise ValueError(f"cannot read {text!r} as a size: expected a number and a unit such as "
                             "'4GiB', '500MB' or '1.5e9'")
        number, unit = float(match.group(1)), match.group(2).lower()
        if unit not in _UNITS:
            raise ValueError(f"cannot read {text!r} as a size: unknown unit {match.group(2)!r} "
                             f"(use B, kB, MB, GB, TB or KiB, MiB, GiB, TiB)")
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"a size must be a finite number of bytes, at least 0; got {text!r}")
    return int(number * _UNITS[unit])


_BINARY = (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


def format_bytes(n: int | float, digits: int = 2) -> str:
    """``1536`` -> ``'1.50 KiB'`` (``digits`` after the point), ``512`` -> ``'512 B'``."""
    for unit, size in _BINARY:
        if abs(n) >= size:
            return f"{n / size:.{digits}f} {unit}"
    return f"{n:.0f} B"


__all__ = ["format_bytes", "parse_bytes"]
