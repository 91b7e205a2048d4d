"""Container logs: JSON lines, rotated by size and count, like Docker's json-file driver.

A detached container's output goes to ``<container>/container.log``, one JSON object per
line (``{"log": ..., "stream": ..., "time": ...}``), written by the supervisor. Docker keeps
that file unbounded unless told ``--log-opt max-size=10m --log-opt max-file=3``; a class
runs one machine all day, and one noisy container must not fill its disk, so edu caps every
container by default (``DEFAULTS``, the one place to change it) and takes Docker's options
to change the cap:

- ``max-size``: the largest a file grows before it is rotated, in Docker's size syntax
  (go-units' FromHumanSize: decimal, ``10m`` is 10,000,000 bytes; k, m, g, t, p);
- ``max-file``: how many files are kept, the live one included.

Rotation is Docker's: ``container.log`` becomes ``container.log.1``, ``.1`` becomes ``.2``,
and the oldest beyond ``max-file`` is deleted. A line is never split between two files: the
file is rotated before a line that would take it past ``max-size`` (so a file exceeds it only
when one line alone is longer).

Readers (``edu logs``, ``logs -f``, a notebook's ``run()``, ``compose logs``) keep a
*cursor*, the file (its inode and first line) and an offset in it, not an offset alone:
after a rotation the file is found again under its new name, its rest is read, then the
newer files. Rotation
only renames, so the writer never waits for a reader, and a reader checks that the names it
listed still name the files it opened (else it lists again).

Introduced in notebooks/07-run-it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

#: The only driver edu has: Docker's default one.
DRIVER = "json-file"

#: Every container's cap unless its --log-opt say otherwise (Docker's own default is no
#: cap at all): at most 3 files of 10 MB, 30 MB a container.
DEFAULTS = {"max-size": "10m", "max-file": "3"}

#: Docker's other drivers: refused with a sentence that says edu has only json-file.
OTHER_DRIVERS = ("local", "none", "syslog", "journald", "gelf", "fluentd", "awslogs",
                 "splunk", "etwlogs", "gcplogs", "logentries")

#: The options Docker's json-file accepts (mode and max-buffer-size: any driver's); edu acts
#: on max-size and max-file, and refuses the others with a sentence.
DOCKER_KEYS = ("max-size", "max-file", "compress", "labels", "labels-regex", "env",
               "env-regex", "tag", "mode", "max-buffer-size")

#: How Docker begins a refused value (it makes the container, then fails at its start;
#: edu refuses at create, and makes nothing).
_VALUE = "failed to initialize logging driver: "

_SIZE = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_UNIT = {"": 1, "k": 10 ** 3, "m": 10 ** 6, "g": 10 ** 9, "t": 10 ** 12, "p": 10 ** 15}


class LogOptError(ValueError):
    """A --log-driver or --log-opt edu cannot use (its text is the sentence)."""


def parse_size(text: str) -> int:
    """Bytes in Docker's size syntax (go-units FromHumanSize: ``10m`` = 10,000,000)."""
    m = _SIZE.match(text)
    if not m:
        raise LogOptError(f"{_VALUE}invalid size: '{_shown(text)}'")
    return int(float(m.group(1)) * _UNIT[(m.group(2) or "").lower()])


def check(driver: str | None, opts: dict[str, str] | list[str] | None) -> dict[str, str]:
    """The checked options (``KEY=VALUE`` strings or a dict), as a dict; LogOptError with
    Docker's sentence for a driver edu lacks or an option json-file does not have."""
    if isinstance(opts, list):
        opts = dict(o.partition("=")[::2] for o in opts)
    opts = {str(k): str(v) for k, v in (opts or {}).items()}
    if driver not in (None, "", DRIVER):
        driver = _shown(driver)
        if driver in OTHER_DRIVERS:
            raise LogOptError(f"log driver '{driver}' is not supported by edu: it keeps "
                              f"logs only as {DRIVER} (leave --log-driver out, or give "
                              f"--log-driver {DRIVER})")
        raise LogOptError(f'error looking up logging plugin {driver}: plugin "{driver}" not '
                          f"found (edu keeps logs only as {DRIVER})")
    for key in opts:
        if key not in DOCKER_KEYS:
            raise LogOptError(f"unknown log opt '{_shown(key)}' for {DRIVER} log driver")
        if key not in DEFAULTS:
            raise LogOptError(f"log opt '{key}' is not supported by edu: use max-size and "
                              "max-file")
    limits(opts)
    return opts


def limits(opts: dict[str, str] | list[str] | None) -> tuple[int, int]:
    """(max-size in bytes, max-file) for a container's options over ``DEFAULTS``."""
    if isinstance(opts, list):
        opts = dict(o.partition("=")[::2] for o in opts)
    merged = {**DEFAULTS, **(opts or {})}
    size = parse_size(merged["max-size"])
    if size <= 0:
        raise LogOptError(f"{_VALUE}max-size must be a positive number")
    try:
        count = int(merged["max-file"])
    except ValueError:
        raise LogOptError(f'{_VALUE}strconv.Atoi: parsing "{_shown(merged["max-file"])}": invalid '
                          "syntax (max-file takes a number of files, such as 3)") from None
    if count < 1:
        raise LogOptError(f"{_VALUE}max-file cannot be less than 1")
    return size, count


def _shown(text: str) -> str:
    """A value pasted from anywhere, as one short line in a sentence."""
    text = str(text).encode("unicode_escape").decode()
    return text if len(text) <= 60 else text[:57] + "..."


def rotated(path: Path, n: int) -> Path:
    """The n-th rotated file (``container.log.n``; 0 is the live one)."""
    return path if n == 0 else path.with_name(f"{path.name}.{n}")


# ---- the writer (the supervisor) -----------------------------------------------------------

def append(path: Path, lines: list[dict[str, Any]], opts: dict[str, str] | None) -> None:
    """Append entries, one JSON line each, rotating before a line that would not fit."""
    cap, count = limits(opts)
    f = open(path, "ab")
    try:
        size = f.tell()
        for entry in lines:
            data = (json.dumps(entry, separators=(",", ":")) + "\n").encode()  # Docker's
            if size and size + len(data) > cap:
                f.close()
                rotate(path, count)
                f = open(path, "ab")
                size = 0
            f.write(data)
            size += len(data)
    finally:
        f.close()


def rotate(path: Path, count: int) -> None:
    """Docker's rotation: the oldest goes, each ``.n`` becomes ``.n+1``, the live file
    ``.1``; the next write makes a new live file (a new inode: readers notice)."""
    present = sorted((_number(p) for p in files(path)), reverse=True)  # newest last
    for n in present:
        if n >= count - 1:  # with max-file 1: the live file itself
            rotated(path, n).unlink(missing_ok=True)
        else:
            os.rename(rotated(path, n), rotated(path, n + 1))


def _number(p: Path) -> int:
    tail = p.name.rpartition(".")[2]
    return int(tail) if tail.isdigit() else 0


def files(path: Path) -> list[Path]:
    """The log's files, oldest first, the live one last (if it exists yet)."""
    numbered = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    for name in names:
        rest = name[len(path.name) + 1:] if name.startswith(path.name + ".") else ""
        if rest.isdigit():
            numbered.append(int(rest))
    out = [rotated(path, n) for n in sorted(numbered, reverse=True)]
    return out + ([path] if path.name in names else [])


# ---- readers -------------------------------------------------------------------------------

#: A reader's position: (file, offset in it); 0 before anything was read. A file is known
#: by its inode and its first line: ext4 and tmpfs give a deleted file's inode to the next
#: new one at once, so an inode alone could mistake the new live file for one rotated away.
Cursor = Any

_HEAD = 256


def _identity(f) -> str:
    """``INODE:HASH``, the hash of the file's first whole line (of its first _HEAD bytes):
    bytes once written never change, so it is stable. Empty while it has no whole line."""
    head = f.read(_HEAD)
    f.seek(0)
    cut = head.find(b"\n") + 1 or (len(head) if len(head) == _HEAD else 0)
    digest = hashlib.blake2s(head[:cut]).hexdigest()[:16] if cut else ""
    return f"{os.fstat(f.fileno()).st_ino}:{digest}"


def _same(cursor_file: str, file: str) -> bool:
    """The cursor's file is this one (one seen before its first line came: its inode)."""
    ino, _, digest = cursor_file.partition(":")
    return file == cursor_file or (not digest and file.partition(":")[0] == ino)


def _snapshot(path: Path) -> list[tuple[str, Any]]:
    """The log's files opened, oldest first, as (identity, file): listed, opened, and listed
    again until no rotation came in between (a rotation renames; it never waits for us)."""
    while True:
        listed = files(path)
        opened, ok = [], True
        for p in listed:
            try:
                f = open(p, "rb")
            except FileNotFoundError:
                ok = False
                break
            opened.append((os.fstat(f.fileno()).st_ino, f))
        if ok and files(path) == listed:
            try:
                ok = all(os.stat(p).st_ino == ino
                         for p, (ino, _) in zip(listed, opened, strict=True))
            except FileNotFoundError:
                ok = False
        if ok:
            return [(_identity(f), f) for _, f in opened]
        for _, f in opened:
            f.close()


def _find(cursor: Cursor, names: list[str]) -> int:
    """The index of the cursor's file, or -1 (none yet, or rotated away)."""
    if cursor:
        for i, name in enumerate(names):
            if _same(cursor[0], name):
                return i
    return -1


def read_lines(path: Path, cursor: Cursor = 0) -> tuple[str, Cursor]:
    """The whole lines written to the log after ``cursor``, across rotations, and the
    cursor after them. Lines rotated away before they were read are gone (as in Docker)."""
    opened = _snapshot(path)
    try:
        if not opened:
            return "", cursor
        names = [name for name, _ in opened]
        start, offset = 0, 0
        if (found := _find(cursor, names)) >= 0:
            start, offset = found, cursor[1]
        chunks, ends = [], []
        for i in range(start, len(opened)):
            f = opened[i][1]
            f.seek(offset if i == start else 0)
            chunks.append(f.read())
            ends.append((offset if i == start else 0) + len(chunks[-1]))
        whole = chunks[-1][:chunks[-1].rfind(b"\n") + 1]  # the rest comes whole next time
        ends[-1] -= len(chunks[-1]) - len(whole)
        chunks[-1] = whole
        # The cursor stays on a file known by its first line: a new live file without one
        # yet is known by its inode only, which the next new file may be given again.
        at = max((i for i in range(len(ends)) if not names[start + i].endswith(":")),
                 default=None)
        new = cursor if at is None else (names[start + at], ends[at])
        return b"".join(chunks).decode(errors="replace"), new
    finally:
        for _, f in opened:
            f.close()


def entries(lines: list[str]):
    """(stream, text) for each line of a log in Docker's json-file format."""
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        yield entry.get("stream", "stdout"), entry.get("log", "")


def tail(path: Path, limit: int) -> dict[str, Any]:
    """The last ``limit`` bytes of the log, across its files, and each file's (identity,
    size): what a waiting notebook is sent when its container is removed (``unread`` finds
    where its cursor is in it)."""
    opened = _snapshot(path)
    try:
        data = b"".join(f.read() for _, f in opened)
        sizes = [[name, os.fstat(f.fileno()).st_size] for name, f in opened]
    finally:
        for _, f in opened:
            f.close()
    if not opened:
        return {}
    return {"log": data[-limit:].decode(errors="replace"), "log_files": sizes}


def unread(reply: dict[str, Any], cursor: Cursor) -> str:
    """The part of a ``tail`` answer after ``cursor``."""
    text = reply["log"].encode()
    sizes = reply.get("log_files") or []
    total = sum(size for _, size in sizes)
    position = 0  # where the cursor is in the files' concatenation
    for name, size in sizes:
        if cursor and _same(cursor[0], name):
            position += cursor[1]
            break
        position += size
    else:
        position = 0  # not found: everything in the answer is new to this reader
    skip = max(0, position - (total - len(text)))
    return text[skip:].decode(errors="replace")
