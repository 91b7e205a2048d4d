"""Safe paths: open, create and copy files inside a tree that someone else arranged.

A container's files are the container's to arrange, and it may arrange them against us:
``/etc/x`` can be a symlink to ``/``. The host reaches a running container's files through
``/proc/PID/root``, but a symlink met on that path is resolved against the *host's* root,
so a naive ``open("/proc/PID/root/etc/x/shadow")`` run by root reads the host's shadow
file, and a naive write writes it. So every path inside such a tree is resolved with
``openat2(RESOLVE_IN_ROOT)`` relative to an fd of the tree's root, where ``/`` and ``..``
cannot climb out; and below that, every entry is created or opened relative to an fd of its
own directory, one name at a time, with ``O_NOFOLLOW``. No path string is resolved twice,
so a symlink swapped in by a running container between two of our steps cannot redirect us
either. This is how runc's ``securejoin`` and our layer extractor work.

Who uses it: ``edu cp`` (``life.cp``), volumes filled from an image, a Dockerfile's COPY,
and the name files (/etc/hosts) bound into a container. ``mount_overlay`` mounts a stopped
container's or an image's layers *detached* (``fsmount``): a mount attached to no directory,
reachable only through one fd, so a crash leaves nothing mounted.

Introduced in notebooks/06-step-by-step.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

from . import kernel, overlay

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
class Rules:
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


def reopen(path_fd: int, flags: int) -> int:
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
    copy_children(src_dir, dst_dir, "", Rules(owners=owners, owner=owner), done)
    return done


def copy_entry(src: int, dst_dir: int, name: str, *, owners: bool = False,
               owner: tuple[int, int] | None = None) -> Copied:
    """Copy one entry (``src``: an O_PATH, O_NOFOLLOW fd) to ``name`` in ``dst_dir``: a
    file, a symlink, or a directory with everything in it (merged into one that is there)."""
    done = Copied()
    copy_node(src, os.fstat(src), dst_dir, name, f"/{name}",
               Rules(owners=owners, owner=owner), done)
    return done


def set_metadata(fd: int, st: os.stat_result, *, owner: tuple[int, int] | None = None) -> None:
    """Give ``fd`` the mode and times of ``st``, and ``owner`` (else root, the creator)."""
    finish_node(fd, st, stat.S_IMODE(st.st_mode), Rules(owner=owner))


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


def copy_children(src_dir: int, dst_dir: int, shown: str, rules: Rules,
                   done: Copied) -> None:
    reader = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=src_dir)
    try:
        names = sorted(os.listdir(reader))
        for name in names:
            child = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=reader)
            try:
                copy_node(child, os.fstat(child), dst_dir, name, f"{shown}/{name}", rules,
                           done)
            finally:
                os.close(child)
    finally:
        os.close(reader)


def copy_node(src: int, st: os.stat_result, dst_dir: int, name: str, shown: str,
               rules: Rules, done: Copied) -> None:
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
            copy_children(src, made, shown, rules, done)
            finish_node(made, st, stat.S_IMODE(st.st_mode), rules)  # after: it may be read-only
        finally:
            os.close(made)
        done.dirs += 1
    elif kind == stat.S_IFREG:
        _make_room(dst_dir, name, shown, rules)
        reader = reopen(src, os.O_RDONLY)
        try:
            writer = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600, dir_fd=dst_dir)
            try:
                done.bytes += _copy_bytes(reader, writer)
                finish_node(writer, st, stat.S_IMODE(st.st_mode) & rules.mode_mask, rules)
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


def _make_room(dst_dir: int, name: str, shown: str, rules: Rules) -> None:
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


def finish_node(fd: int, st: os.stat_result, mode: int, rules: Rules) -> None:
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
