"""SIGKILL in the middle of a build, a pull and a VM boot (issue 16, "Faults: kill points").

Each test starts the real ``edu`` (``python -m edu_cli.main``) as a student would, SIGKILLs it
at a chosen point, runs one ordinary command, and then requires the host to be as it was
(``hoststate``: no container, cgroup, mount, process, staging dir or temp file of the killed
process left), the store to verify (``Store.verify``: every tag names an image, every image's
blobs and unpacked layers are there, the blobs hash to their names) and the same work to
succeed when done again.

The kill points are real seams, waited for, never slept for:

- a build's FROM, COPY, ADD, WORKDIR, a second stage's COPY --from, ENV and commit: the
  test holds the store's writer lock (the ``flock`` every store write takes) and lets the
  build take it one hold at a time; the kernel's
  lock table (/proc/locks) says when the build waits for it, its output and its staging dir
  say where it is (inside which step; the files copied or packed), and it is killed there.
  These builds use a store of their own (``private``): they run no container, and on the
  shared store others' commands would queue for the same lock;
- a RUN: the command writes a marker into its container's upper dir, then sleeps; the build
  (and with it the container, by PR_SET_PDEATHSIG) is killed once the marker is there;
- a pull: a registry (test_arc_hostile's ``Hostile``) sends half of a layer blob, then
  stalls; ``edu pull`` is killed once those bytes are in its staging file;
- a VM boot: a boot of a disk guest through ``libvirt_guest.boot`` (what ``edu compare``
  and lesson 01 call), killed once libvirt has defined and started it and its QEMU runs (no
  full boot: TCG is slow); the next ``edu compare`` removes what it left.

Introduced in notebooks/05-dockerfile and notebooks/04-images (issue 16's fault tests).
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import hoststate
import pytest
from conftest import REPO, need, store_with_busybox, wait_for

from edu_runtime.images import build as build_mod
from edu_runtime.images.store import Store

pytestmark = pytest.mark.usefixtures("root", "busybox")

EDU = [sys.executable, "-m", "edu_cli.main"]


def edu(*argv: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*EDU, *argv], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, **kw)


def test_verify_finds_a_damaged_blob_a_missing_layer_and_a_dangling_tag(tmp_path, busybox):
    shared, store = Store(), Store(tmp_path / "store")
    with store.transaction():
        for d in busybox.manifest["layers"]:
            store.put_blob_file(shared.blob_path(d["digest"]), d["digest"])
        img = store.add_image(shared.read_blob(busybox.config_digest),
                              [(d["digest"], d["mediaType"]) for d in busybox.manifest["layers"]],
                              ["busybox:latest"])
    assert store.verify() == []
    blob = store.blob_path(img.manifest["layers"][0]["digest"])
    blob.chmod(0o644)
    with open(blob, "r+b") as f:
        f.write(b"X")
    layer = store.layer_dir(img.diff_ids[0])
    layer.rename(layer.with_name("elsewhere"))
    index = json.loads(store.index_path.read_text())
    index["tags"]["docker.io/library/gone:1"] = "sha256:" + "0" * 64
    store.index_path.write_text(json.dumps(index))
    problems = store.verify()
    assert len(problems) == 3, problems
    assert problems[0].startswith("tag docker.io/library/gone:1 names sha256:000")
    assert f"layer {img.diff_ids[0]} is not unpacked" in problems[1]
    assert problems[2].startswith(f"blob {img.manifest['layers'][0]['digest']} is damaged")
    assert store.verify(blobs=False) == problems[:2]


# ---- the store's writer lock, handed to the build one hold at a time -------------------------

def lock_state(pid: int, lock: Path) -> str:
    """``waits`` if ``pid`` is blocked in flock(2) on ``lock`` (a ``->`` line of
    /proc/locks), ``holds`` if it has it, else empty."""
    ino = os.stat(lock).st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        at = fields.index("->") + 1 if "->" in fields else 1
        if fields[at + 3] == str(pid) and fields[at + 4].endswith(f":{ino}"):
            return "waits" if at > 1 else "holds"
    return ""


def waits_for_lock(pid: int, lock: Path) -> bool:
    return lock_state(pid, lock) == "waits"


def kill_at_lock(proc: subprocess.Popen, log: Path, lock, ready) -> str:
    """With the store's lock held (``lock``, an open file with LOCK_EX): whenever ``proc``
    waits for it, SIGKILL it if ``ready(output so far)``, else let it have the lock for one
    hold and take it back. The output up to the kill.

    flock(2) is not fair: a process that lets go and asks again at once may beat a waiter
    that was woken. So for the handoff both run on one CPU, and we as SCHED_FIFO: woken as
    the build lets go, we run before it can return from that call, and ask first. So we
    let go, wait (off the CPU) until it holds the lock, and ask."""
    path = Path(f"/proc/self/fd/{lock.fileno()}").resolve()
    cpus = os.sched_getaffinity(0)
    cpu = min(cpus)
    os.sched_setaffinity(proc.pid, {cpu})
    os.sched_setaffinity(0, {cpu})
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    try:
        while True:
            assert wait_for(lambda: waits_for_lock(proc.pid, path) or proc.poll() is not None,
                            60), "the build neither took the store's lock nor ended"
            out = log.read_text()
            assert proc.poll() is None, f"the build ended before the kill point:\n{out}"
            if ready(out):
                proc.kill()
                proc.wait()
                return out
            fcntl.flock(lock, fcntl.LOCK_UN)  # its turn: one hold
            state, end = "", time.monotonic() + 60
            while state != "holds" and proc.poll() is None:
                assert time.monotonic() < end, "the build never took the lock it waited for"
                time.sleep(0.0001)  # (off the CPU, so that it can run and take the lock)
                state = lock_state(proc.pid, path)
            fcntl.flock(lock, fcntl.LOCK_EX)  # ours again the moment it lets go
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        os.sched_setaffinity(0, cpus)


def in_step(out: str, n: int) -> bool:
    return f"Step {n}/" in out and f"Step {n + 1}/" not in out


def data_tar(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# Each kind of instruction: (Dockerfile, where the build is killed, in a state ``ready(out,
# staged)`` says: ``out`` is its output so far, ``staged(path)`` whether its staging dir
# holds ``path``). Every kill comes while the build waits for the store's lock.
CASES = {
    # FROM printed: it is looking its base up (Store.use), to hold it in its lease.
    "FROM": ("FROM busybox\nLABEL kb=from\n", lambda out, staged: in_step(out, 1)),
    # The file is copied into the step's upper dir and packed; the blob is being stored.
    "COPY": ("FROM busybox\nCOPY data.bin /kb/\nLABEL kb=copy\n",
             lambda out, staged: in_step(out, 2) and staged("upper/kb/data.bin")
             and staged("layer.tar.gz")),
    # The archive is unpacked into the upper dir and packed; the blob is being stored.
    "ADD": ("FROM busybox\nADD data.tar /kb/\nLABEL kb=add\n",
            lambda out, staged: in_step(out, 2) and staged("upper/kb/added/data.bin")
            and staged("layer.tar.gz")),
    # WORKDIR made its directory in the step's upper dir and packed it (a layer).
    "WORKDIR": ("FROM busybox\nWORKDIR /kb/work\nLABEL kb=workdir\n",
                lambda out, staged: in_step(out, 2) and staged("upper/kb/work")
                and staged("layer.tar.gz")),
    # A second stage copies from the first (multi-stage): its layer's blob is being stored.
    "COPY --from": ("FROM busybox AS src\nCOPY data.bin /src/\nFROM busybox\n"
                    "COPY --from=src /src/data.bin /kb/\nLABEL kb=copy-from\n",
                    lambda out, staged: in_step(out, 4) and staged("upper/kb/data.bin")
                    and staged("layer.tar.gz")),
    # ENV made its config; it is being kept in the build cache.
    "ENV": ("FROM busybox\nENV KB=env\nLABEL kb=env\n", lambda out, staged: in_step(out, 2)),
    # The last step is done (its id printed): the image is being written and tagged.
    "commit": ("FROM busybox\nCOPY data.bin /kb/\nENV KB=commit\n",
               lambda out, staged: in_step(out, 3) and bool(re.search(
                   r" ---> [0-9a-f]{12}\n$", out)) and "Successfully built" not in out),
}


@pytest.fixture(scope="module")
def private(tmp_path_factory, busybox):
    """A state dir of its own with busybox in its store, for the builds killed at the store's
    lock: on the shared store, other engineers' commands queue for the same lock, and a
    build that is let through once could be let through twice. These builds make no
    container (no RUN), so no container or network cleanup ever runs on this state dir."""
    state = tmp_path_factory.mktemp("kb-state")
    store_with_busybox(state, busybox)
    return state


def leftovers(store: Store) -> list[str]:
    """Staging dirs, leases and temp files in a store (what a killed writer could leave)."""
    return sorted(str(p.relative_to(store.root)) for p in [
        *store.tmp.iterdir(), *store.root.glob(".*.tmp"), *store.blobs.glob(".*.tmp"),
        *store.layers.glob(".*.tmp"), *store.pins.glob("lease-*")])


@pytest.mark.parametrize("kind", list(CASES))
def test_a_build_killed_during_an_instruction_leaves_nothing(private, tmp_path, kind):
    dockerfile, ready = CASES[kind]
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "data.bin").write_bytes(os.urandom(1 << 20))
    (ctx / "data.tar").write_bytes(data_tar("added/data.bin", os.urandom(1 << 16)))
    store = Store(private / "store")
    env = dict(os.environ, EDU_STATE_DIR=str(private))
    label = kind.lower().replace(" --", "-")
    tag = f"kb-{label}:1"
    before = hoststate.snapshot()
    log = tmp_path / "build.log"
    argv = [*EDU, "build", "--no-cache", "--network", "none", "-t", tag, str(ctx)]
    with open(store.root / "lock", "a") as lock, open(log, "w") as out:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        try:
            staged = lambda rel: any(store.tmp.glob(f"{proc.pid}-*/{rel}"))  # noqa: E731
            said = kill_at_lock(proc, log, lock, lambda text: ready(text, staged))
        finally:
            proc.kill()
            proc.wait()
            fcntl.flock(lock, fcntl.LOCK_UN)
    assert proc.returncode == -signal.SIGKILL, said
    assert any(store.pins.glob(f"lease-{proc.pid}-*")), "killed mid-build, holding a lease"
    assert bool(any(store.tmp.glob(f"{proc.pid}-*"))) == (
        kind in ("COPY", "ADD", "WORKDIR", "COPY --from")), said

    images = edu("images", env=env)  # one ordinary command
    assert images.returncode == 0 and tag.split(":")[0] not in images.stdout, images.stderr
    assert leftovers(store) == []
    assert store.verify() == []
    assert hoststate.wait_clean(before) == {}
    again = edu("build", "--no-cache", "--network", "none", "-t", tag, str(ctx), env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert store.verify() == []
    config = store.get(tag).config["config"]
    assert config["Labels"].get("kb") == label or f"KB={label}" in config["Env"]


@pytest.fixture
def kb_build(tmp_path):
    """A context dir and a fresh tag in the shared store; afterwards the tag and the build
    cache entries the test's builds wrote are removed again."""
    store = Store()
    cache = store.root / "build-cache"
    before = {p.name for p in cache.glob("*.json")} if cache.is_dir() else set()
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    tag = f"kb-build-{secrets.token_hex(4)}:1"
    yield ctx, tag
    edu("rmi", tag)
    new = [p.stem for p in cache.glob("*.json") if p.name not in before]
    build_mod.forget(store, new)


def verify_new(store: Store, blobs_before: set[str]) -> None:
    """The shared store verifies; the blobs new since ``blobs_before`` are hashed (the rest
    were there before the test: the pull test hashes them all)."""
    new = {f"sha256:{p.name}" for p in store.blobs.iterdir()} - blobs_before
    assert store.verify(blobs=new) == []


def test_a_build_killed_while_its_run_command_runs_takes_the_container_along(kb_build,
                                                                            tmp_path):
    ctx, tag = kb_build
    marker = f"kb-run-{secrets.token_hex(4)}"
    (ctx / "Dockerfile").write_text(f"FROM busybox\nARG BLOCK=0\n"
                                    f"RUN touch /{marker} && sleep $BLOCK\n")
    store = Store()
    blobs = {f"sha256:{p.name}" for p in store.blobs.iterdir()}
    containers = store.root.parent / "containers"
    before = hoststate.snapshot()
    proc = subprocess.Popen([*EDU, "build", "--no-cache", "--network", "none", "--build-arg",
                             "BLOCK=600", "-t", tag, str(ctx)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        assert wait_for(lambda: any(containers.glob(f"*/upper/{marker}")), 60)
        cid = next(containers.glob(f"*/upper/{marker}")).parent.parent.name
        sleeper = [p for p in hoststate.snapshot()["processes"] if cid in p]
        assert sleeper, "the RUN command runs in the build's container's cgroup"
    finally:
        proc.kill()
        proc.wait()

    ps = edu("ps", "-a")  # one ordinary command: it cleans up after killed edu processes
    assert ps.returncode == 0 and cid[:12] not in ps.stdout, ps.stdout + ps.stderr
    assert hoststate.wait_clean(before) == {}
    assert not (containers / cid).exists()
    verify_new(store, blobs)
    again = edu("build", "--no-cache", "--network", "none", "-t", tag, str(ctx))
    assert again.returncode == 0, again.stdout + again.stderr
    assert hoststate.wait_clean(before) == {}


# ---- a VM boot ---------------------------------------------------------------------------------

BOOT = """
import sys
from pathlib import Path
from types import SimpleNamespace
from vm_compare import libvirt_guest
kernel, initrd, disk, name = sys.argv[1:]
guest = SimpleNamespace(kernel=Path(kernel), initrd=Path(initrd), disk=Path(disk),
                        cmdline="console=ttyS0", marker="NEVER-PRINTED")
with libvirt_guest.boot(guest, accel="tcg", name=name, timeout=600):
    pass
"""


def qemus_of(name: str) -> list[str]:
    """QEMU processes running domain ``name``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if f"guest={name},".encode() in (proc / "cmdline").read_bytes():
                found.append(proc.name)
        except OSError:
            pass
    return found


def test_a_vm_boot_killed_leaves_no_domain_disk_qemu_or_workdir_after_the_next_compare(kernel,
                                                                             tmp_path):
    from edu_runtime import paths
    from vm_compare import initramfs, libvirt_guest, probe_guest, probes

    facts = probes.libvirt_facts()
    need(facts["module"] and not facts["error"], f"libvirt unusable: {facts.get('error')}")
    where = paths.ensure(paths.cache_dir() / "guest")
    initrd = initramfs.write_newc_gz(probe_guest.probe_entries(probe_guest._read_busybox()),
                                     where / f"kb-guest-{os.getpid()}.img")
    disk = where / f"kb-disk-{os.getpid()}.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    os.chmod(disk, 0o644)
    name = f"{libvirt_guest.PREFIX}kb{secrets.token_hex(4)}"
    before = hoststate.snapshot()
    try:
        proc = subprocess.Popen([sys.executable, "-c", BOOT, str(kernel.vmlinuz), str(initrd),
                                 str(disk), name], cwd=REPO)
        try:  # killed early: libvirt has defined and started it, its QEMU runs
            assert wait_for(lambda: qemus_of(name) or proc.poll() is not None, 60)
            assert proc.poll() is None and libvirt_guest.libvirt_qemu_pid(facts["uri"], name)
            assert (libvirt_guest.boots_dir() / name / "disk.qcow2").exists()
        finally:
            proc.kill()
            proc.wait()
        assert f"domain {name}" in hoststate.snapshot()["libvirt"]
        # As a comparison killed later would leave it: its work dir, named by its pid.
        work = Path.home() / f"edu-compare-{proc.pid}-kb{secrets.token_hex(3)}"
        (work / "bundle" / "rootfs").mkdir(parents=True)

        # The next edu compare (here one refused at once: no such image) removes the guests
        # of callers that died before anything else.
        out = edu("compare", "--image", f"kb-missing-{secrets.token_hex(4)}", "--out",
                  str(tmp_path / "out"))
        assert out.returncode == 125 and "Traceback" not in out.stderr, out.stderr
        assert out.stderr.strip().splitlines()[-1].startswith("edu: the comparison stopped: no "
                                                              "guest can be made of kb-missing")
        assert hoststate.wait_clean(before) == {}
        assert qemus_of(name) == [] and not (libvirt_guest.boots_dir() / name).exists()
        assert not work.exists()
    finally:
        initrd.unlink()
        disk.unlink()


# ---- a pull ------------------------------------------------------------------------------------

@pytest.fixture
def hostile():
    from test_arc_hostile import Hostile

    server = Hostile()
    yield server
    server.stop()


def test_a_pull_killed_mid_blob_leaves_no_temp_file_and_the_next_pull_completes(hostile,
                                                                                tmp_path):
    from test_arc_hostile import LAYER, sha
    from test_layers import entry, make_tar

    # Half of it is more than the client's read size (1 MiB): some of it reaches the disk.
    big = make_tar(entry("srv/kb.bin", data=os.urandom(3 << 20)))
    env = dict(os.environ, EDU_CONFIG=str(tmp_path / "edu-config"))  # no stored logins
    repo = f"kb/pull{secrets.token_hex(3)}"
    ref = f"{hostile.host}/{repo}:v1"
    doc = hostile.image(repo, "v1", [LAYER, big], mode="stall")  # half of layer 2, then
    stalled = doc["layers"][1]                                        # nothing
    store = Store()
    before = hoststate.snapshot()
    proc = subprocess.Popen([*EDU, "pull", ref], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=REPO, env=env)
    try:
        part = lambda: [p for p in store.tmp.glob(f"{proc.pid}-*/{stalled['digest'][7:]}")  # noqa: E731
                        if p.stat().st_size > 0]
        assert wait_for(lambda: part() or proc.poll() is not None, 60)
        assert proc.poll() is None and 0 < part()[0].stat().st_size < stalled["size"]
    finally:
        proc.kill()
        proc.wait()
    assert any(store.tmp.glob(f"{proc.pid}-*")) and any(store.pins.glob(f"lease-{proc.pid}-*"))

    images = edu("images", env=env)  # one ordinary command
    assert images.returncode == 0 and repo not in images.stdout, images.stderr
    assert hoststate.wait_clean(before) == {}
    assert not any(store.tmp.glob(f"{proc.pid}-*")) and \
        not any(store.pins.glob(f"lease-{proc.pid}-*"))
    verify = edu("image", "verify")  # every blob of the store hashed: the only full check
    assert verify.returncode == 0 and "is consistent" in verify.stdout, verify.stdout

    hostile.image(repo, "v1", [LAYER, big])  # the registry answers in full again
    try:
        again = edu("pull", ref, env=env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert Store().get(ref).diff_ids == [sha(LAYER), sha(big)]
        assert store.verify(blobs={d["digest"] for d in doc["layers"]}) == []
    finally:
        edu("rmi", ref)


def test_gc_drops_the_pin_of_a_container_that_is_gone_after_a_minute(tmp_path, busybox):
    """A SIGKILLed `edu run --rm` or build: the next command removes the container's dir
    (life.control.cleanup_stale) but not its pin, which kept its layers from every prune."""
    shared, store = Store(), Store(tmp_path / "state" / "store")
    (tmp_path / "state" / "containers" / ("b" * 64)).mkdir(parents=True)
    with store.transaction():
        for d in busybox.manifest["layers"]:
            store.put_blob_file(shared.blob_path(d["digest"]), d["digest"])
        img = store.add_image(shared.read_blob(busybox.config_digest),
                              [(d["digest"], d["mediaType"]) for d in busybox.manifest["layers"]])
    store.pin("a" * 64, img.diff_ids)  # its container dir is gone
    store.pin("b" * 64, img.diff_ids)  # its container is there
    store.pin("c" * 64, img.diff_ids)  # gone too, but pinned a moment ago: it may be starting
    old = os.stat(store.pins / f"{'a' * 64}.json").st_mtime - 120
    for owner in ("a", "b"):
        os.utime(store.pins / f"{owner * 64}.json", (old, old))
    store.prune()
    assert sorted(p.name[0] for p in store.pins.iterdir()) == ["b", "c"]
    assert store.layer_dir(img.diff_ids[0]).is_dir()
    store.unpin("b" * 64)
    store.unpin("c" * 64)
    store.prune()
    assert not store.layer_dir(img.diff_ids[0]).exists()


THREADED_BUILD = """
import sys, threading
from pathlib import Path
threading.Thread(target=threading.Event().wait, daemon=True).start()  # as a Jupyter kernel
from edu_runtime.images.build import Options, build
from edu_runtime.images.store import Store
build(Store(), Options(context=Path(sys.argv[1]), tags=[sys.argv[2]], no_cache=True,
                       network="none", build_args={"BLOCK": "600"}))
"""


def test_a_notebooks_build_killed_while_its_run_runs_takes_the_container_along(kb_build,
                                                                               python):
    """From a threaded process (a notebook's kernel) the supervisor makes the RUN's
    container; the kernel dies mid-RUN (a restart): the container goes too, as Docker's
    builder cancels a build whose client went away."""
    ctx, tag = kb_build
    marker = f"kb-run-{secrets.token_hex(4)}"
    (ctx / "Dockerfile").write_text(f"FROM busybox\nARG BLOCK=0\n"
                                    f"RUN touch /{marker} && sleep $BLOCK\n")
    store = Store()
    containers = store.root.parent / "containers"
    images = {i.id for i in store.images()}
    before = hoststate.snapshot()
    proc = subprocess.Popen([python, "-c", THREADED_BUILD, str(ctx), tag],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    try:
        assert wait_for(lambda: any(containers.glob(f"*/upper/{marker}")) or
                        proc.poll() is not None, 60)
        assert proc.poll() is None, proc.stderr.read().decode()
        cid = next(containers.glob(f"*/upper/{marker}")).parent.parent.name
        owner = json.loads((containers / cid / "state.json").read_text())["owner"]
        assert owner != proc.pid, "a helper (the supervisor) made it, not the kernel"
    finally:
        proc.kill()
        proc.wait()
    # The supervisor saw its waiter hang up: it kills the container and removes it.
    assert wait_for(lambda: not (containers / cid).exists(), 30)
    assert hoststate.wait_clean(before, mine={cid}) == {}
    # What it leaves is what Docker's classic builder leaves: the image of the steps done
    # (here lent to the helper for the RUN), untagged, for `edu image prune`.
    for image in {i.id for i in store.images()} - images:
        store.remove(image)


TIED_START = """
import os, signal, sys, threading
threading.Thread(target=threading.Event().wait, daemon=True).start()  # as a Jupyter kernel
from edu_runtime.container import Container
from edu_runtime.images.store import Store
c = Container(Store().get("busybox"), ["sleep", "600"], entrypoint=[], network="none",
              remove=False, fork_here=False)
c.tied = True
c.start()
print(c.id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # between the start's answer and any wait
"""


def test_a_kernel_killed_between_a_runs_start_and_its_wait_takes_the_container_along(python):
    """The tie is the start's own connection: a kernel that dies after the helper answered
    `started` and before it asked to wait (the race the test above once lost) still takes
    its build's RUN container along."""
    before = hoststate.snapshot()
    proc = subprocess.run([python, "-c", TIED_START], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    cid = proc.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid), proc.stdout + proc.stderr
    containers = Store().root.parent / "containers"
    assert wait_for(lambda: not (containers / cid).exists(), 30)
    assert hoststate.wait_clean(before, mine={cid}) == {}
