"""Container: an image plus a command, started by running a plan of steps.

``Container(image, command).run()`` is ``docker run``; ``.steps()`` walks the same plan one
step at a time, pausing between steps with the half-built container open to inspection.
Both paths run the same code (``_advance``), so what a student steps through is exactly what
``edu run`` does.

How the host and the child cooperate: the host forks a child that waits on a socketpair.
For each step the host either does the work itself (HOST steps: the cgroup, uid maps) or
sends the child one message, "go N", and waits for "done N" (CHILD steps: unshare, mounts,
pivot_root, exec). When ``execve`` succeeds, the child's end of the socket closes
(close-on-exec), which the host reads as "the command is running".

Teardown is the applied steps undone in reverse, on success, error, KeyboardInterrupt and
SIGTERM alike. A container whose ``edu`` process was SIGKILLed is found by the next
``edu`` command (``life.control.cleanup_stale``) from its record under the state
directory.

Introduced in notebooks/07-run-it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import (
    capabilities,
    cgroups,
    flags,
    hostname,
    kernel,
    mounts,
    namespaces,
    paths,
    process,
    rootfs,
    seccomp,
)
from . import volumes as volumes_mod
from .life import control, health, oom, states
from .networks import registry as net_registry
from .networks import steps as net
from .steps import HOST, Step, StepError, StepRecord, Trace, channel, now, recv, send

#: Exit code and Docker's words for a container the kernel's OOM killer ended.
EXIT_OOM = 137


@dataclass
class Config:
    """Everything ``docker run`` flags decide, resolved against the image."""

    image_name: str
    argv: list[str]
    image_env: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = ""
    user: str = ""
    hostname: str = ""
    name: str = ""
    limits: Any = None  # cgroups.Limits
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    seccomp: bool = True
    no_new_privs: bool = False
    read_only: bool = False
    shared: set[str] = field(default_factory=set)  # namespaces shared with the host
    remove: bool = False
    tty: bool = False
    tty_size: tuple[int, int] | None = None  # -t: (rows, cols) of the caller's terminal
    init: bool = False
    network: str = "none"
    publish: list = field(default_factory=list)  # nat.PortMapping, for -p and -P
    aliases: list[str] = field(default_factory=list)  # --network-alias: more names on it
    healthcheck: dict | None = None  # Docker's HealthConfig, the image's merged in
    volume_specs: list[str] = field(default_factory=list)
    volumes: list = field(default_factory=list)  # resolved volumes.Mount, at start


@dataclass
class Paths:
    """A container's directories: its record, and the overlay's upper, work and merged."""

    dir: Path

    @property
    def upper(self) -> Path:
        """Where every write of the container lands (kept until ``edu rm``)."""
        return self.dir / "upper"

    @property
    def work(self) -> Path:
        """overlayfs's scratch directory."""
        return self.dir / "work"

    @property
    def merged(self) -> Path:
        """The mount point of the overlay: the container's / before pivot_root."""
        return self.dir / "merged"

    @property
    def record(self) -> Path:
        """state.json: status, pids, owner, exit code."""
        return self.dir / "state.json"


class Context:
    """What the steps share: the config, the child's pid, the cgroup, the channel."""

    def __init__(self, container: Container):
        self.config = container.config
        self.paths = container.paths
        self.rootless = os.geteuid() != 0
        # The init layer (rootfs.init_layer) on top of the image's layers.
        self.lowerdirs = [rootfs.init_layer(), *container.lowerdirs]
        if rootfs.wants_apt_layer(container.lowerdirs):  # rootless apt: see apt_layer
            self.lowerdirs.insert(1, rootfs.apt_layer())
        self.host_pid = os.getpid()
        self.pid = 0  # the container's PID 1, as the host sees it (0 before it exists)
        self.middle = 0  # the first child, before it hands over to PID 1
        # PID 1: False from the handoff until the host says it reaped the middle process
        # (namespaces.adopted); True while there is nothing to wait for.
        self.adopted = True
        self.sock = None
        self.console = -1  # -t: the master end of the terminal the exec step made inside
        self.cgroup = None
        self.cgroup_note = ""
        self.ns_flags = namespaces.flags_for(self.config.shared, self.rootless)
        # Rootless on a bridge network: the namespaces belong to the user's network holder.
        self.joins_holder = self.rootless and net_registry.uses_bridge(self)
        self.holder = None  # the connection to it (networks.steps.NetworkHolder)
        self.userns_fd = -1  # its user namespace, for the child to join
        self.caps = capabilities.effective_set(self.config.cap_add, self.config.cap_drop,
                                               capabilities.host_bounding())
        self.argv = self.config.argv
        self.endpoint = None  # the container's address on its network (networks.steps.Veth)
        # Its --oom-score-adj, or 500 above ours (Docker's 0 under a supervisor at -500)
        adj = container.spec.get("oom_score_adj")
        self.oom_score_adj = oom.default() if adj is None else adj
        self.ports: list = []
        self.port_holds: list = []
        # Compiled (or read from cache) here on the host, so the child only loads it.
        self.seccomp_bpf = seccomp.default_filter(self.caps) if self.config.seccomp else None
        self.container_id = container.id
        self.stdio = container.stdio
        self.cgroup_driver = None
        self.steps: list[Step] = []


class Fork(Step):
    """fork(2): the process that will become the container, waiting for instructions."""

    name = "fork"
    side = HOST
    lesson = "notebooks/07-run-it"
    explain = (
        "A container starts as an ordinary process: the host forks a child that shares "
        "everything with it (same namespaces, same root, same cgroup) and waits on a socket "
        "for one instruction per step. Undo: the child is killed (SIGKILL) and reaped.")

    def apply(self, ctx) -> None:
        """Fork; the child enters ``_child_main`` and never returns."""
        host_end, child_end = channel()
        kernel.note("fork")
        pid = os.fork()
        if pid == 0:
            host_end.close()
            ctx.sock = child_end
            if ctx.stdio:  # a supervisor gives the container a log pipe or a pty
                for target, fd in enumerate(ctx.stdio):
                    os.dup2(fd, target)
            _child_main(ctx)
        child_end.close()
        ctx.sock, ctx.middle = host_end, pid
        # Its own oom_score_adj, not its parent's: a supervisor protects itself (life/oom.py)
        try:
            oom.set_score_adj(pid, ctx.oom_score_adj)
        except OSError as exc:  # asking for less than we have, without the right to
            self.undo(ctx)
            raise StepError("fork", str(exc)) from None

    def undo(self, ctx) -> None:
        """Kill and reap whatever of the container's processes the host still owns."""
        for pid in {ctx.pid, ctx.middle} - {0}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        if ctx.sock:
            ctx.sock.close()

    def observe(self, ctx) -> dict[str, Any]:
        """The child's pid and whether it still shares the host's namespaces."""
        pid = ctx.pid or ctx.middle
        if not pid:
            return {}
        mine, host = namespaces.inodes(pid), namespaces.inodes("self")
        return {"pid": pid, "same namespaces as host": mine == host}


def _with_image_volumes(specs: list[str] | None, cfg: dict[str, Any]) -> list[str]:
    """The -v specs, plus an anonymous volume for each VOLUME of the image that no -v covers,
    as ``docker run`` makes them (a database image keeps its data out of the container)."""
    specs = list(specs or [])
    taken = set()
    for spec in specs:
        try:
            taken.add(volumes_mod.parse(spec).destination)
        except volumes_mod.VolumeError:
            pass  # reported with its sentence by volumes_mod.check
    for path in sorted(cfg.get("Volumes") or {}):
        dest = os.path.normpath("/" + path.lstrip("/"))
        if dest not in taken and dest != "/":
            specs.append(dest)
            taken.add(dest)
    return specs


def plan() -> list[Step]:
    """The steps of a container's start, in order."""
    return [
        net.ReservePorts(),  # first: a port in use fails before anything exists
        net.NetworkHolder(),  # rootless: before the fork, whose child joins its userns
        Fork(),
        cgroups.CgroupStep(),
        cgroups.JoinCgroup(),
        namespaces.Namespaces(),
        namespaces.IdMaps(),
        net.Bridge(),
        net.Veth(),
        net.Nat(),
        mounts.Propagation(),
        rootfs.RootFS(),
        mounts.SpecialFilesystems(),
        volumes_mod.Volumes(),
        net.NameFiles(),  # after volumes: on top of a volume at /etc, as in Docker
        process.Init(),
        rootfs.PivotRoot(),
        hostname.Hostname(),
        net.Loopback(),
        seccomp.Seccomp(),
        capabilities.Capabilities(),
        process.Exec(),
    ]


def _child_main(ctx: Context) -> None:
    """The child's side of the protocol: run the CHILD steps it is told to, report each,
    repeat. "go N" is one step; "go N to M" is steps N..M-1 back to back (a fast run: no
    one looks in between, so one message instead of one per step), each reported as done
    as it ends, exactly as if it had been told one at a time."""
    steps = ctx.steps  # the host's list, inherited through fork: both sides agree on indexes
    code = 125
    index = -1
    try:
        process.reset_signals()  # nothing ignored or blocked survives into the container
        while True:
            msg = recv(ctx.sock)
            if msg is None:  # the host went away
                break
            if "adopted" in msg:  # between two steps (namespaces.await_adopted)
                namespaces.adopted(ctx, msg)
                continue
            for index in range(msg["go"], msg.get("to", msg["go"] + 1)):
                kernel.record_syscalls(True)
                start = now()
                steps[index].apply(ctx)
                send(ctx.sock, done=index, start=start, end=now(),
                     syscalls=kernel.record_syscalls(False))
    except OSError as exc:
        send(ctx.sock, error=f"{exc.strerror or exc}",
             step=steps[index].name if index >= 0 else "?", exit_code=code)
    except BaseException as exc:  # noqa: BLE001 - report anything, never return to caller
        try:
            send(ctx.sock, error=repr(exc), step="?", exit_code=code)
        except OSError:
            pass
    finally:
        os._exit(code)


def new_id() -> str:
    """A 64-hex container id, as Docker's."""
    return secrets.token_hex(32)


class Stepper:
    """Walks a container's plan one step at a time; the child waits in between.

    ``upcoming`` is the next step (read its ``explain`` before applying it), ``advance()``
    applies it and returns its record (timings, syscalls, before/after observations).
    Iterating yields the records. Any failure, or ``abort()``, tears down what was applied.
    """

    def __init__(self, container: Container):
        self.container = container
        self.ctx = container._prepare()
        self.index = 0

    @property
    def upcoming(self) -> Step | None:
        """The step ``advance()`` will apply next, or None when the command is running."""
        steps = self.ctx.steps
        return steps[self.index] if self.index < len(steps) else None

    def advance(self) -> StepRecord:
        """Apply the next step."""
        step = self.upcoming
        if step is None:
            raise StopIteration
        try:
            rec = self.container._advance(step, self.ctx)
        except BaseException:
            self.abort()
            raise
        self._moved(1)
        return rec

    def _moved(self, n: int) -> None:
        self.index += n
        if self.upcoming is None:
            self.container.status = "running"
            self.container.started = time.time()
            self.container._write_record("running", self.ctx)

    def run_rest(self) -> None:
        """Apply every remaining step. Unobserved, a run of CHILD steps in a row goes to the
        child as one message (``_advance_children``): the same steps, records and order."""
        steps = self.ctx.steps
        while self.upcoming is not None:
            end = self.index
            while end < len(steps) and steps[end].side != HOST:
                end += 1
            if self.container.observe or end - self.index < 2:
                self.advance()
                continue
            try:
                self.container._advance_children(steps[self.index:end], self.ctx)
            except BaseException:
                self.abort()
                raise
            self._moved(end - self.index)

    def abort(self) -> None:
        """Undo everything applied so far and forget the container."""
        self.container._teardown()
        self.container._finish(exit_code=None)

    def __iter__(self) -> Iterator[StepRecord]:
        return self

    def __next__(self) -> StepRecord:
        return self.advance()


def diff(rec: StepRecord) -> list[str]:
    """What a step changed, as lines ``key: before -> after`` (sorted, stable)."""
    out = []
    for key in sorted(set(rec.before) | set(rec.after)):
        b, a = rec.before.get(key), rec.after.get(key)
        if b == a:
            continue
        if isinstance(b, list) and isinstance(a, list):
            gone, new = [x for x in b if x not in a], [x for x in a if x not in b]
            out.append(f"{key}: " + "; ".join(
                part for part in (f"- {_short(gone)}" if gone else "",
                                  f"+ {_short(new)}" if new else "") if part))
        else:
            out.append(f"{key}: {_short(b)} -> {_short(a)}")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 160 else text[:157] + "..."


class Container:
    """One container: create it, start it (fast or step by step), wait, and clean up."""

    def __init__(self, image, command: list[str] | None = None, *, store=None,
                 name: str | None = None, hostname: str | None = None,
                 env: dict[str, str] | None = None, workdir: str | None = None,
                 user: str | None = None, entrypoint: list[str] | None = None,
                 memory: str | int | None = None, pids_limit: int | None = None,
                 cpus: float | None = None, network: str | None = None,
                 publish: list[str] | None = None, publish_all: bool = False,
                 aliases: list[str] | None = None, healthcheck: dict | None = None,
                 cap_add: list[str] | None = None, cap_drop: list[str] | None = None,
                 seccomp: bool = True, no_new_privs: bool = False, read_only: bool = False,
                 pid: str | None = None, ipc: str | None = None, uts: str | None = None,
                 remove: bool = False, observe: bool = False,
                 stdio: tuple[int, int, int] | None = None, container_id: str | None = None,
                 tty: bool = False, init: bool = False, volumes: list[str] | None = None,
                 fork_here: bool | None = None, tty_size: tuple[int, int] | None = None,
                 labels: dict[str, str] | None = None, log_driver: str | None = None,
                 log_opts: dict[str, str] | list[str] | None = None,
                 oom_score_adj: int | None = None):
        from .images.store import Store
        from .life import logs

        try:  # Docker's --log-driver and --log-opt, checked before anything is made
            log_opts = logs.check(log_driver, log_opts) or None
        except logs.LogOptError as exc:
            raise StepError("create", str(exc)) from None
        if oom_score_adj is not None and (isinstance(oom_score_adj, bool) or not isinstance(
                oom_score_adj, int) or not -1000 <= oom_score_adj <= 1000):
            raise StepError("create", f"Invalid value {oom_score_adj!s:.40}, range for oom "
                            "score adj is [-1000, 1000]")

        # Each flag's value checked (and made its canonical type) before anything is made:
        # a refusal is one sentence (flags.BadValue, a ValueError), not a failure mid-start.
        if command is not None:
            command = flags.strings("command", command)
        if entrypoint is not None:
            entrypoint = flags.strings("entrypoint", entrypoint)
        if env is not None:
            env = flags.env(env)
        if user is not None:
            user = flags.user(user)
        network = flags.network(network)
        if cpus is not None:
            cpus = flags.cpus(cpus)
        if pids_limit is not None:
            pids_limit = flags.pids_limit(pids_limit)
        if memory is not None and (isinstance(memory, bool)
                                   or not isinstance(memory, (str, int))):
            raise flags.BadValue(f"invalid --memory value {flags.shown(memory)!r}: use a "
                                 "number of bytes or a string such as 64m")
        if publish is not None:
            publish = flags.strings("-p list", publish)
        if volumes is not None:
            volumes = flags.strings("-v list", volumes)
        # What this container was made with, JSON-ready: kept in its record, so that
        # `edu start` can start it again and a helper process can make it on our behalf.
        self.spec = {k: v for k, v in dict(
            image=image if isinstance(image, str) else image.id, command=command, name=name,
            hostname=hostname, env=env, workdir=workdir, user=user, entrypoint=entrypoint,
            memory=memory, pids_limit=pids_limit, cpus=cpus, network=network,
            publish=publish, publish_all=publish_all, cap_add=cap_add, cap_drop=cap_drop,
            aliases=aliases, healthcheck=healthcheck,
            seccomp=seccomp, no_new_privs=no_new_privs, read_only=read_only, pid=pid,
            ipc=ipc, uts=uts, remove=remove, init=init, volumes=volumes,
            labels=dict(labels) if labels else None, log_opts=log_opts,
            oom_score_adj=oom_score_adj).items()
            if v is not None}
        self.store = store or Store()
        img = image if hasattr(image, "config") else _image(self.store, image)
        self.image = img
        cfg = img.config.get("config") or {}
        argv = command_for(cfg, command, entrypoint)
        if not argv:
            raise StepError("create", "no command specified: the image has no Cmd or "
                            "Entrypoint, so give one (edu run IMAGE COMMAND)")
        self.id = container_id or new_id()
        self.stdio = stdio
        shared = {ns for ns, mode in (("pid", pid), ("ipc", ipc), ("uts", uts),
                                      ("net", network)) if mode == "host"}
        # Docker's default is the bridge (rootless, in the user's own network namespace).
        network = network or "bridge"
        mappings = []
        if network not in ("none", "host"):
            from .networks import nat

            try:
                net_registry.get(network)
                mappings = nat.parse_publish(list(publish or []), publish_all,
                                             cfg.get("ExposedPorts"))
            except (net_registry.NetworkError, ValueError) as exc:
                raise StepError("create", str(exc)) from None
        limits = None
        if memory is not None or pids_limit is not None or cpus is not None:
            mem = cgroups.parse_memory(memory) if isinstance(memory, str) else memory
            limits = cgroups.Limits(memory=mem, pids=pids_limit, cpus=cpus)
        # Checked before anything is made: a refused name, hostname or directory leaves
        # nothing behind (and these values end up in files other containers read).
        if name:
            name = states.check_name(name, own_id=self.id)
        if hostname:
            states.valid_hostname(hostname)
        if workdir:
            states.valid_workdir(workdir)
        aliases = [states.valid_alias(a) for a in aliases or []]
        if aliases and (network in net_registry.PREDEFINED or "net" in shared
                        or net_registry.get(network)["name"] == net_registry.DEFAULT):
            raise StepError("create", "network-scoped alias is supported only for containers "
                            "in user defined networks: create one (edu network create NAME) "
                            "and run the container with --network NAME")
        # The image's HEALTHCHECK, with what the run gave field by field over it (Docker's).
        check = health.merge(health.check(healthcheck), cfg.get("Healthcheck"))
        self.config = Config(
            image_name=image if isinstance(image, str) else (img.familiar_tags()
                                                             or [img.short_id])[0],
            argv=argv,
            image_env=list(cfg.get("Env") or []), env=dict(env or {}),
            workdir=workdir or cfg.get("WorkingDir") or "", user=user or cfg.get("User") or "",
            hostname=hostname or self.id[:12], name=name or states.generate_name(),
            limits=limits,
            cap_add=list(cap_add or []), cap_drop=list(cap_drop or []), seccomp=seccomp,
            no_new_privs=no_new_privs, read_only=read_only, shared=shared, remove=remove,
            tty=tty, tty_size=tuple(tty_size) if tty and tty_size else None, init=init,
            volume_specs=_with_image_volumes(volumes, cfg),
            network=network,
            publish=mappings, aliases=aliases, healthcheck=check)
        volumes_mod.check(self.config.volume_specs)
        self.paths = Paths(paths.state_dir() / "containers" / self.id)
        # Made before (edu create, an earlier run): a start that fails must not delete it.
        self._made_before = container_id is not None and self.paths.record.exists()
        self.lowerdirs = self.store.lowerdirs(img)
        self.observe = observe
        # Who forks the container: this process, unless it is threaded (a Jupyter kernel),
        # where a fork could inherit another thread's lock; then the supervisor or the
        # user's own helper does (life/remote.py).
        self.fork_here = kernel.single_threaded() if fork_here is None else fork_here
        #: Made by a helper: killed and removed if the process waiting for it dies first (a
        #: build's RUN from a notebook: a dead kernel cancels the build, as in Docker).
        self.tied = False
        self.tie = None  # (the connection that ties it, from start() to wait())
        self.remote_pid = 0  # PID 1, when a helper forked it
        self.trace = Trace(self.id, self.config.image_name, argv)
        self.status = "created"
        self.created = time.time()
        self.started = self.finished = 0.0
        self.exit_code: int | None = None
        self.oom_killed = False
        self._ctx: Context | None = None
        self._applied: list[Step] = []

    # ---- the engine -----------------------------------------------------------------------

    def _prepare(self) -> Context:
        try:
            self.config.volumes = volumes_mod.resolve(self.config.volume_specs, self.id)
        except volumes_mod.VolumeError as exc:
            raise StepError("volumes", str(exc)) from None
        from .images.store import StoreError

        try:  # under the store's lock: GC may have taken the image since it was looked up
            self.store.pin(self.id, self.image.diff_ids)
        except StoreError as exc:
            volumes_mod.remove_anonymous(self.config.volumes, self.id)
            raise StepError("create", str(exc)) from None
        for d in (self.paths.upper, self.paths.work, self.paths.merged):
            d.mkdir(parents=True, exist_ok=True)
        # Subreaper only while PID 1 changes parents (the namespaces step): afterwards any
        # orphan of ours would be adopted by us and left a zombie, since we only reap the
        # container. A supervisor that is a subreaper anyway stays one.
        self._was_subreaper = kernel.get_child_subreaper()
        kernel.prctl(kernel.PR_SET_CHILD_SUBREAPER, 1)
        ctx = Context(self)
        ctx.cgroup_driver, ctx.cgroup_note = cgroups.driver_for(self.config.limits is not None)
        ctx.steps = [s for s in plan() if s.enabled(ctx)]
        net.write_name_files(ctx)
        self._write_record("creating", ctx)
        self._ctx = ctx
        return ctx

    def _advance_children(self, steps: list[Step], ctx: Context) -> None:
        """Apply CHILD steps ``steps`` (in a row in the plan) with one "go N to M": the child
        runs them back to back; each is recorded from its own "done", as ``_advance`` does."""
        first = ctx.steps.index(steps[0])
        try:
            send(ctx.sock, go=first, to=first + len(steps))
        except (BrokenPipeError, ConnectionResetError):
            pass  # it died before it could read "go": the first step's _advance says how
        for step in steps:
            self._advance(step, ctx, told=True)

    def _advance(self, step: Step, ctx: Context, told: bool = False) -> StepRecord:
        """Apply one step (on whichever side it runs) and record it. ``told``: a CHILD step
        the child was already sent (``_advance_children``); only its answer is awaited."""
        rec = StepRecord(step.name, step.side, names=self.trace.names)
        if self.observe:
            rec.before = _safe_observe(step, ctx)
        self._applied.append(step)
        try:
            if step.side == HOST:
                kernel.record_syscalls(True)
                rec.start = now()
                step.apply(ctx)
                rec.end = now()
                rec.syscalls = kernel.record_syscalls(False)
            else:
                rec.start = now()
                try:
                    if not told:
                        send(ctx.sock, go=ctx.steps.index(step))
                    self._await_child(step, ctx, rec)
                except (BrokenPipeError, ConnectionResetError):
                    # It died before it could read "go" (killed while it waited).
                    raise StepError(step.name, _gone(ctx, closed=True)) from None
        except BaseException as exc:
            calls = kernel.record_syscalls(False)  # what a failed host step did get done
            if step.side == HOST:
                rec.syscalls = calls
            rec.end, rec.error = now(), str(exc) or type(exc).__name__
            self.trace.steps.append(rec)
            # A host step that needed the container's process (its pid, its namespaces)
            # fails with the kernel's words when that process was killed: say what happened.
            gone = _gone(ctx) if step.side == HOST and not isinstance(exc, (
                KeyboardInterrupt, SystemExit)) else None
            if gone:
                raise StepError(step.name, gone) from None
            raise
        if self.observe:
            rec.after = _safe_observe(step, ctx)
        self.trace.steps.append(rec)
        return rec

    def _await_child(self, step: Step, ctx: Context, rec: StepRecord) -> None:
        while True:
            msg = recv(ctx.sock, timeout=30)
            if msg is None:
                if step.name == "exec":
                    rec.end = now()
                    return
                raise StepError(step.name, _gone(ctx, closed=True), 125)
            if "handoff" in msg:  # the middle process forked PID 1 and is exiting
                ctx.pid = msg["handoff"]
                os.waitpid(ctx.middle, 0)
                ctx.middle = 0
                self._restore_subreaper()
                try:
                    send(ctx.sock, adopted=True)
                except (BrokenPipeError, ConnectionResetError):
                    # In a fast run PID 1 goes on to the next steps before it waits for
                    # this: one of them failed and it has exited. Its "done"s and its
                    # error are still ours to read, so the step that failed is named.
                    pass
            elif "error" in msg:
                raise StepError(msg.get("step", step.name), msg["error"],
                                msg.get("exit_code", 125))
            elif "console" in msg:  # -t: the terminal it made in its own /dev/pts
                ctx.console = msg["fds"][0]
            elif "exec" in msg:
                rec.syscalls = ["execve"]
            elif "done" in msg:
                rec.start, rec.end, rec.syscalls = msg["start"], msg["end"], msg["syscalls"]
                return

    def _restore_subreaper(self) -> None:
        if not getattr(self, "_was_subreaper", True):
            kernel.prctl(kernel.PR_SET_CHILD_SUBREAPER, 0)

    def _teardown(self) -> None:
        """Undo every applied step, newest first; never raises."""
        self._restore_subreaper()
        ctx = self._ctx
        if ctx is not None and ctx.console >= 0:  # made, but nobody took it: ours to close
            os.close(ctx.console)
            ctx.console = -1
        while self._applied:
            step = self._applied.pop()
            try:
                step.undo(ctx)
            except Exception:  # noqa: BLE001 - keep undoing the rest
                pass

    # ---- the API ----------------------------------------------------------------------------

    def start(self) -> Container:
        """Run the whole plan; returns when the command is running."""
        if not self.fork_here:
            from .life import remote

            remote.start(self)
            return self
        Stepper(self).run_rest()
        return self

    def steps(self) -> Stepper:
        """A stepper over the same plan: one step per ``advance()``, observed before/after."""
        self.observe = True
        if not self.fork_here:
            from .life import remote

            return remote.RemoteStepper(self)
        return Stepper(self)

    def wait(self) -> int:
        """Wait for the command to exit; tear down; return Docker's exit code. (Made by a
        helper, the container's output is copied to sys.stdout and sys.stderr meanwhile.)"""
        if not self.fork_here:
            from .life import remote

            return remote.wait(self)
        try:
            _, status = _waitpid(self._ctx.pid)
        except BaseException:
            self._teardown()
            self._finish(exit_code=None)
            raise
        return self.exited(status)

    def exited(self, status: int, before_teardown=None) -> int:
        """PID 1 was reaped with wait ``status`` (by ``wait`` or by a supervisor): note the
        exit code and whether the OOM killer did it, tear down, and return the code.
        ``before_teardown(code)``, if given, is told first (the supervisor answers the
        waiting ``edu run`` there, so the teardown is not on its clock)."""
        ctx = self._ctx
        code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        # The cgroup is new for every start, so any OOM kill it counted was this run's.
        if ctx.cgroup is not None and ctx.cgroup.oom_kills() > 0:
            self.oom_killed = code == EXIT_OOM or os.WIFSIGNALED(status)
        ctx.pid = 0
        if before_teardown is not None:
            before_teardown(code)
        self._teardown()
        self._finish(code)
        return code

    def take_console(self) -> int | None:
        """-t: the master end of the container's terminal, which the exec step made in the
        container's own devpts (as runc's console socket does), so ``tty`` inside says
        /dev/pts/0. Yours from now on: read its output, write its keys, close it. None
        without -t (or once taken)."""
        ctx = self._ctx
        if ctx is None or ctx.console < 0:
            return None
        fd, ctx.console = ctx.console, -1
        return fd

    def run(self) -> int:
        """``docker run``: start, wait, and return the exit code."""
        return self.start().wait()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send a signal to the container's PID 1."""
        if not self.fork_here:
            from .life import remote

            remote.kill(self, sig)
            return
        if self._ctx and self._ctx.pid:
            os.kill(self._ctx.pid, sig)
        elif self._ctx is None and self.paths.record.exists():  # started elsewhere
            control.kill(self.id, sig)

    # ---- a container that exists: Docker's verbs, on its record (life/control.py) ----------

    def create(self, restart: str = "no") -> Container:
        """``docker create``: its record in state created, its image pinned; nothing runs."""
        from .images.store import StoreError

        policy, colon, retries = restart.partition(":")
        if policy not in ("no", "always", "on-failure") or colon and (
                policy != "on-failure" or not retries.isdigit()):
            raise StepError("create", f"invalid restart policy {restart!r}: use no, "
                            "on-failure[:N] (N a number of retries) or always")
        try:
            self.store.pin(self.id, self.image.diff_ids)
        except StoreError as exc:
            raise StepError("create", str(exc)) from None
        self.paths.upper.mkdir(parents=True, exist_ok=True)  # its writable layer, until rm
        self.spec["name"] = self.config.name  # `edu start` keeps it, not a new random one
        self._write_record(states.CREATED, Context(self))
        states.update(self.id, restart=restart, restart_count=0)
        return self

    def stop(self, timeout: float = 10) -> None:
        """``docker stop``: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        control.stop(self.id, timeout, reap=self._reap)

    def restart(self, timeout: float = 10) -> None:
        """``docker restart``: stop, then start again, detached, owned by the supervisor."""
        control.restart(self.id, timeout, reap=self._reap)

    def remove(self, force: bool = False, volumes: bool = False) -> None:
        """``docker rm``: delete it and its writable layer (a running one only with force)."""
        control.remove(self.id, force=force, volumes=volumes, reap=self._reap)

    def pause(self) -> None:
        """``docker pause``: freeze every process of the container."""
        control.pause(self.id)

    def unpause(self) -> None:
        """``docker unpause``."""
        control.unpause(self.id)

    def logs(self, follow: bool = False, tail: int | None = None) -> Iterator[tuple[str, str]]:
        """``docker logs``: (stream, text) per line a supervised container printed."""
        return control.logs(self.id, follow=follow, tail=tail)

    def exec(self, argv: list[str], *, user: str | None = None,
             env: dict[str, str] | None = None, workdir: str | None = None
             ) -> control.ExecResult:
        """``docker exec``: run ``argv`` inside; (exit_code, output) once it has exited."""
        return control.exec_run(self.id, argv, user=user, env=env, workdir=workdir)

    def inspect(self) -> dict[str, Any]:
        """``docker inspect``: Docker's fields, from the container's record."""
        return control.inspect(self.id)

    @property
    def status(self) -> str:
        """created, running, paused or exited, as its record says (else as last known)."""
        try:
            status = json.loads(self.paths.record.read_text())["status"]
        except (AttributeError, OSError, ValueError, KeyError):
            return self._status
        return states.CREATED if status == "creating" else status

    @status.setter
    def status(self, value: str) -> None:
        self._status = value

    @classmethod
    def list(cls, all: bool = False) -> list[Container]:
        """``docker ps [-a]``: handles on the running containers (every one with ``all``)."""
        return [cls.get(rec["id"]) for rec in control.ls(all)]

    @classmethod
    def get(cls, ref: str) -> Container:
        """A handle on an existing container (name, id or id prefix), made from its spec."""
        rec = control.find(ref)
        c = cls(**control.start_spec(rec), container_id=rec["id"])
        c.created = rec.get("created") or c.created
        return c

    def _reap(self) -> None:
        """Reap PID 1 if it has exited and this process forked it (nobody else can)."""
        if self._ctx is None or not self._ctx.pid:
            return
        try:
            pid, status = os.waitpid(self._ctx.pid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            self.exited(status)

    @property
    def pid(self) -> int:
        """The container's PID 1 as the host sees it (0 when not running)."""
        if self._ctx is not None:  # forked here
            return self._ctx.pid
        if self.remote_pid:  # forked by a helper for us
            return self.remote_pid
        try:  # a handle on a container started elsewhere (get): its record's
            return int(json.loads(self.paths.record.read_text()).get("pid") or 0)
        except (OSError, ValueError):
            return 0

    @property
    def cgroup(self):
        """The container's cgroup (``cgroups.Cgroup``), or None where it has none."""
        return self._ctx.cgroup if self._ctx else None

    def processes(self) -> list[int]:
        """Host pids of the container's processes: its cgroup's, else its PID 1's pid
        namespace's (a rootless container on cgroup v1 has no cgroup of its own)."""
        if not self.pid:
            return []
        if self.cgroup is not None:
            return sorted(self.cgroup.pids())
        from . import sharing

        return sorted(p["host_pid"] for p in sharing.host_pids_of(self.pid))

    @property
    def cgroup_note(self) -> str:
        """Why limits are not applied here, if they are not."""
        return self._ctx.cgroup_note if self._ctx else ""

    # ---- records --------------------------------------------------------------------------

    def _write_record(self, status: str, ctx: Context) -> None:
        self.paths.dir.mkdir(parents=True, exist_ok=True)
        record = {"id": self.id, "name": self.config.name, "image": self.config.image_name,
                  "command": self.config.argv, "status": status, "owner": os.getpid(),
                  "boot_id": kernel.boot_id(), "pid": ctx.pid,
                  "cgroup": {k: str(v) for k, v in ctx.cgroup.paths().items()}
                  if ctx.cgroup is not None else {},
                  "remove": self.config.remove, "exit_code": self.exit_code,
                  "oom_killed": self.oom_killed, "created": self.created,
                  "started": self.started, "finished": self.finished,
                  "image_id": self.image.id,
                  "mounts": [m.to_record() for m in self.config.volumes],
                  "network": ctx.endpoint, "ports": [str(p) for p in ctx.ports],
                  # What `edu exec` needs to enter the container with the same security.
                  "process": {"user": self.config.user, "workdir": self.config.workdir,
                              "env": self.config.env, "image_env": self.config.image_env,
                              "hostname": self.config.hostname},
                  "security": {"caps": sorted(ctx.caps),
                               "seccomp": self.config.seccomp,
                               "no_new_privs": self.config.no_new_privs,
                               "shared_namespaces": sorted(self.config.shared)},
                  "healthcheck": self.config.healthcheck, "spec": self.spec}
        # Keeps what others added (the supervisor's restart policy, `edu stop`'s mark).
        states.write(self.id, record)

    def _finish(self, exit_code: int | None) -> None:
        self.exit_code = exit_code
        self.finished = time.time()
        self.status = "exited"
        # A start that failed undoes the container, unless it was made before: then, as
        # Docker keeps a container whose `docker start` failed, its layer and volumes stay.
        undo = exit_code is None and not self._made_before
        if undo:  # no anonymous volume of ours survives it
            volumes_mod.remove_anonymous(self.config.volumes, self.id)
        self.trace.exit = {"code": exit_code, "oom_killed": self.oom_killed}
        if self.config.remove or undo:
            control.remove_dir(self.paths.dir)
            self.store.unpin(self.id)
        elif self._ctx is not None:
            self._ctx.pid = 0
            self._write_record("exited", self._ctx)


def oom_note(memory) -> str:
    """What ``edu run`` says when the OOM killer ended its container."""
    return (f"edu: the container was OOMKilled: it used more than its --memory {memory} "
            "limit")


def _image(store, ref: str):
    """The image ``ref`` from the store, or else from this machine's shared images
    (images/shared.py: copied in, and said in one line)."""
    from .images import shared
    from .images.store import StoreError

    try:
        return store.get(ref)
    except StoreError:
        found = shared.take(store, ref)
        if found is None:
            raise
        return found


def image_hint(message: str, image: str) -> str:
    """Docker's words for a missing image."""
    return f"Unable to find image '{image}' locally: {message}" \
        if message.startswith("No such image") else message


def command_for(cfg: dict[str, Any], command: list[str] | None,
                entrypoint: list[str] | None) -> list[str]:
    """What a container of image config ``cfg`` runs, by Docker's rule: Entrypoint +
    (command or Cmd); --entrypoint resets the image's Cmd."""
    ep = entrypoint if entrypoint is not None else list(cfg.get("Entrypoint") or [])
    if command:
        return ep + list(command)
    if entrypoint is not None:
        return ep
    return ep + list(cfg.get("Cmd") or [])


def _gone(ctx: Context, closed: bool = False) -> str:
    """If the container's process has ended, why it cannot run the step: how it ended,
    in a sentence; "" while it lives (or before the fork). ``closed``: its end of the
    channel is closed, so it has exited or is exiting: wait (a moment) to be told how.

    It is ours to reap, and reaped here (so the Fork step's undo has no pid to kill)."""
    pid = ctx.pid or ctx.middle
    if not pid:
        return ""
    deadline = time.monotonic() + (5.0 if closed else 0.0)
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped already: by whom, we cannot tell how
            done, status = pid, -1
        if done or time.monotonic() >= deadline:
            break
        time.sleep(0.005)
    if not done and not closed:
        return ""
    if done:
        ctx.pid, ctx.middle = (0, ctx.middle) if pid == ctx.pid else (ctx.pid, 0)
    if done and status >= 0 and os.WIFSIGNALED(status):
        how = f"was killed ({signal.Signals(os.WTERMSIG(status)).name})"
    elif done and status >= 0:
        how = f"exited (status {os.WEXITSTATUS(status)})"
    else:
        how = "ended"
    return (f"the container's process {how} before this step was done; everything made "
            "for it so far is undone: start it again")


def _waitpid(pid: int) -> tuple[int, int]:
    while True:
        try:
            return os.waitpid(pid, 0)
        except InterruptedError:
            continue


def _safe_observe(step: Step, ctx: Context) -> dict[str, Any]:
    try:
        return step.observe(ctx)
    except Exception as exc:  # noqa: BLE001 - an observation must never break a run
        return {"error": repr(exc)}
