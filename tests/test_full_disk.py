"""A full disk under a pull, a build and a commit (issue 16, "Faults: full disk").

The store lives on a small tmpfs (16 MiB, mounted under the test's temp dir, unmounted at the
end), with busybox in it; a file fills the disk up to the last MiB before each operation. The
``edu`` subprocesses use it through EDU_STATE_DIR, and only with ``--network none``: no
bridge, no network clean-up, ever, on this second state dir.

Each refusal is one sentence (``edu: ...``, no traceback) that says the disk is full, where,
and how to free space, with Docker's exit code (1 for pull, build and commit); and it leaves
the store consistent (``Store.verify``, no staging dir, no lease), so that ``edu images`` and
a fresh ``edu run --rm --network none busybox true`` work at once, on the same full disk: the
failed operation gave back all it had written. The filler is removed afterwards.

Introduced in notebooks/04-images (issue 16's fault tests).
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import hoststate
import pytest
from conftest import REPO, store_with_busybox, wait_for

from edu_runtime.images.store import Store

pytestmark = pytest.mark.usefixtures("root")

MiB = 1 << 20


@pytest.fixture(scope="module")
def small(tmp_path_factory, busybox):
    """A 16 MiB tmpfs with a state dir on it, busybox in its store; unmounted afterwards."""
    mount = tmp_path_factory.mktemp("kb-small")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(mount)],
                   check=True)
    try:
        state = mount / "state"
        store_with_busybox(state, busybox)
        yield state
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def edu(state: Path, *argv: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edu_cli.main", *argv], capture_output=True,
                          text=True, timeout=120, cwd=REPO,
                          env=dict(os.environ, EDU_STATE_DIR=str(state), **env))


def clean(state: Path, before: dict) -> dict:
    """``hoststate.wait_clean``, once the small store's own supervisor (started by its ``edu
    run``) has been stopped as a teacher would, not left to idle out meanwhile."""
    subprocess.run([sys.executable, "-c", "from edu_runtime.life import client; "
                    "client.shutdown()"], cwd=REPO, timeout=60, check=True,
                   env=dict(os.environ, EDU_STATE_DIR=str(state)))
    return hoststate.wait_clean(before)


class Full:
    """The disk filled up to its last ``free`` bytes by one file, removed on exit."""

    def __init__(self, state: Path, free: int = MiB):
        self.filler = state.parent / f"filler-{secrets.token_hex(3)}"
        self.free = free

    def __enter__(self) -> Full:
        st = os.statvfs(self.filler.parent)
        size = st.f_bavail * st.f_frsize - self.free
        fd = os.open(self.filler, os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)
        return self

    def __exit__(self, *exc) -> None:
        self.filler.unlink()


def full_sentence(out: subprocess.CompletedProcess, code: int, what: str,
                  state: Path) -> str:
    """The refusal: exit ``code``, one line ``edu: WHAT failed: the disk is full ...``."""
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert out.returncode == code and len(lines) == 1, out.stdout + out.stderr
    line = lines[0]
    assert line.startswith(f"edu: {what} failed: the disk is full (no space left on "
                           f"{state.parent}, which holds {state / 'store'})"), line
    assert "'edu image prune'" in line and "'edu prune'" in line, line
    return line


def consistent(state: Path) -> None:
    """The store verifies, holds no staging dir, lease or temp file; edu images and a fresh
    container work on the disk as it is (still full but for what the failure gave back)."""
    store = Store(state / "store")
    assert store.verify() == []
    assert list(store.tmp.iterdir()) == [] and list(store.pins.glob("lease-*")) == []
    assert list(store.root.glob(".*.tmp")) == [] and list(store.blobs.glob(".*")) == []
    images = edu(state, "images")
    assert images.returncode == 0 and "busybox" in images.stdout, images.stderr
    run = edu(state, "run", "--rm", "--network", "none", "busybox", "true")
    assert run.returncode == 0, run.stderr


def test_a_pull_on_a_full_disk(small):
    from test_arc_hostile import Hostile
    from test_layers import entry, make_tar

    hostile = Hostile()
    try:
        ref = f"{hostile.host}/kb/full:v1"
        hostile.image("kb/full", "v1", [make_tar(entry("big.bin", data=os.urandom(3 * MiB)))])
        before = hoststate.snapshot()
        with Full(small):
            out = edu(small, "pull", ref, EDU_CONFIG=str(small.parent / "no-config"))
            full_sentence(out, 1, f"pulling {ref}", small)
            consistent(small)
        assert clean(small, before) == {}
    finally:
        hostile.stop()


def test_a_build_on_a_full_disk(small, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM busybox\nCOPY big.bin /\n")
    (tmp_path / "big.bin").write_bytes(os.urandom(3 * MiB))
    before = hoststate.snapshot()
    with Full(small):
        out = edu(small, "build", "--network", "none", "-t", "kb-full:1", str(tmp_path))
        full_sentence(out, 1, "the build", small)
        assert "Step 2/2 : COPY big.bin /" in out.stdout
        consistent(small)
        assert "kb-full" not in edu(small, "images").stdout
    assert clean(small, before) == {}


def test_a_commit_on_a_full_disk(small):
    containers = small / "containers"
    marker = f"kb-ready-{secrets.token_hex(3)}"
    before = hoststate.snapshot()
    run = subprocess.Popen(
        [sys.executable, "-m", "edu_cli.main", "run", "--rm", "--network", "none", "busybox",
         "sh", "-c", f"head -c {3 * MiB} /dev/urandom > /big && touch /{marker} && "
                     "exec sleep 600"],
        cwd=REPO, env=dict(os.environ, EDU_STATE_DIR=str(small)), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: any(containers.glob(f"*/upper/{marker}")), 60)
        cid = next(containers.glob(f"*/upper/{marker}")).parent.parent.name
        with Full(small):
            out = edu(small, "commit", cid, "kb-full:commit")
            name = re.search(r"committing container (\S+) failed", out.stderr)
            assert name, out.stderr
            full_sentence(out, 1, f"Error: committing container {name[1]}", small)
            consistent(small)
    finally:
        run.send_signal(signal.SIGTERM)  # as Ctrl-C: the container stops and goes (--rm)
        run.wait(60)
    assert not (containers / cid).exists()
    assert clean(small, before) == {}
