"""``edu cp``: copy files between the host and a container without being fooled by it.

A container's files are the container's to arrange, and it may arrange them against us:
``/etc/x`` can be a symlink to ``/``. The host reaches a running container's files through
``/proc/PID/root``, but a symlink met on that path is resolved against the *host's* root,
so a naive ``open("/proc/PID/root/etc/x/shadow")`` run by root reads the host's shadow
file, and a naive write writes it. So every container path is resolved with
``openat2(RESOLVE_IN_ROOT)`` relative to an fd of the container's root, where ``/`` and
``..`` cannot climb out; and below that, every entry is created or opened relative to an
fd of its own directory, one name at a time, with ``O_NOFOLLOW``. No path string is
resolved twice, so a symlink swapped in by the running container between two of our steps
cannot redirect us either. This is how runc's ``securejoin`` and our layer extractor work.

A stopped container has no mounted root. Writing into its upper directory by hand would
mean redoing overlayfs: copying parent directories up from the layers, honouring
whiteouts and opaque directories. Instead its overlay (the same layers, upper and work
directories) is mounted *detached*, with ``fsmount``: a mount attached to no directory,
reachable only through one fd. Writes land in the upper directory exactly as if the
container had made them, and closing the fd unmounts it, so a crash leaves nothing behind.

Docker's rules, kept: modes and times are kept; copies into a container are owned by its
root, copies out by whoever runs ``edu cp``. One rule is stricter: setuid and setgid bits
are dropped from files copied *out*, and device nodes, sockets and FIFOs are skipped (and
listed), because a container must not be able to plant a setuid-root program or a device
node of the host's disk on the host.

Introduced in notebooks/05-run.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from . import kernel, overlay, paths

#: How container paths are resolved: as if the root fd were /, and no /proc magic links.
IN_ROOT = kernel.RESOLVE_IN_ROOT | kernel.RESOLVE_NO_MAGICLINKS


class CopyError(ValueError):
    """A copy was refused or failed; the message says why and what to do."""


@dataclass
class Copied:
    """What a copy did: counts, bytes, and what it skipped (device nodes, sockets, FIFOs)."""

    files: int = 0
    dirs: int = 0
    links: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)


@dataclass
class _Rules:
    owners: bool = False  # keep uid/gid (volumes); else the creator owns the copies (cp)
    mode_mask: int = 0o7777  # 0o1777 when copying to the host: no setuid/setgid
    where: str = ""  # the destination, for messages
    owner: tuple[int, int] | None = None  # every copy owned by this uid, gid (COPY --chown)


# ---- resolving paths inside a root ---------------------------------------------------------

def open_in_root(root_fd: int, path: str, flags: int = os.O_PATH, *,
                 follow: bool = True) -> int:
    """Open ``path`` as if ``root_fd`` were ``/``: no symlink or ``..`` can leave it; an fd.

    ``follow=False`` opens a final symlink itself (O_NOFOLLOW). The kernel answers EAGAIN
    when a rename raced the lookup; that is retried a few times.
    """
    rel = path.strip("/") or "."
    flags |= 0 if follow else os.O_NOFOLLOW
    for _ in range(16):
        try:
            return kernel.openat2(root_fd, rel, flags, IN_ROOT)
        except BlockingIOError:
            continue
    raise OSError(errno.EAGAIN, f"{path} kept changing while it was looked up", path)


def ensure_in_root(root_fd: int, path: str, *, directory: bool = True,
                   mode: int = 0o755, owner: tuple[int, int] | None = None) -> int:
    """``mkdir -p path`` (or, with ``directory=False``, create an empty file and its parents)
    inside ``root_fd``'s tree; an O_PATH fd of what is there now. What it creates belongs to
    ``owner`` (uid, gid) if given (a Dockerfile's COPY --chown), else to the caller."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise CopyError(f"{path} contains '..': give a plain absolute path")
    for i, part in enumerate(parts):
        sub = "/".join(parts[: i + 1])
        try:
            os.close(open_in_root(root_fd, sub))
            continue
        except FileNotFoundError:
            pass
        parent = open_in_root(root_fd, "/".join(parts[:i]), os.O_PATH | os.O_DIRECTORY)
        try:
            if i == len(parts) - 1 and not directory:
                os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, mode, dir_fd=parent))
            else:
                os.mkdir(part, mode, dir_fd=parent)
            if owner is not None:
                os.chown(part, *owner, dir_fd=parent, follow_symlinks=False)
        except FileExistsError:
            raise CopyError(f"cannot create /{sub}: it is a symbolic link to a path that "
                            "does not exist; remove the link or choose another path") from None
        finally:
            os.close(parent)
    return open_in_root(root_fd, "/".join(parts))


def _reopen(path_fd: int, flags: int) -> int:
    # An O_PATH fd can only be stat'ed; reopening it through its /proc/self/fd link opens
    # exactly the inode it names, never whatever is at its old path now.
    return os.open(f"/proc/self/fd/{path_fd}", flags | os.O_CLOEXEC)


# ---- copying one tree, fd by fd ------------------------------------------------------------

def copy_tree(src_dir: int, dst_dir: int, *, owners: bool = True,
              owner: tuple[int, int] | None = None) -> Copied:
    """Copy the contents of directory ``src_dir`` into ``dst_dir`` (both fds), recursively.

    Used to fill a new volume from the image (``owners`` keeps uids and gids), and by a
    Dockerfile COPY (``owner``: every copy belongs to that uid and gid).
    """
    done = Copied()
    _copy_children(src_dir, dst_dir, "", _Rules(owners=owners, owner=owner), done)
    return done


def copy_entry(src: int, dst_dir: int, name: str, *, owners: bool = False,
               owner: tuple[int, int] | None = None) -> Copied:
    """Copy one entry (``src``: an O_PATH, O_NOFOLLOW fd) to ``name`` in ``dst_dir``: a
    file, a symlink, or a directory with everything in it (merged into one that is there)."""
    done = Copied()
    _copy_node(src, os.fstat(src), dst_dir, name, f"/{name}",
               _Rules(owners=owners, owner=owner), done)
    return done


def set_metadata(fd: int, st: os.stat_result, *, owner: tuple[int, int] | None = None) -> None:
    """Give ``fd`` the mode and times of ``st``, and ``owner`` (else root, the creator)."""
    _finish(fd, st, stat.S_IMODE(st.st_mode), _Rules(owner=owner))


def mount_overlay(lower: list, upper=None, work=None, *, write: bool = False) -> int:
    """An overlay of ``lower`` (top first) and, if given, ``upper``/``work``, mounted
    detached (fsmount): an O_PATH fd of its root; closing it unmounts. Needs root: of the
    host, or of a user namespace (``kernel.in_user_namespace``) over the user's own layers,
    which are then read and written with ``userxattr`` (overlay's ``user.`` xattrs, as
    rootless containers and the rootless image store use).

    fsconfig takes strings of at most 256 bytes, too short for a ``lowerdir`` of a few
    layers, so each layer is added by itself (``lowerdir+``, Linux 6.7). Older kernels get one
    ``lowerdir`` of short names for the layers: ``/proc/self/fd/N`` of each layer held open.
    A single layer read-only is no overlay at all (overlayfs wants two lower dirs without
    an upper one): its own directory is opened, O_PATH as well.
    """
    if upper is None and len(lower) == 1:
        return os.open(lower[0], os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    rootless = kernel.rootless()
    rest: list[tuple[str, str | None]] = [("userxattr", None)] if rootless else []
    if upper is not None:
        rest = []
        for opt in overlay.mount_options(["-"], upper, work, rootless).split(",")[1:]:
            key, eq, value = opt.partition("=")
            rest.append((key, value if eq else None))
    attr = kernel.MOUNT_ATTR_NOSUID | kernel.MOUNT_ATTR_NODEV | kernel.MOUNT_ATTR_NOEXEC
    attr |= 0 if write else kernel.MOUNT_ATTR_RDONLY
    try:
        return kernel.mount_detached("overlay", [("lowerdir+", str(p)) for p in lower] + rest,
                                     attr)
    except OSError as exc:
        if "lowerdir+" not in str(exc):
            raise
    held = [os.open(p, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for p in lower]
    try:
        short = ":".join(f"/proc/self/fd/{fd}" for fd in held)
        return kernel.mount_detached("overlay", [("lowerdir", short)] + rest, attr)
    finally:
        for fd in held:
            os.close(fd)


def _copy_children(src_dir: int, dst_dir: int, shown: str, rules: _Rules,
                   done: Copied) -> None:
    reader = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=src_dir)
    try:
        names = sorted(os.listdir(reader))
        for name in names:
            child = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=reader)
            try:
                _copy_node(child, os.fstat(child), dst_dir, name, f"{shown}/{name}", rules,
                           done)
            finally:
                os.close(child)
    finally:
        os.close(reader)


def _copy_node(src: int, st: os.stat_result, dst_dir: int, name: str, shown: str,
               rules: _Rules, done: Copied) -> None:
    """Copy the entry ``src`` (an O_PATH, O_NOFOLLOW fd) to ``name`` in ``dst_dir``."""
    kind = stat.S_IFMT(st.st_mode)
    if kind == stat.S_IFDIR:
        try:
            os.mkdir(name, 0o700, dir_fd=dst_dir)
        except FileExistsError:
            pass  # merge into a directory that is there (Docker does the same)
        try:
            made = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                           dir_fd=dst_dir)
        except OSError as exc:
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            raise CopyError(f"cannot overwrite non-directory {rules.where}{shown} with a "
                            "directory: remove it first") from None
        try:
            _copy_children(src, made, shown, rules, done)
            _finish(made, st, stat.S_IMODE(st.st_mode), rules)  # after: it may be read-only
        finally:
            os.close(made)
        done.dirs += 1
    elif kind == stat.S_IFREG:
        _make_room(dst_dir, name, shown, rules)
        reader = _reopen(src, os.O_RDONLY)
        try:
            writer = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600, dir_fd=dst_dir)
            try:
                done.bytes += _copy_bytes(reader, writer)
                _finish(writer, st, stat.S_IMODE(st.st_mode) & rules.mode_mask, rules)
            finally:
                os.close(writer)
        finally:
            os.close(reader)
        done.files += 1
    elif kind == stat.S_IFLNK:
        target = os.readlink("", dir_fd=src)  # readlinkat(fd, ""): the link that fd names
        _make_room(dst_dir, name, shown, rules)
        os.symlink(target, name, dir_fd=dst_dir)
        if rules.owner is not None:
            os.chown(name, *rules.owner, dir_fd=dst_dir, follow_symlinks=False)
        elif rules.owners:
            _chown(lambda: os.chown(name, st.st_uid, st.st_gid, dir_fd=dst_dir,
                                    follow_symlinks=False))
        os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst_dir,
                 follow_symlinks=False)
        done.links += 1
    else:
        done.skipped.append(shown or "/")


def _make_room(dst_dir: int, name: str, shown: str, rules: _Rules) -> None:
    """Remove a non-directory where a file or link will go: Docker overwrites those."""
    try:
        st = os.stat(name, dir_fd=dst_dir, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise CopyError(f"cannot overwrite directory {rules.where}{shown} with a "
                        "non-directory: remove it first, or copy into it")
    os.unlink(name, dir_fd=dst_dir)


def _copy_bytes(reader: int, writer: int) -> int:
    total = 0
    while True:
        sent = os.sendfile(writer, reader, None, 1 << 30)
        if not sent:
            return total
        total += sent


def _finish(fd: int, st: os.stat_result, mode: int, rules: _Rules) -> None:
    """Owner (if kept), then mode (chown clears setuid), then times: all on the fd."""
    if rules.owner is not None:
        os.fchown(fd, *rules.owner)
    elif rules.owners:
        _chown(lambda: os.fchown(fd, st.st_uid, st.st_gid))
    os.fchmod(fd, mode)
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))


def _chown(call) -> None:
    try:
        call()
    except OSError as exc:
        # Rootless: only the ids of the user namespace's map exist; the rest keep ours.
        if exc.errno not in (errno.EPERM, errno.EINVAL) or os.geteuid() == 0:
            raise


# ---- docker cp -----------------------------------------------------------------------------

@dataclass
class _Side:
    root: int  # an O_PATH fd of the tree's root: the host's / or the container's
    where: str  # "container NAME:" or "" (the host), for messages


def split_arg(arg: str) -> tuple[str | None, str]:
    """``CONTAINER:PATH`` -> (container, path); a host path -> (None, path), as Docker reads
    ``docker cp`` arguments (a path with a ':' in its first component needs a ``./``)."""
    if arg.startswith(("/", ".")) or ":" not in arg:
        return None, arg
    ref, _, path = arg.partition(":")
    return ref, path or "/"


def copy_from(record: dict[str, Any], container_path: str, host_path: str, *,
              follow_link: bool = False) -> Copied:
    """``docker cp CONTAINER:SRC DEST``: copy out of a running or stopped container."""
    with _container_root(record, write=False) as root, _host_root() as host:
        src = _Side(root, f"container {_name(record)}:")
        return _cp(src, container_path, _Side(host, ""), _host_abs(host_path),
                   _Rules(mode_mask=0o1777), follow_link)


def copy_to(record: dict[str, Any], host_path: str, container_path: str, *,
            follow_link: bool = False) -> Copied:
    """``docker cp SRC CONTAINER:DEST``: copy into a running or stopped container."""
    with _container_root(record, write=True) as root, _host_root() as host:
        dst = _Side(root, f"container {_name(record)}:")
        return _cp(_Side(host, ""), _host_abs(host_path), dst, container_path, _Rules(),
                   follow_link)


def _name(record: dict[str, Any]) -> str:
    return record.get("name") or record.get("id", "?")[:12]


def _host_abs(path: str) -> str:
    # Keep a trailing "/" or "/.": they mean something to cp.
    tail = "/." if path.endswith("/.") else "/" if path.endswith("/") else ""
    return os.path.abspath(path).rstrip("/") + tail


@contextmanager
def _host_root() -> Iterator[int]:
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def _container_root(record: dict[str, Any], write: bool) -> Iterator[int]:
    """An O_PATH fd of the container's root: its live root, or its overlay mounted detached."""
    from .enter import running_pid

    name = _name(record)
    pid = running_pid(record, ("running", "paused"))  # a frozen process still has a root
    if pid:
        fd = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    elif record.get("status") != "exited":
        raise CopyError(f"container {name} is marked {record.get('status')} but its process "
                        "is gone (its edu process was killed): 'edu prune' cleans it up. "
                        "Nothing was copied.")
    elif os.geteuid() != 0:
        raise CopyError(f"container {name} is stopped, and mounting a stopped container's "
                        "files needs root: copy while it runs, or as root")
    else:
        fd = _mount_stopped(record, write)
    try:
        yield fd
    finally:
        os.close(fd)


def _mount_stopped(record: dict[str, Any], write: bool) -> int:
    """The stopped container's overlay, mounted nowhere (fsmount); an fd of its root."""
    base = paths.state_dir() / "containers" / record["id"]
    upper, work = base / "upper", base / "work"
    if not upper.is_dir() or not work.is_dir():
        raise CopyError(f"container {_name(record)} has no upper directory ({upper}): its "
                        "files are gone; it cannot be copied to or from")
    lower = _lowerdirs(record)
    try:
        return mount_overlay(lower, upper, work, write=write)
    except OSError as exc:
        raise CopyError(f"could not mount the files of stopped container {_name(record)}: "
                        f"{exc.strerror}") from None


def _lowerdirs(record: dict[str, Any]) -> list:
    """The container's layer dirs, top first: from its pin (kept even if the image was
    removed), else from its image."""
    from .images.store import Store, StoreError

    store = Store()
    try:
        diff_ids = json.loads((store.pins / f"{record['id']}.json").read_text())
        return [store.layer_dir(d) for d in reversed(diff_ids)]
    except (OSError, ValueError):
        pass
    try:
        return store.lowerdirs(store.get(record["image_id"]))
    except (KeyError, StoreError):
        raise CopyError(f"the image layers of container {_name(record)} are gone from the "
                        "store, so its files cannot be put together") from None


def _cp(src: _Side, src_path: str, dst: _Side, dst_path: str, rules: _Rules,
        follow_link: bool) -> Copied:
    """Docker's rules for SRC and DEST (see ``docker cp --help``), on fds."""
    rules.where = dst.where
    contents = src_path.endswith("/.") or not src_path.strip("/.")
    try:
        sfd = open_in_root(src.root, src_path, follow=follow_link or src_path.endswith("/"))
    except FileNotFoundError:
        raise CopyError(f"could not find {src.where}{src_path}: no such file or "
                        "directory") from None
    except OSError as exc:
        raise _sentence(exc, f"{src.where}{src_path}") from None
    done = Copied()
    try:
        st = os.fstat(sfd)
        is_dir = stat.S_ISDIR(st.st_mode)
        if src_path.endswith("/") and not is_dir:
            raise CopyError(f"{src.where}{src_path} is not a directory")
        try:
            dfd = open_in_root(dst.root, dst_path)
        except FileNotFoundError:
            dfd = None
        try:
            if dfd is not None and stat.S_ISDIR(os.fstat(dfd).st_mode):
                into = _reopen(dfd, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    if is_dir and contents:
                        _copy_children(sfd, into, dst_path.rstrip("/."), rules, done)
                        _finish(into, st, stat.S_IMODE(st.st_mode), rules)
                        done.dirs += 1
                    else:
                        name = os.path.basename(src_path.rstrip("/"))
                        _copy_node(sfd, st, into, name, f"{dst_path.rstrip('/')}/{name}",
                                   rules, done)
                finally:
                    os.close(into)
                return done
            if dfd is not None and is_dir:
                raise CopyError(f"cannot copy a directory to a file: {dst.where}{dst_path} "
                                "exists and is not a directory")
            if dfd is None and dst_path.endswith("/") and not is_dir:
                raise CopyError(f"the destination directory {dst.where}{dst_path} does not "
                                "exist: create it first, or leave out the trailing /")
            parent_path, name = os.path.split(dst_path.rstrip("/"))
            if not name or name in (".", ".."):
                raise CopyError(f"{dst.where}{dst_path} names no file: give a path such as "
                                "/tmp/out")
            try:
                parent = open_in_root(dst.root, parent_path or "/",
                                      os.O_RDONLY | os.O_DIRECTORY)
            except (FileNotFoundError, NotADirectoryError):
                raise CopyError(f"the directory {dst.where}{parent_path or '/'} does not "
                                "exist: create it first") from None
            try:
                _copy_node(sfd, st, parent, name, dst_path.rstrip("/"), rules, done)
            finally:
                os.close(parent)
            return done
        finally:
            if dfd is not None:
                os.close(dfd)
    except OSError as exc:
        raise _sentence(exc, f"{dst.where}{dst_path}") from None
    finally:
        os.close(sfd)


def _sentence(exc: OSError, where: str) -> CopyError:
    hint = {
        errno.EROFS: ": that file system is read-only (a container started with "
                     "--read-only, or a :ro volume); copy somewhere writable, such as a "
                     "volume or /tmp",
        errno.ENOSPC: ": the disk is full",
        errno.EACCES: ": permission denied (edu cp runs with your rights on the host)",
        errno.EXDEV: ": the path crossed out of the container's root while it was looked "
                     "up (a symlink or rename inside it); try again",
    }.get(exc.errno or 0, "")
    return CopyError(f"copying {where} failed: {exc.strerror or exc}{hint}")
