"""Overlay mounts: how an image's read-only layers and a container's writable layer become one
root filesystem.

Introduced in notebooks/00-start-here (doctor mounts one to see that it works); the layers
themselves are taught in the images lesson.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def mount_options(lower: Sequence[Path], upper: Path, work: Path, rootless: bool) -> str:
    """The ``-o`` string for an overlay of ``lower`` (top layer first) under ``upper``.

    ``metacopy=off``: a chmod must copy the whole file up, so a container's upper dir holds
    complete files (what ``edu commit`` turns into a layer). Renamed directories must not be
    stored as redirects for the same reason, but the option differs: as root it is
    ``redirect_dir=off``; rootless (``userxattr``, overlay xattrs in the ``user.`` namespace)
    the kernel refuses ``off`` ("conflicting options: userxattr,redirect_dir=follow", since
    ``off`` still *follows* redirects) and needs ``redirect_dir=nofollow``.
    """
    opts = [f"lowerdir={':'.join(str(p) for p in lower)}", f"upperdir={upper}",
            f"workdir={work}", "metacopy=off"]
    opts += ["redirect_dir=nofollow", "userxattr"] if rootless else ["redirect_dir=off"]
    return ",".join(opts)
