"""Turn an edu image into virtual machines that run the *same image* as the container.

The lessons compare a container with a VM, and the comparison is only fair if both run the
same files and the same command. So the guest's root filesystem is not a cloud image found
somewhere: it is the image from the edu store, with as little added as a VM needs to boot it.
Two guests, from least to most of "an operating system":

1. **Minimal** (``minimal()``): the pinned guest kernel plus an initramfs that *is* the image's
   merged root filesystem (whiteouts honoured, owners, modes and hardlinks kept, device nodes
   skipped). The kernel unpacks it into memory and runs our ``/init``, a few lines of shell
   that mount /proc, /sys and /dev, as a container runtime does, and run the command. There is
   no init system and no disk: this is the smallest VM that runs the image.
2. **Full disk** (``full_disk()``): an ext4 disk (a qcow2 file) holding the image's files, the
   kernel's modules and systemd, plus a small initrd whose only job is to load the disk
   driver (``virtio_blk``) and ``ext4`` (modules in Debian's kernel), mount the disk and hand
   over to systemd. This is the "guest OS" of the Docker primer's picture.

Both guests print one line on the serial console when they are ready, then run the command::

    EDU-GUEST-READY boot_id=<guest's boot id> uname=<guest's uname -r> uptime=<seconds>
    ... the command's output ...
    EDU-GUEST-EXIT code=<the command's exit code>

and power off. The host times the marker, and ``boot_id`` and ``uname`` prove that another
kernel booted. What we add to the image is kept out of its way, under ``/.edu/``: a static
busybox (the guest needs ``mount`` and ``poweroff``, which an image may lack; the container
gets these from edu, outside the image, too) and ``/.edu/run``, the script that prints the
marker and runs the command with the image's environment, as ``edu run`` would.

The debian image from ``edu bootstrap`` is minbase, which has no systemd. We add it with
``edu build`` (``FROM debian`` + ``RUN apt-get install systemd-sysv udev kmod``): the guest's
disk is then the very image the container runs plus one layer, made by the same tool a
student uses, and cached by edu's build cache. (debootstrap --include=systemd-sysv would make
a second, different Debian instead.) The layer goes into the guest disk only; the debian image
stays what it was.

Everything is cached in ``guests_dir()`` by what it is made of (the image id, the command,
the kernel, this module's recipe version), built in a temporary directory and renamed into
place at the end, so an interrupted build leaves nothing half-made. The directories are 0755
and the files 0644, so ``qemu:///system`` (which runs QEMU as ``libvirt-qemu``) can open them.
A full-disk guest's disk is shared by every command: the command travels in the initrd, which
copies ``/.edu/run`` onto the disk before systemd starts. So boot it with a throw-away overlay
(``boot_raw`` does; in libvirt, ``<transient/>`` or a qcow2 overlay), never writing the cache.

Introduced in notebooks/01-containers-vs-vms.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edu_runtime import paths
from edu_runtime.safepath import mount_overlay, open_in_root
from vm_compare import initramfs, kernel_pkg, probe_guest

RECIPE = 2  # part of every cache key: raise it when a guest would now be built differently
MARKER = "EDU-GUEST-READY"
EXIT_MARKER = "EDU-GUEST-EXIT"
FAIL_MARKER = "EDU-GUEST-FAIL"  # the full-disk initrd could not mount the disk
HOSTNAME = "edu-guest"
BASE_CMDLINE = "console=ttyS0 printk.time=1 panic=-1"
DISK_CMDLINE = f"{BASE_CMDLINE} root=/dev/vda rw"
BUSYBOX = "/.edu/busybox"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What the full-disk initrd loads, with their dependencies from modules.dep. crc32c is not a
# dependency but ext4 and jbd2 need it (a "softdep") for metadata checksums; the generic one,
# because QEMU's default CPU has no SSE4.2 for crc32c-intel.
DISK_MODULES = ["virtio_pci", "virtio_blk", "crc32c_generic", "ext4"]
SYSTEMD_PACKAGES = "systemd-sysv udev kmod"  # kmod: depmod now, and udev loads modules
SYSTEMD_DOCKERFILE = f"""FROM {{base}}
# exec 2>&1: apt's complaints go to the build log too
RUN exec 2>&1 && apt-get -q update \\
 && DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends \\
    {SYSTEMD_PACKAGES} \\
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb
"""

Progress = Callable[[str], object]


class GuestImageError(RuntimeError):
    """A guest cannot be built; the message says what, why, and the fix."""


@dataclass
class GuestFiles:
    """Everything needed to boot one guest, and what it is made of."""

    kind: str  # "minimal" or "full-disk"
    image: str  # the image reference asked for
    image_id: str  # its config digest
    kernel: Path  # the pinned guest kernel (kernel_pkg)
    initrd: Path
    disk: Path | None  # the qcow2 disk, for a full-disk guest
    cmdline: str  # the kernel command line
    marker: str  # the prefix of the line printed on ttyS0 when the guest is ready
    command: list[str]  # what the guest runs after the marker (as the container would)
    sizes: dict[str, int] = field(default_factory=dict)  # bytes, see _sizes()
    build_seconds: float = 0.0  # how long building took (0 when it came from the cache)

    def to_json(self) -> dict:
        """Plain JSON-able form (paths as strings)."""
        data = asdict(self)
        for key in ("kernel", "initrd", "disk"):
            data[key] = str(data[key]) if data[key] is not None else None
        return data

    @classmethod
    def from_json(cls, data: dict) -> GuestFiles:
        """Inverse of ``to_json``."""
        data = dict(data)
        for key in ("kernel", "initrd", "disk"):
            data[key] = Path(data[key]) if data[key] is not None else None
        return cls(**data)


def guests_dir() -> Path:
    """Where built guests live; world-readable, so libvirt's qemu user can open them."""
    root = paths.ensure(paths.cache_dir() / "guest" / "images")
    kernel_pkg._make_readable_path(root)
    return root


def minimal(image: str = "busybox", command: list[str] | None = None, *, store=None,
            progress: Progress = print) -> GuestFiles:
    """The guest kernel plus an initramfs made of the image's files and a tiny /init."""
    r = _recipe("minimal", image, command, store, progress)

    def build(tmp: Path) -> GuestFiles:
        progress(f"guest image: minimal guest of {image} ({r.img.short_id}): packing its files")
        with _rootfs(r.store, r.img) as root:
            files, rootfs_bytes = _image_entries(root)
            ours = _minimal_entries(r.busybox, _run_script(r.img, r.argv, root))
            # gzip -6: a whole image at -9 takes several times as long for 1% less.
            initramfs.write_newc_gz(_replace(files, ours), tmp / "initrd.img", level=6)
        sizes = _sizes(r.kernel, tmp / "initrd.img", rootfs=rootfs_bytes,
                       guest_os=len(r.busybox) + len(MINIMAL_INIT))
        return r.files(None, BASE_CMDLINE, sizes)

    return _cached_build(r.name, build, progress)


def full_disk(image: str = "debian", command: list[str] | None = None, *, store=None,
              progress: Progress = print) -> GuestFiles:
    """A qcow2 disk of the image with systemd and the kernel's modules, plus its initrd."""
    _need_root()
    r = _recipe("full-disk", image, command, store, progress)

    def build(tmp: Path) -> GuestFiles:
        disk = _ensure_disk(r.store, r.img, r.kernel, r.busybox, progress)
        progress("guest image: full-disk initrd (busybox, the disk's drivers, the command)")
        modules = _module_order(disk / "modules.dep", r.kernel.modules_dir, DISK_MODULES)
        with _rootfs(r.store, r.img) as root:
            run = _run_script(r.img, r.argv, root)
        entries = _disk_initrd_entries(r.busybox, r.kernel, modules, run)
        initramfs.write_newc_gz(entries, tmp / "initrd.img")
        disk_sizes = json.loads((disk / "disk.json").read_text())
        sizes = _sizes(r.kernel, tmp / "initrd.img", **disk_sizes)
        return r.files(disk / "disk.qcow2", DISK_CMDLINE, sizes)

    return _cached_build(r.name, build, progress)


def parse_ready(line: str) -> dict:
    """Turn "EDU-GUEST-READY boot_id=... uname=... uptime=..." into a dict of its fields."""
    words = line.split()
    if MARKER not in words:
        raise ValueError(f"not a guest marker line: {line!r}")
    rest = words[words.index(MARKER) + 1:]
    return dict(word.split("=", 1) for word in rest if "=" in word)


# ---- booting with raw QEMU (tests, and a look without libvirt) -------------------------------

POWEROFF_GRACE = 10.0  # after the exit line, how long the guest gets to power off


@dataclass
class GuestBoot:
    """What one raw-QEMU boot of a guest showed."""

    kind: str
    accel: str
    ready: bool  # did the marker line appear?
    ready_seconds: float | None  # from starting QEMU to the marker
    fields: dict  # the marker's boot_id, uname, uptime
    exit_code: int | None  # the command's exit code, from the exit line (None: not seen)
    timed_out: bool  # QEMU was killed before it got as far as it was asked to
    returncode: int | None  # QEMU's own exit status (negative: killed by that signal)
    wall: float  # seconds from starting QEMU until it was gone
    console: str  # the serial console, escape sequences removed
    stderr: str  # QEMU's own messages

    def output(self) -> str:
        """What the command printed: the console between the marker and the exit line."""
        after = self.console.split(MARKER, 1)[-1].split("\n", 1)[-1] if self.ready else ""
        return after.split(EXIT_MARKER, 1)[0]


def boot_raw(files: GuestFiles, *, accel: str = "tcg", timeout: float = 120.0,
             memory_mb: int = 512, until: str = "exit") -> GuestBoot:
    """Boot a guest with plain QEMU: until its command exits (``until="exit"``) or only
    until the marker (``"ready"``); QEMU is killed and reaped at ``timeout`` whatever happens."""
    if until not in ("exit", "ready"):
        raise ValueError(f"until must be 'exit' or 'ready', not {until!r}")
    markers = {MARKER: 0.0 if until == "ready" else None, EXIT_MARKER: POWEROFF_GRACE,
               FAIL_MARKER: POWEROFF_GRACE}
    _clean_stale()
    with _scratch(".boot-") as scratch:
        extra = []
        if files.disk is not None:
            # A throw-away overlay takes the guest's writes: the cached disk stays as built.
            overlay = scratch / "overlay.qcow2"
            _run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                  str(files.disk), str(overlay)], "qemu-img create (the boot's overlay)")
            extra = ["-drive", f"file={overlay},if=virtio,format=qcow2"]
        cmd = probe_guest.qemu_command(accel, files.kernel, files.initrd, memory_mb,
                                       name=f"edu-{files.kind}-{accel}",
                                       append=files.cmdline, extra=extra)
        run = probe_guest.run_qemu(cmd, timeout, markers)
    ready = probe_guest.find_line(run.stdout, MARKER)
    ended = probe_guest.find_line(run.stdout, EXIT_MARKER)
    code = re.search(r"code=(-?\d+)", ended or "")
    goal = MARKER if until == "ready" else EXIT_MARKER
    return GuestBoot(
        kind=files.kind,
        accel=accel,
        ready=ready is not None,
        ready_seconds=run.seen.get(MARKER),
        fields=parse_ready(ready) if ready else {},
        exit_code=int(code.group(1)) if code else None,
        timed_out=run.killed and goal not in run.seen,
        returncode=run.returncode,
        wall=run.wall,
        console=probe_guest.clean_console(run.stdout),
        stderr=run.stderr.decode(errors="replace").strip(),
    )


# ---- what goes into the guests ---------------------------------------------------------------

# The minimal guest's /init: what a container runtime mounts, then the command.
MINIMAL_INIT = f"""#!{BUSYBOX} sh
# /init of the edu minimal guest: mount what the container would have, then run the command.
bb={BUSYBOX}
$bb mkdir -p /proc /sys /dev /tmp
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev
$bb mkdir -p /dev/pts /dev/shm
$bb mount -t devpts devpts /dev/pts
$bb mount -t tmpfs shm /dev/shm
$bb hostname {HOSTNAME}
$bb dmesg -n 4  # from now on the kernel prints only errors on the console, as below
exec /.edu/run
""".encode()

# The full-disk initrd's /init: load the disk's drivers, mount it, hand over to systemd.
DISK_INIT = f"""#!/bin/busybox sh
# /init of the edu full-disk guest's initrd: load the drivers, mount the disk, start systemd.
/bin/busybox --install -s /bin
fail() {{ echo "{FAIL_MARKER} $*"; poweroff -f; sleep 10; }}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in $(cat /modules.load); do
    insmod "/modules/$module" || fail "insmod $module"
done
root=/dev/vda
for arg in $(cat /proc/cmdline); do
    case "$arg" in root=*) root="${{arg#root=}}" ;; esac
done
tries=0
while [ ! -b "$root" ]; do  # the disk appears once virtio_blk has probed it
    tries=$((tries + 1))
    [ "$tries" -gt 300 ] && fail "no disk $root after 30 s"
    usleep 100000
done
mount -t ext4 -o rw "$root" /newroot || fail "cannot mount $root"
# The command of this boot comes with the initrd (one disk serves every command).
cp /edu-run /newroot/.edu/run && chmod 755 /newroot/.edu/run || fail "cannot write /.edu/run"
mount --move /dev /newroot/dev
umount /sys /proc
exec switch_root /newroot /sbin/init
""".encode()

# systemd units of the full-disk guest. The marker must mean "multi-user.target reached", and
# a unit cannot be both After=multi-user.target and WantedBy=multi-user.target (the target
# waits for what it wants: a cycle). So the default target is our own, one step further:
# edu-guest.target needs multi-user.target and starts after it, and so does the unit it wants.
# A target's start job finishes only after the jobs of every unit it wants, so "after
# multi-user.target" means after every multi-user service has started.
GUEST_TARGET = """[Unit]
Description=edu guest: multi-user.target, then the image's command
Requires=multi-user.target
After=multi-user.target
AllowIsolate=yes
"""

GUEST_SERVICE = """[Unit]
Description=edu guest: print the readiness marker, then run the image's command
After=multi-user.target

[Service]
Type=exec
ExecStart=/.edu/run
StandardInput=null
StandardOutput=tty
StandardError=inherit
TTYPath=/dev/console

[Install]
WantedBy=edu-guest.target
"""

# Units masked in the full-disk guest, and why: the serial console belongs to the command
# (as a container's stdout does), and one login prompt (tty1) is enough; the guest has no
# network card; nobody is there to answer first-boot questions; timers would only add work
# to a short-lived VM.
MASKED_UNITS = [
    "serial-getty@ttyS0.service", "console-getty.service", "getty-static.service",
    "systemd-networkd-wait-online.service", "systemd-timesyncd.service",
    "systemd-firstboot.service", "apt-daily.timer", "apt-daily-upgrade.timer",
    "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer",
]

GUEST_CONFIG = {
    # systemd prints only errors on the console (the command's output stays readable)...
    "etc/systemd/system.conf.d/edu-guest.conf": "[Manager]\nShowStatus=error\n",
    # ...and the kernel only errors, once userspace runs (its boot log stays, timestamped).
    "etc/sysctl.d/90-edu-guest.conf": "kernel.printk = 4 4 1 7\n",
    "etc/hostname": f"{HOSTNAME}\n",
    "etc/hosts": f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n::1 localhost ip6-localhost\n",
    # Empty: systemd makes a new machine id at every boot, and it is not a "first boot".
    "etc/machine-id": "",
    "etc/systemd/system/edu-guest.target": GUEST_TARGET,
    "etc/systemd/system/edu-guest.service": GUEST_SERVICE,
}


def _run_script(img, argv: list[str], root: str) -> bytes:
    """``/.edu/run``: the marker line, then the command as ``edu run`` would start it."""
    cfg = img.config.get("config") or {}
    env = "".join(f"export {shlex.quote(item)}\n" for item in cfg.get("Env") or [])
    workdir = cfg.get("WorkingDir") or "/"
    # Found on the image's PATH here, by the host, as a runtime's exec would find it: a bare
    # name given to busybox's shell would run busybox's own applet of that name instead.
    program = _find_program(root, argv[0], cfg.get("Env") or [])
    if program is None:
        command = f"echo {shlex.quote(argv[0] + ': not found in the image')} >&2; (exit 127)"
    else:
        command = f"{shlex.join([program, *argv[1:]])} < /dev/null"
    return f"""#!{BUSYBOX} sh
# /.edu/run: say "ready" on the console, run the image's command, report its exit, power off.
{env}{BUSYBOX} mkdir -p {shlex.quote(workdir)}  # as Docker does for a missing WorkingDir
cd {shlex.quote(workdir)}
read -r boot_id < /proc/sys/kernel/random/boot_id
read -r release < /proc/sys/kernel/osrelease
read -r uptime idle < /proc/uptime
echo "{MARKER} boot_id=$boot_id uname=$release uptime=$uptime"
{command}
code=$?
echo "{EXIT_MARKER} code=$code"
{BUSYBOX} sync
{BUSYBOX} poweroff -f
""".encode()


def _minimal_entries(busybox: bytes, run: bytes) -> list[initramfs.Entry]:
    """What the minimal guest adds to the image: /init, /.edu and the console node."""
    return [
        initramfs.regular("init", MINIMAL_INIT, 0o755),
        initramfs.directory(".edu"),
        initramfs.regular(".edu/busybox", busybox, 0o755),
        initramfs.regular(".edu/run", run, 0o755),
        initramfs.directory("dev"),
        # The kernel opens /dev/console for /init before /init runs: it must be in the archive.
        initramfs.chardev("dev/console", 5, 1),
    ]


def _disk_initrd_entries(busybox: bytes, kernel, modules: list[str], run: bytes
                         ) -> list[initramfs.Entry]:
    """The full-disk initrd: busybox, /init, the modules to load (in order), the command."""
    entries = [
        initramfs.regular("bin/busybox", busybox, 0o755),
        initramfs.regular("init", DISK_INIT, 0o755),
        initramfs.regular("edu-run", run, 0o755),
        initramfs.regular("modules.load", "".join(f"{Path(m).name}\n" for m in modules).encode()),
        initramfs.chardev("dev/console", 5, 1),
        *(initramfs.directory(d) for d in ("proc", "sys", "newroot")),
    ]
    for module in modules:
        source = kernel.modules_dir / module
        entries.append(initramfs.host_file(f"modules/{Path(module).name}", str(source),
                                           source.stat()))
    return entries


def _replace(image_entries: list[initramfs.Entry], ours: list[initramfs.Entry]
             ) -> list[initramfs.Entry]:
    """The image's entries, except where ours go (a path of ours replaces its whole subtree)."""
    taken = {entry.path for entry in ours}
    kept = [e for e in image_entries
            if e.path not in taken and not any(e.path.startswith(t + "/") for t in taken)
            and (e.link is None or e.link not in taken)]
    return kept + ours


# ---- the image's files -----------------------------------------------------------------------

def _image(store, ref: str, *, bootstrap_missing: bool = False, progress: Progress = print):
    """The store and the image ``ref`` (bootstrapped first when asked and missing)."""
    from edu_runtime.images.store import Store, StoreError

    store = store or Store()
    try:
        return store, store.get(ref)
    except StoreError as exc:
        if not bootstrap_missing or ref.split(":")[0] != "debian":
            raise GuestImageError(f"no guest can be made of {ref}: {exc}") from None
    from edu_runtime.images import bootstrap

    progress("guest image: the debian image is missing; building it (edu bootstrap debian)")
    return store, bootstrap.bootstrap(store, "debian", progress=False)


def _argv(img, command: list[str] | None, progress: Progress) -> list[str]:
    """Docker's rule, as ``edu run`` applies it: Entrypoint + (command or Cmd)."""
    from edu_runtime.container import command_for

    cfg = img.config.get("config") or {}
    argv = command_for(cfg, command, None)
    if not argv:
        raise GuestImageError(f"{img.short_id} has no Cmd or Entrypoint: give a command")
    if cfg.get("User") not in (None, "", "0", "root", "0:0"):
        progress(f"guest image: note: the guest runs {argv[0]} as root, not as the image's "
                 f"User {cfg['User']} (not supported in guests yet)")
    return argv


@contextlib.contextmanager
def _rootfs(store, img) -> Iterator[str]:
    """A path to the image's merged root filesystem, read-only, while the block runs."""
    lower = store.lowerdirs(img)
    if len(lower) == 1:
        yield str(lower[0])  # one layer is its own merged view (whiteouts are skipped below)
        return
    fd = mount_overlay(lower)  # detached: closing the fd unmounts it
    try:
        # /proc/PID (not /proc/self) so that child processes (cp) can use the path too.
        yield f"/proc/{os.getpid()}/fd/{fd}"
    finally:
        os.close(fd)


def _walk(root: str, rel: str = "") -> Iterator[tuple[str, os.stat_result]]:
    """Every entry below ``root``, sorted, parents first; symlinks are not followed."""
    with os.scandir(os.path.join(root, rel) if rel else root) as found:
        children = sorted(found, key=lambda entry: entry.name)
    for child in children:
        path = f"{rel}/{child.name}" if rel else child.name
        st = child.stat(follow_symlinks=False)
        yield path, st
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(root, path)


def _image_entries(root: str) -> tuple[list[initramfs.Entry], int]:
    """The merged tree as initramfs entries, and the bytes of its regular files."""
    entries, first_name, total = [], {}, 0
    for path, st in _walk(root):
        source = os.path.join(root, path)
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFREG:
            inode = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and inode in first_name:
                entries.append(initramfs.hardlink(path, first_name[inode]))
                continue
            first_name[inode] = path
            entries.append(initramfs.host_file(path, source, st))
            total += st.st_size
        elif kind in (stat.S_IFDIR, stat.S_IFLNK, stat.S_IFIFO):
            target = os.readlink(source).encode() if kind == stat.S_IFLNK else b""
            entries.append(initramfs.Entry(path, st.st_mode, target, uid=st.st_uid,
                                           gid=st.st_gid))
        # Device nodes (a whiteout is a 0/0 one) and sockets are not the image's to bring.
    return entries, total


def _tree_bytes(root: str | Path) -> int:
    """Bytes of the regular files below ``root``, each inode counted once."""
    seen, total = set(), 0
    for _path, st in _walk(str(root)):
        if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def _stat_in(root: str, path: str) -> os.stat_result | None:
    """``path`` inside the tree at ``root`` (its symlinks resolved inside it), or None."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = open_in_root(root_fd, path)
    except OSError:  # not there, or not reachable (a loop, a file used as a directory)
        return None
    finally:
        os.close(root_fd)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def _find_program(root: str, name: str, env: list[str]) -> str | None:
    """``name`` as exec finds it in the image: a path as it is, else the first executable
    file of that name on the image's PATH."""
    if "/" in name:
        return name
    path = next((item[5:] for item in env if item.startswith("PATH=")), DEFAULT_PATH)
    for directory in filter(None, path.split(":")):
        candidate = f"{directory.rstrip('/')}/{name}"
        st = _stat_in(root, candidate)
        if st is not None and stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return candidate
    return None


# ---- the full-disk guest's disk --------------------------------------------------------------

DISK_FILES = ("disk.qcow2", "disk.json", "modules.dep")


def _ensure_disk(store, img, kernel, busybox: bytes, progress: Progress) -> Path:
    """The directory of the image's qcow2 disk (one per image, kernel and recipe), with its
    sizes and the modules.dep its depmod wrote; built if missing."""
    name = f"disk-{img.short_id}-{_key('disk', img.id, kernel.version, _sha256(busybox))}"
    final = guests_dir() / name
    if all((final / file).is_file() for file in DISK_FILES):
        return final
    with _scratch(".tmp-") as tmp:
        system = _with_systemd(store, img, tmp, progress)
        tree = tmp / "root"
        tree.mkdir(mode=0o755)  # its mode becomes the mode of the guest's /
        with _rootfs(store, system) as root:
            progress("guest image: copying the image's files")
            _run(["cp", "-a", f"{root}/.", str(tree)], "cp -a (the image's files)")
        with _rootfs(store, img) as root:
            rootfs_bytes = _tree_bytes(root)
        modules = _add_modules(tree, kernel, progress)
        shutil.copyfile(_modules_dir_in(tree, kernel) / "modules.dep", tmp / "modules.dep")
        _configure(tree, busybox)
        raw, disk = tmp / "disk.raw", tmp / "disk.qcow2"
        content = _tree_bytes(tree)
        virtual = _round_up(int(content * 1.2) + (256 << 20), 1 << 20)
        progress(f"guest image: mkfs.ext4 -d ({content >> 20} MiB of files, "
                 f"{virtual >> 20} MiB disk)")
        with open(raw, "wb") as f:
            f.truncate(virtual)
        _run(["mkfs.ext4", "-q", "-F", "-L", "edu-root", "-d", str(tree), str(raw)],
             "mkfs.ext4 -d")
        shutil.rmtree(tree)
        progress("guest image: qemu-img convert -O qcow2")
        _run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(disk)], "qemu-img convert")
        raw.unlink()
        sizes = {"rootfs": rootfs_bytes, "guest_os": content - rootfs_bytes - modules,
                 "modules": modules, "disk_virtual": virtual,
                 "disk_actual": disk.stat().st_blocks * 512}
        (tmp / "disk.json").write_text(json.dumps(sizes, indent=2, sort_keys=True) + "\n")
        for leftover in tmp.iterdir():
            if leftover.name not in DISK_FILES:
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        _publish(tmp, final)
    return final


def _with_systemd(store, img, tmp: Path, progress: Progress):
    """The image itself if it has systemd and depmod, else it plus a layer that adds them."""
    with _rootfs(store, img) as root:
        if _stat_in(root, "lib/systemd/systemd") and _stat_in(root, "sbin/depmod"):
            return img
    from edu_runtime.images import build

    progress(f"guest image: adding {SYSTEMD_PACKAGES} with edu build (FROM the image, "
             "RUN apt-get install: a minute the first time, then edu build's cache)")
    context = tmp / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(SYSTEMD_DOCKERFILE.format(base=img.id))
    log = tmp / "build.log"
    options = build.Options(context=context, tags=[f"edu-guest/systemd:{img.short_id}"])
    with open(log, "w") as out:
        try:
            return build.build(store, options, out=out)
        except build.BuildError as exc:
            out.flush()
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise GuestImageError(
                f"could not add systemd to {img.short_id} with edu build: {exc}\n{tail}\n"
                "Fix: the image must be Debian-based and apt must reach the mirror "
                "(try `edu run --rm debian apt-get update`).") from None


def _add_modules(tree: Path, kernel, progress: Progress) -> int:
    """Copy the kernel's modules into the disk and index them (depmod, run in the disk)."""
    progress(f"guest image: adding the modules of {kernel.release}")
    target = _modules_dir_in(tree, kernel)
    target.parent.mkdir(parents=True, exist_ok=True)
    _run(["cp", "-a", str(kernel.modules_dir), str(target)], "cp -a (the kernel's modules)")
    modules = _tree_bytes(target)
    # The disk's own depmod (from kmod) writes modules.dep and the .bin indexes udev reads.
    _run(["chroot", str(tree), "depmod", "-a", kernel.release], "depmod (in the guest's disk)",
         env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    return modules


def _modules_dir_in(tree: Path, kernel) -> Path:
    """Where the disk keeps the kernel's modules: /lib/modules/<release> (/lib may be a
    symlink to usr/lib, as in Debian since bookworm's usr-merge)."""
    lib = tree / "lib"
    lib = tree / os.readlink(lib).lstrip("/") if lib.is_symlink() else lib
    return lib / "modules" / kernel.release


def _configure(tree: Path, busybox: bytes) -> None:
    """Make the disk boot quietly to our marker: units, masks, hostname, machine id, root."""
    for rel, text in GUEST_CONFIG.items():
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        path.write_text(text)
        path.chmod(0o444 if rel == "etc/machine-id" else 0o644)
    (tree / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    units = tree / "etc/systemd/system"
    _symlink(units / "default.target", "/etc/systemd/system/edu-guest.target")
    wants = units / "edu-guest.target.wants"
    wants.mkdir(exist_ok=True)
    _symlink(wants / "edu-guest.service", "/etc/systemd/system/edu-guest.service")
    for unit in MASKED_UNITS:
        _symlink(units / unit, "/dev/null")
    # root logs in without a password on the VM's own screen (tty1): no network, no one else.
    shadow = tree / "etc/shadow"
    shadow.write_text(re.sub(r"^root:[^:]*:", "root::", shadow.read_text(), flags=re.M))
    edu = tree / ".edu"
    edu.mkdir(mode=0o755)
    (edu / "busybox").write_bytes(busybox)
    (edu / "busybox").chmod(0o755)


def _module_order(modules_dep: Path, modules_dir: Path, wanted: list[str]) -> list[str]:
    """The modules to insmod for ``wanted``, dependencies first (paths in modules_dir);
    the ones built into the kernel (modules.builtin) need no loading."""
    deps = {}
    for line in modules_dep.read_text().splitlines():
        module, _, needs = line.partition(":")
        deps[_module_name(module)] = (module, needs.split())
    builtin = {_module_name(line) for line in
               (modules_dir / "modules.builtin").read_text().splitlines()}
    order: list[str] = []

    def add(name: str) -> None:
        if name in builtin or deps.get(name, ("",))[0] in order:
            return
        if name not in deps:
            raise GuestImageError(f"the guest kernel has no module {name}. Fix: report this; "
                                  "Debian changed its kernel configuration.")
        module, needs = deps[name]
        for dep in needs:
            add(_module_name(dep))
        order.append(module)

    for name in wanted:
        add(name)
    return order


def _module_name(path: str) -> str:
    """kernel/fs/ext4/ext4.ko -> ext4 (as modprobe names it: '-' and '_' are the same)."""
    return Path(path.strip()).name.split(".ko")[0].replace("-", "_")


# ---- the cache -------------------------------------------------------------------------------

@dataclass
class _Recipe:
    """What one guest is made of; its cache directory is named by a hash of all of it."""

    kind: str
    image: str  # the reference asked for
    store: Any
    img: Any  # the store's Image
    kernel: kernel_pkg.KernelInfo
    argv: list[str]
    busybox: bytes

    @property
    def name(self) -> str:
        """The cache directory's name, e.g. minimal-71bc4366c859-<16 hex digits>."""
        key = _key(self.kind, self.img.id, self.argv, self.kernel.version,
                   _sha256(self.busybox))
        return f"{self.kind}-{self.img.short_id}-{key}"

    def files(self, disk: Path | None, cmdline: str, sizes: dict[str, int]) -> GuestFiles:
        """The GuestFiles of this recipe, once built into its cache directory."""
        return GuestFiles(self.kind, self.image, self.img.id, self.kernel.vmlinuz,
                          guests_dir() / self.name / "initrd.img", disk, cmdline, MARKER,
                          self.argv, sizes)


def _recipe(kind: str, image: str, command: list[str] | None, store, progress) -> _Recipe:
    """Look up the image (bootstrapping debian for a full-disk guest), kernel and command."""
    store, img = _image(store, image, bootstrap_missing=kind == "full-disk", progress=progress)
    kernel = kernel_pkg.ensure_kernel(progress)
    return _Recipe(kind, image, store, img, kernel, _argv(img, command, progress), _busybox())


def _cached_build(name: str, build: Callable[[Path], GuestFiles], progress: Progress
                  ) -> GuestFiles:
    """The guest called ``name`` from the cache, or built (once, under a lock) and cached."""
    cached = _load(guests_dir() / name)
    if cached is not None:
        return cached
    with _lock():
        cached = _load(guests_dir() / name)  # built by someone else while we waited
        if cached is not None:
            return cached
        _clean_stale()
        start = time.monotonic()
        with _scratch(".tmp-") as tmp:
            files = build(tmp)
            files.build_seconds = round(time.monotonic() - start, 3)
            (tmp / "guest.json").write_text(json.dumps(files.to_json(), indent=2) + "\n")
            _publish(tmp, guests_dir() / name)
    progress(f"guest image: {files.kind} guest ready in {files.build_seconds:.1f} s: "
             f"{guests_dir() / name}")
    return files


def _load(directory: Path) -> GuestFiles | None:
    """A cached guest whose files are all still there, or None."""
    try:
        files = GuestFiles.from_json(json.loads((directory / "guest.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None
    needed = [files.kernel, files.initrd] + ([files.disk] if files.disk else [])
    if not all(path.is_file() for path in needed):
        return None
    files.build_seconds = 0.0
    return files


def _key(*parts) -> str:
    """A short hash of everything a guest is made of (with this module's recipe)."""
    text = json.dumps([RECIPE, *parts], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """One guest build at a time (a full-disk build takes minutes and gigabytes)."""
    with open(guests_dir() / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def _scratch(prefix: str) -> Iterator[Path]:
    """A private directory in guests_dir(), deleted afterwards unless it was published."""
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=guests_dir()))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, final: Path) -> None:
    """Open the finished build up to everyone (0755 / 0644) and rename it into place."""
    for dirpath, _dirs, files in os.walk(tmp):
        os.chmod(dirpath, 0o755)
        for name in files:
            os.chmod(os.path.join(dirpath, name), 0o644)
    if final.exists():  # an older build with missing files: replaced as a whole
        shutil.rmtree(final)
    os.rename(tmp, final)


def _clean_stale() -> None:
    """Delete the temporary directories of builds and boots whose process has died."""
    for path in guests_dir().glob(".*-*"):
        pid = path.name.split("-")[1] if path.is_dir() else ""
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)


# ---- small helpers ---------------------------------------------------------------------------

def _sizes(kernel, initrd: Path, **parts: int) -> dict[str, int]:
    """The byte counts a stacked plot needs; parts a guest does not have are 0."""
    sizes = {"kernel": kernel.vmlinuz.stat().st_size, "initrd": initrd.stat().st_size,
             "disk_actual": 0, "disk_virtual": 0, "rootfs": 0, "modules": 0, "guest_os": 0}
    sizes.update(parts)
    return sizes


def _busybox() -> bytes:
    """The host's static busybox (the guests' /.edu/busybox)."""
    return probe_guest._read_busybox()


def _symlink(path: Path, target: str) -> None:
    """``ln -sf target path``."""
    path.unlink(missing_ok=True)
    path.symlink_to(target)


def _need_root() -> None:
    """A full-disk build chroots, runs edu build and copies root-owned files: root only."""
    if os.geteuid() != 0:
        raise GuestImageError("building a full-disk guest needs root. Fix: run it with sudo.")


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> None:
    """Run a command; a GuestImageError with its last line of output if it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [
            f"exit code {proc.returncode}"]
        raise GuestImageError(f"{what} failed: {detail[0]}")


def _round_up(value: int, unit: int) -> int:
    """``value`` rounded up to a multiple of ``unit``."""
    return -(-value // unit) * unit


def _sha256(data: bytes) -> str:
    """Hex sha256 of some bytes."""
    return hashlib.sha256(data).hexdigest()
