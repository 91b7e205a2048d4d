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
- **scale**: start time and memory for 1..N containers and 1..M guests (M stays small under
  TCG on 2 cores).

Runs alternate after a warm-up; medians, minimum and maximum are kept, with a description of
the machine (CPU, kernel, KVM or TCG) in JSON with a versioned schema (``SCHEMA``).

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
from pathlib import Path
from typing import Any

SCHEMA = "edu.compare/1"
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


class CompareError(RuntimeError):
    """The comparison cannot run here; the message says what is missing and how to fix it."""


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


def container_boot(image: str, keep: bool = False, store=None):
    """Start a container that prints the marker then sleeps; (seconds to marker, container).
    Unless ``keep``, it is killed and removed before returning."""
    from edu_runtime.container import Container

    r, w = os.pipe()
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        t0 = time.monotonic()
        c = Container(image, ["sh", "-c", f"echo {MARK}; exec sleep 3600"], network="none",
                      remove=True, stdio=(devnull, w, w), store=store)
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
        max_containers: int = 10, max_guests: int = 2) -> dict[str, Any]:
    """Measure everything; return the result (``SCHEMA``) and write it, with the figures,
    under ``out``."""
    import tempfile

    from edu_runtime.images import bootstrap
    from edu_runtime.images.store import Store

    from . import guest_image, libvirt_guest, plots, raw_qemu

    if quick:
        runs, image, full_disk, max_containers, max_guests = 3, "busybox", False, 5, 1
    say = progress or (lambda text: None)
    libvirt_guest.cleanup_stale()  # guests a killed comparison left behind
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
    work = Path(tempfile.mkdtemp(prefix="edu-compare-", dir=str(Path.home())))
    try:
        seen: dict[str, Any] = {}  # what the last libvirt boot showed: memory, kernel, phases
        contenders: dict[str, tuple[str, Any]] = {
            "edu container": ("container", lambda: container_boot(image, store=store)[0]),
            f"libvirt guest ({accel})": ("vm", lambda: vm_boot_seconds_once(
                libvirt_guest, guest, accel, seen)),
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
        seconds, c = container_boot(image, keep=True, store=store)
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
        result["scale"] = scale(image, guest, accel, max_containers, max_guests, store, say,
                                one_guest={"count": 1, "start_s": result["startup"][
                                    f"libvirt guest ({accel})"]["median_s"],
                                           "pss_kib": guest_mem})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.json").write_text(json.dumps(result, indent=1))
        result["figures"] = [str(p) for p in plots.all_figures(result, out)]
        (out / "compare.json").write_text(json.dumps(result, indent=1))
    return result


def vm_boot_seconds_once(libvirt_guest, guest, accel: str, seen: dict[str, Any]) -> float:
    """One libvirt boot of ``guest`` to its marker; the guest is destroyed after. Into
    ``seen``: its memory while it idles in its command (``sleep``), kernel, phases."""
    with libvirt_guest.boot(guest, accel=accel) as b:
        seconds = vm_boot_seconds(b)
        time.sleep(0.5)  # past the marker, into the command: the guest's idle state
        seen.update(pss_kib=pss_kib(b.qemu_pid), phases=vm_phases(b),
                    kernel={"uname": b.uname, "boot_id": b.boot_id})
        return seconds


def raw_qemu_seconds_once(raw_qemu, guest, accel: str) -> float:
    """One raw-qemu boot of ``guest`` (libvirt's own command line) to its marker."""
    with raw_qemu.boot(guest, accel=accel) as b:
        return vm_boot_seconds(b)


def _in_container(c) -> dict[str, str]:
    from edu_runtime import kernel as k

    return {"uname": platform.release(),  # the same kernel: there is only one
            "boot_id": (k.read(f"/proc/{c.pid}/root/proc/sys/kernel/random/boot_id", "")
                        or "")}


def sizes(store, image: str, guest) -> dict[str, Any]:
    """Bytes on disk of both sides, and the stacks the size figure draws."""
    img = store.get(image)
    unpacked = sum((store.layer_info(d) or {}).get("size", 0) for d in img.diff_ids)
    compressed = sum(store.blob_path(d["digest"]).stat().st_size
                     for d in img.manifest["layers"])
    s = guest.sizes
    stacks = {"container (layers)": {"image layers": unpacked}}
    if guest.disk is not None:
        stacks["VM (kernel + disk)"] = {
            "kernel": s.get("kernel", 0),
            "initrd": s.get("initrd", 0),
            "guest OS (modules, systemd, ...)": s.get("modules", 0) + s.get("guest_os", 0),
            "app (the image's files)": s.get("rootfs", 0)}
    else:  # the gzipped initramfs, shared out in proportion to what went into it
        os_bytes, app = s.get("guest_os", 0), s.get("rootfs", 0)
        share = s.get("initrd", 0) / max(1, os_bytes + app)
        stacks["VM (kernel + initramfs)"] = {
            "kernel": s.get("kernel", 0),
            "guest OS (init, busybox)": int(os_bytes * share),
            "app (the image's files)": int(app * share)}
    largest = max(sum(v.values()) for v in stacks.values()) / 2**20
    return {"container": {"unpacked": unpacked, "compressed": compressed},
            "vm": dict(s), "stacks": stacks, "largest_mib": largest}


def scale(image, guest, accel, max_containers, max_guests, store, say,
          one_guest: dict[str, Any] | None = None) -> dict[str, Any]:
    """Start 1..N containers and 1..M guests, one after another, and keep them all running;
    the total time and PSS for each count (one guest: ``one_guest``, already measured)."""
    import contextlib

    from . import libvirt_guest

    out: dict[str, list[dict[str, Any]]] = {"containers": [], "guests": []}
    for n in sorted({1, max(1, max_containers // 2), max_containers}):
        t0 = time.monotonic()
        started = []
        try:
            for _ in range(n):
                started.append(container_boot(image, keep=True, store=store)[1])
            total = time.monotonic() - t0
            mem = sum(container_pss(c) for c in started)
        finally:
            for c in started:
                stop_container(c)
        out["containers"].append({"count": n, "start_s": total, "pss_kib": mem})
        say(f"scale: {n} containers in {total:.2f} s")
    for m in range(1, max_guests + 1):
        if m == 1 and one_guest is not None:
            out["guests"].append(one_guest)
            continue
        with contextlib.ExitStack() as stack:
            t0 = time.monotonic()
            boots = [stack.enter_context(libvirt_guest.boot(guest, accel=accel))
                     for _ in range(m)]
            total = time.monotonic() - t0
            mem = sum(pss_kib(b.qemu_pid) for b in boots)
        out["guests"].append({"count": m, "start_s": total, "pss_kib": mem})
        say(f"scale: {m} guests in {total:.1f} s")
    return out
