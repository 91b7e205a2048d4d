"""Docker's verbs for a container that exists: ls, inspect, stop, kill, rm, pause, unpause,
logs, wait, start, restart and prune, as plain functions on its record.

Why here, and not in the CLI: a lesson must be able to stop what it started without typing
``edu``, and the supervisor must be able to do what ``edu stop`` does. So the verbs work from
the record alone (``states``), whoever owns the container: the supervisor, a notebook's
helper, or an ``edu run`` in another terminal. Each takes a ref (a name, an id, or a unique
prefix of one), as Docker's do.

The state machine is checked here, before anything is signalled or frozen: pausing an exited
container, unpausing a running one or starting a running one raises
``states.InvalidTransition`` with a sentence, instead of failing somewhere in the kernel.
Every error is a typed exception whose ``exit_code`` is the docker CLI's for it (1 for a
refusal, as the CLI reports the daemon's); ``edu_cli.containers`` only prints them.

``start`` is the one verb that needs a process of its own: the started container must have
an owner that outlives the caller, to reap it and keep its log, so the supervisor starts it
(with the same id and writable layer, as ``docker start`` does).

Introduced in notebooks/07-run-it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal as signals
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from .. import cgroups, kernel, paths
from . import logs as logfiles
from . import states
from .states import CREATED, EXITED, PAUSED, RUNNING, InvalidTransition, NoSuchContainer

#: A waiting verb calls this, if given, while it waits: the process that forked the container
#: (an in-process ``Container.start()``) must reap it itself for its record to say exited.
Reaper = Callable[[], None] | None


class ControlError(Exception):
    """A verb that could not be done: the message says why; ``exit_code`` is Docker's."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class ExecResult(NamedTuple):
    """What ``exec_run`` gives back, as the docker SDK's ``exec_run`` does."""

    exit_code: int
    output: str


# ---- finding and listing ---------------------------------------------------------------------

def find(ref: str) -> dict[str, Any]:
    """A container's record by name, id or unique id prefix; NoSuchContainer if none."""
    return states.find(ref)


def ls(all: bool = False, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """``docker ps [-a] [--filter label=K=V]``: the records of running and paused containers
    (all with ``all``), only those carrying every one of ``labels``, newest first, after
    cleaning up what killed ``edu`` processes left."""
    cleanup_stale()
    return [r for r in states.records()
            if (all or r.get("status") in (RUNNING, PAUSED))
            and has_labels(labels_of(r), labels)]


def labels_of(rec: dict[str, Any]) -> dict[str, str]:
    """The labels a container was made with (``Container(labels=...)``)."""
    return dict((rec.get("spec") or {}).get("labels") or {})


def has_labels(have: dict[str, str], want: dict[str, str] | None) -> bool:
    """Whether ``have`` carries every label of ``want`` with its value (Docker's
    ``--filter label=K=V``; a value of None matches any value)."""
    return all(k in have and (v is None or have[k] == v) for k, v in (want or {}).items())


def _name(rec: dict[str, Any]) -> str:
    return rec.get("name") or rec.get("id", "?")[:12]


def _pid(rec: dict[str, Any]) -> int:
    """PID 1 of a running or paused container, checked to be that container's (else 0)."""
    from .enter import running_pid

    return running_pid(rec, (RUNNING, PAUSED))


def _owner_alive(rec: dict[str, Any]) -> bool:
    """Whether the process that started the container (or supervises it) still runs."""
    return rec.get("boot_id") == kernel.boot_id() and kernel.pid_alive(rec.get("owner") or 0)


# ---- stop, kill, rm ---------------------------------------------------------------------------

def stop(ref: str, timeout: float = 10, reap: Reaper = None) -> dict[str, Any]:
    """``docker stop``: SIGTERM, SIGKILL after ``timeout`` seconds; the exited record."""
    rec = find(ref)
    # First, so --restart does not bring it back: also when it is between two runs.
    rec = states.update(rec["id"], stopping=True)
    if rec.get("status") in (CREATED, EXITED):
        return rec
    if not _pid(rec):  # it has exited already: only its record may not say so yet
        _wait_exited(rec["id"], 0, reap)
        return rec
    if rec.get("status") == PAUSED:
        _freeze(rec, False)  # a frozen process cannot act on SIGTERM
    for _ in range(3):  # a restart already under way when we said stop is stopped too
        _signal(rec, signals.SIGTERM)
        if not _wait_exited(rec["id"], timeout, reap):
            _signal(rec, signals.SIGKILL)
            if not _wait_exited(rec["id"], 10, reap):
                break
        if (rec.get("restart") or "no") != "no":  # nothing restarts it otherwise
            time.sleep(0.3)  # longer than the supervisor's first restart delay
        try:
            rec = states.find(rec["id"])
        except NoSuchContainer:  # --rm: removed as it exited
            return {**rec, "status": EXITED}
        if rec.get("status") == EXITED:
            return rec
    raise ControlError(f"container {_name(rec)} did not stop, even after SIGKILL: its "
                       "processes may be stuck in the kernel (D state); see edu ps")


def kill(ref: str, signal: int = signals.SIGKILL) -> dict[str, Any]:
    """``docker kill``: send ``signal`` to PID 1 of a running or paused container."""
    rec = find(ref)
    if rec.get("status") not in (RUNNING, PAUSED) or not _pid(rec):
        raise InvalidTransition(f"cannot kill container {_name(rec)}: it is not running "
                                f"(it is {rec.get('status')})")
    if signal in (signals.SIGKILL, signals.SIGTERM):  # meant to end it: no restart
        rec = states.update(rec["id"], stopping=True)
    _signal(rec, signal)
    if signal == signals.SIGKILL and rec.get("status") == PAUSED:
        _freeze(rec, False)  # the kill is delivered once the freezer lets go
    return rec


def remove(ref: str, force: bool = False, volumes: bool = False,
           reap: Reaper = None) -> dict[str, Any]:
    """``docker rm [-f] [-v]``: delete a container, its writable layer and its image pin."""
    from ..images.store import Store

    rec = find(ref)
    if _pid(rec) or rec.get("status") == "creating" and _owner_alive(rec):
        if not force:
            state = "paused" if rec.get("status") == PAUSED else "running"
            raise InvalidTransition(
                f"you cannot remove a {state} container {rec['id'][:12]}. "
                f"{'Unpause and then stop' if state == 'paused' else 'Stop'} the container "
                "before attempting removal or force remove (-f)")
        rec = states.update(rec["id"], stopping=True)
        _signal(rec, signals.SIGKILL)
        if rec.get("status") == PAUSED:
            _freeze(rec, False)
        _wait_exited(rec["id"], 10, reap)
    if volumes:
        from .. import volumes as volumes_mod

        volumes_mod.remove_anonymous_of(rec)
    remove_dir(states.base() / rec["id"])
    Store().unpin(rec["id"])
    return rec


def _signal(rec: dict[str, Any], sig: int) -> None:
    pid = int(rec.get("pid") or 0)
    if pid <= 0:  # a record between two runs has none, and kill(0) would signal our group
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_exited(container_id: str, timeout: float, reap: Reaper = None) -> bool:
    """Wait until the record says exited (or is gone, with --rm); False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if reap is not None:
            reap()
        try:
            if states.find(container_id).get("status") == EXITED:
                return True
        except NoSuchContainer:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


# ---- pause, unpause ---------------------------------------------------------------------------

def pause(ref: str) -> dict[str, Any]:
    """``docker pause``: freeze every process of a running container (the cgroup freezer)."""
    rec = find(ref)
    states.check(rec, PAUSED)
    if not _pid(rec):
        raise InvalidTransition(f"cannot pause container {_name(rec)}: it is not running")
    _freeze(rec, True)
    return states.update(rec["id"], status=PAUSED)


def unpause(ref: str) -> dict[str, Any]:
    """``docker unpause``: let a paused container's processes run again."""
    rec = find(ref)
    if rec.get("status") != PAUSED:
        raise InvalidTransition(f"cannot unpause container {_name(rec)}: it is not paused "
                                f"(it is {rec.get('status')})")
    _freeze(rec, False)
    return states.update(rec["id"], status=RUNNING)


def _freeze(rec: dict[str, Any], freeze: bool) -> None:
    try:
        cg = cgroups.driver().open(rec["id"])
        cg.freeze() if freeze else cg.thaw()
    except cgroups.CgroupError as exc:
        raise ControlError(f"cannot {'pause' if freeze else 'unpause'} container "
                           f"{_name(rec)}: {exc}") from None


# ---- logs, wait, exec -------------------------------------------------------------------------

def logs(ref: str, follow: bool = False, tail: int | str | None = None
         ) -> Iterator[tuple[str, str]]:
    """``docker logs [-f] [--tail N]``: (stream, text) for each line the container printed."""
    rec = find(ref)  # now, not at the first next(): a wrong name fails at the call
    if tail in (None, "all"):
        return _log_lines(rec, follow, None)
    if not str(tail).isdigit():
        raise ControlError(f"invalid tail {tail!r}: give a number of lines (0 or more), "
                           "or all")
    return _log_lines(rec, follow, int(tail))


def log_path(rec: dict[str, Any]) -> Path:
    """Where a supervised container's output is kept (Docker's json-file format: read it
    with ``read_lines`` and ``entries``)."""
    return states.base() / rec["id"] / "container.log"


def _log_lines(rec: dict[str, Any], follow: bool, tail: int | None
               ) -> Iterator[tuple[str, str]]:
    path = log_path(rec)
    chunk, cursor = read_lines(path, 0)
    lines = chunk.splitlines()
    if tail is not None:
        lines = lines[len(lines) - tail:] if tail else []
    yield from entries(lines)
    while follow:
        chunk, cursor = read_lines(path, cursor)
        if chunk:
            yield from entries(chunk.splitlines())
            continue
        try:
            ended = states.find(rec["id"]).get("status") == EXITED
        except NoSuchContainer:
            ended = True
        if ended:  # what it printed last was written before its record said so
            chunk, cursor = read_lines(path, cursor)
            yield from entries(chunk.splitlines())
            break
        time.sleep(0.1)


def read_lines(path: Path, cursor: logfiles.Cursor = 0) -> tuple[str, logfiles.Cursor]:
    """The whole lines written to the log at ``path`` after ``cursor`` (0: from its start),
    across its rotated files, and the cursor after them (see ``life/logs.py``)."""
    return logfiles.read_lines(path, cursor)


entries = logfiles.entries


def wait(ref: str, timeout: float | None = None, reap: Reaper = None) -> int:
    """``docker wait``: block until the container exits; its exit code."""
    rec = find(ref)
    if not _wait_exited(rec["id"], float("inf") if timeout is None else timeout, reap):
        raise ControlError(f"container {_name(rec)} had not exited after {timeout} "
                           "seconds")
    try:
        code = states.find(rec["id"]).get("exit_code")
    except NoSuchContainer:  # --rm: the supervisor that owned it remembers the code
        code = _remembered_exit(rec["id"])
    return 125 if code is None else int(code)


def _remembered_exit(container_id: str) -> int | None:
    from . import client

    try:
        conn = client.connect(start=False)
    except OSError:
        return None
    with conn:
        client.send(conn, {"op": "wait", "id": container_id})
        try:
            return client.answer(conn).get("exit_code")
        except (OSError, ValueError):
            return None


def exec_run(ref: str, argv: list[str], *, user: str | None = None,
             env: dict[str, str] | None = None, workdir: str | None = None) -> ExecResult:
    """``docker exec`` without a terminal: the exit code and what it printed (stdout and
    stderr together, in order); ``enter.ExecError`` if it could not start."""
    import tempfile

    from .enter import exec_in

    rec = find(ref)
    # A file, not a pipe: nobody would read a pipe while exec_in waits, and a command that
    # prints more than a pipe holds would block for ever.
    with tempfile.TemporaryFile() as out:
        if kernel.single_threaded():
            code = exec_in(rec, list(argv), user=user, env=env, workdir=workdir,
                           stdout=out.fileno(), stderr=out.fileno())
        else:  # a threaded caller (a notebook) never forks: a new, single-threaded Python
            import subprocess  # does (fork + exec at once is safe from threads)
            import sys

            request = json.dumps({"id": rec["id"], "argv": list(argv), "user": user,
                                  "env": env, "workdir": workdir})
            code = subprocess.run([sys.executable, "-m", "edu_runtime.life.enter", request],
                                  stdout=out, stderr=out, stdin=subprocess.DEVNULL).returncode
        out.seek(0)
        return ExecResult(code, out.read().decode(errors="replace"))


# ---- start, restart ---------------------------------------------------------------------------

def startable(rec: dict[str, Any]) -> None:
    """Raise InvalidTransition unless ``rec`` is created or exited (``docker start``)."""
    status = rec.get("status")
    if status not in (CREATED, EXITED):
        raise InvalidTransition(f"cannot start container {_name(rec)}: it is {status}"
                                + (" (edu unpause it)" if status == PAUSED else ""))
    if not rec.get("spec"):
        raise ControlError(f"container {_name(rec)} was made by an older edu and keeps no "
                           "spec to start it from: edu rm it and edu run it again")


def start_spec(rec: dict[str, Any]) -> dict[str, Any]:
    """The ``Container`` keyword arguments that make ``rec``'s container again: its spec,
    its name, and its image by id when the tag has moved on (a container keeps its image,
    as Docker's does)."""
    spec = {k: v for k, v in (rec.get("spec") or {}).items() if k != "tty"}
    spec["name"] = rec.get("name") or spec.get("name")
    image_id = rec.get("image_id")
    if image_id and spec.get("image") != image_id:
        from ..images.store import Store, StoreError

        try:
            moved = Store().get(spec["image"]).id != image_id
        except StoreError:
            moved = True
        if moved:
            spec["image"] = image_id
    return spec


def start(ref: str) -> dict[str, Any]:
    """``docker start``: a created or exited container runs again, detached, owned by the
    supervisor, with the same id and writable layer; its record once running."""
    from . import client

    cleanup_stale()  # a record a killed owner left says running: it is exited
    rec = find(ref)
    startable(rec)
    reply = client.ask({"op": "start", "id": rec["id"]})
    if "error" in reply:  # refused there: started meanwhile, or it could not start
        if reply.get("invalid"):
            raise InvalidTransition(reply["error"])
        raise ControlError(reply["error"])
    return find(rec["id"])


def restart(ref: str, timeout: float = 10, reap: Reaper = None) -> dict[str, Any]:
    """``docker restart``: stop (SIGTERM, SIGKILL after ``timeout``), then start again."""
    rec = stop(ref, timeout, reap)
    return start(rec["id"])


# ---- inspect ----------------------------------------------------------------------------------

def inspect(ref: str) -> dict[str, Any]:
    """``docker inspect`` of a container: Docker's fields, in Docker's order."""
    rec = find(ref)
    spec = rec.get("spec") or {}
    status = CREATED if rec.get("status") == "creating" else rec.get("status", EXITED)
    running = status in (RUNNING, PAUSED)
    argv = list(rec.get("command") or [])
    state = {"Status": status, "Running": running, "Paused": status == PAUSED,
             "Restarting": False, "OOMKilled": bool(rec.get("oom_killed")), "Dead": False,
             "Pid": int(rec.get("pid") or 0) if running else 0,
             "ExitCode": int(rec.get("exit_code") or 0), "Error": rec.get("error", ""),
             "StartedAt": _iso(rec.get("started")), "FinishedAt": _iso(rec.get("finished"))}
    if rec.get("health"):
        from . import health

        state["Health"] = health.health_of(rec)
    return {
        "Id": rec["id"],
        "Created": _iso(rec.get("created")),
        "Path": argv[0] if argv else "",
        "Args": argv[1:],
        "State": state,
        "Image": rec.get("image_id", ""),
        "LogPath": str(states.base() / rec["id"] / "container.log"),
        "Name": "/" + rec.get("name", ""),
        "RestartCount": int(rec.get("restart_count") or 0),
        "HostConfig": _host_config(rec, spec),
        "Mounts": list(rec.get("mounts") or []),
        "Config": _config(rec, spec, argv),
        "NetworkSettings": _network_settings(rec, spec, running),
    }


def _iso(when: float | None) -> str:
    """An RFC 3339 time in UTC, as Docker writes them (its zero time when never)."""
    if not when:
        return "0001-01-01T00:00:00Z"
    from datetime import UTC, datetime

    return datetime.fromtimestamp(when, UTC).isoformat().replace("+00:00", "Z")


def _host_config(rec: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    policy, _, retries = (rec.get("restart") or "no").partition(":")
    memory = spec.get("memory") or 0
    security = ([] if spec.get("seccomp", True) else ["seccomp=unconfined"]) \
        + (["no-new-privileges"] if spec.get("no_new_privs") else [])
    return {"Binds": list(spec.get("volumes") or []) or None,
            "NetworkMode": spec.get("network") or "bridge",
            "RestartPolicy": {"Name": policy, "MaximumRetryCount": int(retries or 0)},
            "AutoRemove": bool(spec.get("remove")),
            "CapAdd": spec.get("cap_add") or None, "CapDrop": spec.get("cap_drop") or None,
            "IpcMode": spec.get("ipc") or "private", "PidMode": spec.get("pid") or "",
            "PublishAllPorts": bool(spec.get("publish_all")),
            "ReadonlyRootfs": bool(spec.get("read_only")),
            "SecurityOpt": security or None, "UTSMode": spec.get("uts") or "",
            "Memory": cgroups.parse_memory(memory) if isinstance(memory, str) else memory,
            "NanoCpus": int((spec.get("cpus") or 0) * 1e9),
            "PidsLimit": spec.get("pids_limit"),
            "Init": bool(spec.get("init")),
            # what the run gave, as Docker shows it (edu caps even an empty one: logfiles.DEFAULTS)
            "LogConfig": {"Type": logfiles.DRIVER, "Config": dict(spec.get("log_opts") or {})},
            "OomScoreAdj": int(spec.get("oom_score_adj") or 0)}


def _config(rec: dict[str, Any], spec: dict[str, Any], argv: list[str]) -> dict[str, Any]:
    proc = rec.get("process") or {}
    env = dict(e.partition("=")[::2] for e in proc.get("image_env") or [])
    env.update(proc.get("env") or {})
    entrypoint = spec.get("entrypoint")
    if entrypoint is None:  # the image's, which the record does not keep: ask the store
        entrypoint = _image_config(rec).get("Entrypoint") or []
    return {"Hostname": proc.get("hostname", ""), "User": proc.get("user", ""),
            "Tty": bool(rec.get("tty")),
            "Env": [f"{k}={v}" for k, v in env.items()],
            "Cmd": argv[len(entrypoint):] if argv[:len(entrypoint)] == entrypoint else argv,
            "Image": rec.get("image", spec.get("image", "")),
            "WorkingDir": proc.get("workdir", ""),
            "Entrypoint": entrypoint or None,
            # The image's labels, with the container's own over them (as Docker merges).
            "Labels": {**(_image_config(rec).get("Labels") or {}), **labels_of(rec)}}


def _image_config(rec: dict[str, Any]) -> dict[str, Any]:
    from ..images.store import Store, StoreError

    try:
        return Store().get(rec.get("image_id", "")).config.get("config") or {}
    except StoreError:
        return {}


def _network_settings(rec: dict[str, Any], spec: dict[str, Any],
                      running: bool) -> dict[str, Any]:
    from ..networks import registry

    endpoint = (rec.get("network") or {}) if running else {}
    name = endpoint.get("network") or spec.get("network") or "bridge"
    net: dict[str, Any] = {"IPAddress": "", "IPPrefixLen": 0, "Gateway": "",
                           "MacAddress": "", "Aliases": None}
    if endpoint.get("ip"):
        try:
            record = registry.get(name)
        except registry.NetworkError:
            record = {}
        leased = (record.get("containers") or {}).get(rec["id"]) or {}
        net.update(IPAddress=endpoint["ip"], IPPrefixLen=int(leased.get("prefixlen") or 0),
                   Gateway=record.get("gateway", ""), MacAddress=endpoint.get("mac", ""),
                   Aliases=leased.get("aliases") or None)
    ports: dict[str, list[dict[str, str]]] = {}
    for text in rec.get("ports") or [] if running else []:
        host, _, inside = str(text).partition("->")  # nat.PortMapping: ip:port->port/proto
        host_ip, _, host_port = host.rpartition(":")
        ports.setdefault(inside, []).append({"HostIp": host_ip, "HostPort": host_port})
    return {"Networks": {name: net}, "Ports": dict(sorted(ports.items()))}


# ---- after killed edu processes: cleanup and prune --------------------------------------------

def remove_dir(path: Path) -> None:
    """Delete a container's directory, overlay work dirs included (they may be mode 000).

    The container wrote this tree, so it may hold symlinks to anywhere (`ln -s / x`): only
    real directories are made writable, through an O_NOFOLLOW fd, never a path that a link
    could redirect onto the host.
    """
    if not path.exists():
        return
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            try:
                fd = os.open(os.path.join(dirpath, d),
                             os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue  # a symlink (ELOOP/ENOTDIR), or gone: nothing to make writable
            try:
                os.fchmod(fd, 0o700)
            finally:
                os.close(fd)
    shutil.rmtree(path, ignore_errors=True)


def cleanup_stale(store=None) -> list[str]:
    """Containers whose ``edu`` process died (SIGKILL): kill, un-cgroup and remove them.

    Called by every container command, so nothing a killed ``edu run`` left lingers
    (nor the lock and socket of a killed supervisor). It is the two halves below, one
    after the other.
    """
    return cleanup_stale_records(store) + cleanup_stale_objects()


def cleanup_stale_records(store=None) -> list[str]:
    """The first half of ``cleanup_stale``: the records. A record whose owner died is
    marked exited (or removed, with --rm), its cgroup and processes killed, so its name
    is free again. Cheap when nothing died: one small JSON file per container."""
    from . import client

    client.sweep_gone()
    base = paths.state_dir() / "containers"
    if not base.is_dir():
        return []
    cleaned = []
    boot = kernel.boot_id()
    for rec_path in base.glob("*/state.json"):
        try:
            rec = json.loads(rec_path.read_text())
        except (OSError, ValueError):
            continue
        if rec["status"] not in ("creating", "running"):
            continue
        if _owner_alive(rec):
            continue
        # By id, not by the record's paths: an `edu` killed mid-start may have made the
        # cgroup after it last wrote its record.
        try:
            cg = cgroups.driver().open(rec["id"])
            cg.kill()
            cg.remove()
        except cgroups.CgroupError:
            pass
        if rec.get("pid") and rec["boot_id"] == boot:
            try:
                os.kill(rec["pid"], signals.SIGKILL)
            except ProcessLookupError:
                pass
        if rec.get("remove") or rec["status"] == "creating":
            remove_dir(rec_path.parent)
            if store is not None:
                store.unpin(rec["id"])
        else:
            rec.update(status="exited", exit_code=137, pid=0, finished=time.time())
            rec_path.write_text(json.dumps(rec, indent=1))
        cleaned.append(rec["id"])
    return cleaned


def cleanup_stale_objects() -> list[str]:
    """The second half of ``cleanup_stale``: kernel objects that no live record explains.
    Cgroups no record names, then the addresses, veths and rules of containers that are
    not alive (read under the network lock: a container starting meanwhile leases before
    its veth and rules, so this is safe beside starts, as any `edu` command is)."""
    base = paths.state_dir() / "containers"
    if not base.is_dir():
        return []
    cleaned = _orphan_cgroups({p.name for p in base.iterdir()})
    from .. import networks

    networks.cleanup_stale()
    return cleaned


def _orphan_cgroups(known: set[str], min_age: float = 60.0) -> list[str]:
    """Container cgroups that no record explains: an older edu's empty leftovers, and the
    processes of a container whose owner died and whose record is gone too.

    Empty ones only after a minute: a cgroup a concurrent `edu` has just made (it writes its
    record first, but may keep it in another state directory) is left be. One with
    processes is killed only when it is orphaned (``_orphaned``): its owner is dead, so no
    `edu` of any state directory is starting or running it. That is how a container whose
    PID 1 changed its uid goes (su, a database's entrypoint: the kernel clears the
    PR_SET_PDEATHSIG that would have killed it with its owner) when its record went with
    a deleted state directory.
    """
    try:
        driver = cgroups.driver()
    except cgroups.CgroupError:
        return []
    gone = []
    for name in driver.names():
        if name in known:
            continue
        cg = driver.open(name)
        try:
            made = min(p.stat().st_mtime for p in cg.paths().values() if p.exists())
        except ValueError:
            continue
        pids = cg.pids()
        if pids and not _orphaned(cg, pids) or not pids and time.time() - made <= min_age:
            continue
        try:
            if pids:
                cg.kill()
            cg.remove()
            gone.append(name)
        except cgroups.CgroupError:
            pass
    return gone


def _orphaned(cg, pids: list[int]) -> bool:
    """Whether a container's processes have lost their owner: the process that made its
    cgroup (``Cgroup.owner``) is dead. An unmarked cgroup is orphaned when each of its
    processes whose parent is outside it (PID 1, an exec'd process) was adopted by the
    host's init: the owner (an `edu run`, the supervisor, a notebook's helper) is the
    parent of the container's PID 1, by fork or as a subreaper, for as long as it lives."""
    owner = cg.owner()
    if owner is not None:
        return not kernel.pid_alive(*owner)
    inside = set(pids)
    tops = [int(kernel.proc_status(pid).get("PPid") or 0) for pid in pids]
    tops = [ppid for ppid in tops if ppid not in inside]
    return bool(tops) and all(ppid == 1 for ppid in tops)


def prune(store=None, labels: dict[str, str | None] | None = None) -> list[str]:
    """``edu prune``: clean up after killed ``edu`` processes, then remove every stopped
    container (its upper dir included; only those with ``labels``, as Docker's
    ``--filter label=...``) and release its image layers."""
    from ..images.store import Store

    store = store or Store()
    removed = cleanup_stale(store)
    base = paths.state_dir() / "containers"
    for rec_path in sorted(base.glob("*/state.json")) if base.is_dir() else []:
        try:
            rec = json.loads(rec_path.read_text())
        except (OSError, ValueError):
            rec = {"id": rec_path.parent.name, "status": "exited"}
        if rec.get("status") in (CREATED, EXITED) and has_labels(labels_of(rec), labels):
            remove_dir(rec_path.parent)
            store.unpin(rec["id"])
            removed.append(rec["id"])
    return sorted(set(removed))
