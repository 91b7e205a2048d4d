"""Control groups: where the kernel's resource controllers live, and drivers that use them.

A container's memory, pids and cpu limits are files in a cgroup directory. Where those
directories are depends on the host: pure cgroup v2 (one tree at /sys/fs/cgroup, what most
students have), v1 (one mount per controller, sometimes several controllers per mount), or
"hybrid" (v1 controllers plus a v2 tree, usually with few controllers of its own). This
module finds the hierarchies from mountinfo, never by guessing paths, so the same code works
on all three and can be tested against a temp-dir cgroupfs.

The drivers below turn ``docker run --memory 64m --pids-limit 20 --cpus 0.5`` into writes to
those files. Like youki's, each driver takes the root paths it works under, so a test can
point it at a temp dir that holds the kernel's file formats. Two drivers, not one with
``if v1`` on every line, because the two versions differ in shape, not just in file names:
v1 puts a container in one directory *per controller*, v2 in one directory that the parent
has to open controllers to (``cgroup.subtree_control``).

Choices, and why:

- Swap follows Docker: ``--memory L`` without ``--memory-swap`` lets memory plus swap reach
  2 x L. On v1 that is ``memory.memsw.limit_in_bytes = 2L``; on v2, whose ``memory.swap.max``
  counts swap alone, it is ``memory.swap.max = L``. Where the kernel does no swap
  accounting the file is missing and swap is left alone, as Docker does (with a warning).
- Moving a process into a cgroup takes a kernel-wide lock (cgroup_threadgroup_rwsem) whose
  writer waits for an RCU grace period: 5 to 20 ms here, more than the rest of a container
  start. One move is exempt: a single-threaded process moving *itself* into a v1 hierarchy
  by writing 0 to ``tasks``. So on v1 the container's first process joins its cgroup itself
  (``join``, a step on the child's side), while on v2 the host writes its pid to
  ``cgroup.procs`` and pays the grace period. On a hybrid host the container does not join
  the v2 tree, whose only use would be ``cgroup.kill``: a grace period on every start is
  too much for that, and ``kill`` freezes and signals through v1, as runc does there.
- Every container cgroup sits under one parent, ``edu/`` by default (Docker's
  ``--cgroup-parent``). The parent is never removed: another ``edu`` command may be making a
  cgroup in it at that moment. Tests pass their own parent, so they never touch a student's.
- Rootless, cgroups are only possible on v2, in a subtree systemd delegated to the user. The
  kernel enables controllers for a cgroup's children only while it has no processes of its
  own ("no internal processes"), so a delegated cgroup that still holds the lab's processes
  gives a driver without limits, with the reason in ``Driver.missing``.

Introduced in notebooks/00-start-here (doctor); the limits are taught in notebooks/06-step-by-step.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import kernel
from .steps import CHILD, HOST, Step

#: The controllers a container's limits need, and what each one limits.
NEEDED = {"memory": "--memory", "pids": "--pids-limit", "cpu": "--cpus"}


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup tree: v1 (``controllers`` from its mount options) or v2."""

    version: int
    mount_point: Path
    controllers: tuple[str, ...] = field(default=())


def hierarchies(mounts: list[dict[str, str]] | None = None,
                root: Path = Path("/")) -> list[Hierarchy]:
    """Every cgroup hierarchy in ``mounts`` (default: this process's mountinfo).

    ``root`` prefixes paths read from a v2 tree, so tests can point at a temp-dir cgroupfs.
    A bind mount of a subtree (root field not ``/``) is skipped: it is not the hierarchy.
    """
    found = []
    for m in kernel.mountinfo() if mounts is None else mounts:
        if m["root"] != "/":
            continue
        point = Path(m["mount_point"])
        if m["fstype"] == "cgroup":
            opts = [o for o in m["super_options"].split(",")
                    if o not in ("rw", "ro") and "=" not in o]
            if opts:
                found.append(Hierarchy(1, point, tuple(sorted(opts))))
        elif m["fstype"] == "cgroup2":
            text = kernel.read(root / point.relative_to("/") / "cgroup.controllers", "")
            found.append(Hierarchy(2, point, tuple(sorted((text or "").split()))))
    return sorted(found, key=lambda h: (h.version, str(h.mount_point)))


def mode(found: list[Hierarchy]) -> str:
    """``v2``, ``v1``, ``hybrid`` or ``none``: how this host mounts its cgroups."""
    v1 = any(h.version == 1 for h in found)
    v2 = any(h.version == 2 for h in found)
    if v1 and v2:
        return "hybrid"
    return "v1" if v1 else "v2" if v2 else "none"


def own_v2_path(proc_cgroup: str | None = None) -> str:
    """This process's path in the v2 tree (the ``0::`` line of /proc/self/cgroup)."""
    text = proc_cgroup if proc_cgroup is not None else kernel.read("/proc/self/cgroup", "")
    for line in (text or "").splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    return "/"


@dataclass(frozen=True)
class ControllerSupport:
    """Where one controller can be used, or why it cannot."""

    name: str
    usable: bool
    version: int | None
    path: Path | None
    reason: str


def controller_support(found: list[Hierarchy], name: str, root: Path = Path("/"),
                       uid: int | None = None, proc_cgroup: str | None = None
                       ) -> ControllerSupport:
    """Can a container get a ``name`` limit here? v1 is preferred on hybrid hosts.

    On v1 the controller's own mount must be writable (root only, in practice). On v2 the
    controller must be offered by the tree; as root we create cgroups under the tree's root,
    rootless we need a delegated subtree: our own cgroup, writable, offering the controller.
    """
    uid = os.geteuid() if uid is None else uid
    for h in found:
        if h.version == 1 and name in h.controllers:
            where = root / h.mount_point.relative_to("/")
            if uid == 0 or os.access(where, os.W_OK):
                return ControllerSupport(name, True, 1, h.mount_point, f"v1 at {h.mount_point}")
            return ControllerSupport(name, False, 1, h.mount_point,
                                     f"v1 at {h.mount_point}, not writable without root")
    for h in found:
        if h.version != 2:
            continue
        base = h.mount_point if uid == 0 else h.mount_point / own_v2_path(proc_cgroup).lstrip("/")
        where = root / base.relative_to("/")
        offered = (kernel.read(where / "cgroup.controllers", "") or "").split()
        if name not in offered:
            why = "not offered by the v2 tree" if uid == 0 else \
                "not delegated to this user (no systemd delegation of the user's cgroup)"
            return ControllerSupport(name, False, 2, base, f"v2 at {base}: {why}")
        if uid != 0 and not os.access(where, os.W_OK):
            return ControllerSupport(name, False, 2, base, f"v2 at {base}: not writable")
        return ControllerSupport(name, True, 2, base, f"v2 at {base}")
    return ControllerSupport(name, False, None, None, "no hierarchy offers it")


# ---- limits, in Docker's syntax -----------------------------------------------------------

#: Docker refuses smaller memory limits: "Minimum memory limit allowed is 6MB".
MIN_MEMORY = 6 * 1024 * 1024

#: The CFS period every cpu limit uses, in microseconds (Docker's and the kernel's default).
CPU_PERIOD = 100_000

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
_MEMORY = re.compile(r"(\d+(?:\.\d+)?) ?([bkmg]?)b?", re.IGNORECASE)


@dataclass(frozen=True)
class Limits:
    """A container's limits; ``None`` means no limit (``docker run`` without the flag).

    ``memory`` is in bytes, ``pids`` counts tasks, ``cpus`` is a number of CPUs of time per
    CFS period. Introduced in notebooks/06-step-by-step.
    """

    memory: int | None = None
    pids: int | None = None
    cpus: float | None = None

    def __post_init__(self) -> None:
        if self.memory is not None and self.memory < MIN_MEMORY:
            raise ValueError(f"a memory limit of {self.memory} bytes is too small: the minimum "
                             f"is {MIN_MEMORY} bytes (6m), as in Docker")
        if self.pids is not None and self.pids < 1:
            raise ValueError(f"a pids limit of {self.pids} is too small: a container needs at "
                             "least 1 process (leave the limit out for no limit)")
        if self.cpus is not None and self.cpus < 0.01:
            raise ValueError(f"a cpu limit of {self.cpus} is too small: the minimum is 0.01 "
                             "CPUs, as in Docker")

    def cpu_quota(self) -> int | None:
        """The CFS quota in microseconds per ``CPU_PERIOD`` for ``cpus`` (0.5 -> 50000)."""
        return None if self.cpus is None else round(self.cpus * CPU_PERIOD)


def parse_memory(text: str) -> int:
    """Bytes for a ``--memory`` value in Docker's syntax: ``64m``, ``1g``, ``512k``, ``1048576``.

    Units are binary (k = 1024) and case-insensitive; a trailing ``b`` is allowed (``64mb``).
    """
    match = _MEMORY.fullmatch(text.strip())
    if not match:
        raise ValueError(f"invalid --memory value '{text}': use a number with an optional unit "
                         "b, k, m or g, e.g. 64m")
    value = int(float(match[1]) * _UNITS[match[2].lower()])
    if value < MIN_MEMORY:
        raise ValueError(f"invalid --memory value '{text}': the minimum is 6m ({MIN_MEMORY} "
                         "bytes); Docker says \"Minimum memory limit allowed is 6MB\"")
    return value


def parse_cpus(text: str, available: int | None = None) -> float:
    """A ``--cpus`` value (``0.5``, ``2``), checked against the CPUs this host has, as Docker."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"invalid --cpus value '{text}': use a number of CPUs, e.g. 0.5 or 2"
                         ) from None
    available = available or os.cpu_count() or 1
    if not 0.01 <= value <= available:
        raise ValueError(f"invalid --cpus value '{text}': the range of CPUs is from 0.01 to "
                         f"{available:.2f}, as there are only {available} CPUs available")
    return value


def check_name(name: str, what: str = "cgroup name") -> str:
    """``name`` if it is a safe single path component ([A-Za-z0-9_.-]), else a ValueError."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", name) or name in (".", ".."):
        raise ValueError(f"invalid {what} {name!r}: use 1 to 128 letters, digits, '_', '.' or "
                         "'-' (it becomes a directory name under /sys/fs/cgroup)")
    return name


# ---- talking to cgroupfs ------------------------------------------------------------------

class CgroupError(Exception):
    """A cgroup operation failed; the message says what, why and what to do."""


class CgroupUnavailable(CgroupError):
    """No cgroup can be made here: the runtime runs containers without limits and says so."""


_HINTS = {
    errno.ENOENT: "the file does not exist: its controller is not enabled for this cgroup",
    errno.EACCES: "permission denied: cgroups need root, or a cgroup v2 subtree delegated "
                  "to this user",
    errno.EPERM: "operation not permitted: cgroups need root, or a cgroup v2 subtree "
                 "delegated to this user",
    errno.EINVAL: "the kernel refused the value",
    errno.ESRCH: "no such process: it exited before it could be moved",
}


def _hint(path: Path, err: int) -> str:
    if err == errno.EBUSY and path.name == "cgroup.subtree_control":
        return ("the cgroup has processes of its own, and cgroup v2 enables controllers for "
                "children only in a cgroup without processes")
    if err == errno.EBUSY and path.name.startswith("memory."):
        return "the cgroup already uses more memory than that, and the kernel could not reclaim it"
    return _HINTS.get(err, os.strerror(err))


def _write(path: Path, value: str, shown: str | None = None) -> None:
    # No O_CREAT: cgroupfs makes its files itself, so a missing one means a missing
    # controller, and we want that error, not a stray regular file (or EACCES). O_TRUNC is
    # what the shell's ``echo 20 > pids.max`` does: cgroupfs ignores it, a temp dir needs it.
    kernel.note("write", str(path), value if shown is None else shown)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise CgroupError(f"could not write {value!r} to {path}: "
                          f"{_hint(path, exc.errno or 0)}.") from exc


def _field(text: str | None, key: str) -> int:
    """The number after ``key`` in a flat-keyed file (memory.events, memory.oom_control)."""
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


def _wait(done, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# ---- one container's cgroup ---------------------------------------------------------------

#: What ``observe`` shows, per hierarchy: limits, counters and membership. Missing files
#: (a controller that is not there, no swap accounting) are left out.
OBSERVED = {
    "cpu": ("cgroup.procs", "cpu.cfs_period_us", "cpu.cfs_quota_us", "cpu.stat"),
    "freezer": ("cgroup.procs", "freezer.state"),
    "memory": ("cgroup.procs", "memory.failcnt", "memory.limit_in_bytes",
               "memory.max_usage_in_bytes", "memory.memsw.limit_in_bytes",
               "memory.oom_control", "memory.usage_in_bytes"),
    "pids": ("cgroup.procs", "pids.current", "pids.events", "pids.max"),
    "unified": ("cgroup.events", "cgroup.freeze", "cgroup.procs", "cpu.max", "cpu.stat",
                "memory.current", "memory.events", "memory.max", "memory.swap.max",
                "pids.current", "pids.events", "pids.max"),
}


#: The extended attribute on a container's cgroup that names its owner (``mark_owner``).
OWNER_XATTR = "trusted.edu.owner"


class Cgroup:
    """One container's cgroup: a directory in each hierarchy it belongs to.

    ``dirs`` maps a hierarchy to the directory: a v1 controller name (``memory``, ``pids``,
    ``cpu``, ``freezer``) or ``unified`` for the v2 tree. Introduced in notebooks/06-step-by-step.
    """

    version = 0

    def __init__(self, name: str, dirs: dict[str, Path], controllers: tuple[str, ...],
                 missing: dict[str, str] | None = None):
        self.name = check_name(name)
        self._dirs = dict(dirs)
        self.controllers = controllers
        self.missing = dict(missing or {})

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {sorted(self._dirs)}>"

    def paths(self) -> dict[str, Path]:
        """The cgroup's directory in each hierarchy, by hierarchy name."""
        return dict(sorted(self._dirs.items()))

    def add(self, pid: int) -> None:
        """Move process ``pid`` (and its future children) into this cgroup, in every tree."""
        for where in self._dirs.values():
            _write(where / "cgroup.procs", str(pid), "<pid>")

    def join(self) -> None:
        """Move the calling (single-threaded) process itself into this cgroup."""
        for where in self._dirs.values():
            _write(where / "cgroup.procs", "0")

    def mark_owner(self) -> None:
        """Name the process that made this cgroup (pid and start time) on its directory, as
        an extended attribute: whoever finds the cgroup with no record can tell whether the
        container's owner is gone (``owner``). Bookkeeping, not a lesson: not in the trace.
        Where the filesystem refuses (no root), the cgroup goes unmarked."""
        pid = os.getpid()
        for where in list(self._dirs.values())[:1]:  # one hierarchy says it for all
            try:
                os.setxattr(where, OWNER_XATTR, f"{pid} {kernel.start_time(pid)}".encode())
            except OSError:
                pass

    def owner(self) -> tuple[int, str] | None:
        """The process that made this cgroup, (pid, start time), as ``mark_owner`` noted;
        None if it is not marked (an older edu's, or made without root)."""
        for where in self._dirs.values():
            try:
                pid, started = os.getxattr(where, OWNER_XATTR).decode().split()
                return int(pid), started
            except (OSError, ValueError):
                continue
        return None

    def pids(self) -> list[int]:
        """The processes in this cgroup now, sorted (exited ones, even unreaped, are gone)."""
        found: set[int] = set()
        for where in self._dirs.values():
            found.update(int(p) for p in (kernel.read(where / "cgroup.procs") or "").split())
        return sorted(found)

    def set_limits(self, limits: Limits) -> None:
        """Write ``limits`` into the controller files; a ``None`` field is left as it is."""
        wanted = {"memory": limits.memory, "pids": limits.pids, "cpu": limits.cpus}
        for name, value in wanted.items():
            if value is not None and name not in self.controllers:
                why = self.missing.get(name, "it is not enabled for this cgroup")
                raise CgroupError(f"{NEEDED[name]} cannot be applied: the {name} controller is "
                                  f"not available ({why}). Leave {NEEDED[name]} out, or see "
                                  "`edu doctor`.")
        self._write_limits(limits)

    def _write_limits(self, limits: Limits) -> None:
        raise NotImplementedError

    def oom_kills(self) -> int:
        """How many processes the OOM killer has killed in this cgroup (0 without memory)."""
        raise NotImplementedError

    def memory_usage(self) -> int | None:
        """Bytes of memory charged to this cgroup now; ``None`` without the memory controller."""
        raise NotImplementedError

    def freeze(self, timeout: float = 2.0) -> None:
        """Stop every process (``docker pause``) and wait until the kernel says frozen."""
        self._set_frozen(True, timeout)

    def thaw(self, timeout: float = 2.0) -> None:
        """Let the processes run again (``docker unpause``)."""
        self._set_frozen(False, timeout)

    def _set_frozen(self, frozen: bool, timeout: float) -> None:
        if "freezer" in self._dirs:
            # v1: FREEZING while the kernel is still catching tasks, then FROZEN.
            state = self._dirs["freezer"] / "freezer.state"
            want = "FROZEN" if frozen else "THAWED"
            _write(state, want)
            ok = _wait(lambda: kernel.read(state) == want, timeout)
        elif "unified" in self._dirs:
            want = "1" if frozen else "0"
            _write(self._dirs["unified"] / "cgroup.freeze", want)
            ok = _wait(lambda: self._event("frozen") == want, timeout)
        else:
            raise CgroupError(f"cannot freeze cgroup {self.name}: no freezer here (neither the "
                              "v1 freezer controller nor a cgroup v2 tree)")
        if not ok:
            what = "frozen" if frozen else "thawed"
            raise CgroupError(f"cgroup {self.name} was not {what} within {timeout} s: a process "
                              "may be stuck in the kernel (state D); try again, or kill() it")

    def _event(self, key: str) -> str | None:
        text = kernel.read(self._dirs["unified"] / "cgroup.events")
        for line in (text or "").splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return value
        return None

    def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL every process in this cgroup and wait until it is empty."""
        unified = self._dirs.get("unified")
        at_once = unified is not None and (unified / "cgroup.kill").exists()
        if at_once:
            # v2 (5.14+): one write, and the kernel kills even processes forked meanwhile.
            _write(unified / "cgroup.kill", "1")
        elif self.pids():
            # v1: freeze first, as runc does, so nothing can fork while we read the list;
            # the SIGKILLs land when the processes thaw. The loop below catches stragglers.
            if "freezer" in self._dirs:
                try:
                    self.freeze()
                except CgroupError:
                    pass  # still stuck FREEZING: kill anyway, the loop below catches forks
            self._signal_all(signal.SIGKILL)
        # A process frozen by the v1 freezer cannot die until it thaws (docker kill on a
        # paused container); the v2 freezer lets a SIGKILL through on its own.
        if "freezer" in self._dirs and kernel.read(
                self._dirs["freezer"] / "freezer.state") not in (None, "THAWED"):
            self.thaw()

        def empty() -> bool:
            left = self.pids()
            if left and not at_once:
                self._signal_all(signal.SIGKILL)
            return not left

        if not _wait(empty, timeout):
            raise CgroupError(f"cgroup {self.name} still has processes {self.pids()} "
                              f"{timeout} s after SIGKILL: they may be stuck in the kernel")

    def _signal_all(self, sig: int) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def remove(self, timeout: float = 2.0) -> None:
        """Delete the directories, once empty; removing a removed cgroup is fine."""
        if not _wait(lambda: not self.pids(), timeout):
            raise CgroupError(f"cannot remove cgroup {self.name}: it still has processes "
                              f"{self.pids()}. Stop the container first (kill()).")
        for where in self._dirs.values():
            try:
                where.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise CgroupError(f"could not remove {where}: {exc.strerror}.") from exc
        # The last container out removes the `edu` parent too, so an idle host keeps no
        # trace of edu. rmdir fails (ENOTEMPTY/EBUSY) while any sibling exists; a create()
        # racing with this just makes the parent again (see Driver.create).
        for where in self._dirs.values():
            try:
                where.parent.rmdir()
            except OSError:
                pass

    def observe(self) -> dict[str, str]:
        """The files a student would ``cat``, as ``hierarchy/file`` -> raw text, sorted."""
        out = {}
        for key, where in self._dirs.items():
            for name in OBSERVED.get(key, ()):
                text = kernel.read(where / name)
                if text is not None:
                    out[f"{key}/{name}"] = text
        return dict(sorted(out.items()))


class V1Cgroup(Cgroup):
    """A cgroup in v1 hierarchies."""

    version = 1

    def join(self) -> None:
        """Move the calling thread into this cgroup: ``echo 0 > tasks`` in each hierarchy.

        A thread moving itself takes no kernel-wide lock (see the module's docstring); the
        caller must be single-threaded, so that the thread is the whole process."""
        for where in self._dirs.values():
            _write(where / "tasks", "0")

    def _write_limits(self, limits: Limits) -> None:
        if limits.memory is not None:
            where = self._dirs["memory"]
            memsw = where / "memory.memsw.limit_in_bytes"
            # The kernel keeps memsw >= limit at every moment: open memsw up, set the limit,
            # then close memsw down to Docker's default of twice the memory limit.
            if memsw.exists():
                _write(memsw, "-1")
            _write(where / "memory.limit_in_bytes", str(limits.memory))
            if memsw.exists():
                _write(memsw, str(2 * limits.memory))
        if limits.pids is not None:
            _write(self._dirs["pids"] / "pids.max", str(limits.pids))
        if limits.cpus is not None:
            _write(self._dirs["cpu"] / "cpu.cfs_period_us", str(CPU_PERIOD))
            _write(self._dirs["cpu"] / "cpu.cfs_quota_us", str(limits.cpu_quota()))

    def oom_kills(self) -> int:
        """How many processes the OOM killer has killed in this cgroup (0 without memory)."""
        if "memory" not in self._dirs:
            return 0
        return _field(kernel.read(self._dirs["memory"] / "memory.oom_control"), "oom_kill")

    def memory_usage(self) -> int | None:
        """Bytes of memory charged to this cgroup now; ``None`` without the memory controller."""
        if "memory" not in self._dirs:
            return None
        return int(kernel.read(self._dirs["memory"] / "memory.usage_in_bytes") or 0)


class V2Cgroup(Cgroup):
    """A cgroup in the one v2 tree."""

    version = 2

    def _write_limits(self, limits: Limits) -> None:
        where = self._dirs["unified"]
        if limits.memory is not None:
            _write(where / "memory.max", str(limits.memory))
            # memory.swap.max counts swap alone: Docker's memory+swap = 2 x memory is this.
            if (where / "memory.swap.max").exists():
                _write(where / "memory.swap.max", str(limits.memory))
        if limits.pids is not None:
            _write(where / "pids.max", str(limits.pids))
        if limits.cpus is not None:
            _write(where / "cpu.max", f"{limits.cpu_quota()} {CPU_PERIOD}")

    def oom_kills(self) -> int:
        """How many processes the OOM killer has killed in this cgroup (0 without memory)."""
        if "memory" not in self.controllers:
            return 0
        return _field(kernel.read(self._dirs["unified"] / "memory.events"), "oom_kill")

    def memory_usage(self) -> int | None:
        """Bytes of memory charged to this cgroup now; ``None`` without the memory controller."""
        if "memory" not in self.controllers:
            return None
        return int(kernel.read(self._dirs["unified"] / "memory.current") or 0)


# ---- drivers: make, find and clean up container cgroups ----------------------------------

class Driver:
    """Makes per-container cgroups under ``<hierarchy>/<parent>/<name>``.

    ``missing`` names each needed controller this driver cannot use, with the reason, so the
    runtime can say which flags will not apply before it starts anything.
    """

    version = 0
    controllers: tuple[str, ...] = ()

    def __init__(self, parent: str = "edu", missing: dict[str, str] | None = None):
        self.parent = check_name(parent, "cgroup parent")
        self.missing = dict(sorted((missing or {}).items()))

    def parent_paths(self) -> dict[str, Path]:
        """The parent directory (``edu/``) in each hierarchy, by hierarchy name."""
        raise NotImplementedError

    def open(self, name: str) -> Cgroup:
        """The cgroup of container ``name``, made or not (nothing is created)."""
        raise NotImplementedError

    def _prepare(self, hierarchy: str, parent: Path) -> None:
        """Get a (possibly new) parent directory ready for children."""

    def create(self, name: str) -> Cgroup:
        """Make container ``name``'s cgroup in every hierarchy; an existing one is an error."""
        cg = self.open(name)
        for attempt in range(3):
            for hierarchy, parent in self.parent_paths().items():
                try:
                    os.mkdir(parent)
                    kernel.note("mkdir", str(parent))
                except FileExistsError:
                    pass  # another edu's; if its last container removes it now, _make retries
                except OSError as exc:
                    raise CgroupError(f"could not make {parent}: {exc.strerror}. Cgroups need "
                                      "root, or a cgroup v2 subtree delegated to this user."
                                      ) from exc
                self._prepare(hierarchy, parent)
            try:
                return self._make(cg, name)
            except FileNotFoundError:
                if attempt == 2:  # the last container's remove() took the parent each time
                    raise CgroupError(f"could not make the cgroup of {name!r}: its parent "
                                      "kept disappearing") from None
        raise AssertionError("unreachable")

    def _make(self, cg: Cgroup, name: str) -> Cgroup:
        made: list[Path] = []
        try:
            for where in cg.paths().values():
                where.mkdir()
                kernel.note("mkdir", str(where))
                made.append(where)
        except OSError as exc:
            for where in reversed(made):
                where.rmdir()
            if isinstance(exc, FileNotFoundError):
                raise  # the parent vanished under us: create() makes it again
            if isinstance(exc, FileExistsError):
                raise CgroupError(
                    f"a cgroup for container {name!r} already exists ({exc.filename}): the "
                    "container is still running, or it was killed before it could clean up "
                    "(cleanup_stale removes those).") from exc
            raise CgroupError(f"could not make {exc.filename}: {exc.strerror}.") from exc
        cg.mark_owner()
        return cg

    def names(self) -> list[str]:
        """Every container cgroup under the parent, in any hierarchy, sorted."""
        found = set()
        for parent in self.parent_paths().values():
            try:  # the last container out may remove the parent while we look
                found.update(p.name for p in parent.iterdir() if p.is_dir())
            except FileNotFoundError:
                pass
        return sorted(found)

    def find_stale(self, alive: set[str]) -> list[str]:
        """Cgroups whose container is not in ``alive``: left by an ``edu`` that was killed.

        ``alive`` must come from the container store, which records a container before its
        cgroup is made, or a concurrent ``edu run`` would look stale.
        """
        return [name for name in self.names() if name not in alive]

    def cleanup_stale(self, alive: set[str]) -> list[str]:
        """Kill and remove every stale cgroup (see ``find_stale``); the names removed."""
        removed, failed = [], []
        for name in self.find_stale(alive):
            cg = self.open(name)
            try:
                cg.kill()
                cg.remove()
                removed.append(name)
            except CgroupError as exc:
                failed.append(str(exc))
        if failed:
            raise CgroupError("could not clean up every stale cgroup: " + " ".join(failed))
        return removed


class V1Driver(Driver):
    """cgroup v1: one directory per controller.

    ``mounts`` maps each v1 controller to use (memory, pids, cpu, freezer) to its mount point;
    ``unified`` is the v2 tree's mount point on a hybrid host, which containers do not join
    (see the module's docstring).
    """

    version = 1

    def __init__(self, mounts: dict[str, Path], unified: Path | None = None,
                 parent: str = "edu", missing: dict[str, str] | None = None):
        super().__init__(parent, missing)
        self.mounts = dict(sorted(mounts.items()))
        self.unified = unified
        self.controllers = tuple(c for c in sorted(NEEDED) if c in self.mounts)

    def parent_paths(self) -> dict[str, Path]:
        """The parent directory (``edu/``) in each hierarchy, by hierarchy name."""
        return {c: m / self.parent for c, m in self.mounts.items()}

    def open(self, name: str) -> Cgroup:
        """The cgroup of container ``name``, made or not (nothing is created)."""
        check_name(name)
        dirs = {c: p / name for c, p in self.parent_paths().items()}
        return V1Cgroup(name, dirs, self.controllers, self.missing)


class V2Driver(Driver):
    """cgroup v2: one directory per container under ``root`` (the tree, or our delegated part).

    The controllers ``root`` offers are opened to the children through
    ``cgroup.subtree_control`` at ``root`` and at the parent: a v2 directory only gets a
    controller's files when its parent enabled that controller for its children.
    """

    version = 2

    def __init__(self, root: Path, parent: str = "edu", missing: dict[str, str] | None = None):
        offered = (kernel.read(root / "cgroup.controllers") or "").split()
        missing = dict(missing or {})
        for name in NEEDED:
            if name not in offered and name not in missing:
                missing[name] = f"not offered by {root}/cgroup.controllers"
        super().__init__(parent, missing)
        self.root = root
        self.controllers = tuple(c for c in sorted(NEEDED) if c not in self.missing)

    def parent_paths(self) -> dict[str, Path]:
        """The parent directory (``edu/``) in the v2 tree."""
        return {"unified": self.root / self.parent}

    def open(self, name: str) -> Cgroup:
        """The cgroup of container ``name``, made or not (nothing is created)."""
        check_name(name)
        return V2Cgroup(name, {"unified": self.root / self.parent / name}, self.controllers,
                        self.missing)

    def _prepare(self, hierarchy: str, parent: Path) -> None:
        for where in (self.root, parent):
            enabled = (kernel.read(where / "cgroup.subtree_control") or "").split()
            wanted = [c for c in self.controllers if c not in enabled]
            if wanted:
                _write(where / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))


def driver(found: list[Hierarchy] | None = None, root: Path = Path("/"),
           uid: int | None = None, proc_cgroup: str | None = None,
           parent: str = "edu") -> Driver:
    """The driver for this host: v1 where the controllers are on v1 (v1, hybrid), else v2.

    Raises ``CgroupUnavailable`` when no cgroup can be made at all; then the runtime runs
    containers without limits and says why. ``root`` prefixes every path, for tests.
    Introduced in notebooks/06-step-by-step.
    """
    found = hierarchies(root=root) if found is None else found
    uid = os.geteuid() if uid is None else uid
    support = {name: controller_support(found, name, root, uid, proc_cgroup)
               for name in (*NEEDED, "freezer")}
    missing = {name: s.reason for name, s in support.items()
               if name in NEEDED and not s.usable}
    v1 = {name: root / s.path.relative_to("/") for name, s in support.items()
          if s.usable and s.version == 1 and s.path is not None}
    v2 = next((h for h in found if h.version == 2), None)
    if v1:
        unified = root / v2.mount_point.relative_to("/") if v2 and uid == 0 else None
        return V1Driver(v1, unified, parent, missing)
    if v2 is None:
        if any(h.version == 1 for h in found):
            raise CgroupUnavailable("not available: cgroup v1 cannot be delegated to a user. "
                                    "Run as root for limits, or boot with "
                                    "systemd.unified_cgroup_hierarchy=1 for cgroup v2.")
        raise CgroupUnavailable("not available: no cgroup hierarchy is mounted (mount cgroup2 "
                                "at /sys/fs/cgroup).")
    base = v2.mount_point if uid == 0 else v2.mount_point / own_v2_path(proc_cgroup).lstrip("/")
    where = root / base.relative_to("/")
    if uid != 0 and not os.access(where, os.W_OK):
        raise CgroupUnavailable(f"not available: this user's cgroup {base} is not writable, so "
                                "it was not delegated. Start the lab from a delegated scope "
                                "(systemd-run --user --scope -p Delegate=yes ...), or run as "
                                "root.")
    # The tree's real root may hold processes; any other cgroup (it has cgroup.type) may not
    # hold processes and enable controllers for its children at the same time.
    procs = (kernel.read(where / "cgroup.procs") or "").split()
    if procs and (where / "cgroup.type").exists():
        enabled = (kernel.read(where / "cgroup.subtree_control") or "").split()
        for name in NEEDED:
            if name not in enabled and name not in missing:
                missing[name] = (f"{base} has processes of its own, and cgroup v2 enables a "
                                 "controller for children only in a cgroup without processes; "
                                 "start edu from a child cgroup of the delegated one")
    return V2Driver(where, parent, missing)


def limits_here(found: list[Hierarchy] | None = None, root: Path = Path("/"),
                uid: int | None = None, proc_cgroup: str | None = None) -> tuple[bool, str]:
    """Whether this user's containers get their --memory, --pids-limit and --cpus limits
    here, and why, in a sentence: yes for root (v1 or v2), and for a user on cgroup v2 with a
    delegated, writable subtree offering the controllers (systemd's Delegate=yes); no for a
    user on a cgroup v1 or hybrid host, whose rootless containers get no cgroup at all.

    What a lesson's ``limits`` need asks (notebook/course.py). ``root`` prefixes every path
    and ``uid``/``proc_cgroup`` stand for the user's, so tests can use a temp-dir cgroupfs."""
    uid = os.geteuid() if uid is None else uid
    who = "root" if uid == 0 else f"uid {uid}"
    found = hierarchies(root=root) if found is None else found
    on_v1 = sorted(n for n in NEEDED if any(h.version == 1 and n in h.controllers
                                             for h in found))
    if uid != 0 and on_v1:
        return False, (f"{who}'s rootless containers get no cgroup: this host's "
                       f"{', '.join(on_v1)} controllers are on cgroup v1 ({mode(found)}), "
                       "which cannot be delegated to a user. Root's containers get limits; "
                       "for every user's, boot with systemd.unified_cgroup_hierarchy=1 "
                       "(cgroup v2, where systemd delegates each user a subtree)")
    try:
        drv = driver(found, root, uid, proc_cgroup)
    except CgroupUnavailable as exc:
        return False, f"{who} gets no cgroup for its containers: {exc}"
    missing = {k: v for k, v in drv.missing.items() if k in NEEDED}
    if missing:
        return False, (f"{who} cannot limit " + "; ".join(f"{k}: {v}" for k, v
                                                          in sorted(missing.items())))
    kind = "cgroup v1" if isinstance(drv, V1Driver) else "cgroup v2"
    how = "as root" if uid == 0 else "in the subtree systemd delegated to this user"
    return True, f"{who}'s containers get memory, pids and cpu limits ({kind}, {how})"


# ---- the steps of a container's start --------------------------------------------------------

def driver_for(limits_asked: bool):
    """This host's cgroup driver and a note for the user when limits cannot apply.

    A process that starts many containers (the supervisor) finds it once for as long as
    what it is found from stays the same (``host_key``): root's from the mount table and
    each v2 tree's controllers."""
    key = host_key()
    found = _found.get(key) if key is not None else None
    if found is None:
        try:
            found = driver()
        except CgroupUnavailable as exc:
            found = exc
        _found.clear()
        if key is not None:
            _found[key] = found
    if isinstance(found, CgroupUnavailable):
        return None, f"running without a cgroup, so no limits apply: {found}"
    missing = "; ".join(f"{k}: {v}" for k, v in sorted(found.missing.items()))
    return found, (f"some limits cannot apply here ({missing})" if missing and limits_asked
                    else "")


#: driver_for's driver (or why there is none), under the host_key it was found with.
_found: dict[tuple, Driver | CgroupUnavailable] = {}


def host_key(mountinfo: str | None = None, root: Path = Path("/")) -> tuple | None:
    """What root's driver is found from, as text: the mount table (which hierarchies are
    mounted where) and each cgroup2 tree's ``cgroup.controllers``. A user's driver depends
    on more that changes by itself (its delegated cgroup's processes): None, never kept."""
    if os.geteuid() != 0:
        return None
    text = kernel.read("/proc/self/mountinfo", "") if mountinfo is None else mountinfo
    trees = kernel.parse_mountinfo("\n".join(line for line in text.splitlines()
                                             if " - cgroup2 " in line))
    return (text, *(kernel.read(root / m["mount_point"].lstrip("/") / "cgroup.controllers", "")
                     for m in trees))


class CgroupStep(Step):
    """Create the container's cgroup, set its limits, and move the child into it."""

    name = "cgroup"
    side = HOST
    lesson = "notebooks/06-step-by-step"
    explain = (
        "The host makes a cgroup for the container (a directory in the cgroup filesystem), "
        "writes the limits into its files (memory, pids, cpu quota) and, on cgroup v2, moves "
        "the child into it by writing its pid to cgroup.procs (on v1 the child moves itself "
        "in the next step, which is faster). Everything the child starts inherits the "
        "cgroup, so the limits hold for the whole container. This comes before the cgroup "
        "namespace, so that the container sees its own cgroup as the root. Undo: kill what "
        "is left in it, then rmdir it.")

    def enabled(self, ctx) -> bool:
        """Skipped (with a note) where no usable controller exists, e.g. rootless on v1."""
        return ctx.cgroup_driver is not None

    def apply(self, ctx) -> None:
        """mkdir, write the limits; on v2, write the pid to cgroup.procs."""
        ctx.cgroup = ctx.cgroup_driver.create(ctx.container_id)
        if ctx.config.limits is not None:
            ctx.cgroup.set_limits(ctx.config.limits)
        if ctx.cgroup.version != 1:
            ctx.cgroup.add(ctx.middle)

    def undo(self, ctx) -> None:
        """Kill what is left, then remove the cgroup directories."""
        if ctx.cgroup is not None:
            ctx.cgroup.kill()
            ctx.cgroup.remove()

    def observe(self, ctx) -> dict[str, Any]:
        """The cgroup's limit files and the pids in it."""
        return ctx.cgroup.observe() if ctx.cgroup is not None else {}


class JoinCgroup(Step):
    """On cgroup v1, the child moves itself into the container's cgroup."""

    name = "cgroup join"
    side = CHILD
    lesson = "notebooks/06-step-by-step"
    explain = (
        "The child moves itself into the cgroup the host just made: `echo 0 > tasks` in "
        "each v1 hierarchy (0 means 'me'). Moving *another* process (writing its pid) takes "
        "a lock across the whole kernel that waits for every CPU to pass a quiet point, "
        "5 to 20 ms; a process moving itself needs no such lock. Only cgroup v1 has this "
        "shortcut; on v2 the host moved the child in the step before. Undo: the cgroup "
        "step's undo removes the cgroup.")

    def enabled(self, ctx) -> bool:
        """Only on cgroup v1 (there the host step did not move the child)."""
        return ctx.cgroup_driver is not None and ctx.cgroup_driver.version == 1

    def apply(self, ctx) -> None:
        """Write 0 to each hierarchy's tasks file (in the child, before any thread exists)."""
        ctx.cgroup_driver.open(ctx.container_id).join()

    def observe(self, ctx) -> dict[str, Any]:
        """The child's /proc/PID/cgroup: which cgroup it is in, per hierarchy."""
        text = kernel.read(f"/proc/{ctx.middle}/cgroup", "") if ctx.middle else ""
        return {"/proc/PID/cgroup": text.splitlines()}
