"""A container's life after its start: states, names, and the records that hold them.

Like runc, a container's status is an explicit state machine: created -> running <->
paused, running -> exited, exited -> running (restart) and any -> removed. Asking for a
transition the machine does not have (pausing an exited container, say) raises
``InvalidTransition`` with a sentence, instead of failing somewhere deep in the kernel.

Records live in ``state_dir()/containers/<id>/state.json``; every ``edu`` command reads them
directly, so ``edu ps`` needs no daemon. Names follow Docker: unique, chosen by ``--name`` or
generated as adjective_scientist.

Introduced in notebooks/07-run-it.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import paths
from . import health

CREATED, RUNNING, PAUSED, EXITED = "created", "running", "paused", "exited"

#: Which state may follow which (runc's libcontainer has the same table).
TRANSITIONS = {
    "creating": {RUNNING, EXITED},
    CREATED: {RUNNING, EXITED},
    RUNNING: {PAUSED, EXITED, RUNNING},
    PAUSED: {RUNNING, EXITED},
    EXITED: {RUNNING, EXITED},
}

VERBS = {PAUSED: "pause", RUNNING: "start", EXITED: "stop"}


class InvalidTransition(Exception):
    """A lifecycle command that the container's current state does not allow."""

    exit_code = 1  # the docker CLI's for a refusal (`docker pause` of an exited container)


class NameInUse(InvalidTransition):
    """A name another container has: Docker's conflict, which docker run exits 125 for."""

    exit_code = 125


class NoSuchContainer(LookupError):
    """No container has that name or id."""

    exit_code = 1


class InvalidName(ValueError):
    """A container name, hostname or working directory Docker would refuse too."""


#: Docker's rule for container names (moby's RestrictedNamePattern): at least two characters.
NAME_CHARS = "[a-zA-Z0-9][a-zA-Z0-9_.-]"
_NAME = re.compile(NAME_CHARS + "+")
#: A hostname: dot-separated RFC 1123 labels (letters, digits, inner hyphens).
_LABEL = re.compile(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")
HOSTNAME_MAX = 64  # the kernel's limit for sethostname (__NEW_UTS_LEN)


def _shown(value: str) -> str:
    """A value as a sentence can show it: control characters escaped."""
    return value if value.isprintable() else repr(value)[1:-1]


def valid_name(name: str) -> str:
    """A container name as Docker accepts it (one leading ``/`` dropped), else InvalidName.

    Names end up in the /etc/hosts of every neighbour on a network and in paths, so a name
    with a newline, a slash or a space would let one container write lines into another's
    files. ``fullmatch``, not ``match`` with ``$``: ``$`` also matches before a final newline.
    """
    bare = name[1:] if name.startswith("/") else name
    if not _NAME.fullmatch(bare):
        raise InvalidName(f"Invalid container name ({_shown(name)}), only {NAME_CHARS} are "
                          "allowed: use at least 2 letters, digits, '_', '.' or '-', starting "
                          "with a letter or digit (e.g. web-1)")
    return bare


#: A network alias: the container-name rule, but one character is enough (as for a service).
_ALIAS = re.compile(NAME_CHARS + "{0,252}")


def valid_alias(alias: str) -> str:
    """A ``--network-alias`` as safe as a container name, else InvalidName.

    Docker takes any string as an alias; here it is written into the /etc/hosts of every
    neighbour on the network, beside the container's name, so it is held to the same rule:
    no newline, space or slash can add a line or a name to another container's file.
    """
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
        raise InvalidName(f"Invalid network alias ({_shown(str(alias))}), only {NAME_CHARS} "
                          "are allowed: use letters, digits, '_', '.' or '-', starting with a "
                          "letter or digit, at most 253 characters (e.g. db)")
    return alias


def valid_hostname(hostname: str) -> str:
    """A hostname that is safe to write into /etc/hosts and /etc/hostname, else InvalidName.

    Docker passes any --hostname on (a newline ends up in the container's own /etc/hosts);
    edu is stricter and takes only RFC 1123 names the kernel's 64-byte limit allows.
    """
    if not (0 < len(hostname) <= HOSTNAME_MAX
            and all(_LABEL.fullmatch(label) for label in hostname.split("."))):
        raise InvalidName(f"invalid hostname '{_shown(hostname)}': use letters, digits and "
                          f"inner hyphens, in dot-separated parts, at most {HOSTNAME_MAX} "
                          "characters in all (e.g. web-1 or db.local)")
    return hostname


def valid_workdir(workdir: str) -> str:
    """A working directory as Docker accepts it: an absolute path, else InvalidName."""
    if not workdir.startswith("/"):
        raise InvalidName(f"the working directory '{_shown(workdir)}' is invalid, it needs to "
                          "be an absolute path (e.g. -w /app)")
    if "\0" in workdir:
        raise InvalidName("the working directory contains a NUL byte: remove it")
    return workdir


def check(record: dict[str, Any], to: str) -> None:
    """Raise InvalidTransition unless ``record`` may go to state ``to``."""
    now = record.get("status", EXITED)
    if to not in TRANSITIONS.get(now, set()):
        verb = VERBS.get(to, to)
        raise InvalidTransition(f"cannot {verb} container {record.get('name')}: it is {now}"
                                + (" (edu unpause it first)" if now == PAUSED else ""))


def base() -> Path:
    """The directory that holds one directory per container."""
    return paths.state_dir() / "containers"


def records() -> list[dict[str, Any]]:
    """Every container record, newest first."""
    out = []
    for path in base().glob("*/state.json") if base().is_dir() else []:
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(out, key=lambda r: r.get("created", 0), reverse=True)


def find(ref: str) -> dict[str, Any]:
    """A record by name, full id, or unique id prefix (as Docker accepts them)."""
    ref = ref.lstrip("/")
    recs = records()
    for r in recs:
        if r.get("name") == ref or r.get("id") == ref:
            return r
    hits = [r for r in recs if r.get("id", "").startswith(ref)] if len(ref) >= 3 else []
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise NoSuchContainer(f"{ref} matches {len(hits)} containers; give more of the id")
    raise NoSuchContainer(f"No such container: {ref}")


@contextmanager
def locked(container_id: str) -> Iterator[None]:
    """Hold a container's record lock: ``edu stop`` marking it stopping and the supervisor
    restarting it both read, change and write the record, and neither may lose the other's
    change."""
    fd = os.open(base() / container_id / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write(container_id: str, record: dict[str, Any]) -> dict[str, Any]:
    """Write a record over what is there, keeping fields others added; under the lock,
    through a temporary file and a rename. Returns the record written."""
    path = base() / container_id / "state.json"
    with locked(container_id):
        try:
            record = {**json.loads(path.read_text()), **record}
        except (OSError, ValueError):
            pass
        tmp = path.with_name(f".state.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)
    return record


def update(container_id: str, **fields: Any) -> dict[str, Any]:
    """Change fields of a record atomically; returns the new record."""
    path = base() / container_id / "state.json"
    with locked(container_id):
        rec = json.loads(path.read_text())
        rec.update(fields)
        tmp = path.with_name(f".state.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(rec, indent=1))
        os.replace(tmp, path)
    return rec


def check_name(name: str, own_id: str = "") -> str:
    """Refuse a name Docker would refuse, or one another container already has, with
    Docker's sentences; returns the name without a leading ``/``."""
    name = valid_name(name)
    for r in records():
        if r.get("name") == name and r.get("id") != own_id:
            raise NameInUse(
                f'the container name "/{name}" is already in use by container {r["id"]}. '
                "You have to remove (or rename) that container to be able to reuse that name.")
    return name


_ADJECTIVES = ["admiring", "brave", "busy", "clever", "eager", "focused", "gentle", "happy",
               "keen", "lucid", "modest", "nifty", "quirky", "sharp", "tender", "vibrant",
               "wizardly", "zealous"]
_SCIENTISTS = ["babbage", "curie", "dijkstra", "easley", "hopper", "kare", "lamarr",
               "lovelace", "noether", "ritchie", "shannon", "thompson", "torvalds", "turing",
               "wozniak", "yalow"]


def generate_name() -> str:
    """adjective_scientist, like Docker's, not used by any other container."""
    taken = {r.get("name") for r in records()}
    for _ in range(100):
        name = f"{random.choice(_ADJECTIVES)}_{random.choice(_SCIENTISTS)}"
        if name not in taken:
            return name
    return f"{random.choice(_ADJECTIVES)}_{random.choice(_SCIENTISTS)}{random.randint(0, 99)}"


def human_status(rec: dict[str, Any], now: float | None = None) -> str:
    """Docker's STATUS column: ``Up 5 seconds``, ``Up 5 seconds (healthy)``,
    ``Exited (0) 2 minutes ago``, ``Up 5 seconds (Paused)``."""
    now = now or time.time()
    status = rec.get("status")
    if status in (RUNNING, PAUSED):
        up = _ago(now - (rec.get("started") or rec.get("created") or now))
        return f"Up {up}" + (" (Paused)" if status == PAUSED else health.status_note(rec))
    if status == EXITED:
        code = rec.get("exit_code")
        when = _ago(now - (rec.get("finished") or rec.get("created") or now))
        return f"Exited ({code if code is not None else '?'}) {when} ago"
    return str(status).capitalize()


def _ago(seconds: float) -> str:
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n > 1 else ''}"
    n = int(seconds)
    return "Less than a second" if n < 1 else f"{n} second{'s' if n > 1 else ''}"
