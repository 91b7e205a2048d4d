"""A container is a plan of steps; this module is the plan's machinery.

Every step has the same shape: ``name``, ``explain`` (a paragraph for students, and what
*undo* means for this step), ``apply`` (the kernel work), ``undo`` (its exact reverse) and
``observe`` (a snapshot of the kernel state the step changes, read from the host). Some steps
run on the host (creating a cgroup, writing uid maps), others inside the child that becomes
the container (mounts, pivot_root, exec). The child waits between steps; one message per
step crosses a socketpair, so the host can stop between any two steps and look.

Teardown is the applied steps undone in reverse, like ``contextlib.ExitStack``: that is how
"nothing leaks" rests on structure rather than on discipline.

Introduced in notebooks/00-start-here; each step is taught in its own lesson.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

HOST, CHILD = "host", "child"
TRACE_SCHEMA = "edu.trace/1"


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


@dataclass
class StepRecord:
    """What happened in one step: timings (CLOCK_MONOTONIC), syscalls, observations."""

    name: str
    side: str
    start: float = 0.0
    end: float = 0.0
    syscalls: list[str] = field(default_factory=list)
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def ms(self) -> float:
        """How long the step took, in milliseconds."""
        return (self.end - self.start) * 1e3

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data (a trace's step; a helper's answer to "step")."""
        return {"name": self.name, "side": self.side, "start": self.start, "end": self.end,
                "syscalls": self.syscalls, "before": self.before, "after": self.after,
                "error": self.error}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepRecord:
        """A record from ``to_dict``'s data."""
        return cls(data["name"], data["side"], data["start"], data["end"], data["syscalls"],
                   data["before"], data["after"], data.get("error", ""))


@dataclass
class Trace:
    """The record of one container's start: every step, in order, plus how it ended."""

    container: str
    image: str
    command: list[str]
    steps: list[StepRecord] = field(default_factory=list)
    exit: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def to_dict(self) -> dict[str, Any]:
        """The trace in its versioned JSON schema (``edu.trace/1``)."""
        return {"schema": TRACE_SCHEMA, "container": self.container, "image": self.image,
                "command": self.command, "started": self.started, "exit": self.exit,
                "steps": [s.to_dict() for s in self.steps]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trace:
        """Read a trace written by ``to_dict`` (a recording, say)."""
        if data.get("schema") != TRACE_SCHEMA:
            raise ValueError(f"not an edu trace (schema {data.get('schema')!r}, "
                             f"expected {TRACE_SCHEMA})")
        t = cls(data["container"], data["image"], data["command"], exit=data["exit"],
                started=data["started"])
        t.steps = [StepRecord.from_dict(s) for s in data["steps"]]
        return t

    def timeline(self) -> str:
        """A text timeline: each step's offset, duration, side and name."""
        lines = [f"{'step':<16}{'side':<7}{'start ms':>10}{'took ms':>10}  syscalls"]
        for s in self.steps:
            calls = ", ".join(s.syscalls[:6]) + (" ..." if len(s.syscalls) > 6 else "")
            lines.append(f"{s.name:<16}{s.side:<7}{(s.start - self.started) * 1e3:>10.2f}"
                         f"{s.ms:>10.2f}  {calls}")
        if self.steps:
            total = (self.steps[-1].end - self.started) * 1e3
            lines.append(f"{'total to exec':<23}{total:>20.2f}")
        return "\n".join(lines)


# ---- the control channel: one JSON message per step ----------------------------------------

def channel() -> tuple[socket.socket, socket.socket]:
    """A connected pair of message sockets: (host end, child end)."""
    host, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    return host, child


def send(sock: socket.socket, **msg: Any) -> None:
    """Send one message."""
    sock.send(json.dumps(msg).encode())


def recv(sock: socket.socket, timeout: float | None = None) -> dict[str, Any] | None:
    """Receive one message; None when the other end closed (exec succeeded, or it died)."""
    sock.settimeout(timeout)
    data = sock.recv(1 << 20)
    return json.loads(data) if data else None


def now() -> float:
    """The clock every step is timed with: CLOCK_MONOTONIC, the same in host and child."""
    return time.monotonic()
