"""The probe guest: the smallest VM that proves "a kernel booted and ran our code".

It is the pinned guest kernel (see ``kernel_pkg``) plus a tiny initramfs holding a static
busybox and a shell script as ``/init``. The script prints one line to the serial console::

    EDU-PROBE-READY boot_id=<guest's random boot id> uname=<guest's uname -r> uptime=<seconds>

and powers the VM off. We start ``qemu-system-x86_64`` directly (no libvirt), read the console
as bytes arrive, and time how long it took from starting QEMU to seeing that line.

Why boot at all, instead of checking that ``/dev/kvm`` exists? Because existing is not working:
on some hosts (nested virtualisation, for one) ``/dev/kvm`` opens fine and a KVM guest then
hangs forever in its firmware. Only a real boot with a deadline tells the truth, so every boot
here has a timeout, and on timeout QEMU is killed and reaped: no zombie, no stray process.

Introduced in notebooks/01-containers-vs-vms.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edu_runtime import paths
from edu_runtime.kernel import set_pdeathsig
from vm_compare import initramfs
from vm_compare.kernel_pkg import KernelInfo, installed_kernel

BUSYBOX = Path("/bin/busybox")
MARKER = "EDU-PROBE-READY"
APPEND = "console=ttyS0 panic=-1 quiet"
POWEROFF_GRACE = 5.0  # after the marker, how long we let the guest take to power off

# The guest's whole userspace. `busybox --install` makes the applet names (mount, uname, ...)
# real commands, so the rest reads like any shell script. `poweroff -f` skips init's shutdown
# dance (there is no init to ask) and tells the kernel to switch the machine off via ACPI.
INIT_SCRIPT = f"""#!/bin/busybox sh
# /init of the edu probe guest: say who we are on the console, then power off.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
read -r boot_id < /proc/sys/kernel/random/boot_id
read -r uptime idle < /proc/uptime
echo "{MARKER} boot_id=$boot_id uname=$(uname -r) uptime=$uptime"
poweroff -f
"""


class GuestError(RuntimeError):
    """The probe guest cannot be started; the message says what, why, and the fix."""


@dataclass
class BootResult:
    """What one boot of the probe guest showed."""

    accel: str  # "kvm" or "tcg"
    seen: bool  # did the marker line reach the console before the timeout?
    seconds: float | None  # wall time from starting QEMU to the marker, None if not seen
    wall: float  # wall time from starting QEMU until it was gone (exited, or killed)
    timeout: float
    timed_out: bool  # True when we had to kill QEMU
    returncode: int | None  # QEMU's exit status (negative: killed by that signal)
    fields: dict = field(default_factory=dict)  # parsed marker: boot_id, uname, uptime
    console: str = ""  # the serial console (QEMU's stdout), escape sequences removed
    stderr: str = ""  # QEMU's own complaints, e.g. "failed to initialize kvm"

    def to_dict(self) -> dict:
        """Plain JSON-able form, for the doctor's cache file."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BootResult:
        """Inverse of ``to_dict``."""
        return cls(**data)


def qemu_binary() -> str:
    """Path of qemu-system-x86_64, or a GuestError saying how to install it."""
    found = shutil.which("qemu-system-x86_64")
    if not found:
        raise GuestError(
            "qemu-system-x86_64 was not found, so no VM can be started. "
            "Fix: apt-get install qemu-system-x86 (make lab does this)."
        )
    return found


def qemu_version() -> str:
    """First line of ``qemu-system-x86_64 --version``, e.g. "QEMU emulator version 7.2.22 ..."."""
    out = subprocess.run([qemu_binary(), "--version"], capture_output=True, text=True)
    return out.stdout.splitlines()[0].strip() if out.stdout else f"unknown (exit {out.returncode})"


def initramfs_path() -> Path:
    """Where the probe initramfs lives in the cache."""
    return paths.cache_dir() / "guest" / "probe-initramfs.img"


def probe_entries(busybox: bytes) -> list[initramfs.Entry]:
    """The probe guest's files: busybox, /init, the mount points and /dev/console."""
    return [
        initramfs.regular("bin/busybox", busybox, 0o755),
        initramfs.symlink("bin/sh", "busybox"),
        initramfs.regular("init", INIT_SCRIPT.encode(), 0o755),
        initramfs.directory("proc"),
        initramfs.directory("sys"),
        initramfs.directory("dev"),
        # The kernel opens /dev/console as init's stdin/stdout/stderr *before* running /init.
        # Without this node (major 5, minor 1) our echo would go nowhere.
        initramfs.chardev("dev/console", 5, 1),
        initramfs.chardev("dev/null", 1, 3, 0o666),
    ]


def ensure_probe_initramfs() -> Path:
    """Build the probe initramfs unless the cached one was built from the same inputs."""
    busybox = _read_busybox()
    key = hashlib.sha256(busybox + b"\0" + INIT_SCRIPT.encode()).hexdigest()
    image = initramfs_path()
    stamp = image.with_suffix(".json")
    if image.is_file() and stamp.is_file():
        try:
            recorded = json.loads(stamp.read_text())
        except ValueError:
            recorded = {}
        if recorded.get("inputs") == key and recorded.get("sha256") == _sha256(image):
            return image
    paths.ensure(image.parent)
    initramfs.write_newc_gz(probe_entries(busybox), image)
    stamp_data = {"inputs": key, "sha256": _sha256(image)}
    tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(stamp_data, indent=2, sort_keys=True) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, stamp)
    return image


def qemu_command(accel: str, kernel: KernelInfo | Path, initrd: Path, memory_mb: int = 256, *,
                 name: str = "", append: str = APPEND, extra: Sequence[str] = ()) -> list[str]:
    """The exact QEMU command line of a probe boot (shown in lessons, so keep it readable).

    ``guest_image`` boots its guests with the same line: its own ``name``, kernel command
    line (``append``) and ``extra`` arguments such as a ``-drive``.
    """
    if accel not in ("kvm", "tcg"):
        raise ValueError(f"accel must be 'kvm' or 'tcg', not {accel!r}")
    vmlinuz = kernel.vmlinuz if isinstance(kernel, KernelInfo) else Path(kernel)
    return [
        qemu_binary(),
        "-name", name or f"edu-probe-{accel}",
        "-accel", accel,
        "-m", str(memory_mb),
        "-nographic",  # no window; the serial port and QEMU's monitor share stdio
        "-no-reboot",  # a panic (panic=-1 reboots at once) makes QEMU exit instead of looping
        "-nic", "none",  # no network card: nothing to probe there, and no option ROM to load
        "-kernel", str(vmlinuz),
        "-initrd", str(initrd),
        "-append", append,
        *extra,
    ]  # fmt: skip


@dataclass
class QemuRun:
    """What one QEMU process printed, and when the lines we waited for appeared."""

    stdout: bytes  # the serial console
    stderr: bytes  # QEMU's own messages
    seen: dict[str, float]  # marker -> seconds from starting QEMU to its first complete line
    killed: bool  # we had to kill QEMU (a deadline passed)
    returncode: int  # QEMU's exit status (negative: killed by that signal)
    wall: float  # seconds from starting QEMU until it was gone


def run_qemu(cmd: list[str], timeout: float, markers: dict[str, float | None]) -> QemuRun:
    """Run QEMU and read its console until it exits or a deadline passes, then kill and reap.

    ``markers`` maps each line prefix to wait for to what happens once it is seen: a number
    of seconds QEMU still gets from then on (0: stop now), or None to keep the deadline.
    """
    chunks = {"stdout": bytearray(), "stderr": bytearray()}
    seen: dict[str, float] = {}
    killed = False
    start = time.monotonic()
    # If we are killed ourselves (SIGKILL: no finally runs), the kernel kills QEMU too.
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            preexec_fn=lambda: set_pdeathsig(signal.SIGKILL))
    try:
        open_fds = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}
        deadline = start + timeout
        # Read until QEMU closes both pipes (it exited) or the deadline passes.
        while open_fds:
            left = deadline - time.monotonic()
            if left <= 0:
                killed = True
                break
            ready, _, _ = select.select(list(open_fds), [], [], left)
            for fd in ready:
                chunk = os.read(fd, 65536)
                if chunk:
                    chunks[open_fds[fd]] += chunk
                else:
                    del open_fds[fd]  # EOF
            for marker, grace in markers.items():
                if marker not in seen and find_line(chunks["stdout"], marker) is not None:
                    seen[marker] = round(time.monotonic() - start, 3)
                    if grace is not None:
                        deadline = time.monotonic() + grace
    finally:
        # Whatever happened (timeout, Ctrl-C, a bug above): QEMU must not outlive this call.
        if proc.poll() is None:
            proc.kill()
        proc.wait()  # reaps it: no zombie left behind
        proc.stdout.close()
        proc.stderr.close()
    return QemuRun(bytes(chunks["stdout"]), bytes(chunks["stderr"]), seen, killed,
                   proc.returncode, round(time.monotonic() - start, 3))


def boot_raw(accel: str, timeout: float, kernel: KernelInfo | None = None) -> BootResult:
    """Boot the probe guest under ``accel`` ("kvm" or "tcg"); kill it if ``timeout`` passes."""
    kernel = kernel or _require_kernel()
    cmd = qemu_command(accel, kernel, ensure_probe_initramfs())
    run = run_qemu(cmd, timeout, {MARKER: POWEROFF_GRACE})
    line = find_line(run.stdout, MARKER)
    return BootResult(
        accel=accel,
        seen=line is not None,
        seconds=run.seen.get(MARKER),
        wall=run.wall,
        timeout=timeout,
        timed_out=run.killed and line is None,
        returncode=run.returncode,
        fields=parse_marker(line) if line else {},
        console=clean_console(run.stdout),
        stderr=run.stderr.decode(errors="replace").strip(),
    )


def parse_marker(line: str) -> dict:
    """Turn "EDU-PROBE-READY a=1 b=2" into {"a": "1", "b": "2"}."""
    words = line.split()
    if not words or words[0] != MARKER:
        raise ValueError(f"not a probe marker line: {line!r}")
    return dict(word.split("=", 1) for word in words[1:] if "=" in word)


def find_line(console: bytes, marker: str) -> str | None:
    """The first complete line on the console that starts with ``marker``, or None yet."""
    # Not anchored at a line start: SeaBIOS's "Booting from ROM.." ends without a newline.
    match = re.search(re.escape(marker.encode()) + rb"(?: [^\r\n]*)?(?=\r?\n)", console)
    return match.group(0).decode(errors="replace") if match else None


def clean_console(raw: bytes) -> str:
    """Decode the console and drop terminal escape sequences (SeaBIOS clears the screen)."""
    text = raw.decode(errors="replace").replace("\r\n", "\n")
    return re.sub(r"\x1b(\[[0-9;?]*[A-Za-z]|[A-Za-z])", "", text)


def _require_kernel() -> KernelInfo:
    """The fetched guest kernel, or a GuestError saying how to fetch it."""
    kernel = installed_kernel()
    if kernel is None:
        raise GuestError(
            "the guest kernel has not been fetched yet. "
            "Fix: run make lab (or `edu doctor --fetch`)."
        )
    return kernel


def _read_busybox() -> bytes:
    """The host's static busybox, which becomes the guest's whole userspace."""
    try:
        data = BUSYBOX.read_bytes()
    except OSError as err:
        raise GuestError(
            f"cannot read {BUSYBOX} ({err.strerror}). Fix: apt-get install busybox-static."
        ) from None
    if not _is_static_elf(data):
        raise GuestError(
            f"{BUSYBOX} is dynamically linked, but the probe guest has no C library for it. "
            "Fix: apt-get install busybox-static."
        )
    return data


def _is_static_elf(data: bytes) -> bool:
    """True for a 64-bit ELF with no PT_INTERP program header (no dynamic loader needed)."""
    if data[:5] != b"\x7fELF\x02":
        return False
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    pt_interp = 3
    types = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    return pt_interp not in types


def _sha256(path: Path) -> str:
    """Hex sha256 of a small file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
