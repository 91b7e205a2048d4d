"""The values of ``docker run``'s flags, checked before anything is made.

A student pastes flags from anywhere. Each value here is checked the way Docker checks it,
and a refusal is one sentence: what was wrong and how to fix it (``BadValue``, a
ValueError, which ``edu`` prints with exit code 125 as ``docker run`` does). Where Docker
takes a value edu cannot honour safely (a user id beyond the kernel's range, a NUL byte in
an environment variable, which ``execve`` cannot pass), edu refuses it here too, instead of
failing later inside the half-made container.

Names (containers, hostnames, aliases, working directories) are checked in
``life/states.py``, volumes and ``-v`` in ``volumes.py``, ``-p`` in ``networks/nat.py``,
memory in ``cgroups.py``; this module holds the rest, and ``shown`` for all of them.

Introduced in notebooks/07-run-it.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any


class BadValue(ValueError):
    """A flag's value Docker would refuse, or edu cannot use; the message says the fix."""


#: The largest uid or gid the kernel takes (Docker: "uids and gids must be in range").
MAX_ID = 2**31 - 1


def shown(value: Any) -> str:
    """A value as a one-line sentence can show it: control characters escaped."""
    text = str(value)
    return text if text.isprintable() else repr(text)[1:-1]


def cpus(value: Any, available: int | None = None) -> float:
    """A ``--cpus`` value (``0.5``, ``"2"``) as a float, in Docker's range 0.01..CPUs."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadValue(f"invalid --cpus value {shown(value)!r}: use a number of CPUs, "
                       "e.g. 0.5 or 2")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise BadValue(f"invalid --cpus value '{shown(value)}': use a number of CPUs, "
                       "e.g. 0.5 or 2")
    available = available or os.cpu_count() or 1
    if not 0.01 <= number <= available:
        raise BadValue(f"invalid --cpus value '{shown(value)}': the range of CPUs is from 0.01 "
                       f"to {available:.2f}, as there are only {available} CPUs available")
    return number


def pids_limit(value: Any) -> int | None:
    """A ``--pids-limit`` as an int; 0 and negative numbers mean no limit, as in Docker."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or (
            isinstance(value, str) and not re.fullmatch(r"[+-]?[0-9]+", value)):
        raise BadValue(f"invalid --pids-limit value '{shown(value)}': use a whole number of "
                       "processes, e.g. 100 (0 or -1 for no limit)")
    number = int(value)
    return number if number > 0 else None


def env(variables: Any) -> dict[str, str]:
    """The ``-e`` variables, ``{KEY: VALUE}``: a key is not empty, and nothing holds '='
    in a key or a NUL byte anywhere (execve could not pass it on)."""
    if variables is None:
        return {}
    if not isinstance(variables, dict):
        raise BadValue(f"invalid environment {shown(variables)!r}: give a dict of KEY: VALUE")
    for key, value in variables.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise bad_env(f"{key}={value}")
        if not isinstance(value, str) or "\0" in value:
            raise BadValue(f"invalid value for environment variable {shown(key)}: use a "
                           "string without NUL bytes")
    return dict(variables)


def bad_env(entry: str) -> BadValue:
    """The refusal of one ``-e KEY=VALUE`` entry whose name is empty or holds '=' or NUL."""
    return BadValue(f"invalid environment variable '{shown(entry)}': a name is not empty "
                    "and holds no '=' or NUL byte (use -e KEY=VALUE)")


def user(spec: Any) -> str:
    """A ``-u`` value: ``name``, ``uid``, ``name:group`` or ``uid:gid`` (empty: the image's).

    Names are looked up in the image's own /etc/passwd when the container starts; what can
    be told now is checked now: one colon at most, no NUL, ids in the kernel's range."""
    if spec is None or spec == "":
        return ""
    if not isinstance(spec, str):
        raise BadValue(f"invalid user {shown(spec)!r}: give a name or uid, optionally "
                       "with :group or :gid (e.g. -u 1000:1000)")
    parts = spec.split(":")
    if len(parts) > 2 or not parts[0] or (len(parts) == 2 and not parts[1]) or "\0" in spec:
        raise BadValue(f"invalid user '{shown(spec)}': give a name or uid, optionally with "
                       ":group or :gid (e.g. -u 1000:1000 or -u nobody)")
    for part in parts:
        if part.lstrip("-").isdigit() and not 0 <= int(part) <= MAX_ID:
            raise BadValue(f"invalid user '{shown(spec)}': uids and gids must be in range "
                           f"0-{MAX_ID}")
    return spec


def network(name: Any) -> str | None:
    """A ``--network`` value: a name, not empty (None: the default bridge)."""
    if name is None:
        return None
    if not isinstance(name, str) or not name:
        raise BadValue("no name set for network: give --network bridge, none, host or the "
                       "name of a network made with edu network create")
    return name


def strings(what: str, values: Any) -> list[str]:
    """A list of strings (``-p``, ``-v``, a command): anything else is refused by name."""
    if values is None:
        return []
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise BadValue(f"invalid {what} {shown(values)!r}: give a list of strings")
    return list(values)
