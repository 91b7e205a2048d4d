"""Running healthchecks for the supervisor, without ever making its loop wait.

The supervisor is one thread serving every container: a check that held it up (a ``wget``
to a server that never answers) would freeze every log, attach and restart. So a check is
handled the way a container is. It is a process, started by ``enter.spawn`` (the path of
``edu exec``, so it runs with the container's namespaces, cgroup, capabilities, seccomp
filter and user, as ``docker exec`` runs Docker's checks); its output comes through a pipe
in the supervisor's selector; its end is noticed when the supervisor reaps it after SIGCHLD;
and its timeout is a deadline the loop looks at. A check past its timeout is SIGKILLed with
its whole process group (it leads one of its own), so a shell's children go with it, and is
logged as a failure with Docker's words.

The next check is due one interval after the last one ended (and the first one interval
after the start), as in Docker 20.10. Checks stop when the container exits, and while it is
paused; either way the health turns ``unhealthy``, as Docker's does when its monitor stops.
``health`` holds the state machine; this module only runs it.

Introduced in notebooks/08-web-app.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import time
from collections.abc import Iterable
from typing import Any

from . import health, states


class Probe:
    """One check in flight: its processes, what it has printed, and its deadline."""

    def __init__(self, monitor: Monitor, helper: int, sock: socket.socket, out: int):
        self.monitor = monitor
        self.helper = helper  # the exec helper, until it is reaped (then 0)
        self.pid = 0  # the check's own process, once the helper has said which it is
        self.sock: socket.socket | None = sock
        self.out: int | None = out
        self.output = bytearray()
        self.truncated = False
        self.error = ""  # why the command could not be started, if it could not
        self.start = time.time()
        self.deadline = time.monotonic() + monitor.timeout
        self.finished = False


class Monitor:
    """The checks of one container: what to run, its health so far, when the next is due."""

    def __init__(self, container: Any, config: dict, argv: list[str], previous: dict | None):
        self.cid = container.id
        self.config, self.argv = config, argv
        self.interval, self.timeout, _, _ = health.settings(config)
        self.started = container.started or time.time()
        self.health = health.started(previous)
        # One interval after the container's start, however late the loop noticed it.
        self.due = time.monotonic() + self.interval - max(0.0, time.time() - self.started)
        self.probe: Probe | None = None


class Checker:
    """Every container's checks, driven by the supervisor's loop: ``tick`` after each
    round of events, ``ready`` for a check's pipe or socket, ``reaped`` for every child
    the supervisor reaps, ``wait`` for how long its selector may sleep."""

    def __init__(self, sel: selectors.BaseSelector):
        self.sel = sel
        self.monitors: dict[int, Monitor | None] = {}  # by the container's PID 1
        self.pids: dict[int, Probe] = {}  # check processes not yet reaped

    def tick(self, containers: Iterable[Any]) -> None:
        """Follow the running ``containers`` (new ones get a monitor if they have a check),
        kill checks past their timeout, and start the checks that are due."""
        alive = {c.pid: c for c in containers if c.pid}
        for pid, c in alive.items():
            if pid not in self.monitors:
                self.monitors[pid] = self._monitor(c)
        for pid in [p for p in self.monitors if p not in alive]:
            self._stop(self.monitors.pop(pid))
        now = time.monotonic()
        for m in self.monitors.values():
            if m is None:
                continue
            if m.probe is not None and now >= m.probe.deadline:
                self._timed_out(m.probe)
            elif m.probe is None and now >= m.due:
                self._start(m)

    def follow(self, container: Any) -> None:
        """A container has just started: its health is "starting" from now, before anyone
        is told it runs (not the "unhealthy" its last stop left), as Docker's start resets
        it. ``tick`` then finds it followed."""
        if container.pid and container.pid not in self.monitors:
            self.monitors[container.pid] = self._monitor(container)

    def wait(self, longest: float) -> float:
        """Seconds until a check is due or overdue, at most ``longest``."""
        now = time.monotonic()
        times = [m.probe.deadline if m.probe else m.due
                 for m in self.monitors.values() if m is not None]
        return max(0.0, min([longest] + [t - now for t in times]))

    def ready(self, fileobj, probe: Probe) -> None:
        """A check's socket or output pipe has something to read."""
        if fileobj is probe.sock:
            self._messages(probe)
        else:
            self._read_output(probe)

    def reaped(self, pid: int, status: int) -> None:
        """The supervisor reaped ``pid``: a container's PID 1 (its checks stop), a check's
        process (its result is logged), or anything else (nothing to do here)."""
        if pid in self.monitors:
            self._stop(self.monitors.pop(pid))
            return
        if pid not in self.pids:  # the command may end before its handoff was read
            for probe in [m.probe for m in self.monitors.values() if m and m.probe]:
                self._messages(probe)
        probe = self.pids.pop(pid, None)
        if probe is None or probe.finished:
            return
        if pid == probe.helper:
            probe.helper = 0
            self._messages(probe)
            if not probe.pid:  # it died before it could start the command
                self._finish(probe, -1, probe.error or "the exec helper died before it "
                             "could enter the container")
            return
        _kill_group(pid)  # whatever the check left running in the background goes too
        self._read_output(probe)
        self._messages(probe)
        code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        if probe.error:  # Docker logs an exec that could not start as -1 and its error
            self._finish(probe, -1, probe.error)
        else:
            self._finish(probe, code, _text(probe))

    def close(self) -> None:
        """Stop every check (the supervisor is leaving)."""
        for m in self.monitors.values():
            if m is not None and m.probe is not None:
                self._kill(m.probe)
                self._close(m.probe)
        self.monitors.clear()

    # ---- one container's checks ------------------------------------------------------------

    def _monitor(self, container: Any) -> Monitor | None:
        config = getattr(container.config, "healthcheck", None)
        shell = ((container.image.config.get("config") or {}).get("Shell")
                 if container.image is not None else None)
        argv = health.command(config, shell)
        if argv is None:
            return None
        m = Monitor(container, config, argv, (_record(container.id) or {}).get("health"))
        self._save(m)
        return m

    def _start(self, m: Monitor) -> None:
        from . import enter

        m.due = time.monotonic() + m.interval
        record = _record(m.cid)
        status = (record or {}).get("status")
        if status == states.PAUSED:  # Docker stops checking a paused container
            if m.health["status"] != health.UNHEALTHY:
                m.health = health.stopped(m.health)
                self._save(m)
            return
        if status != states.RUNNING:
            return
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        try:
            helper, sock = enter.spawn(record, m.argv, out_w)
        except enter.ExecError as exc:
            os.close(out_r)
            m.probe = Probe(m, 0, None, None)
            self._finish(m.probe, -1, exc.message)
            return
        finally:
            os.close(out_w)
        os.set_blocking(out_r, False)
        sock.setblocking(False)
        m.probe = probe = Probe(m, helper, sock, out_r)
        self.pids[helper] = probe
        for fileobj in (sock, out_r):
            self.sel.register(fileobj, selectors.EVENT_READ, ("health", probe))

    def _timed_out(self, probe: Probe) -> None:
        self._messages(probe)  # the check's pid, if the helper has said it by now
        self._kill(probe)
        self._read_output(probe)
        out = _text(probe)
        limit = health.go_duration(probe.monitor.timeout)
        self._finish(probe, -1, f"Health check exceeded timeout ({limit})"
                     + (f": {out}" if out else ""))

    def _finish(self, probe: Probe, exit_code: int, output: str) -> None:
        probe.finished = True
        self._close(probe)
        m = probe.monitor
        m.probe = None
        entry = health.result(probe.start, time.time(), exit_code, output)
        m.health = health.record(m.health, m.config, entry, m.started, probe.start)
        self._save(m)
        m.due = time.monotonic() + m.interval

    def _stop(self, m: Monitor | None) -> None:
        """The container exited (or left the supervisor): no more checks, unhealthy."""
        if m is None:
            return
        if m.probe is not None:
            self._kill(m.probe)
            self._close(m.probe)
            m.probe.finished = True
            m.probe = None
        m.health = health.stopped(m.health)
        self._save(m)

    def _save(self, m: Monitor) -> None:
        try:
            states.update(m.cid, health=m.health)
        except (OSError, ValueError):
            pass  # removed meanwhile (edu rm): nobody is left to read it

    # ---- a check's processes and streams ---------------------------------------------------

    def _messages(self, probe: Probe) -> None:
        """Read what the exec helper and the command said: ``handoff`` (the command's pid),
        ``error``, and EOF once the command has exec'd (close-on-exec)."""
        while probe.sock is not None:
            try:
                data, fds, _, _ = socket.recv_fds(probe.sock, 1 << 16, 1, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                data, fds = b"", []
            for fd in fds:
                os.close(fd)
            if not data:
                self._unregister(probe.sock)
                probe.sock.close()
                probe.sock = None
                return
            msg = json.loads(data)
            if "handoff" in msg:
                probe.pid = msg["handoff"]
                self.pids[probe.pid] = probe
            elif "error" in msg:
                probe.error = msg["error"]

    def _read_output(self, probe: Probe) -> None:
        """Keep the first 4096 bytes the check prints (Docker's limit); read and drop the
        rest, so a chatty check never blocks on a full pipe."""
        while probe.out is not None:
            try:
                data = os.read(probe.out, 65536)
            except BlockingIOError:
                return
            if not data:
                self._unregister(probe.out)
                os.close(probe.out)
                probe.out = None
                return
            room = health.MAX_OUTPUT - len(probe.output)
            probe.output += data[:max(room, 0)]
            probe.truncated |= len(data) > room

    def _kill(self, probe: Probe) -> None:
        """SIGKILL the check, its process group, and its helper if still there; the
        supervisor reaps them."""
        if probe.pid and probe.pid in self.pids:
            _kill_group(probe.pid)
            _kill_pid(probe.pid)
        if probe.helper:
            _kill_pid(probe.helper)

    def _close(self, probe: Probe) -> None:
        if probe.sock is not None:
            self._unregister(probe.sock)
            probe.sock.close()
            probe.sock = None
        if probe.out is not None:
            self._unregister(probe.out)
            os.close(probe.out)
            probe.out = None

    def _unregister(self, fileobj) -> None:
        try:
            self.sel.unregister(fileobj)
        except (KeyError, ValueError):
            pass


def _record(container_id: str) -> dict[str, Any] | None:
    try:
        return json.loads((states.base() / container_id / "state.json").read_text())
    except (OSError, ValueError):
        return None


def _text(probe: Probe) -> str:
    return probe.output.decode(errors="replace") + ("..." if probe.truncated else "")


def _kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _kill_group(pid: int) -> None:
    """SIGKILL the process group a check leads (it called setsid, so the group's id is its
    pid). Safe even if it never got that far: a group ``pid`` exists only if that process
    made it, and the pid is not free for reuse until the supervisor has reaped it (called
    just after reaping, what the check left in its group still holds the id)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
