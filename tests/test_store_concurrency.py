"""Garbage collection against builds, runs and pulls in other processes (issue 11).

A build takes a *lease* (containerd's word): a pin owned by a live process, naming every blob
and layer it uses. GC respects live leases and drops those of dead processes. The unit tests
check that rule on a store in a temp dir; the stress test runs the real CLI in 4 processes on
one private store for a minute and requires that no command fails and no traceback appears.
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import need
from test_store import BASE, add_image, layer_tar

from edu_runtime.images.store import Store, StoreError

# ---- leases ---------------------------------------------------------------------------------

def test_a_live_lease_keeps_its_layers_through_prune(tmp_path):
    store = Store(tmp_path / "store")
    img = add_image(store, [BASE, layer_tar({"v": b"1"})], ["app:1"])
    with store.lease():
        assert store.use("app:1").id == img.id
        store.remove("app:1")  # untagged and deleted, as another process's rmi would
        store.prune()
        assert all(store.layer_dir(d).is_dir() for d in img.diff_ids)
        assert all(store.has_blob(d["digest"]) for d in img.manifest["layers"])
    assert list(store.pins.iterdir()) == []  # the lease ends with the block
    store.prune()
    assert list(store.layers.iterdir()) == [] and list(store.blobs.iterdir()) == []


def test_what_a_lease_adds_is_kept_from_the_moment_it_is_in_the_store(tmp_path):
    store = Store(tmp_path / "store")
    raw = layer_tar({"made": b"by a build"})
    with store.lease():
        blob = store.put_blob_bytes(gzip.compress(raw, mtime=0))
        store.prune()  # between the blob and its layer: the blob must survive
        diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
        store.ensure_layer(blob, diff_id)
        store.prune()
        assert store.layer_dir(diff_id).is_dir() and store.has_blob(blob)
    store.prune()
    assert not store.layer_dir(diff_id).exists() and not store.has_blob(blob)


def test_a_dead_process_lease_is_dropped_by_the_next_gc(tmp_path):
    store = Store(tmp_path / "store")
    img = add_image(store, [BASE], ["app:1"])
    pid = os.fork()
    if pid == 0:  # a builder SIGKILLed mid-build: its lease is never released
        with store.lease():
            store.use("app:1")
            os._exit(0)
    os.waitpid(pid, 0)
    assert len(list(store.pins.glob("*.json"))) == 1
    store.remove("app:1")
    store.prune()
    assert list(store.pins.iterdir()) == []
    assert not any(store.layer_dir(d).exists() for d in img.diff_ids)


def test_a_recycled_pid_does_not_keep_a_lease_alive(tmp_path):
    store = Store(tmp_path / "store")
    add_image(store, [BASE], ["app:1"])
    with store.lease():
        store.use("app:1")
        lease = next(store.pins.glob("*.json"))
        held = json.loads(lease.read_text())
        assert held["pid"] == os.getpid()
        # the same pid, but a process that started at another time: not this lease's owner
        lease.write_text(json.dumps({**held, "process": held["process"] + "0"}))
        store.remove("app:1")
        store.prune()
        assert not lease.exists() and list(store.layers.iterdir()) == []


def test_use_of_a_removed_image_is_a_sentence(tmp_path):
    store = Store(tmp_path / "store")
    with store.lease(), pytest.raises(StoreError, match="No such image"):
        store.use("gone:1")


def test_pin_refuses_layers_gc_has_deleted(tmp_path):
    store = Store(tmp_path / "store")
    img = add_image(store, [BASE], ["app:1"])
    store.remove("app:1")
    with pytest.raises(StoreError, match="no longer in the store"):
        store.pin("container-x", img.diff_ids)
    assert list(store.pins.iterdir()) == []


def _pin_loop(root: Path, diff_ids: list[str], n: int) -> None:
    store = Store(root)
    for i in range(n):
        store.pin(f"c{os.getpid()}-{i % 3}", diff_ids)
        store.unpin(f"c{os.getpid()}-{(i + 1) % 3}")
    os._exit(0)


def test_concurrent_pins_and_prunes(tmp_path):
    store = Store(tmp_path / "store")
    img = add_image(store, [BASE, layer_tar({"v": b"1"})], ["app:1"])
    children = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            _pin_loop(store.root, img.diff_ids, 200)
        children.append(pid)
    for _ in range(50):
        store.prune()  # must never trip over a pin file that comes or goes
    for pid in children:
        assert os.waitpid(pid, 0)[1] == 0
    assert all(store.layer_dir(d).is_dir() for d in img.diff_ids)  # tagged, so kept


def test_concurrent_writers_of_one_file_never_share_a_temp_name(tmp_path):
    from edu_runtime.images.store import write_atomic

    target = tmp_path / "f.json"
    errors = []

    def write(n):
        try:
            for i in range(300):
                write_atomic(target, f"{n} {i}".encode())
        except OSError as exc:
            errors.append(exc)
    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and [p.name for p in tmp_path.iterdir()] == ["f.json"]


# ---- the stress test: the CLI in 4 processes for a minute ---------------------------------

SECONDS = 60


@pytest.fixture
def private_store(tmp_path, root, python):
    """An environment whose edu has its own store, state and supervisor (nothing shared
    with the other tests but the kernel), with busybox bootstrapped into it."""
    env = dict(os.environ, EDU_STATE_DIR=str(tmp_path / "state"),
               EDU_RUN_DIR=str(tmp_path / "run"))
    out = subprocess.run([python, "-m", "edu_cli.main", "bootstrap", "busybox"], env=env,
                         capture_output=True, text=True, timeout=300)
    need(out.returncode == 0, f"edu bootstrap busybox failed: {out.stderr}")
    yield env
    ids = subprocess.run([python, "-m", "edu_cli.main", "ps", "-aq"], env=env,
                         capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run([python, "-m", "edu_cli.main", "rm", "-f", *ids], env=env,
                       capture_output=True)
    subprocess.run([python, "-c", "from edu_runtime.life import client; client.shutdown()"],
                   env=env, capture_output=True, timeout=60)
    subprocess.run([python, "-m", "edu_cli.main", "prune"], env=env, capture_output=True)
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(tmp_path) not in mounts, "a mount in the private store was left behind"
    shutil.rmtree(tmp_path, ignore_errors=True)


class Ops:
    """Runs edu commands and keeps every one that failed or printed a traceback."""

    def __init__(self, python: str, env: dict[str, str]):
        self.python, self.env = python, env
        self.deadline = time.monotonic() + SECONDS
        self.failed: list[str] = []
        self.done: collections.Counter[str] = collections.Counter()  # by command
        self.kinds: collections.Counter[str] = collections.Counter()  # failures by command
        self.lock = threading.Lock()

    def more(self) -> bool:
        return time.monotonic() < self.deadline

    def __call__(self, *argv: str) -> str | None:
        """Run ``edu ARGV``: its output, or None if it failed."""
        try:
            out = subprocess.run([self.python, "-m", "edu_cli.main", *argv], env=self.env,
                                 capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired as exc:
            out = subprocess.CompletedProcess(exc.cmd, -1, "", f"hung for {exc.timeout} s")
        ok = out.returncode == 0 and "Traceback" not in out.stderr
        kind = " ".join(a for a in argv[:2] if a in (argv[0], "-d", "prune"))
        with self.lock:
            self.done[kind] += 1
            if not ok:
                self.kinds[kind] += 1
                self.failed.append(f"edu {' '.join(argv)}: exit {out.returncode}\n"
                                   f"{out.stderr[-1500:]}")
        return out.stdout if ok else None


def _builder(ops: Ops, ctx: Path, name: str) -> None:
    """Builds with RUN, COPY and WORKDIR, and cache hits and misses; runs what it built
    (which must be intact), then removes the previous build."""
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM busybox\n"
        "ARG N=0\n"
        "COPY data.txt /data/\n"
        "RUN cat /data/data.txt > /made && echo $N >> /made\n"
        "WORKDIR /app\n"
        "COPY data.txt .\n"
        'CMD ["cat", "/made"]\n')
    i, last = 0, ""
    while ops.more():
        (ctx / "data.txt").write_text(f"{name} {i % 3}\n")
        extra = ["--no-cache"] if i % 4 == 3 else []
        tag = f"stress/{name}:{i}"
        if ops("build", "-q", "--network", "none", "--build-arg", f"N={i % 2}", *extra,
               "-t", tag, str(ctx)) is not None:
            made = ops("run", "--rm", "--network", "none", tag)
            if made is not None and made != f"{name} {i % 3}\n{i % 2}\n":
                ops.failed.append(f"{tag} printed {made!r}")
            if last:
                ops("rmi", last)
            last = tag
        i += 1


def _runner(ops: Ops) -> None:
    while ops.more():
        ops("run", "--rm", "--network", "none", "busybox", "true")
        cid = ops("run", "-d", "--network", "none", "busybox", "sleep", "30")
        ops("run", "--rm", "--network", "none", "busybox", "true")
        if cid:
            ops("rm", "-f", cid.strip())


def _collector(ops: Ops) -> None:
    i = 0
    while ops.more():
        ops("tag", "busybox", f"stress/tagged:{i}")
        ops("image", "prune", "-f")
        ops("rmi", f"stress/tagged:{i}")
        ops("image", "prune", "-f")
        i += 1


def test_builds_runs_and_gc_in_four_processes(private_store, python, tmp_path):
    ops = Ops(python, private_store)
    workers = [threading.Thread(target=_builder, args=(ops, tmp_path / "a", "a")),
               threading.Thread(target=_builder, args=(ops, tmp_path / "b", "b")),
               threading.Thread(target=_runner, args=(ops,)),
               threading.Thread(target=_collector, args=(ops,))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    count = sum(ops.done.values())
    print(f"{count} operations {dict(ops.done)}, {len(ops.failed)} failed {dict(ops.kinds)}",
          file=sys.stderr)
    assert ops.failed == [], f"{len(ops.failed)} of {count} operations failed:\n" + \
        "\n".join(ops.failed[:8])
    # Afterwards the store is whole: every image left can be read, and GC finds nothing of
    # a lease or a pin to keep.
    assert ops("image", "prune", "-f") is not None
    leftovers = list(Path(private_store["EDU_STATE_DIR"], "store", "pins").glob("*.json"))
    assert leftovers == [] or [p.name for p in leftovers] == ["build-cache.json"]
