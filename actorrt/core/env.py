"""Switches read from the environment, refused by name when malformed."""
from __future__ import annotations

import os


def env_switch(name: str, default: bool) -> bool:
    """The on/off switch in environment variable ``name`` (1/0, true/false, yes/no,
    on/off), else ``default``; ValueError naming the variable for anything else."""
    text = os.environ.get(name, "").strip().lower()
    if not text:
        return default
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be 1 or 0 (true/false, yes/no, on/off), got {os.environ[name]!r}")


def env_number(name: str, default: float, unit: str = "", positive: bool = False) -> float:
    """The finite number in environment variable ``name`` (> 0 if ``positive``, else
    >= 0), else ``default``; ValueError naming the variable for anything else. ``unit``
    says what it counts ("seconds"), for that message."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    what = ("a positive number" if positive else "a number") + (f" of {unit}" if unit else "")
    what += "" if positive else " >= 0"
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be {what}, got {text!r}") from None
    if not ((value > 0) if positive else (value >= 0)) or value == float("inf"):  # (NaN fails both)
        raise ValueError(f"{name} must be {what}, got {text!r}")
    return value
