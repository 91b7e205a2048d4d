"""Docker beside edu, in a lesson: the same image in Docker's store, under a name of the lesson's.

Lessons run the ``docker`` command beside ``edu`` where a Docker daemon answers. Docker runs
images from its own store, and a classroom is often offline, so the lesson hands Docker the
very image edu has (``edu save IMAGE | docker load``: the same archive format, the same
image ID, since both name an image by the digest of its config).

``borrowed(ref, tag)`` does that for the length of a ``with`` block, under the lesson's own
tag (``l03-busybox:edu``), never under a name another lesson or the student may be using:
the archive is saved by image ID (so it carries no name), loaded unless Docker has that ID
already, tagged, and the tag removed at the end. Docker deletes the image with its last tag,
so what Docker had before is what it has after.

Introduced in notebooks/03-installing.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .course import docker_answers


class DockerError(RuntimeError):
    """A docker command failed; the message has its own words and the command."""


def docker(*args: str, timeout: float = 300, check: bool = True,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``docker ARGS...`` (with ``env`` added to the environment, e.g. DOCKER_BUILDKIT=0
    for the classic builder), its text output captured; DockerError (with Docker's own
    message) when it fails and ``check``."""
    try:
        done = subprocess.run(["docker", *args], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **(env or {})})
    except FileNotFoundError:
        raise DockerError("the docker command is not installed here "
                          "(apt-get install docker.io)") from None
    if check and done.returncode != 0:
        raise DockerError(f"docker {' '.join(args)} failed ({done.returncode}): "
                          f"{(done.stderr or done.stdout).strip()}")
    return done


def has_image(ref: str) -> bool:
    """Docker's store has ``ref`` (a name or an image ID)."""
    return docker("image", "inspect", ref, check=False).returncode == 0


@contextlib.contextmanager
def borrowed(ref: str, tag: str, store=None) -> Iterator[str]:
    """Docker has edu's image ``ref`` as ``tag`` inside the block; afterwards the tag is
    removed (and the image, unless Docker had it before under another name)."""
    if not docker_answers():
        raise DockerError("no Docker daemon answers on /var/run/docker.sock: start it "
                          "(as root: scripts/services.sh start), or let the cell replay")
    from ..images import archive
    from ..images.store import Store

    store = store or Store()
    image = store.get(ref)
    if not has_image(image.id):
        with tempfile.TemporaryDirectory(prefix="edu-docker-") as tmp:
            tar = archive.save(store, [image.id], Path(tmp) / "image.tar")
            docker("load", "-q", "-i", str(tar))
    docker("tag", image.id, tag)
    try:
        yield tag
    finally:
        docker("rmi", tag, check=False)
