"""Containers for a threaded process, such as a Jupyter kernel: a helper forks them.

``fork()`` copies only the calling thread. If another thread held a lock at that moment
(the logging module's, stdout's, the allocator's), the child inherits the lock held, and
nobody will ever release it: the child hangs the first time it needs it. A Jupyter kernel
always runs several threads, so it never forks a container itself. The supervisor (root) or
the user's own one (rootless: the same program under the user's state directory) is a
single-threaded process; it makes the container, and the notebook talks to it:

- ``start``/``wait``: one request each, as ``edu run -d`` and ``docker wait`` are;
- ``RemoteStepper``: one connection per stepper, one request per step, each answered with
  the step's record. The helper does not idle out while a stepper is open, and if the
  connection ends (the kernel died), it tears the half-made container down at once.

``Container`` chooses by itself (``kernel.single_threaded()``); nothing here is needed by a
single-threaded caller such as the CLI.

Introduced in notebooks/06-step-by-step.
"""

from __future__ import annotations

import select
import sys
from dataclasses import dataclass
from typing import Any

from .. import paths
from ..steps import StepError, StepRecord, Trace
from . import client, control, logs


@dataclass
class PlannedStep:
    """A step of a plan that runs elsewhere: what a student reads before applying it."""

    name: str
    side: str
    explain: str
    lesson: str


def _check(reply: dict[str, Any], step: str = "create") -> dict[str, Any]:
    if "error" in reply:
        raise StepError(step, reply["error"].removeprefix(f"{step}: "), reply.get("code", 125))
    return reply


def start(container) -> None:
    """Have the helper make and start ``container`` (its spec and id); fill in pid, trace.
    Streams the caller chose (``stdio=``) are passed along (SCM_RIGHTS), so the container
    writes to them directly, as a thin ``edu run`` does; else the helper logs its output."""
    tied = getattr(container, "tied", False)
    reply, conn = client.request({"op": "run", "spec": container.spec, "id": container.id,
                                  "tty": False, "interactive": False, "restart": "no",
                                  "attach": False, "tied": tied},
                                 fds=list(container.stdio) if container.stdio else None)
    if tied and "error" not in reply:  # the tie is this connection, held until wait():
        container.tie = conn  # from the start, so that dying at any moment takes it along
    else:
        conn.close()
    _check(reply)
    container.remote_pid = reply.get("pid", 0)
    if reply.get("trace"):
        container.trace = Trace.from_dict(reply["trace"])
    container.status = "running"


def wait(container, out=None, err=None) -> int:
    """Wait for the container's command to end, copying what it prints to ``out`` and
    ``err`` (the notebook's sys.stdout and sys.stderr) as it comes; its exit code."""
    out, err = out or sys.stdout, err or sys.stderr
    log = paths.state_dir() / "containers" / container.id / "container.log"
    offset: logs.Cursor = 0  # an inode and an offset: the log may rotate meanwhile
    conn, container.tie = getattr(container, "tie", None), None
    if conn is None:
        conn = client.connect()
        client.send(conn, {"op": "wait", "id": container.id})
    try:
        while True:
            offset = _copy_log(log, offset, out, err)
            ready, _, _ = select.select([conn], [], [], 0.1)
            if ready:
                reply = client.answer(conn)
                break
    finally:
        conn.close()
    if "log" in reply:  # a removed container: its log is gone, its end is in the answer
        _write(logs.unread(reply, offset), out, err)
    else:
        _copy_log(log, offset, out, err)
    container.exit_code = reply.get("exit_code")
    container.oom_killed = bool(reply.get("oom_killed"))
    if "log" not in reply:
        _until_recorded(container.id, container.remote_pid)
    container.remote_pid = 0
    container.status = "exited"
    return container.exit_code if container.exit_code is not None else 125


def _until_recorded(cid: str, pid: int, timeout: float = 10.0) -> None:
    """The supervisor answers a waiter as soon as PID 1 has exited, before its teardown;
    wait (milliseconds) until the record says so too, so that an ``inspect()`` straight
    after ``run()`` shows the exit code and OOMKilled, as after ``docker run``."""
    import time

    from . import states

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            rec = states.find(cid)
        except states.NoSuchContainer:
            return
        if rec.get("status") != states.RUNNING or rec.get("pid") != pid:
            return  # exited, or already restarted by its policy
        time.sleep(0.01)


def _copy_log(log, offset: logs.Cursor, out, err) -> logs.Cursor:
    """Copy the log's new whole lines to out and err; the cursor after them."""
    text, offset = control.read_lines(log, offset)
    _write(text, out, err)
    return offset


def _write(text: str, out, err) -> None:
    """Write the lines of ``text`` (Docker's json-file format) to out or err."""
    for stream, line in control.entries(text.splitlines()):
        (err if stream == "stderr" else out).write(line)


def kill(container, sig: int) -> None:
    """Send ``sig`` to the container's PID 1, through the helper that owns it."""
    client.ask({"op": "kill", "id": container.id, "signal": int(sig)})


class RemoteStepper:
    """``Stepper``'s face for a container the helper makes: ``upcoming``, ``advance()``,
    ``run_rest()``, ``abort()`` and iteration, each step one request on one connection."""

    def __init__(self, container):
        self.container = container
        self.conn = client.connect()
        self.index = 0
        try:
            client.send(self.conn, {"op": "step-open", "spec": container.spec,
                                    "id": container.id},
                        list(container.stdio) if container.stdio else None)
            reply = _check(client.answer(self.conn))
        except BaseException:
            self.conn.close()
            raise
        self.plan = [PlannedStep(**p) for p in reply["plan"]]

    @property
    def upcoming(self) -> PlannedStep | None:
        """The step ``advance()`` will apply next, or None when the command is running."""
        return self.plan[self.index] if self.index < len(self.plan) else None

    def _ask(self, op: str) -> list[StepRecord]:
        step = self.upcoming
        if step is None:
            raise StopIteration
        try:
            client.send(self.conn, {"op": op})
            reply = client.answer(self.conn)
        except OSError:
            self._close()
            raise StepError(step.name, "the helper that makes this container went away "
                            "before this step was done (killed, or it crashed: see "
                            f"{paths.run_dir() / 'supervisor.log'}); the next edu command "
                            "cleans up what it had made: start again") from None
        records = [StepRecord.from_dict(r) for r in reply.get("records", [])]
        self.container.trace.steps.extend(records)
        if "error" in reply:
            self._close()
            self.index = len(self.plan)
            _check(reply, step.name)
        self.index = reply["index"]
        self.container.remote_pid = reply.get("pid", 0)
        if reply.get("done"):
            self.container.status = "running"
            self._close()
        return records

    def advance(self) -> StepRecord:
        """Apply the next step; its record."""
        return self._ask("next")[0]

    def run_rest(self) -> None:
        """Apply every remaining step."""
        if self.upcoming is not None:
            self._ask("rest")

    def abort(self) -> None:
        """Undo everything applied so far (the helper does) and forget the container."""
        if self.conn is None:
            return
        try:
            client.send(self.conn, {"op": "abort"})
            client.answer(self.conn)
        except OSError:
            pass  # the helper tears down a stepper whose connection ends anyway
        self._close()
        self.index = len(self.plan)

    def _close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __iter__(self):
        return self

    def __next__(self) -> StepRecord:
        return self.advance()

    def __del__(self):
        self._close()
