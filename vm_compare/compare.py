"""`edu compare`: the primer's first lesson as measurements a student makes on their own machine.

"A VM carries a whole guest OS and kernel, so its images are big, it starts slowly, and it
costs more; a container shares the host's kernel." Here both sides run *the same image and
the same command*: an edu container, and a libvirt guest built from that image's files
(``guest_image``). Every figure names its events:

- **size**: the container's layers on disk (unpacked, and compressed as blobs) against the
  guest's kernel plus initramfs (or kernel plus qcow2 disk, allocated and virtual);
- **start-up to ready**: container, from the ``Container(...).start()`` call to the marker
  line its command prints; VM, from the libvirt create call to the marker line its init
  prints on the serial console, timed on the host as the bytes arrive. Beside them: runc and
  docker for containers, raw ``qemu-system`` with libvirt's own command line for the VM;
- **phases**: the container's kernel steps (its Trace) and the VM's boot phases (QEMU to the
  first console byte, the kernel to init by printk time, init to the marker);
- **memory**: one idle container and one idle guest running ``sleep``, both measured the same
  way: the PSS (proportional set size) of every host process that belongs to it (the
  container's cgroup; the guest's qemu process);
- **kernel**: ``uname -r`` and boot_id of the host, the container and the guest;
- **scale**: start time and memory as containers (1, 10, 50) and guests (1, 2, 4) are started
  one after another and kept running; it stops early, and says why, when free memory falls
  below 20% or one guest takes over 60 s to boot (``scale_stop``).

Runs alternate after a warm-up; medians, minimum and maximum are kept, with a description of
the machine (CPU, kernel, KVM or TCG) in JSON with a versioned schema (``SCHEMA``). Results of
the older schema are still read: ``upgrade`` gives them the shape of the current one, so a
notebook can redraw a run saved before.

Introduced in notebooks/01-containers-vs-vms.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCHEMA = "edu.compare/2"  # /2 added sizes.groups (debian beside busybox) and the scale's plan/stop
READABLE = ("edu.compare/1", SCHEMA)
MARK = "EDU-CONTAINER-READY"

#: Published points to draw beside ours (copied from the course's references; each with its
#: source), so a student sees where their machine stands.
REFERENCES = [
    {"metric": "startup_ms", "value": 6700, "label": "raw qemu, TCG, busybox initramfs: 6.7 s",
     "source": "measured on the course's 2-core Debian 12 machines (REFERENCES.md)"},
    {"metric": "startup_ms", "value": 7800, "label": "virsh create, same guest: 7.8 s",
     "source": "measured on the course's 2-core Debian 12 machines (REFERENCES.md)"},
    {"metric": "memory_mib", "value": 13, "label": "containerd-shim per container: ~13 MiB",
     "source": "Docker documentation and the course's measurements (REFERENCES.md)"},
]


#: The scale run: how many to have running at each step, and when to stop early.
SCALE_CONTAINERS = (1, 10, 50)
SCALE_GUESTS = (1, 2, 4)
QUICK_CONTAINERS = (1, 10)  # --quick: a few seconds of containers, and the one guest already
QUICK_GUESTS = (1,)  # booted for start-up (no extra TCG boot)
MIN_FREE = 0.20  # stop starting more below this fraction of MemAvailable/MemTotal
MAX_BOOT_S = 60.0  # stop after one instance took this long to be ready


class CompareError(RuntimeError):
    """The comparison cannot run here; the message says what is missing and how to fix it."""


#: ``note(container=ID)`` or ``note(guest=NAME)``, told before each one is made: a lesson's
#: ledger (``Lesson.made``), so its reset finds what a killed kernel left running.
Note = Callable[..., object]


def _median(xs: list[float]) -> dict[str, Any]:
    return {"median_s": statistics.median(xs), "min_s": min(xs), "max_s": max(xs),
            "runs_s": list(xs)}


def pss_kib(pid: int) -> int:
    """A process's PSS in KiB (from /proc/PID/smaps_rollup; 0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def host_facts() -> dict[str, str]:
    """The host's kernel release and boot id."""
    return {"uname": platform.release(),
            "boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip()}


def machine(accel: str) -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "accel": accel}


# ---- the container side ------------------------------------------------------------------------

def _read_until(fd: int, marker: str, timeout: float) -> float:
    """Read ``fd`` until a line starts with ``marker``; the monotonic time it arrived."""
    import select

    buf = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise CompareError(f"no {marker} within {timeout} s")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise CompareError(f"the output ended before {marker}")
        buf += chunk
        if any(line.startswith(marker.encode()) for line in buf.splitlines()):
            return time.monotonic()


def container_boot(image: str, keep: bool = False, store=None, note: Note | None = None):
    """Start a container that prints the marker then sleeps; (seconds to marker, container).
    Unless ``keep``, it is killed and removed before returning. ``note(container=ID)`` is
    told before it is made."""
    from edu_runtime.container import Container

    r, w = os.pipe()
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        t0 = time.monotonic()
        c = Container(image, ["sh", "-c", f"echo {MARK}; exec sleep 3600"], network="none",
                      remove=True, stdio=(devnull, w, w), store=store)
        if note is not None:
            note(container=c.id)
        c.start()
        os.close(w)
        w = -1
        seconds = _read_until(r, MARK, 60) - t0
    except BaseException:
        if w != -1:
            os.close(w)
        os.close(r)
        os.close(devnull)
        raise
    os.close(devnull)
    os.close(r)  # the marker is read; `exec sleep` prints nothing more
    if not keep:
        stop_container(c)
    return seconds, c


def stop_container(c) -> None:
    """Kill, wait for and remove a container from ``container_boot``."""
    import signal

    c.kill(signal.SIGKILL)
    c.wait()


def container_pss(c) -> int:
    """PSS (KiB) of every process in the container's cgroup."""
    return sum(pss_kib(pid) for pid in c.processes())


def _timed_marker(cmd: list[str], env=None) -> float:
    import tempfile

    t0 = time.monotonic()
    with tempfile.TemporaryFile() as err:  # what it says if it fails (a file: never full)
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env)
        try:
            return _read_until(p.stdout.fileno(), MARK, 120) - t0
        except CompareError as exc:
            p.wait(timeout=120)
            err.seek(0)
            said = " ".join(err.read().decode(errors="replace").split())[-300:]
            raise CompareError(f"{cmd[0]}: {exc}" + (f" ({said})" if said else "")) from None
        finally:
            p.wait(timeout=120)
            p.stdout.close()


def docker_peer(image: str, store) -> Any:
    """A contender: ``docker run --rm`` of the same image, to its marker (None: no docker)."""
    if not shutil.which("docker") or subprocess.run(
            ["docker", "version"], capture_output=True).returncode:
        return None
    import tempfile

    from edu_runtime.images import archive

    img = store.get(image)
    with tempfile.TemporaryDirectory() as tmp:
        archive.save(store, [img.short_id], Path(tmp) / "img.tar")
        subprocess.run(["docker", "load", "-i", str(Path(tmp) / "img.tar")], check=True,
                       capture_output=True)
    cmd = ["docker", "run", "--rm", "--network", "none", img.id, "sh", "-c", f"echo {MARK}"]
    return lambda: _timed_marker(cmd)


def _remove_stale_workdirs() -> list[str]:
    """Delete the work dirs (``~/edu-compare-PID-*``) of comparisons whose process is gone
    (SIGKILLed: their ``finally`` never ran). A dir without a pid in its name is an older
    edu's, left alone."""
    gone = []
    for work in Path.home().glob("edu-compare-*-*"):
        pid = work.name.split("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(work, ignore_errors=True)
            gone.append(str(work))
    return gone


def runc_peer(image: str, store, work: Path) -> Any:
    """A contender: ``runc run`` of an OCI bundle holding the image's files (None: no runc)."""
    if not shutil.which("runc"):
        return None
    img = store.get(image)
    bundle = work / "bundle"
    rootfs = bundle / "rootfs"
    for layer in reversed(store.lowerdirs(img)):  # bottom first; busybox has one layer
        shutil.copytree(layer, rootfs, symlinks=True, dirs_exist_ok=True)
    # As a plain user, runc needs a rootless spec (a user namespace mapping us to root, no
    # network namespace of its own) and a state dir of ours (its default is /run/runc).
    rootless = os.geteuid() != 0
    subprocess.run(["runc", "spec", *(["--rootless"] if rootless else [])], cwd=bundle,
                   check=True)
    state = ["--root", str(work / "runc-state")] if rootless else []
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["args"] = ["sh", "-c", f"echo {MARK}"]
    spec["process"]["terminal"] = False
    (bundle / "config.json").write_text(json.dumps(spec))
    n = [0]

    def run() -> float:
        n[0] += 1
        return _timed_marker(["runc", *state, "run", "--bundle", str(bundle),
                              f"edu-compare-{os.getpid()}-{n[0]}"])
    return run


# ---- the VM side -------------------------------------------------------------------------------

def startup_ratio(result: dict[str, Any]) -> float:
    """How many times longer the libvirt guest took to be ready than the edu container
    (their medians)."""
    rows = result["startup"]
    guest = next(name for name in rows if name.startswith("libvirt guest"))
    return rows[guest]["median_s"] / rows["edu container"]["median_s"]


def vm_boot_seconds(boot) -> float:
    """Seconds from the create call to the marker, as libvirt_guest/raw_qemu report it."""
    return boot.times["marker"]


def vm_phases(boot) -> list[dict[str, Any]]:
    """The VM's boot phases in ms: start to first console byte, kernel to init, init to
    marker (the last two from the guest's own clocks, placed after the first byte)."""
    t = boot.times
    first = t.get("first_byte", 0.0) * 1e3
    kernel_init = (t.get("kernel_to_init") or 0.0) * 1e3
    marker = t["marker"] * 1e3
    phases = [{"name": "qemu start to first console byte", "start_ms": 0.0, "ms": first}]
    if kernel_init:
        phases.append({"name": "kernel to init (printk)", "start_ms": first,
                       "ms": kernel_init})
    start = first + kernel_init
    phases.append({"name": "init to marker", "start_ms": start,
                   "ms": max(0.0, marker - start)})
    return phases


# ---- the whole comparison ----------------------------------------------------------------------

def run(*, quick: bool = False, runs: int = 5, image: str = "busybox",
        full_disk: bool = False, out: Path | None = None, progress=None,
        debian_sizes: bool = False, scale_containers: tuple[int, ...] = SCALE_CONTAINERS,
        scale_guests: tuple[int, ...] = SCALE_GUESTS, note: Note | None = None
        ) -> dict[str, Any]:
    """Measure everything; return the result (``SCHEMA``) and write it, with the figures,
    under ``out``. ``debian_sizes`` adds debian and its full-disk guest to the sizes (built
    once and cached; no boot). ``note`` is told of every container and libvirt guest before
    it is made (``Note``)."""
    import tempfile

    from edu_runtime.images import bootstrap
    from edu_runtime.images.store import Store

    from . import guest_image, libvirt_guest, plots, raw_qemu

    if quick:
        runs, image, full_disk = 3, "busybox", False
        scale_containers, scale_guests = QUICK_CONTAINERS, QUICK_GUESTS
    say = progress or (lambda text: None)
    libvirt_guest.cleanup_stale()  # guests a killed comparison left behind
    _remove_stale_workdirs()  # and its work dir (a runc bundle: the image's files)
    store = Store()
    cold: dict[str, float] = {}
    t = time.monotonic()
    if image in ("busybox", "debian", "python", "node"):
        bootstrap.bootstrap(store, image, progress=False)
    cold["image_s"] = time.monotonic() - t
    t = time.monotonic()
    guest = (guest_image.full_disk if full_disk else guest_image.minimal)(
        image, ["sleep", "3600"], store=store, progress=say)
    cold["guest_build_s"] = time.monotonic() - t
    cold["guest_build_was_cached"] = guest.build_seconds == 0
    accel = libvirt_guest.choose_accel()

    result: dict[str, Any] = {"schema": SCHEMA, "image": image, "guest": guest.kind,
                              "machine": machine(accel), "cold": cold,
                              "references": REFERENCES}
    work = Path(tempfile.mkdtemp(prefix=f"edu-compare-{os.getpid()}-", dir=str(Path.home())))
    try:
        seen: dict[str, Any] = {}  # what the last libvirt boot showed: memory, kernel, phases
        contenders: dict[str, tuple[str, Any]] = {
            "edu container": ("container", lambda: container_boot(image, store=store,
                                                                   note=note)[0]),
            f"libvirt guest ({accel})": ("vm", lambda: vm_boot_seconds_once(
                libvirt_guest, guest, accel, seen, note)),
            f"raw qemu ({accel})": ("vm", lambda: raw_qemu_seconds_once(raw_qemu, guest,
                                                                          accel)),
        }
        for name, maker in (("runc", lambda: runc_peer(image, store, work)),
                            ("docker run", lambda: docker_peer(image, store))):
            peer = maker()
            if peer is not None:
                contenders[name] = ("peer", peer)
        say(f"warm-up, then {runs} alternating runs of {len(contenders)} contenders")
        result["skipped"] = {}
        for name, (kind, fn) in list(contenders.items()):  # warm-up: caches, page cache
            if kind != "vm" or not quick:  # a guest's warm-up costs a whole TCG boot
                try:
                    fn()
                except CompareError as exc:
                    if kind != "peer":
                        raise
                    # runc and docker are extras beside ours: one that cannot run here is
                    # left out, and the result says why, rather than ending the comparison.
                    del contenders[name]
                    result["skipped"][name] = str(exc)
                    say(f"{name} left out: {exc}")
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for i in range(runs):
            for name, (_, fn) in contenders.items():
                times[name].append(fn())
                say(f"run {i + 1}/{runs}: {name} {times[name][-1] * 1e3:.0f} ms")
        result["startup"] = {name: {**_median(times[name]), "kind": contenders[name][0]}
                             for name in contenders}
        result["libvirt_overhead_ms"] = (
            result["startup"][f"libvirt guest ({accel})"]["median_s"]
            - result["startup"][f"raw qemu ({accel})"]["median_s"]) * 1e3

        say("memory and kernels: one idle container and one idle guest")
        seconds, c = container_boot(image, keep=True, store=store, note=note)
        try:
            container_kernel = _in_container(c)
            container_mem = container_pss(c)
            trace = c.trace
        finally:
            stop_container(c)
        guest_mem, guest_kernel, phases_vm = seen["pss_kib"], seen["kernel"], seen["phases"]
        result["memory"] = {"method": "PSS of every host process that belongs to it: the "
                                      "container's cgroup; the guest's qemu process",
                            "pss_kib": {"container (sleep)": container_mem,
                                        f"guest (sleep, {accel})": guest_mem}}
        result["kernel"] = {"host": host_facts(), "container": container_kernel,
                            "guest": guest_kernel}
        result["phases"] = {
            "container": [{"name": s.name, "start_ms": (s.start - trace.started) * 1e3,
                           "ms": s.ms} for s in trace.steps],
            "vm": phases_vm}
        result["sizes"] = sizes(store, image, guest)
        if debian_sizes and (image, guest.kind) != ("debian", "full-disk"):
            extra = _debian_group(store, say)
            if isinstance(extra, str):
                result["skipped"]["debian sizes"] = extra
            else:
                result["sizes"]["groups"].append(extra)
        one_guest = {"count": 1, "boot_s": result["startup"][f"libvirt guest ({accel})"][
            "median_s"], "pss_kib": guest_mem}
        result["scale"] = scale(image, guest, accel, scale_containers, scale_guests, store,
                                say, one_guest=one_guest if scale_guests == (1,) else None,
                                note=note)
        result["scale"]["quick"] = quick
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.json").write_text(json.dumps(result, indent=1))
        result["figures"] = [str(p) for p in plots.all_figures(result, out)]
        (out / "compare.json").write_text(json.dumps(result, indent=1))
    return result


def vm_boot_seconds_once(libvirt_guest, guest, accel: str, seen: dict[str, Any],
                         note: Note | None = None) -> float:
    """One libvirt boot of ``guest`` to its marker; the guest is destroyed after. Into
    ``seen``: its memory while it idles in its command (``sleep``), kernel, phases."""
    with libvirt_guest.boot(guest, accel=accel, name=guest_name(libvirt_guest, note)) as b:
        seconds = vm_boot_seconds(b)
        time.sleep(0.5)  # past the marker, into the command: the guest's idle state
        seen.update(pss_kib=pss_kib(b.qemu_pid), phases=vm_phases(b),
                    kernel={"uname": b.uname, "boot_id": b.boot_id})
        return seconds


def guest_name(libvirt_guest, note: Note | None) -> str:
    """A new guest's name, told to ``note`` before the guest is made."""
    name = libvirt_guest.new_name()
    if note is not None:
        note(guest=name, undo=libvirt_guest.UNDO)
    return name


def raw_qemu_seconds_once(raw_qemu, guest, accel: str) -> float:
    """One raw-qemu boot of ``guest`` (libvirt's own command line) to its marker."""
    with raw_qemu.boot(guest, accel=accel) as b:
        return vm_boot_seconds(b)


def _in_container(c) -> dict[str, str]:
    """``uname -r`` and boot_id as the container reads them: from its own /proc (the one
    its mount namespace holds), not assumed from the host's."""
    from edu_runtime import kernel as k

    proc = f"/proc/{c.pid}/root/proc/sys/kernel"
    return {"uname": k.read(f"{proc}/osrelease", "") or "",
            "boot_id": k.read(f"{proc}/random/boot_id", "") or ""}


def sizes(store, image: str, guest) -> dict[str, Any]:
    """Bytes on disk of both sides, and the stacks the size figure draws."""
    img = store.get(image)
    unpacked = sum((store.layer_info(d) or {}).get("size", 0) for d in img.diff_ids)
    compressed = sum(store.blob_size(d["digest"])
                     for d in img.manifest["layers"])
    group = size_group(image, unpacked, guest.kind, guest.sizes)
    stacks = {f"container ({image})": group["container"],
              f"VM ({guest.kind} guest)": group["vm"]}
    largest = max(sum(v.values()) for v in stacks.values()) / 2**20
    return {"container": {"unpacked": unpacked, "compressed": compressed},
            "vm": dict(guest.sizes), "stacks": stacks, "largest_mib": largest,
            "groups": [group]}


def size_group(image: str, layers: int, kind: str, s: dict[str, int]) -> dict[str, Any]:
    """One image's container and guest, as the parts the size figure stacks (bytes)."""
    if kind == "full-disk":
        vm = {"kernel": s.get("kernel", 0), "initrd": s.get("initrd", 0),
              "kernel modules": s.get("modules", 0),
              "guest OS (systemd, libraries)": s.get("guest_os", 0),
              "app (the image's files)": s.get("rootfs", 0)}
    else:  # the gzipped initramfs, shared out in proportion to what went into it
        os_bytes, app = s.get("guest_os", 0), s.get("rootfs", 0)
        share = s.get("initrd", 0) / max(1, os_bytes + app)
        vm = {"kernel": s.get("kernel", 0), "guest OS (init, busybox)": int(os_bytes * share),
              "app (the image's files)": int(app * share)}
    return {"image": image, "guest": kind, "container": {"image layers": layers}, "vm": vm,
            "disk_virtual": s.get("disk_virtual", 0)}


def _debian_group(store, say) -> dict[str, Any] | str:
    """Debian beside the image: its layers and its full-disk guest (built once, then
    cached; never booted). A sentence instead when it cannot be built here."""
    from edu_runtime.images import bootstrap

    from . import guest_image

    try:
        bootstrap.bootstrap(store, "debian", progress=False)
        guest = guest_image.full_disk("debian", ["sleep", "3600"], store=store, progress=say)
    except (guest_image.GuestImageError, RuntimeError, OSError) as exc:
        return f"debian's full-disk guest could not be built: {exc}"
    img = store.get("debian")
    layers = sum((store.layer_info(d) or {}).get("size", 0) for d in img.diff_ids)
    return size_group("debian", layers, guest.kind, guest.sizes)


# ---- scale -------------------------------------------------------------------------------------

def free_memory() -> float:
    """MemAvailable / MemTotal from /proc/meminfo: the fraction of memory still free."""
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, value = line.partition(":")
        info[key] = int(value.split()[0])
    return info["MemAvailable"] / info["MemTotal"]


def scale_stop(free: float, boot_s: float | None = None) -> str | None:
    """Why the scale run must start no more (None: go on), from the free memory fraction and
    the last instance's seconds to ready."""
    if free < MIN_FREE:
        return f"free memory below {MIN_FREE:.0%} ({free:.0%} left)"
    if boot_s is not None and boot_s > MAX_BOOT_S:
        return f"one boot took {boot_s:.0f} s (over {MAX_BOOT_S:.0f} s)"
    return None


def scale_series(plan: tuple[int, ...], start_one, measure, say, free=free_memory,
                 what: str = "instances") -> tuple[list[dict[str, Any]], str | None]:
    """Start instances one after another, never stopping those already started, and note the
    total time and the memory (``measure()``) at each count of ``plan``; stop early by
    ``scale_stop``. The points, and why it stopped (None: the whole plan ran)."""
    points: list[dict[str, Any]] = []
    t0 = time.monotonic()
    n, last = 0, max(plan)

    def point(boot_s: float) -> None:
        points.append({"count": n, "start_s": time.monotonic() - t0, "boot_s": boot_s,
                       "pss_kib": measure(), "free": round(free(), 3)})
        say(f"scale: {n} {what} in {points[-1]['start_s']:.2f} s")

    for count in sorted(plan):
        while n < count:
            why = scale_stop(free())
            if why is not None:
                return points, why
            boot_s = start_one()
            n += 1
            why = scale_stop(free(), boot_s)
            if why is not None and n < last:  # what it reached, then no more
                point(boot_s)
                return points, why
        point(boot_s)
    return points, None


def scale(image, guest, accel, plan_containers, plan_guests, store, say,
          one_guest: dict[str, Any] | None = None, note: Note | None = None) -> dict[str, Any]:
    """Containers, then guests, by ``scale_series``; with one guest only, ``one_guest`` (the
    start-up's own boot) stands for it and nothing more is booted."""
    import contextlib

    from . import libvirt_guest

    out: dict[str, Any] = {"plan": {"containers": list(plan_containers),
                                    "guests": list(plan_guests)},
                           "limits": {"min_free": MIN_FREE, "max_boot_s": MAX_BOOT_S}}
    started: list[Any] = []

    def one_container() -> float:
        seconds, c = container_boot(image, keep=True, store=store, note=note)
        started.append(c)
        return seconds

    try:
        out["containers"], why_c = scale_series(
            plan_containers, one_container,
            lambda: _settled(sum, (container_pss(c) for c in started)), say,
            what="containers")
    finally:
        for c in started:
            stop_container(c)
    if one_guest is not None:
        out["guests"], why_g = [{**one_guest, "start_s": one_guest["boot_s"],
                                 "free": round(free_memory(), 3)}], None
    else:
        with contextlib.ExitStack() as stack:
            boots: list[Any] = []

            def one_guest_boot() -> float:
                boots.append(stack.enter_context(libvirt_guest.boot(
                    guest, accel=accel, name=guest_name(libvirt_guest, note))))
                return vm_boot_seconds(boots[-1])

            out["guests"], why_g = scale_series(
                plan_guests, one_guest_boot,
                lambda: _settled(sum, (pss_kib(b.qemu_pid) for b in boots)), say,
                what="guests")
    out["stopped"] = {"containers": why_c, "guests": why_g}
    return out


def _settled(add, values):
    """``add(values)`` half a second after the last start, as the idle guest is measured:
    past the marker, into the command."""
    time.sleep(0.5)
    return add(values)


# ---- reading saved results ---------------------------------------------------------------------

def upgrade(result: dict[str, Any]) -> dict[str, Any]:
    """A saved result in the current schema's shape (an ``edu.compare/1`` one gains what /2
    added, from what it has); refuses schemas it does not know."""
    schema = result.get("schema")
    if schema not in READABLE:
        raise CompareError(f"a result of schema {schema!r} cannot be read here (this edu "
                           f"reads {', '.join(READABLE)}); run `edu compare` again")
    if schema == SCHEMA:
        return result
    new = json.loads(json.dumps(result))  # a copy: the saved one is left as it was
    new["schema"] = SCHEMA
    sz = new.get("sizes")
    if sz and "groups" not in sz:
        kinds = {n: ("container" if n.startswith("container") else "vm") for n in sz["stacks"]}
        group = {"image": new.get("image", "?"), "guest": new.get("guest", "?"),
                 "disk_virtual": sz.get("vm", {}).get("disk_virtual", 0)}
        for name, parts in sz["stacks"].items():
            group[kinds[name]] = parts
        sz["groups"] = [group]
    sc = new.get("scale")
    if sc and "plan" not in sc:
        new["scale"] = {"containers": sc.get("containers", []), "guests": sc.get("guests", []),
                        "plan": {k: [p["count"] for p in sc.get(k, [])]
                                 for k in ("containers", "guests")},
                        "stopped": {"containers": None, "guests": None}, "quick": None}
    return new
