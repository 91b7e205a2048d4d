"""Four ``edu`` processes at once on one store (issue 16): build, pull, run, prune and rmi.

tests/test_store_concurrency.py checks the store's leases and pins, and runs a minute of
builds and GC on a private store with no network. This file is the class's machine: the
default store and the default bridge, shared with whatever else runs, and the real CLI in
four loops at once for a few seconds each:

- a builder builds a labelled image under two tags in turn (each build untags the one
  before, so it leaves dangling images), runs what it built, and removes the other tag;
- a puller pulls a small image from the test registry (127.0.0.1:5000), runs it, removes it;
- a runner starts detached containers on the bridge, ``--rm`` ones and ones that exit and
  stay, and removes some of the detached ones;
- a pruner runs ``edu container prune`` and ``edu image prune`` over and over.

Everything made here carries the label ``cc.test=<this run>`` and the prunes filter on it:
other work on this host keeps its stopped containers and dangling images.

Afterwards: no command failed; the store verifies (every blob hashes to its name, every
image's manifest, config, layer blobs and unpacked layers are there, no temp file of ours is
left); each detached container that is still running has exactly one lease, with the address
its record has, no address is leased twice, and nothing of ours that is not running holds
one; no container is lost or doubled (every run that said it succeeded is there once, or was
removed by us or a prune that named it; ``edu ps -a`` shows each name once). Then the host is
as it was (tests/hoststate.py).
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import hoststate
import pytest
from conftest import need

from edu_runtime import kernel, paths
from edu_runtime.images.store import Store
from edu_runtime.networks import registry

#: How long each of the four loops goes on starting commands (each does its own twice).
SECONDS = 8
REGISTRY = "127.0.0.1:5000"


class Ops:
    """Runs edu commands from several threads; keeps each failure and every pid."""

    def __init__(self, python: str, tag: str):
        self.python, self.tag = python, tag
        self.deadline = time.monotonic() + SECONDS
        self.failed: list[str] = []
        self.done: collections.Counter[str] = collections.Counter()
        self.pids: set[int] = set()
        self.lock = threading.Lock()

    def more(self, rounds: int) -> bool:
        """Another round: until the deadline, and past it until this loop has done two
        ``rounds`` (a slow machine gets its rounds, not a failure), within 5 more minutes."""
        now = time.monotonic()
        return now < self.deadline or (rounds < 2 and now < self.deadline + 300)

    def __call__(self, *argv: str, ok: bool = True) -> str | None:
        """``edu ARGV``: its stdout, or None if it failed (noted unless ``ok`` is False)."""
        proc = subprocess.Popen([self.python, "-m", "edu_cli.main", *argv], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            err += "\n(hung for 120 s)"
        good = proc.returncode == 0 and "Traceback" not in err
        with self.lock:
            self.pids.add(proc.pid)
            self.done[argv[0] if argv[0] not in ("image", "container") else " ".join(argv[:2])] \
                += 1
            if not good and ok:
                self.failed.append(f"edu {' '.join(argv)}: exit {proc.returncode}\n{err[-1500:]}")
        return out if good else None

    def check(self, what: str, got: str | None, want: str) -> None:
        if got is not None and got != want:
            with self.lock:
                self.failed.append(f"{what} printed {got!r}, not {want!r}")


# ---- the four loops ---------------------------------------------------------------------------

def _builder(ops: Ops, ctx: Path, made: dict) -> None:
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM busybox\n"
        f"LABEL cc.test={ops.tag}\n"
        "ARG N=0\n"
        "COPY data.txt /data.txt\n"
        "RUN cat /data.txt > /made && echo $N >> /made\n"
        'CMD ["cat", "/made"]\n')
    i = 0
    while ops.more(i):
        tag, other = (f"{ops.tag}-b:{'ab'[i % 2]}", f"{ops.tag}-b:{'ba'[i % 2]}")
        (ctx / "data.txt").write_text(f"b {i % 3}\n")
        if ops("build", "-q", "--network", "none", "--build-arg", f"N={i}", "-t", tag,
               str(ctx)) is not None:
            ops.check(f"run {tag}", ops("run", "--rm", "--network", "none", "-l",
                                        f"cc.test={ops.tag}", tag), f"b {i % 3}\n{i}\n")
            ops("rmi", other, ok=False)  # (absent the first time)
        i += 1
    made["builds"] = i


def _puller(ops: Ops, ref: str) -> None:
    i = 0
    while ops.more(i):
        if ops("pull", "-q", ref) is not None:
            ops.check(f"run {ref}", ops("run", "--rm", "--network", "none", "-l",
                                        f"cc.test={ops.tag}", ref), "pulled\n")
            ops("rmi", ref)
        i += 1


def _runner(ops: Ops, made: dict) -> None:
    label = f"cc.test={ops.tag}"
    i = 0
    while ops.more(i):
        name = f"{ops.tag}-d{i}"
        out = ops("run", "-d", "--name", name, "-l", label, "busybox", "sleep", "300")
        if out is not None:
            made["detached"][name] = out.strip()
        ops.check("run --rm", ops("run", "--rm", "-l", label, "busybox", "echo", "hi"), "hi\n")
        name = f"{ops.tag}-x{i}"  # it exits and stays; its hostname is its short id
        out = ops("run", "--name", name, "-l", label, "busybox", "hostname")
        if out is not None:
            made["exited"][name] = out.strip()
        if i % 2:  # every other round, the oldest detached one goes
            oldest = next(n for n in made["detached"] if n not in made["removed"])
            if ops("rm", "-f", oldest) is not None:
                made["removed"].add(oldest)
        i += 1


def _pruner(ops: Ops, made: dict) -> None:
    i = 0
    while ops.more(i):
        out = ops("container", "prune", "-f", "--filter", f"label=cc.test={ops.tag}")
        if out is not None:
            made["pruned"] |= {line for line in out.split() if len(line) == 64}
        ops("image", "prune", "-f", "--filter", f"label=cc.test={ops.tag}")
        i += 1


# ---- what must hold afterwards ----------------------------------------------------------------

def verify_store(store: Store, pids: set[int]) -> list[str]:
    """What is wrong with the store: ``Store.verify`` (every tag names an image, every image
    whole, every blob hashes to its name), and temp files of ``pids`` (edu processes of
    ours, all exited) left behind."""
    wrong = store.verify()
    temps = [*store.tmp.iterdir(), *store.blobs.glob(".*.tmp"), *store.layers.glob(".*.tmp"),
             *store.pins.glob(".*.tmp"), *store.root.glob(".*.tmp")]
    for t in temps:
        pid = t.name.split("-", 1)[0] if t.parent == store.tmp else t.name.split(".")[-3]
        if pid.isdigit() and int(pid) in pids:
            wrong.append(f"temp file {t} of edu process {pid} (it has exited)")
    return wrong


def _records(tag: str) -> dict[str, list[dict]]:
    """Our container records, by name."""
    out = collections.defaultdict(list)
    for path in (paths.state_dir() / "containers").glob("*/state.json"):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if (rec.get("name") or "").startswith(tag):
            out[rec["name"]].append(rec)
    return out


def _leases() -> list[tuple[str, str, str]]:
    """Every lease on every network: (network, container id, address)."""
    out = []
    for path in (paths.state_dir() / "networks").glob("*.json"):
        net = json.loads(path.read_text())
        out += [(net["name"], cid, ep["ip"]) for cid, ep in net["containers"].items()]
    return out


@pytest.fixture
def small_image(python, busybox, tmp_path):
    """A small labelled image in the test registry, and not in the store: (ref, tag)."""
    need(subprocess.run(["curl", "-sf", "-m", "3", f"http://{REGISTRY}/v2/"],
                        capture_output=True).returncode == 0, "the test registry is not up")
    tag = f"cc-{uuid.uuid4().hex[:8]}"
    ref = f"{REGISTRY}/cc-pull:{tag}"
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "Dockerfile").write_text(
        f"FROM busybox\nLABEL cc.test={tag}\nRUN echo pulled > /made\nCMD [\"cat\", \"/made\"]\n")

    def edu(*argv):
        out = subprocess.run([python, "-m", "edu_cli.main", *argv], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
    edu("build", "-q", "--network", "none", "-t", ref, str(tmp_path / "img"))
    edu("push", ref)
    edu("rmi", ref)
    yield ref, tag


def test_build_pull_run_prune_and_rmi_at_once(python, small_image, tmp_path):
    ref, tag = small_image
    before = hoststate.snapshot()
    ops = Ops(python, tag)
    made = {"detached": {}, "exited": {}, "removed": set(), "pruned": set()}
    workers = [threading.Thread(target=_builder, args=(ops, tmp_path / "ctx", made)),
               threading.Thread(target=_puller, args=(ops, ref)),
               threading.Thread(target=_runner, args=(ops, made)),
               threading.Thread(target=_pruner, args=(ops, made))]
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        print(f"{sum(ops.done.values())} commands {dict(ops.done)}", file=sys.stderr)
        assert ops.failed == [], f"{len(ops.failed)} commands failed:\n" + \
            "\n".join(ops.failed[:6])
        assert min(ops.done[k] for k in ("build", "pull", "run", "rmi", "container prune",
                                         "image prune")) >= 2, ops.done

        assert verify_store(Store(), ops.pids | {os.getpid()}) == []

        # Leases: ours are exactly the detached containers still running, at their addresses.
        records = _records(tag)
        running = {n: cid for n, cid in made["detached"].items() if n not in made["removed"]}
        leases = _leases()
        addresses = collections.Counter((net, ip) for net, _, ip in leases)
        assert [a for a, n in addresses.items() if n > 1] == [], "an address leased twice"
        ours = {cid: (net, ip) for net, cid, ip in leases
                if any(r["id"] == cid for recs in records.values() for r in recs)}
        assert set(ours) == set(running.values())
        for name, cid in running.items():
            (rec,) = records[name]  # exactly one record: not lost, not doubled
            assert rec["id"] == cid and rec["status"] == "running"
            assert ours[cid] == (rec["network"]["network"], rec["network"]["ip"])

        # Every container that said it was made is there once, or went as we asked.
        for name in made["removed"]:
            assert name not in records
        for name, short in made["exited"].items():
            recs = records.get(name, [])
            pruned = [cid for cid in made["pruned"] if cid.startswith(short)]
            assert len(recs) + len(pruned) == 1, f"{name}: {len(recs)} records, pruned " \
                f"{len(pruned)} times"
            assert all(r["status"] == "exited" and r["id"].startswith(short) for r in recs)
        assert set(records) <= set(made["detached"]) | set(made["exited"]), \
            "a container of ours nobody made (a --rm one left, or a half-made one)"
        names = subprocess.run([python, "-m", "edu_cli.main", "ps", "-a"], capture_output=True,
                               text=True, check=True).stdout.splitlines()[1:]
        names = [line.split()[-1] for line in names]
        assert [n for n, c in collections.Counter(names).items() if c > 1] == []
    finally:
        for w in workers:
            w.join()
        mine = {r["id"] for recs in _records(tag).values() for r in recs}
        cleanup = ops.__class__(python, tag)
        if mine:
            cleanup("rm", "-f", *sorted(mine), ok=False)
        for t in ("a", "b"):
            cleanup("rmi", f"{tag}-b:{t}", ok=False)
        cleanup("rmi", ref, ok=False)
        cleanup("image", "prune", "-f", "--filter", f"label=cc.test={tag}", ok=False)
    assert hoststate.wait_clean(before, mine=mine) == {}


def test_a_lease_taken_after_a_cleanups_snapshot_is_not_stale(root):
    """Every container command cleans up what killed runs left, and may read which
    containers are alive just before another container leases an address. That lease is
    not stale: in a class's 60 runs at once, starts failed with 'has no address on network
    bridge' until release_stale read the records again under the network lock."""
    cid = uuid.uuid4().hex + uuid.uuid4().hex
    where = paths.state_dir() / "containers" / cid
    snapshot = registry.alive_ids()  # a cleanup reads this before the container exists
    where.mkdir(parents=True)
    record = {"id": cid, "name": f"cc-{cid[:8]}", "status": "creating", "owner": os.getpid(),
              "boot_id": kernel.boot_id(), "pid": 0}
    (where / "state.json").write_text(json.dumps(record))
    try:
        ip = registry.lease("bridge", cid, record["name"])
        assert registry.release_stale(snapshot) == []
        assert registry.get("bridge")["containers"][cid]["ip"] == ip
        (where / "state.json").write_text(json.dumps({**record, "status": "exited"}))
        assert registry.release_stale(snapshot) == [cid]  # once it is gone, it goes
    finally:
        registry.release("bridge", cid)
        shutil.rmtree(where)


def test_refreshing_hosts_never_makes_a_removed_neighbours_directory_again(root):
    """A killed run's directory goes before its lease (the lease goes with the network's
    cleanup): a container starting in between rewrote its neighbours' hosts files, and made
    that directory again, which nothing removed (a kill-point test beside a class did it)."""
    starting, gone = (uuid.uuid4().hex * 2 for _ in range(2))
    try:
        for cid in (starting, gone):
            registry.lease("bridge", cid, f"cc-{cid[:8]}")
        registry.refresh_hosts("bridge", also=starting)
        assert f"cc-{gone[:8]}" in registry.container_dir(starting).joinpath("hosts").read_text()
        assert not registry.container_dir(gone).exists()
    finally:
        for cid in (starting, gone):
            registry.release("bridge", cid)
            shutil.rmtree(registry.container_dir(cid), ignore_errors=True)
