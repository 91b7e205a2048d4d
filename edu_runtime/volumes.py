"""Volumes: data that outlives its container, mounted into it with a bind mount.

A container's writes land in its own upper directory, which ``edu rm`` deletes. Data that
must survive (a database, uploads, the code you are editing) lives outside: in a *named
volume*, a directory the runtime keeps under ``state_dir()/volumes/NAME/_data``, or in a
host directory you name yourself (a *bind mount*). Either way the kernel mechanism is one
bind mount: the same directory, made to appear at a second place, here inside the
container's root. ``-v NAME:/data`` and ``-v /home/me/src:/app`` differ only in who owns the
directory; ``-v /data`` alone makes an anonymous volume, a named one with a random name.

Choices, and why:

- The mounts are made in the child, in the container's mount namespace, after the overlay,
  /proc, /sys and /dev are mounted and before ``pivot_root``: the host's directories are
  still in reach there, and the mounts are private to the container (the propagation step
  made everything private) and vanish with it. Mounts under /dev therefore work, and, as
  with runc, your mounts come after the runtime's own.
- The target is resolved inside the container's root with ``openat2(RESOLVE_IN_ROOT)``, and
  missing directories are made one name at a time relative to their parent's fd; the mount
  goes onto ``/proc/self/fd/N`` of the result, as runc does. An image is untrusted: had it
  ``/data -> /etc``, a plain ``mkdir -p merged/data/x`` would follow the link to the host's
  /etc, since the child's root is still the host's.
- A named volume that is empty when a container mounts it is first filled with what the
  image has at that path (Docker does this; ``:nocopy`` turns it off). The copy is made in
  the child, after the overlay is mounted, from the *merged* tree: overlayfs has already
  stacked the layers there (whiteouts, opaque directories, the topmost version of each
  file), so the copy is of exactly what the container would see, without re-implementing
  overlayfs on the host over the store's layer directories.
- ``:ro`` is a read-only bind remount of the new mount and of every mount below it (a bind
  of a host directory brings that directory's submounts along, MS_REC), like Docker's
  recursive read-only bind mounts. The remount repeats the flags the kernel locked on the
  source mount (nosuid, nodev, noexec), or it fails with EPERM in a user namespace.
- As with ``docker run -v``, a missing bind-mount source directory is created on the host
  (``docker run --mount`` would refuse), and ``Mount.note`` says so.

Introduced in notebooks/09-node-app.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import kernel, paths, safepath
from .steps import CHILD, Step

#: Docker's rule for a local volume's name.
NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")  # used with fullmatch: "$" passes "x\n"
MODES = ("ro", "rw", "nocopy")
ANONYMOUS_LABEL = "com.docker.volume.anonymous"


class VolumeError(ValueError):
    """A volume or ``-v`` spec was refused; the message says why and what to do."""


@dataclass(frozen=True)
class Mount:
    """One ``-v``: a host directory or file (``bind``) or a volume, at ``destination``."""

    type: str  # "bind" or "volume"
    source: str  # the host path that is mounted: the bind source, or the volume's _data
    destination: str
    read_only: bool = False
    name: str = ""  # the volume's name ("" for a bind mount)
    anonymous: bool = False
    copy_image: bool = True  # fill an empty volume from the image (off with :nocopy)
    note: str = ""  # something done on the user's behalf, to tell them

    def to_record(self) -> dict[str, Any]:
        """The mount as ``docker inspect`` lists it under ``Mounts``."""
        return {"Type": self.type, "Name": self.name, "Source": self.source,
                "Destination": self.destination, "RW": not self.read_only,
                "Mode": "ro" if self.read_only else ""}


# ---- the volume store ------------------------------------------------------------------------

def volumes_dir() -> Path:
    """Where named volumes live: ``state_dir()/volumes``."""
    return paths.state_dir() / "volumes"


def check_name(name: str) -> str:
    """``name`` if it is a valid volume name; else VolumeError with Docker's sentence."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        name = str(name) if str(name).isprintable() else repr(str(name))[1:-1]
        raise VolumeError(
            f'"{name}" includes invalid characters for a local volume name, only '
            '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed (and at least two). If you meant a '
            "host directory, use an absolute path, such as $PWD/" + (name or "dir").lstrip("./"))
    return name


def _dir(name: str) -> Path:
    return volumes_dir() / check_name(name)


def create(name: str | None = None, *, anonymous: bool = False,
           labels: dict[str, str] | None = None) -> dict[str, Any]:
    """``docker volume create [--label K=V] [NAME]``: make the volume (a random name if
    none); its inspect.

    Creating a volume that exists returns it unchanged, labels and all, as Docker does.
    """
    if name is None:
        name, anonymous = secrets.token_hex(32), True
    d = _dir(name)
    if not (d / "_data").is_dir():
        paths.ensure(volumes_dir(), 0o700)
        tmp = volumes_dir() / f".{name}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "_data").mkdir(parents=True)
        meta = {"CreatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "Labels": {**(labels or {}), **({ANONYMOUS_LABEL: ""} if anonymous else {})}}
        (tmp / "volume.json").write_text(json.dumps(meta))
        try:
            os.rename(tmp, d)  # all or nothing; a concurrent create of the same name wins
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (d / "_data").is_dir():
                raise
    return inspect(name)


def inspect(name: str) -> dict[str, Any]:
    """``docker volume inspect NAME``: where it lives, when it was made, its labels."""
    d = _dir(name)
    if not (d / "_data").is_dir():
        raise VolumeError(f"no such volume: {name}. 'edu volume ls' lists the volumes; "
                          f"'edu volume create {name}' makes it")
    try:
        meta = json.loads((d / "volume.json").read_text())
    except (OSError, ValueError):
        meta = {}
    return {"CreatedAt": meta.get("CreatedAt", ""), "Driver": "local",
            "Labels": meta.get("Labels", {}), "Mountpoint": str(d / "_data"), "Name": name,
            "Options": {}, "Scope": "local"}


def ls() -> list[dict[str, Any]]:
    """``docker volume ls``: every volume, sorted by name."""
    base = volumes_dir()
    names = sorted(p.name for p in base.iterdir()
                   if (p / "_data").is_dir() and NAME_RE.fullmatch(p.name)) if base.is_dir() else []
    return [inspect(n) for n in names]


def users(name: str) -> list[str]:
    """Ids of the containers whose record mounts volume ``name`` (running or not), sorted."""
    base = paths.state_dir() / "containers"
    found = []
    for rec_path in sorted(base.glob("*/state.json")) if base.is_dir() else []:
        try:
            rec = json.loads(rec_path.read_text())
        except (OSError, ValueError):
            continue
        if any(m.get("Type") == "volume" and m.get("Name") == name
               for m in rec.get("mounts") or []):
            found.append(rec.get("id", rec_path.parent.name))
    return found


def rm(name: str) -> None:
    """``docker volume rm NAME``: delete the volume and its data, unless a container uses it."""
    inspect(name)  # a sentence if there is no such volume
    in_use = users(name)
    if in_use:
        raise VolumeError(f"cannot remove volume {name}: volume is in use by container "
                          f"{', '.join(i[:12] for i in in_use)}. Remove the container first "
                          "(edu rm), then the volume.")
    _delete(name)


def _delete(name: str) -> None:
    trash = volumes_dir() / f".{name}.{os.getpid()}.removing"
    os.rename(_dir(name), trash)  # gone from ls at once, even if deleting takes a while
    shutil.rmtree(trash)


def prune() -> list[str]:
    """``docker volume prune``: remove anonymous volumes no container uses; their names."""
    removed = []
    for vol in ls():
        if ANONYMOUS_LABEL in vol["Labels"] and not users(vol["Name"]):
            rm(vol["Name"])
            removed.append(vol["Name"])
    return removed


# ---- -v specs ------------------------------------------------------------------------------

def parse(spec: str) -> Mount:
    """Read one ``-v`` spec (``[SOURCE:]DESTINATION[:MODE]``) without touching anything."""
    parts = spec.split(":")
    if len(parts) > 3 or any(not p for p in parts):
        raise VolumeError(f"invalid volume specification {spec!r}: use HOST_DIR:/path, "
                          "NAME:/path or /path, optionally followed by :ro")
    if len(parts) == 1:
        source, dest, mode = "", parts[0], ""
    else:
        source, dest = parts[0], parts[1]
        mode = parts[2] if len(parts) == 3 else ""
    if not dest.startswith("/"):
        raise VolumeError(f"invalid volume specification {spec!r}: the container path "
                          f"{dest!r} must be absolute, such as /data")
    dest = os.path.normpath(dest)
    if dest.startswith("//"):
        dest = dest[1:]
    if dest == "/":
        raise VolumeError(f"invalid volume specification {spec!r}: the container path "
                          "cannot be '/': mount on a directory such as /data")
    if dest == "/proc" or dest.startswith("/proc/"):
        raise VolumeError(f"invalid volume specification {spec!r}: nothing may be mounted "
                          "over /proc, where it could undo the paths the runtime hides")
    opts = [o for o in mode.split(",") if o]
    bad = [o for o in opts if o not in MODES]
    if bad:
        raise VolumeError(f"invalid mode {bad[0]!r} in volume specification {spec!r}: "
                          f"use ro, rw or nocopy")
    if "ro" in opts and "rw" in opts:
        raise VolumeError(f"invalid volume specification {spec!r}: ro and rw together")
    ro, nocopy = "ro" in opts, "nocopy" in opts
    if source.startswith("/"):
        if nocopy:
            raise VolumeError(f"invalid volume specification {spec!r}: nocopy is for "
                              "volumes; a bind mount never copies")
        return Mount("bind", os.path.normpath(source), dest, ro)
    if not source:
        return Mount("volume", "", dest, ro, anonymous=True, copy_image=not nocopy)
    check_name(source)
    return Mount("volume", str(_dir(source) / "_data"), dest, ro, name=source,
                 copy_image=not nocopy)


def check(specs: list[str]) -> list[Mount]:
    """Parse every ``-v`` and refuse a mount point given twice; makes nothing (validation)."""
    mounts = [parse(s) for s in specs]
    seen: set[str] = set()
    for m in mounts:
        if m.destination in seen:
            raise VolumeError(f"duplicate mount point: {m.destination} is given twice")
        seen.add(m.destination)
    return mounts


def resolve(specs: list[str], container_id: str = "") -> list[Mount]:
    """``check``, then make what is missing: volumes, named or anonymous, and, as
    ``docker run -v`` does, a bind source directory that does not exist (noted).

    A container started again (a restart policy) keeps its anonymous volumes: they are
    found in its record by ``container_id``.
    """
    earlier = _anonymous_in_record(container_id)
    out = []
    for m in check(specs):
        if m.type == "volume":
            name = m.name or earlier.get(m.destination)
            vol = create(name) if name else create(anonymous=True)
            out.append(Mount("volume", vol["Mountpoint"], m.destination, m.read_only,
                             vol["Name"], m.anonymous, m.copy_image))
        elif not os.path.lexists(m.source):
            try:
                os.makedirs(m.source)
            except OSError as exc:
                raise VolumeError(f"the bind-mount source {m.source} does not exist and could "
                                  f"not be created: {exc.strerror}") from None
            out.append(Mount("bind", m.source, m.destination, m.read_only,
                             note=f"created the missing bind-mount source directory "
                                  f"{m.source} (docker run -v does the same)"))
        else:
            out.append(m)
    return out


def _anonymous_in_record(container_id: str) -> dict[str, str]:
    """Destination -> name of the anonymous volumes a container's record lists."""
    if not container_id:
        return {}
    try:
        rec = json.loads((paths.state_dir() / "containers" / container_id / "state.json")
                         .read_text())
    except (OSError, ValueError):
        return {}
    found = {}
    for m in rec.get("mounts") or []:
        name = m.get("Name") or ""
        if m.get("Type") == "volume" and NAME_RE.fullmatch(name) and \
                ANONYMOUS_LABEL in _labels(name):
            found[m.get("Destination", "")] = name
    return found


def _labels(name: str) -> dict[str, str]:
    try:
        return inspect(name)["Labels"]
    except VolumeError:
        return {}


def remove_anonymous(mounts: list[Mount], container_id: str = "") -> None:
    """Delete the anonymous volumes of a container being removed (``docker run --rm``),
    unless another container uses them too."""
    for m in mounts:
        if m.anonymous and m.name and not set(users(m.name)) - {container_id}:
            try:
                _delete(m.name)
            except OSError:
                pass  # still listed by 'edu volume ls'; 'edu volume prune' removes it


def remove_anonymous_of(record: dict[str, Any]) -> list[str]:
    """``docker rm -v``: delete the anonymous volumes a removed container's record lists."""
    gone = []
    for m in record.get("mounts") or []:
        name = m.get("Name") or ""
        if m.get("Type") == "volume" and NAME_RE.fullmatch(name) and \
                ANONYMOUS_LABEL in _labels(name) and not set(users(name)) - {record.get("id")}:
            _delete(name)
            gone.append(name)
    return gone


# ---- the step ------------------------------------------------------------------------------

class Volumes(Step):
    """Bind-mount each volume and host path into the container's root, before pivot_root."""

    name = "volumes"
    side = CHILD
    lesson = "notebooks/09-node-app"
    explain = (
        "Files written in a container go to its own upper directory, which is deleted with "
        "it. A volume is a directory kept outside: a named one under the runtime's state "
        "directory, or a host directory you name. The child bind-mounts each one onto its "
        "path in the new root (made if missing, resolved inside the root so that no "
        "symlink in the image can point it at the host), and remounts :ro ones read-only. "
        "An empty named volume is first filled with what the image has at that path. Undo: "
        "the mounts die with the mount namespace; the volume's data stays, for the next "
        "container.")

    def enabled(self, ctx) -> bool:
        """Only for containers given -v."""
        return bool(getattr(ctx.config, "volumes", None))

    def apply(self, ctx) -> None:
        """For each mount, parents first: fill an empty volume, make the target, bind, ro."""
        root = os.open(ctx.paths.merged, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for m in sorted(ctx.config.volumes, key=lambda m: m.destination.count("/")):
                _mount_one(root, m)
        finally:
            os.close(root)

    def undo(self, ctx) -> None:
        """On the host: with --rm, the container's anonymous volumes go too (as in Docker)."""
        if ctx.config.remove:
            remove_anonymous(ctx.config.volumes, ctx.container_id)

    def observe(self, ctx) -> dict[str, Any]:
        """Each volume's mount point inside, its source, and whether it is mounted, ro."""
        if not ctx.pid:
            return {}
        points = {m["mount_point"]: m for m in kernel.mountinfo(ctx.pid)}
        merged = str(ctx.paths.merged)
        out = {}
        for m in sorted(ctx.config.volumes, key=lambda m: m.destination):
            seen = points.get(m.destination) or points.get(merged + m.destination)
            out[m.destination] = {
                "source": m.name or m.source, "type": m.type,
                "mounted": seen is not None,
                "ro": bool(seen) and "ro" in seen["mount_options"].split(",")}
        return {"volumes": out}


def _mount_one(root: int, m: Mount) -> None:
    is_dir = stat.S_ISDIR(os.stat(m.source).st_mode)
    if m.type == "volume" and m.copy_image and not os.listdir(m.source):
        _fill_from_image(root, m)
    try:
        target = safepath.ensure_in_root(root, m.destination, directory=is_dir)
    except safepath.CopyError as exc:  # the child reports OSErrors as sentences
        raise OSError(errno.ELOOP, str(exc)) from None
    except OSError as exc:
        raise OSError(exc.errno, f"cannot make the mount point {m.destination} in the "
                      f"container: {exc.strerror}") from None
    try:
        if stat.S_ISDIR(os.fstat(target).st_mode) != is_dir:
            what = "directory" if is_dir else "file"
            raise OSError(errno.ENOTDIR if is_dir else errno.EISDIR,
                          f"cannot mount the {what} {m.source} on {m.destination}: the image "
                          f"has a {'file' if is_dir else 'directory'} there")
        kernel.mount(m.source, f"/proc/self/fd/{target}", None, kernel.MS_BIND | kernel.MS_REC)
    finally:
        os.close(target)
    # nodev on every volume, read-only or not: root in a container keeps CAP_MKNOD, and a
    # node for a host disk made in a volume would otherwise open (the container's / and /dev
    # are nodev too: rootfs.py, mounts.py; Docker refuses such opens in its devices cgroup).
    mounted = safepath.open_in_root(root, m.destination)  # now the new mount's root
    try:
        _remount_recursive(os.readlink(f"/proc/self/fd/{mounted}"), m.read_only)
    finally:
        os.close(mounted)


def _fill_from_image(root: int, m: Mount) -> None:
    """Copy what the image has at ``m.destination`` into the empty volume (owners kept)."""
    try:
        src = safepath.open_in_root(root, m.destination)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        st = os.fstat(src)
        if not stat.S_ISDIR(st.st_mode):
            return
        dst = os.open(m.source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            safepath.copy_tree(src, dst, owners=True)
            try:
                os.fchown(dst, st.st_uid, st.st_gid)
            except PermissionError:
                pass  # rootless: the volume stays ours, which is root inside
            os.fchmod(dst, stat.S_IMODE(st.st_mode))
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _remount_recursive(top: str, read_only: bool) -> None:
    # The new mount and every mount below it (MS_REC brought the source's submounts along),
    # parents first: nodev, and read-only if asked. Each remount repeats the flags locked on
    # that mount (nosuid, noexec, ro: see kernel.remount_readonly), or it fails in a user
    # namespace.
    below = [m["mount_point"] for m in kernel.mountinfo()
             if m["mount_point"] == top or m["mount_point"].startswith(top + "/")]
    for point in dict.fromkeys(below):
        st = os.statvfs(point)
        flags = kernel.MS_REMOUNT | kernel.MS_BIND | kernel.MS_NODEV
        for bit, flag in ((os.ST_NOSUID, kernel.MS_NOSUID), (os.ST_NOEXEC, kernel.MS_NOEXEC),
                          (os.ST_RDONLY, kernel.MS_RDONLY)):
            if st.f_flag & bit:
                flags |= flag
        kernel.mount("none", point, None, flags | (kernel.MS_RDONLY if read_only else 0))
