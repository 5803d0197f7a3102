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


def env_number(name: str, default: float) -> float:
    """The non-negative number in environment variable ``name``, else ``default``;
    ValueError naming the variable for anything else."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):  # (also refuses NaN)
        raise ValueError(f"{name} must be a number >= 0, got {os.environ[name]!r}")
    return value
