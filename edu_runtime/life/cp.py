"""``edu cp``: copy files between the host and a container without being fooled by it.

Every path on the container's side is resolved inside its root (``safepath``), so a
symlink it planted cannot lead the copy onto the host's files.

A stopped container has no mounted root. Writing into its upper directory by hand would
mean redoing overlayfs: copying parent directories up from the layers, honouring
whiteouts and opaque directories. Instead its overlay (the same layers, upper and work
directories) is mounted *detached*, with ``fsmount``: writes land in the upper directory
exactly as if the container had made them, and closing the fd unmounts it.

Docker's rules, kept: modes and times are kept; copies into a container are owned by its
root, copies out by whoever runs ``edu cp``. One rule is stricter: setuid and setgid bits
are dropped from files copied *out*, and device nodes, sockets and FIFOs are skipped (and
listed), because a container must not be able to plant a setuid-root program or a device
node of the host's disk on the host.

Introduced in notebooks/07-run-it.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .. import paths
from ..safepath import (
    Copied,
    CopyError,
    Rules,
    copy_children,
    copy_node,
    finish_node,
    mount_overlay,
    open_in_root,
    reopen,
)


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
                   Rules(mode_mask=0o1777), follow_link)


def copy_to(record: dict[str, Any], host_path: str, container_path: str, *,
            follow_link: bool = False) -> Copied:
    """``docker cp SRC CONTAINER:DEST``: copy into a running or stopped container."""
    with _container_root(record, write=True) as root, _host_root() as host:
        dst = _Side(root, f"container {_name(record)}:")
        return _cp(_Side(host, ""), _host_abs(host_path), dst, container_path, Rules(),
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
    from ..images.store import Store, StoreError

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


def _cp(src: _Side, src_path: str, dst: _Side, dst_path: str, rules: Rules,
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
                into = reopen(dfd, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    if is_dir and contents:
                        copy_children(sfd, into, dst_path.rstrip("/."), rules, done)
                        finish_node(into, st, stat.S_IMODE(st.st_mode), rules)
                        done.dirs += 1
                    else:
                        name = os.path.basename(src_path.rstrip("/"))
                        copy_node(sfd, st, into, name, f"{dst_path.rstrip('/')}/{name}",
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
                copy_node(sfd, st, parent, name, dst_path.rstrip("/"), rules, done)
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
