"""A container is a plan of steps; this module is the plan's machinery.

Every step has the same shape: ``name``, ``explain`` (a paragraph for students, and what
*undo* means for this step), ``apply`` (the kernel work), ``undo`` (its exact reverse) and
``observe`` (a snapshot of the kernel state the step changes, read from the host). Some steps
run on the host (creating a cgroup, writing uid maps), others inside the child that becomes
the container (mounts, pivot_root, exec). The child waits between steps; one message per
step crosses a socketpair, so the host can stop between any two steps and look.

Teardown is the applied steps undone in reverse, like ``contextlib.ExitStack``: that is how
"nothing leaks" rests on structure rather than on discipline.

Every step leaves a ``StepRecord`` in the container's ``Trace``: its timings, its
observations, and every call it made, on either side (``kernel.note``): syscalls, cgroupfs
and /proc writes, netlink requests, nft rules. Noting a call is a list append of a tuple;
text is made only when a trace is read. What differs from one run to the next (the
container's id, its address, pids, fds) is shown as a placeholder (``<id>``, ``<ip>``), so
a fast run's trace and a stepped run's compare equal.

Introduced in notebooks/06-step-by-step; each step is taught in its own lesson.
"""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from . import kernel

HOST, CHILD = "host", "child"
TRACE_SCHEMA = "edu.trace/2"
#: Schemas ``Trace.from_dict`` reads; older ones are converted (see ``_call``).
READABLE = ("edu.trace/1", TRACE_SCHEMA)

#: One call a step made, as noted: its name, then its arguments as text, e.g.
#: ``("write", "/sys/fs/cgroup/memory/edu/<id>/memory.limit_in_bytes", "67108864")``.
Call = tuple[str, ...]


class StepError(Exception):
    """A step failed; carries the step's name and, from the child, an exit code hint."""

    def __init__(self, step: str, message: str, exit_code: int = 125):
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message
        self.exit_code = exit_code


class Step:
    """One kernel concept applied to one container. Subclasses fill in the four parts."""

    name = "step"
    side = HOST
    explain = ""
    lesson = "notebooks/00-start-here"

    def enabled(self, ctx) -> bool:
        """Whether this step belongs in this container's plan (e.g. uid maps only rootless)."""
        return True

    def apply(self, ctx) -> None:
        """Do the kernel work (on the host, or in the child for CHILD steps)."""

    def undo(self, ctx) -> None:
        """Reverse ``apply`` on the host. Child steps mostly undo by dying; say so in explain."""

    def observe(self, ctx) -> dict[str, Any]:
        """What this step changes, read from the host: shown before and after the step."""
        return {}


def _call(entry: Any) -> Call:
    """A call as a tuple of text, from a noted tuple, its JSON list or an edu.trace/1 line."""
    # edu.trace/1 kept each call as one line: "prctl(PR_CAPBSET_DROP, CAP_NET_RAW)".
    if not isinstance(entry, str):
        return tuple(str(part) for part in entry)
    name, _, args = entry.partition("(")
    return (name, *args.removesuffix(")").split(", ")) if args else (name,)


@functools.lru_cache(maxsize=64)
def _aliases(pairs: tuple[tuple[str, str], ...]) -> re.Pattern:
    # Longest first, so a container id is replaced before its own 8-character prefix;
    # never inside a longer hex number or address (10.77.0.2 is not in 10.77.0.25).
    words = "|".join(re.escape(value) for value, _ in sorted(pairs, key=lambda p: -len(p[0])))
    return re.compile(rf"(?<![0-9A-Fa-f])(?:{words})(?![0-9A-Fa-f])")


def normalise(calls: list, names: dict[str, str]) -> list[Call]:
    """``calls`` as tuples of text, with each of ``names`` shown as its placeholder."""
    # A container's id and address differ from run to run; <id> and <ip> do not, so the
    # calls of a fast run and of a stepped one compare equal.
    out = [_call(c) for c in calls]
    if not names:
        return out
    pattern = _aliases(tuple(sorted(names.items())))
    return [tuple(pattern.sub(lambda m: names[m[0]], part) for part in c) for c in out]


def format_call(call: Call) -> str:
    """One call as a line: ``mount(bind, /etc/hosts)``, ``pivot_root``."""
    return f"{call[0]}({', '.join(call[1:])})" if len(call) > 1 else call[0]


@dataclass
class StepRecord:
    """What happened in one step: timings (CLOCK_MONOTONIC), syscalls, observations."""

    name: str
    side: str
    start: float = 0.0
    end: float = 0.0
    # The calls as kernel.note appended them while the step ran, formatted when read
    # (``syscalls``) with ``names`` (shared by the steps of one Trace) as placeholders.
    noted: list = field(default_factory=list, repr=False)
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    names: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def syscalls(self) -> list[Call]:
        """Each call the step made, in order: ``(name, *arguments)``, normalised."""
        return normalise(self.noted, self.names)

    @syscalls.setter
    def syscalls(self, calls: list) -> None:
        # An alias ("=", value, shown) names a value for every step of this container
        # (the veth step learns the address that the nat step's rules use too).
        self.noted = []
        for c in calls:
            if c and c[0] == "=":
                self.names[c[1]] = c[2]
            else:
                self.noted.append(c)

    def lines(self) -> list[str]:
        """The syscalls as text, one line each (``format_call``)."""
        return [format_call(c) for c in self.syscalls]

    @property
    def ms(self) -> float:
        """How long the step took, in milliseconds."""
        return (self.end - self.start) * 1e3

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data (a trace's step; a helper's answer to "step")."""
        return {"name": self.name, "side": self.side, "start": self.start, "end": self.end,
                "syscalls": [list(c) for c in self.syscalls], "before": self.before,
                "after": self.after, "error": self.error}

    @classmethod
    def from_dict(cls, data: dict[str, Any], names: dict[str, str] | None = None
                  ) -> StepRecord:
        """A record from ``to_dict``'s data, or from an edu.trace/1 step's with ``names``."""
        rec = cls(data["name"], data["side"], data["start"], data["end"],
                  before=data["before"], after=data["after"], error=data.get("error", ""),
                  names=names if names is not None else {})
        rec.syscalls = data["syscalls"]
        return rec


def container_names(container_id: str) -> dict[str, str]:
    """The placeholders of a container's id in its trace: ``<id>``, ``<id:8>`` (in veth names)."""
    return {container_id: "<id>", container_id[:8]: "<id:8>"} if container_id else {}


@dataclass
class Trace:
    """The record of one container's start: every step, in order, plus how it ended."""

    container: str
    image: str
    command: list[str]
    steps: list[StepRecord] = field(default_factory=list)
    exit: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    #: What the steps' calls show as placeholders; give it to each new StepRecord.
    names: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.names.update(container_names(self.container))

    def to_dict(self) -> dict[str, Any]:
        """The trace in its versioned JSON schema (``edu.trace/2``)."""
        return {"schema": TRACE_SCHEMA, "container": self.container, "image": self.image,
                "command": self.command, "started": self.started, "exit": self.exit,
                "steps": [s.to_dict() for s in self.steps]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trace:
        """Read a trace written by ``to_dict`` (a recording, say); an edu.trace/1 one converted."""
        if data.get("schema") not in READABLE:
            raise ValueError(f"not an edu trace (schema {data.get('schema')!r}, "
                             f"expected one of {', '.join(READABLE)})")
        t = cls(data["container"], data["image"], data["command"], exit=data["exit"],
                started=data["started"])
        t.steps = [StepRecord.from_dict(s, t.names) for s in data["steps"]]
        return t

    def timeline(self, calls: bool = True) -> str:
        """A text timeline: each step's offset, duration, side and name, and its calls beneath."""
        lines = [f"{'step':<16}{'side':<7}{'start ms':>10}{'took ms':>10}"]
        for s in self.steps:
            lines.append(f"{s.name:<16}{s.side:<7}{(s.start - self.started) * 1e3:>10.2f}"
                         f"{s.ms:>10.2f}")
            if calls:
                lines.extend(f"{'':<6}{line}" for line in s.lines())
        if self.steps:
            total = (self.steps[-1].end - self.started) * 1e3
            lines.append(f"{'total to exec':<23}{total:>20.2f}")
        return "\n".join(lines)


# ---- the control channel: one JSON message per step ----------------------------------------

def channel() -> tuple[socket.socket, socket.socket]:
    """A connected pair of message sockets: (host end, child end)."""
    kernel.note("socketpair", "AF_UNIX", "SOCK_SEQPACKET")
    host, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    return host, child


def send(sock: socket.socket, fds: list[int] | None = None, **msg: Any) -> None:
    """Send one message (with ``fds`` passed along, SCM_RIGHTS: a -t container's console)."""
    if fds:
        socket.send_fds(sock, [json.dumps(msg).encode()], fds)
    else:
        sock.send(json.dumps(msg).encode())


def recv(sock: socket.socket, timeout: float | None = None) -> dict[str, Any] | None:
    """Receive one message; None when the other end closed (exec succeeded, or it died).
    File descriptors passed with it are in its ``"fds"``, ours to close."""
    sock.settimeout(timeout)
    data, fds, _, _ = socket.recv_fds(sock, 1 << 20, 4)
    if not data:
        for fd in fds:
            os.close(fd)
        return None
    msg = json.loads(data)
    if fds:
        msg["fds"] = fds
    return msg


def now() -> float:
    """The clock every step is timed with: CLOCK_MONOTONIC, the same in host and child."""
    return time.monotonic()
