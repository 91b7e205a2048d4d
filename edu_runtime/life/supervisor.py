"""The supervisor: one small process that owns every detached container.

``edu run -d`` must return while the container goes on, and ``-it`` must survive Ctrl-P
Ctrl-Q. Something has to stay behind to reap the container when it exits, write its
output to its log, hold its terminal, and restart it if asked. Docker runs a
containerd-shim per container for this (about 13 MiB each); edu runs one supervisor for
all of them:

- it is a *subreaper* (PR_SET_CHILD_SUBREAPER), so every container and every orphan of
  theirs becomes its child, and it reaps them all on SIGCHLD: no zombies;
- it holds the pty master of ``-t`` containers and the pipes of the others, and appends
  what they print to ``<container>/container.log`` (JSON lines, like Docker's json-file),
  rotated by size and count (``logs``: ``--log-opt max-size=10m --log-opt max-file=3``);
- it applies ``--restart no|on-failure[:N]|always``;
- it is started on demand by the CLI, listens on ``run_dir()/supervisor-<scope>.sock`` (one
  per state directory), and exits
  when it has nothing left to supervise;
- containers ask the kernel to SIGKILL them if it dies (PR_SET_PDEATHSIG), and their records
  name it as owner, so if it crashes the next ``edu`` command finds and cleans them;
- so it protects itself from the OOM killer (``oom``: oom_score_adj -500, as dockerd),
  and gives each container its own value (0) straight after the fork.

The wire protocol is one JSON line per request on a unix socket; ``attach`` then turns the
connection into a raw byte stream (output to the client, keystrokes to the container).

Introduced in notebooks/07-run-it.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import json
import os
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import kernel, networks, paths
from . import checker, client, logs, oom, states

#: Seconds idle before exiting: long enough to stay warm between runs (tests shorten it).
IDLE_EXIT = float(os.environ.get("EDU_SUPERVISOR_IDLE", "30"))


class Supervised:
    """One container the supervisor owns: its streams, attach clients and restart policy."""

    def __init__(self, spec: dict[str, Any], tty: bool, restart: str, size=None):
        self.spec, self.tty, self.restart = spec, tty, restart
        self.restarts = 0
        self.container = None
        self.fds: dict[int, str] = {}  # our end of the container's streams -> stream name
        self.stdin_fd: int | None = None
        self.clients: list[socket.socket] = []
        self.size = size

    @property
    def log_path(self) -> Path:
        """The container's log: one JSON object per line, like Docker's json-file."""
        return self.container.paths.dir / "container.log"


@dataclass
class Stepping:
    """A stepper a notebook holds open: the container so far, and its streams."""

    sup: Supervised
    stepper: Any
    ours: dict[int, str]
    theirs: list[int]


class Supervisor:
    """The event loop: requests, container output, SIGCHLD, idle exit."""

    def __init__(self, front=None):
        self.front = front
        self.sel = selectors.DefaultSelector()
        self.checks = checker.Checker(self.sel)  # healthchecks: see _on_health
        self.by_pid: dict[int, Supervised] = {}
        self.by_fd: dict[int, Supervised] = {}
        self.last_busy = time.monotonic()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.exit_codes: dict[str, int] = {}  # for `wait` after an attached run ends
        self.exit_info: dict[str, dict[str, Any]] = {}
        self.waiters: dict[str, list[tuple[socket.socket, Any]]] = {}  # and how to answer
        self.steppers: dict[socket.socket, Stepping] = {}  # open steppers, by connection
        self.apart: dict[int, str] = {}  # shims running thin clients' foreground runs: pid -> id
        self.pending: collections.deque = collections.deque()  # runs asked for: (conn, req)
        self.cleaned = False  # cleanup_stale has run for the runs now pending

    # ---- start-up -------------------------------------------------------------------------

    def serve(self) -> None:
        """Listen, then loop until idle."""
        kernel.prctl(kernel.PR_SET_CHILD_SUBREAPER, 1)
        oom.protect_supervisor()  # the OOM killer must take a container, not all of them
        path = Path(client.socket_path())
        paths.ensure(path.parent, 0o700)
        path.unlink(missing_ok=True)
        if paths.is_root():
            networks.hold_warm()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(128)
        self.sel.register(self.listener, selectors.EVENT_READ, ("accept", None))
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.stopping = False
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self.sel.register(self.wake_r, selectors.EVENT_READ, ("signal", None))
        try:
            while True:
                ready = self.sel.select(timeout=0 if self.pending else self.checks.wait(0.5))
                for key, _ in ready:
                    kind, obj = key.data
                    getattr(self, f"_on_{kind}")(key.fileobj, obj)
                if self.pending:  # one start per turn: output and attach keep flowing
                    self._run_next()
                self._reap()
                self.checks.tick(s.container for s in self.by_pid.values())
                if self.stopping:
                    for conn in list(self.steppers):  # half-made containers are undone
                        self._step_close(conn, abort=True)
                    if not self.by_pid and not self.apart and not self.pending:
                        break
                    continue
                if self.by_pid or self.steppers or self.apart or self.pending:  # a stepper may
                    # idle for minutes
                    self.last_busy = time.monotonic()
                elif time.monotonic() - self.last_busy > IDLE_EXIT:
                    break
        finally:
            self.checks.close()
            path.unlink(missing_ok=True)  # no new requests from here on
            self.listener.close()
            if paths.is_root():
                networks.release_warm()  # idle bridges and their rules go with us

    # ---- requests -------------------------------------------------------------------------

    def _on_accept(self, listener, _):
        """Every client waiting to connect (a class pressing Enter at once: their requests
        are then read in one turn of the loop, with one cleanup before them)."""
        listener.setblocking(False)
        try:
            while True:
                try:
                    conn, _ = listener.accept()  # (blocking, as accepted sockets are made)
                except BlockingIOError:
                    return
                self.last_busy = time.monotonic()
                self.sel.register(conn, selectors.EVENT_READ, ("request", None))
        finally:
            listener.setblocking(True)

    def _on_request(self, conn, _):
        self.sel.unregister(conn)
        req: dict[str, Any] = {}
        try:
            data, fds = _read_request(conn)
            if data.startswith(b"ARGV "):
                req = self._argv_request(conn, data, fds)
                if req:
                    self._queue(conn, req)
                return
            line, _, early = data.partition(b"\n")  # early: keys typed after `attach`
            req = json.loads(line) if line else {}
            req["_fds"] = fds
            op = req.get("op")
            if op == "run":
                self._queue(conn, req)
            elif op == "step-open":
                self._step_open(conn, req)
            elif op == "attach":
                self._attach(conn, req["id"], early)
            elif op == "wait":
                if req["id"] in self.exit_codes or req["id"] not in self.apart.values() \
                        and not any(s.container.id == req["id"] for s in self.by_pid.values()):
                    _reply(conn, **self._exit_reply(req["id"]))
                    conn.close()
                else:  # answered when the container exits
                    self.waiters.setdefault(req["id"], []).append((conn, _reply_json))
            elif op == "start":
                self._start_again(conn, req["id"])
            elif op == "kill":
                sup = next((s for s in self.by_pid.values()
                            if s.container.id == req["id"]), None)
                if sup is not None:
                    sup.container.kill(req.get("signal", signal.SIGKILL))
                elif req["id"] in self.apart.values():  # a shim's: signalled by its record
                    from . import control

                    try:
                        control.kill(req["id"], req.get("signal", signal.SIGKILL))
                    except (control.ControlError, states.InvalidTransition, LookupError):
                        pass
                _reply(conn, ok=sup is not None or req["id"] in self.apart.values())
                conn.close()
            elif op == "ping":
                _reply(conn, ok=True, pid=os.getpid(), containers=len(self.by_pid),
                       # what it has paid to import: pyroute2 only once a bridge was used
                       imported=sorted(m for m in ("pyroute2", "libvirt", "matplotlib")
                                       if m in sys.modules))
                conn.close()
            else:
                _reply(conn, error=f"unknown request {op!r}")
                conn.close()
        except Exception as exc:  # noqa: BLE001 - one bad request must not kill the rest
            self._refuse(conn, req, exc)

    def _refuse(self, conn, req, exc: Exception) -> None:
        """Tell the client why its request failed, in its own wire format."""
        code = getattr(exc, "exit_code", None) or getattr(exc, "code", 125)
        try:
            if req.get("plain"):
                from ..container import image_hint

                conn.sendall(f"error {code}\n{image_hint(str(exc), req['image'])}"
                             .encode())
            else:
                _reply(conn, error=str(exc), code=code)
        except OSError:
            pass
        conn.close()

    def _queue(self, conn, req) -> None:
        """A run waits its turn: starts are made one per turn of the loop, so that what
        running containers print keeps reaching their logs and attached clients while a
        class's sixty runs arrive at once. Runs asked for together share one cleanup."""
        if not self.pending:
            self.cleaned = False
        self.pending.append((conn, req))

    def _run_next(self) -> None:
        conn, req = self.pending.popleft()
        try:
            self._run(conn, req)
        except Exception as exc:  # noqa: BLE001 - one bad request must not kill the rest
            self._refuse(conn, req, exc)

    def _argv_request(self, conn, data: bytes, fds: list[int]) -> dict[str, Any] | None:
        """A thin client's ``edu run`` command line (see edu_cli.fastrun), read by the
        program's front (the CLI's own parser, when the CLI started this supervisor): the
        run request, or None once declined or refused. A front refuses by raising an
        exception with a ``code`` (Docker's exit code) whose text is the sentence."""
        fields = [os.fsdecode(f) for f in data.split(b"\n", 1)[1].split(b"\0")]
        argc = int(fields[1])
        argv, environ = fields[2:2 + argc], dict(
            f.partition("=")[::2] for f in fields[2 + argc:] if f)
        try:
            req = self.front(argv, environ, fields[0]) if self.front else None
        except Exception as exc:  # noqa: BLE001 - the front's refusal, said to the client
            if not hasattr(exc, "code"):
                raise
            conn.sendall(f"error {exc.code}\n{exc}".encode())
            req = None
        else:
            if req is None:
                conn.sendall(b"declined\n")
        if req is None or req.get("detach"):  # a detached container keeps no terminal
            for fd in fds:
                os.close(fd)
            fds = []
        if req is None:
            conn.close()
            return None
        return {**req, "_fds": fds, "plain": True}

    def _exit_reply(self, container_id: str) -> dict[str, Any]:
        return {"exit_code": self.exit_codes.get(container_id),
                **self.exit_info.get(container_id, {})}

    def _run(self, conn, req) -> None:
        from .control import cleanup_stale

        if req.get("plain") and not req.get("detach") and req["_fds"] and \
                self._run_apart(conn, req):
            return
        if not self.cleaned:  # what killed `edu` processes left, before anything new is made
            cleanup_stale()
            self.cleaned = True
        sup = Supervised(req["spec"], req.get("tty", False), req.get("restart", "no"),
                         req.get("size"))
        sup.trace = req.get("trace", False)
        self._start(sup, req.get("interactive", False), container_id=req.get("id"),
                    passed=req["_fds"] or None)  # closes our copies of the passed fds
        cid = sup.container.id
        if req.get("plain") and req.get("detach"):  # a thin `edu run -d`: the id, done
            conn.sendall(f"detached {cid}\n".encode())
            conn.close()
            return
        if req.get("plain"):  # a thin client: one line now, the exit code later
            conn.sendall(f"started {cid}\n".encode())
            self.waiters.setdefault(cid, []).append((conn, _plain_exit(req.get("memory"))))
            return
        if req.get("tied"):  # a build's RUN: it dies with whoever asked for it, from now
            self.waiters.setdefault(cid, []).append((conn, _reply_json))
            self.sel.register(conn, selectors.EVENT_READ, ("waiter", cid))
        try:
            _reply(conn, id=cid, name=sup.container.config.name, pid=sup.container.pid,
                   trace=sup.container.trace.to_dict())
        except OSError:
            if not req.get("tied"):
                raise
            return  # gone already: the loop sees the hang-up (_on_waiter)
        if req.get("tied"):
            return  # the exit code follows on this connection
        if req.get("attach"):
            self._attach(conn, cid)
        elif req.get("wait"):  # the exit code follows on this connection
            self.waiters.setdefault(cid, []).append((conn, _reply_json))
        else:
            conn.close()

    def _run_apart(self, conn, req) -> bool:
        """Hand a thin client's foreground run to a shim: a child of ours that starts the
        container, waits for it and tears it down, as a containerd-shim does for dockerd.
        Its output goes straight to the client's terminal (the passed fds), so there is
        nothing here to relay or log; without this, sixty students pressing Enter at once
        wait in line for this one process (bench/class_day.py). Its container's orphans
        still come to us (the subreaper). False (nothing done) when it has a healthcheck,
        which our event loop runs: then it is started here, as a detached one is."""
        from ..container import Container
        from . import health
        from .control import cleanup_stale_objects, cleanup_stale_records

        if not self.cleaned:  # a killed run's record first: its name may be asked for again
            cleanup_stale_records()
        passed = req["_fds"]
        try:
            c = Container(**req["spec"], stdio=tuple(passed[:3]), container_id=req.get("id"),
                          fork_here=True)
        except BaseException:
            _close_quietly(passed)
            raise
        shell = (c.image.config.get("config") or {}).get("Shell")
        if health.command(getattr(c.config, "healthcheck", None), shell) is not None:
            return False
        if c.config.network not in ("none", "host"):
            from .. import networks

            networks.warm_up(c.config.network)  # here, not in each shim: once warm, cheap
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                # It dies with us, and its container with it, as our own containers do
                # (the next `edu` command cleans up after them).
                kernel.set_pdeathsig(signal.SIGKILL)
                if os.getppid() != parent:  # we died before it could ask
                    os._exit(0)
                os._exit(self._shim(conn, req, c))  # its container's code, for `edu wait`
            finally:
                os._exit(125)
        self.apart[pid] = c.id
        _close_quietly(passed)  # the shim has them now
        conn.close()
        # The rest of the cleanup here, while the shim starts the container on the other
        # core: a cgroup, lease, veth or rule a killed `edu` left is no obstacle to a new
        # container (each is named by its own id), and the cleanup is safe beside a start.
        if not self.cleaned:
            cleanup_stale_objects()
            self.cleaned = True
        return True

    def _shim(self, conn, req, c) -> int:
        """In the shim (a fork of ours): start ``c``, answer ``started``, wait, tear down,
        answer ``exit CODE``, as ``_run`` and ``_exited`` do for a supervised one. The
        code it answered is its own exit status, which ``_reap`` keeps for ``wait``."""
        from ..networks import nat

        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        stopping: list[bool] = []

        def on_sigterm(*_):  # the supervisor is shutting down: its shims' containers go
            stopping.append(True)
            if c.pid:
                c.kill(signal.SIGKILL)
        signal.signal(signal.SIGTERM, on_sigterm)
        # Only this run's fds: a copy of another client's connection, or of a container's
        # stdin or terminal, held here would keep its other end from ever seeing the end.
        low = 3
        for fd in sorted({conn.fileno(), *req["_fds"]}):  # close_range(2) around them
            os.closerange(low, fd)
            low = max(low, fd + 1)
        os.closerange(low, os.sysconf("SC_OPEN_MAX"))
        nat._nft = None  # its libnftables context's socket was one of them: a new one
        try:
            c.start()
        except Exception as exc:  # noqa: BLE001 - said to the client, as _on_request does
            from ..container import image_hint

            code = getattr(exc, "exit_code", None) or getattr(exc, "code", 125)
            _tell(conn, f"error {code}\n{image_hint(str(exc), req['image'])}")
            return int(code) & 0xFF
        finally:
            _close_quietly(req["_fds"])
        # Its record names this shim as its owner already (the start ran here), and a
        # record without restart, tty or restart_count reads as "no", False and 0.
        if stopping:
            c.kill(signal.SIGKILL)
        _tell(conn, f"started {c.id}\n")  # (a client gone meanwhile: it runs to its end)
        while True:
            try:
                _, status = os.waitpid(c.pid, 0)
                break
            except ChildProcessError:
                status = 0
                break
        code = c.exited(status)  # torn down (a --rm one removed) before the answer
        try:
            _plain_exit(req.get("memory"))(conn, {
                "exit_code": code, "oom_killed": c.oom_killed,
                "trace": c.trace.timeline() if req.get("trace") else ""})
        except OSError:
            pass
        conn.close()  # the client's end of file now, not once this process has exited
        return code & 0xFF

    def _start_again(self, conn, container_id: str) -> None:
        """``docker start``: a created or exited container is made again from its record's
        spec, with its id (so its writable layer), and supervised as a detached one."""
        from . import control

        control.cleanup_stale()
        rec = states.find(container_id)
        try:  # checked here too: two `edu start` at once must not make it twice
            control.startable(rec)
        except states.InvalidTransition as exc:
            _reply(conn, error=str(exc), code=exc.exit_code, invalid=True)
            conn.close()
            return
        states.update(rec["id"], stopping=False)  # `edu stop` held off its restart policy
        sup = Supervised(control.start_spec(rec), rec.get("tty", False),
                         rec.get("restart") or "no")
        try:
            self._start(sup, False, container_id=rec["id"])
        except Exception as exc:  # its record keeps why, for inspect's State.Error
            states.update(rec["id"], error=str(exc), exit_code=getattr(exc, "exit_code", 125))
            raise
        states.update(rec["id"], created=rec["created"], error="")  # made once, started often
        _reply(conn, id=rec["id"], name=sup.container.config.name, pid=sup.container.pid)
        conn.close()

    def _start(self, sup: Supervised, interactive: bool, container_id: str | None = None,
               passed: list[int] | None = None):
        from ..container import Container

        stdio, ours, theirs = self._streams(sup, interactive, passed)
        try:
            c = Container(**sup.spec, stdio=stdio, container_id=container_id, tty=sup.tty,
                          tty_size=sup.size, fork_here=True)
            c.start()
        except BaseException:
            _close_quietly(list(ours))
            raise
        finally:  # the container has its own copies now (or never will)
            _close_quietly(theirs)
        self._adopt(sup, c, ours)

    def _streams(self, sup: Supervised, interactive: bool, passed: list[int] | None = None):
        """The container's stdin, stdout and stderr: (its three fds, ours to read from
        {fd: stream}, its ends to close once it has them)."""
        if passed:  # a foreground `edu run`: the container writes straight to its terminal
            return tuple(passed[:3]), {}, list(passed)
        if sup.tty:  # its terminal is made inside it, by the exec step (_adopt takes it)
            null = os.open(os.devnull, os.O_RDWR)
            return (null, null, null), {}, [null]
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        if interactive:
            in_r, in_w = os.pipe()
            sup.stdin_fd = in_w
        else:
            in_r = os.open(os.devnull, os.O_RDONLY)
        return (in_r, out_w, err_w), {out_r: "stdout", err_r: "stderr"}, [in_r, out_w, err_w]

    def _adopt(self, sup: Supervised, c, ours: dict[int, str]) -> None:
        """A started container is ours from now on: reaped, logged, restarted if asked."""
        sup.container = c
        console = c.take_console()
        if console is not None:  # -t: its terminal's master end, our end of its streams
            sup.stdin_fd = console
            ours = {**ours, console: "stdout"}
        sup.spec = {**sup.spec, "name": c.config.name}  # a restart keeps its generated name
        states.update(c.id, owner=os.getpid(), restart=sup.restart, tty=sup.tty,
                      restart_count=sup.restarts)
        self.by_pid[c.pid] = sup
        self.checks.follow(c)
        for fd, stream in ours.items():
            os.set_blocking(fd, False)
            sup.fds[fd] = stream
            self.by_fd[fd] = sup
            self.sel.register(fd, selectors.EVENT_READ, ("output", sup))

    # ---- stepping on behalf of a notebook -------------------------------------------------
    #
    # A Jupyter kernel is a threaded process, and a child forked from one may inherit a lock
    # another thread held at that moment (the logging lock, stdout's): it hangs, for ever.
    # So a notebook's containers are made here, by this single-threaded process, and a
    # stepper is a conversation on one connection: "step-open" makes the container and
    # answers with its plan, each "next" applies one step and answers with its record, and
    # when the command runs the container is supervised like any detached one. If the
    # connection ends first (the kernel died, or was restarted), the container is torn down
    # at once: nothing half-made outlives its notebook.

    def _step_open(self, conn, req) -> None:
        from ..container import Container

        sup = Supervised(req["spec"], False, req.get("restart", "no"))
        stdio, ours, theirs = self._streams(sup, False, req.get("_fds") or None)
        try:
            c = Container(**req["spec"], stdio=stdio, container_id=req.get("id"),
                          fork_here=True)
            stepper = c.steps()
        except BaseException:
            _close_quietly(theirs + list(ours))
            raise
        self.steppers[conn] = Stepping(sup, stepper, ours, theirs)
        steps = stepper.ctx.steps
        _reply(conn, id=c.id, name=c.config.name,
               plan=[{"name": st.name, "side": st.side, "explain": st.explain,
                      "lesson": st.lesson} for st in steps])
        self.sel.register(conn, selectors.EVENT_READ, ("stepper", None))

    def _on_stepper(self, conn, _) -> None:
        stepping = self.steppers[conn]
        try:
            line = client.readline(conn)
        except OSError:
            line = ""
        if not line:  # the notebook is gone: undo what was applied, now
            self._step_close(conn, abort=True)
            return
        op = json.loads(line).get("op")
        stepper = stepping.stepper
        try:
            if op == "abort":
                self._step_close(conn, abort=True, answer={"aborted": True})
                return
            records = []
            while stepper.upcoming is not None:
                records.append(stepper.advance().to_dict())
                if op == "next":
                    break
        except Exception as exc:  # noqa: BLE001 - the step's sentence goes to the notebook
            self._step_close(conn, abort=False, answer={
                "error": str(exc), "code": getattr(exc, "exit_code", 125), "records": []})
            return
        c = stepper.container
        done = stepper.upcoming is None
        if done:  # the command runs: from now on an ordinary supervised container
            _close_quietly(stepping.theirs)
            stepping.theirs = []
            self._adopt(stepping.sup, c, stepping.ours)
        _reply(conn, records=records, index=stepper.index, pid=c.pid, done=done)
        if done:
            self._step_close(conn, abort=False)

    def _step_close(self, conn, abort: bool, answer: dict | None = None) -> None:
        stepping = self.steppers.pop(conn)
        if abort or answer is not None and "error" in answer:
            if abort:
                stepping.stepper.abort()
            _close_quietly(stepping.theirs + list(stepping.ours))
        if answer is not None:
            try:
                _reply(conn, **answer)
            except OSError:
                pass
        try:
            self.sel.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()

    def _attach(self, conn, container_id: str, early: bytes = b"") -> None:
        sup = next((s for s in self.by_pid.values() if s.container.id == container_id), None)
        if sup is None:
            _reply(conn, error="the container is not running under this supervisor")
            conn.close()
            return
        sup.clients.append(conn)
        self.sel.register(conn, selectors.EVENT_READ, ("input", sup))
        if early and sup.stdin_fd is not None:
            try:
                os.write(sup.stdin_fd, early)
            except OSError:
                pass

    # ---- streams --------------------------------------------------------------------------

    def _on_output(self, fd, sup: Supervised) -> None:
        try:
            data = os.read(fd, 65536)
        except OSError as exc:
            data = b"" if exc.errno == errno.EIO else None  # EIO: the pty's slave closed
            if data is None:
                return
        if not data:
            self._close_stream(fd, sup)
            return
        stream, now = sup.fds[fd], datetime.now(UTC).isoformat()
        try:
            logs.append(sup.log_path, [{"log": line, "stream": stream, "time": now} for line
                                       in data.decode(errors="replace").splitlines(True)],
                        sup.container.spec.get("log_opts"))  # as Container checked them
        except Exception:  # noqa: BLE001 - a full disk loses output, never every container
            pass
        for conn in list(sup.clients):
            try:
                conn.sendall(data)
            except OSError:
                self._drop_client(conn, sup)

    def _on_input(self, conn, sup: Supervised) -> None:
        try:
            data = conn.recv(65536)
        except OSError:
            data = b""
        if not data:  # the client detached (Ctrl-P Ctrl-Q) or went away
            self._drop_client(conn, sup)
            return
        if sup.stdin_fd is not None:
            try:
                os.write(sup.stdin_fd, data)
            except OSError:
                pass

    def _drop_client(self, conn, sup: Supervised) -> None:
        if conn in sup.clients:
            sup.clients.remove(conn)
        try:
            self.sel.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()

    def _close_stream(self, fd: int, sup: Supervised) -> None:
        self.sel.unregister(fd)
        self.by_fd.pop(fd, None)
        sup.fds.pop(fd, None)
        os.close(fd)

    # ---- exits ----------------------------------------------------------------------------

    def _on_sigterm(self, *_):
        """Shut down cleanly: every container is killed, reaped and torn down first."""
        self.stopping = True
        for pid in self.apart:  # a shim kills its container and tears it down
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for sup in list(self.by_pid.values()):
            states.update(sup.container.id, stopping=True)
            sup.container.kill(signal.SIGKILL)

    def _on_health(self, fileobj, probe) -> None:
        """A healthcheck's output or exec socket is readable (``checker`` runs the checks:
        ``tick`` starts and times them out, ``reaped`` logs their ends)."""
        self.checks.ready(fileobj, probe)

    def _on_signal(self, fd, _):
        try:
            os.read(fd, 512)
        except BlockingIOError:
            pass

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.checks.reaped(pid, status)  # first: a container's end stops its checks
            sup = self.by_pid.pop(pid, None)
            if sup is not None:  # anything else was a shim or an orphan we adopted: done
                self._exited(sup, status)
            cid = self.apart.pop(pid, None)
            if cid is not None:  # a shim: its status is its container's code
                if os.WIFEXITED(status):
                    self._keep_exit(cid, os.WEXITSTATUS(status))
                self._answer_waiters_of(cid)

    def _exited(self, sup: Supervised, status: int) -> None:
        for fd in list(sup.fds):  # drain what the container printed last
            self._on_output(fd, sup)
            if fd in sup.fds:
                self._close_stream(fd, sup)
        if sup.stdin_fd is not None and not sup.tty:
            os.close(sup.stdin_fd)
        sup.stdin_fd = None
        try:
            code = sup.container.exited(status, lambda code: self._note_exit(sup, code))
        finally:
            self._answer_waiters(sup)
        if self._should_restart(sup, code):
            sup.restarts += 1
            time.sleep(min(1.0, 0.1 * 2 ** (sup.restarts - 1)))  # Docker's growing delay
            if not self._should_restart(sup, code, again=True):  # `edu stop` in the delay
                return
            try:
                self._start(sup, False, container_id=sup.container.id)
            except Exception as exc:  # noqa: BLE001
                try:
                    states.update(sup.container.id, status=states.EXITED,
                                     error=f"restart failed: {exc}")
                except OSError:  # removed meanwhile (`edu rm`): nothing left to record
                    pass

    def _note_exit(self, sup: Supervised, code: int) -> None:
        """The exit code, and what the teardown takes with it (a --rm container's log)."""
        cid = sup.container.id
        self._keep_exit(cid, code)
        self.exit_info[cid] = {"oom_killed": sup.container.oom_killed,
                               "trace": sup.container.trace.timeline()
                               if getattr(sup, "trace", False) else ""}
        if sup.spec.get("remove"):  # its log goes with it: a notebook waiting gets the end
            self.exit_info[cid].update(_log_tail(sup.log_path))

    #: How many ended containers' codes are kept for a late ``wait`` (a class day's runs).
    KEPT_EXITS = 1000

    def _keep_exit(self, cid: str, code: int) -> None:
        """Remember ``cid``'s code; the oldest go past KEPT_EXITS (their info with them)."""
        self.exit_codes.pop(cid, None)  # (re-inserted: a restarted one is the newest again)
        self.exit_codes[cid] = code
        while len(self.exit_codes) > self.KEPT_EXITS:
            old = next(iter(self.exit_codes))
            del self.exit_codes[old]
            self.exit_info.pop(old, None)

    def _on_waiter(self, conn, cid: str) -> None:
        """A tied waiter hung up before its container exited (the notebook's kernel that
        runs a build died): as the build would have, kill the container and remove it."""
        try:
            gone = not conn.recv(1)
        except OSError:
            gone = True
        if not gone:
            return  # (a waiter sends nothing; ignore it if it does)
        self.sel.unregister(conn)
        self.waiters[cid] = [w for w in self.waiters.get(cid, []) if w[0] is not conn]
        conn.close()
        sup = next((s for s in self.by_pid.values() if s.container.id == cid), None)
        if sup is not None:
            sup.spec["remove"] = sup.container.config.remove = True
            sup.container.kill(signal.SIGKILL)

    def _answer_waiters(self, sup: Supervised) -> None:
        """Tell whoever waits for this container its exit code, once it is torn down: as
        ``docker run`` returns, with the container exited (its record says so, its lease
        is back), or with --rm gone (``edu ps -a`` straight after no longer lists it)."""
        self._answer_waiters_of(sup.container.id)
        for conn in list(sup.clients):
            self._drop_client(conn, sup)

    def _answer_waiters_of(self, cid: str) -> None:
        for waiter, answer in self.waiters.pop(cid, []):
            with contextlib.suppress(KeyError, ValueError):  # a tied waiter: no longer watched
                self.sel.unregister(waiter)
            try:
                answer(waiter, self._exit_reply(cid))
            except OSError:
                pass
            waiter.close()

    def _should_restart(self, sup: Supervised, code: int, again: bool = False) -> bool:
        try:
            rec = states.find(sup.container.id)
        except states.NoSuchContainer:
            return False
        if rec.get("stopping") or sup.spec.get("remove"):
            return False
        policy, _, limit = sup.restart.partition(":")
        if policy == "always":
            return True
        if policy == "on-failure" and code != 0:
            return not limit or sup.restarts < int(limit) + (1 if again else 0)
        return False


#: How much of a removed container's log its exit answer carries (a notebook's `run()`
#: copies what it had not shown yet; the file itself is gone with the container).
LOG_TAIL = 1 << 20


def _log_tail(path: Path) -> dict[str, Any]:
    """``{"log": the last LOG_TAIL bytes of the log, "log_files": [[inode, size], ...]}``
    (across its rotated files: ``logs.unread`` finds what a reader had not read yet)."""
    return logs.tail(path, LOG_TAIL)


def _close_quietly(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _read_request(conn: socket.socket) -> tuple[bytes, list[int]]:
    """One request (a JSON line, or a thin client's ``ARGV <length>`` block), and any file
    descriptors sent with it (SCM_RIGHTS)."""
    # Close-on-exec: a container started while these wait their turn must not hold a
    # client's terminal open (its `edu run` would never see the end of its output).
    data, fds, _, _ = socket.recv_fds(conn, 65536, 8, socket.MSG_CMSG_CLOEXEC)
    if data.startswith(b"ARGV "):
        head, _, body = data.partition(b"\n")
        while not _ and (chunk := conn.recv(4096)):  # the header itself came in pieces
            head, _, body = (data := data + chunk).partition(b"\n")
        size = int(head.split()[1])
        while len(body) < size and (chunk := conn.recv(65536)):
            body += chunk
        return head + b"\n" + body, list(fds)
    while data and b"\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data, list(fds)


def _tell(conn: socket.socket, text: str) -> None:
    """Send a thin client a line; a client that has gone is not an error."""
    try:
        conn.sendall(text.encode())
    except OSError:
        pass


def _reply(conn: socket.socket, **msg: Any) -> None:
    conn.sendall((json.dumps(msg) + "\n").encode())


def _reply_json(conn: socket.socket, info: dict[str, Any]) -> None:
    _reply(conn, **info)


def _plain_exit(memory):
    """How a thin client is told its container's end: ``exit CODE``, then what to print."""
    def answer(conn: socket.socket, info: dict[str, Any]) -> None:
        from ..container import oom_note

        text = f"exit {info.get('exit_code') or 0}\n"
        if info.get("oom_killed"):
            text += oom_note(memory) + "\n"
        if info.get("trace"):
            text += info["trace"] + "\n"
        conn.sendall(text.encode())
    return answer


def main(front=None) -> None:
    """The supervisor's program: ``python -m edu_runtime.life.supervisor [--daemonize]``.

    ``front(argv, environ, cwd)``, if given, reads a thin client's ``edu run`` command line
    into a run request (None: the client runs its normal path). The CLI gives its parser
    (``python -m edu_cli.supervise``); without one, thin clients are declined, and fall
    back to sending a request they parsed themselves."""
    if "--daemonize" in sys.argv:
        if os.fork():
            os._exit(0)
        os.setsid()
        if os.fork():
            os._exit(0)
    where = paths.ensure(paths.run_dir(), 0o700) / f"supervisor-{client.scope()}.lock"
    for _ in range(400):
        lock = open(where, "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            try:
                client.connect(start=False).close()
                return  # another supervisor is running and answering
            except OSError:
                time.sleep(0.025)  # one is on its way out (retiring bridges): wait for it
            continue
        if client.same_file(lock, where):
            break
        lock.close()  # its supervisor removed it as it exited: lock the new one
    else:
        return
    client.sweep_gone()  # gone supervisors' locks (ours is held: it stays)
    try:
        Supervisor(front).serve()
    finally:
        where.unlink(missing_ok=True)  # still ours: we hold its lock, and it is the path's
        lock.close()


if __name__ == "__main__":
    main()
