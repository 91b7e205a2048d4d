"""Boot a guest under libvirt and time it from the host, byte by byte on its serial console.

The lessons compare a container with a VM "as people really run VMs", which means through
libvirt: it writes QEMU's command line, starts QEMU as its own user in its own cgroup and
mount namespace, talks to it over QMP, and relays the serial console. All of that costs
time, so every figure here names its event and its clock:

- host clock (``time.monotonic``, seconds since just before the create call): when the
  create call returned, when the first console byte arrived, when the kernel's "Run /init as
  init process" line arrived, and when the guest's marker line arrived;
- guest clocks: the kernel's printk time of that init line (``printk.time=1``), and the
  guest's own ``/proc/uptime`` printed in the marker line.

So a boot splits into phases: QEMU start to the first console byte; the kernel up to init
(printk); init up to the marker. ``raw_qemu`` boots the same guest with libvirt's own
command line and no libvirt, so the difference between the two is libvirt's own overhead.

How the console is read: QEMU's serial port is a pty that libvirtd relays to us through a
``virStream`` (``virDomainOpenConsole``). Bytes written while nobody holds the console are
dropped by QEMU, so the domain is created *paused*, the console opened, then the domain
resumed: no byte is lost and the first-byte time is real. The stream is non-blocking and read
from libvirt's event loop (``virEventRegisterDefaultImpl`` and one thread running
``virEventRunDefaultImpl``), which stamps each chunk the moment it arrives.

Nothing may outlive a boot: on any exit (normal, timeout, exception, Ctrl-C) the domain is
destroyed and undefined, the stream closed, QEMU's process checked gone (reaped, no zombie),
and the per-boot files deleted (libvirt's log of the domain and, for a disk guest, the
throwaway qcow2 overlay the guest writes to, so the image itself is never changed and two
boots of one image are alike). Domains are named ``edu-guest-<random>`` and carry their
owner's pid in their metadata, so ``cleanup_stale`` can remove those of callers that died.

KVM or TCG: ``type='kvm'`` only when doctor's probe boot under KVM reached its marker
(``/dev/kvm`` can exist while KVM guests hang), otherwise ``type='qemu'``, software emulation.

Introduced in notebooks/01-containers-vs-vms.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shlex
import shutil
import subprocess
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edu_runtime import kernel, paths
from vm_compare import probe_guest, probes

if TYPE_CHECKING:
    from vm_compare.guest_image import GuestFiles

PREFIX = "edu-guest-"
EXIT_MARKER = "EDU-GUEST-EXIT"
DOMAIN_TYPES = {"kvm": "kvm", "tcg": "qemu"}  # our accel name -> libvirt's domain type
TIMEOUTS = {"kvm": 30.0, "tcg": 120.0}  # default seconds to the marker
MEMORY_MIB = {"minimal": 256, "full-disk": 512}
GONE_TIMEOUT = 10.0  # how long QEMU may take to disappear after destroy
OWNER_NS = "https://github.com/edu-containers/vm_compare/owner"
INIT_LINES = [rb"Run \S+ as init process", rb"Freeing unused kernel image"]  # in that order

ET.register_namespace("edu", OWNER_NS)


class BootError(RuntimeError):
    """A guest did not boot as asked; ``boot`` holds what was seen (console, times)."""

    def __init__(self, message: str, boot: Boot | None = None):
        super().__init__(message)
        self.boot = boot


class BootTimeout(BootError):
    """The marker (or the exit line) did not appear before the deadline."""


class Console:
    """The bytes of a serial console, each chunk stamped (``time.monotonic``) on arrival."""

    def __init__(self) -> None:
        self.chunks: list[tuple[float, bytes]] = []
        self.closed = False
        self._data = bytearray()
        self._cond = threading.Condition()

    def feed(self, data: bytes) -> None:
        """Append bytes that just arrived (called from the reading thread)."""
        with self._cond:
            self.chunks.append((time.monotonic(), data))
            self._data += data
            self._cond.notify_all()

    def close(self) -> None:
        """No more bytes will come (QEMU is gone or the stream ended)."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    @property
    def raw(self) -> bytes:
        """Every byte so far."""
        with self._cond:
            return bytes(self._data)

    @property
    def text(self) -> str:
        """The console decoded, line ends normalised, escape sequences dropped."""
        return probe_guest.clean_console(self.raw)

    def arrival(self, offset: int) -> float | None:
        """When the chunk holding byte ``offset`` arrived, or None if it has not yet."""
        end = 0
        with self._cond:
            for at, data in self.chunks:
                end += len(data)
                if offset < end:
                    return at
        return None

    def wait_for(self, pattern: bytes, deadline: float) -> re.Match[bytes] | None:
        """The first match of ``pattern``, waiting until ``deadline`` or the console closes."""
        regex = re.compile(pattern)
        with self._cond:
            while True:
                found = regex.search(self._data)
                left = deadline - time.monotonic()
                if found or self.closed or left <= 0:
                    return found
                self._cond.wait(left)


@dataclass
class Boot:
    """One running guest: how it booted, on which clocks, and its console.

    ``times`` holds host seconds since just before the create call (``create_call``,
    ``first_byte``, ``init``, ``marker``, later ``exit``) and two guest-clock durations:
    ``kernel_to_init`` (printk time of the init line) and ``init_to_marker`` (the guest's
    uptime in the marker line minus that).
    """

    name: str
    via: str  # "libvirt" or "raw qemu"
    uri: str  # the libvirt connection used (for raw qemu: the one that wrote the argv)
    accel: str  # "kvm" or "tcg"
    xml: str  # the domain XML
    t0: float  # time.monotonic() just before the create call
    console: Console
    qemu_pid: int | None = None
    times: dict[str, float | None] = field(default_factory=dict)
    marker_line: str | None = None
    fields: dict[str, str] = field(default_factory=dict)  # key=value words of the marker
    boot_id: str | None = None  # the guest kernel's boot id (not the host's)
    uname: str | None = None  # the guest's uname -r
    uptime: float | None = None  # guest seconds since its kernel started, at the marker
    exit_code: int | None = None
    argv: list[str] = field(default_factory=list)  # the QEMU command line that ran
    changes: list[str] = field(default_factory=list)  # raw qemu: what was changed, and why
    qemu_log: str = ""  # libvirt's log of the domain, or QEMU's stderr

    def wait_marker(self, marker: str, deadline: float) -> None:
        """Wait for the marker line; fill in times, boot_id, uname and uptime."""
        pattern = re.escape(marker.encode()) + rb"(?:[ \t][^\r\n]*)?\r?\n"
        found = self.console.wait_for(pattern, deadline)
        if found is None:
            raise self._not_seen(marker, deadline)
        self.times["marker"] = self._since(found.end() - 1)
        self.marker_line = found.group(0).decode(errors="replace").strip()
        self.fields = dict(w.split("=", 1) for w in self.marker_line.split()[1:] if "=" in w)
        self.boot_id = self.fields.get("boot_id")
        self.uname = self.fields.get("uname")
        self.uptime = _float(self.fields.get("uptime"))
        self.times["first_byte"] = self._since(0)
        self._read_printk_init(self.console.raw[:found.start()])

    def wait_exit(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for the guest's "EDU-GUEST-EXIT code=N"; return N."""
        deadline = time.monotonic() + timeout
        found = self.console.wait_for(re.escape(EXIT_MARKER.encode()) + rb" code=(-?\d+)",
                                      deadline)
        if found is None:
            raise self._not_seen(EXIT_MARKER, deadline)
        self.times["exit"] = self._since(found.end() - 1)
        self.exit_code = int(found.group(1))
        return self.exit_code

    @property
    def phases(self) -> dict[str, float | None]:
        """Seconds of each phase: QEMU start to first byte, kernel to init, init to marker."""
        return {"start_to_first_byte": self.times.get("first_byte"),
                "kernel_to_init": self.times.get("kernel_to_init"),
                "init_to_marker": self.times.get("init_to_marker"),
                "total_to_marker": self.times.get("marker")}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (the console and log trimmed to their last 4000 characters)."""
        keys = ("name", "via", "uri", "accel", "qemu_pid", "times", "marker_line", "boot_id",
                "uname", "uptime", "exit_code", "argv", "changes")
        out = {k: getattr(self, k) for k in keys}
        out["phases"] = self.phases
        out["console"] = self.console.text[-4000:]
        out["qemu_log"] = self.qemu_log[-4000:]
        return out

    def _since(self, offset: int) -> float | None:
        """Host seconds from the create call to the arrival of console byte ``offset``."""
        at = self.console.arrival(offset)
        return None if at is None else at - self.t0

    def _read_printk_init(self, before_marker: bytes) -> None:
        """The kernel's printk time of its "Run /init" line, and when that line arrived."""
        for words in INIT_LINES:
            found = re.search(rb"\[\s*(\d+\.\d+)\] " + words, before_marker)
            if found:
                printk = float(found.group(1))
                self.times["init"] = self._since(found.end() - 1)
                self.times["kernel_to_init"] = printk
                if self.uptime is not None:
                    self.times["init_to_marker"] = round(self.uptime - printk, 6)
                return
        self.times["init"] = self.times["kernel_to_init"] = None  # e.g. "quiet" on the cmdline
        self.times["init_to_marker"] = None

    def _not_seen(self, marker: str, deadline: float) -> BootError:
        """The error for a marker that did not come: a timeout, or a guest that stopped."""
        tail = self.console.text[-1500:].strip() or "(nothing)"
        if self.console.closed and time.monotonic() < deadline:
            return BootError(f"{self.name} stopped before printing {marker}; "
                             f"its console ended with:\n{tail}", self)
        waited = time.monotonic() - self.t0
        return BootTimeout(f"{self.name} did not print {marker} within {waited:.1f} s of "
                           f"its start ({self.accel}); its console ended with:\n{tail}", self)


# --- choosing and describing the guest -------------------------------------------------------


def choose_accel() -> str:
    """Return "kvm" if doctor's probe boot under KVM worked (cached per host boot), else "tcg"."""
    verdict = probes.probe_kvm(progress=lambda _msg: None)
    accel = verdict.get("data", {}).get("accel")
    if accel not in DOMAIN_TYPES:
        raise BootError(f"no VM can boot here: {verdict['summary']}. Fix: {verdict['fix']}")
    return accel


def new_name() -> str:
    """A fresh domain name, ``edu-guest-<8 hex digits>``."""
    return PREFIX + secrets.token_hex(4)


def default_memory_mib(guest: GuestFiles) -> int:
    """256 MiB for an initramfs guest, 512 MiB for a full-disk guest."""
    return MEMORY_MIB["full-disk" if guest.disk is not None else "minimal"]


def domain_xml(guest: GuestFiles, *, name: str, accel: str, memory_mib: int | None = None,
               disk: Path | None = None) -> str:
    """The domain XML: direct kernel boot, serial console, no network, 1 vCPU."""
    dom = ET.Element("domain", type=DOMAIN_TYPES[accel])
    ET.SubElement(dom, "name").text = name
    # Derived from the name, so that libvirt writes the same command line for the same XML.
    ET.SubElement(dom, "uuid").text = str(uuid.uuid5(uuid.NAMESPACE_URL, OWNER_NS + "/" + name))
    metadata = ET.SubElement(dom, "metadata")
    ET.SubElement(metadata, f"{{{OWNER_NS}}}owner", owner=owner_tag())
    ET.SubElement(dom, "memory", unit="MiB").text = str(memory_mib or default_memory_mib(guest))
    ET.SubElement(dom, "vcpu").text = "1"
    os_ = ET.SubElement(dom, "os")
    ET.SubElement(os_, "type", arch="x86_64", machine="pc").text = "hvm"
    ET.SubElement(os_, "kernel").text = str(guest.kernel)
    ET.SubElement(os_, "initrd").text = str(guest.initrd)
    ET.SubElement(os_, "cmdline").text = guest.cmdline
    # Without ACPI the guest's `poweroff -f` cannot switch the machine off.
    ET.SubElement(ET.SubElement(dom, "features"), "acpi")
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        ET.SubElement(dom, event).text = "destroy"
    devices = ET.SubElement(dom, "devices")
    if disk is not None:
        d = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(d, "driver", name="qemu", type="qcow2")
        ET.SubElement(d, "source", file=str(disk))
        ET.SubElement(d, "target", dev="vda", bus="virtio")
    serial = ET.SubElement(devices, "serial", type="pty")
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(devices, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")
    # Nothing else: libvirt would add a USB controller and a balloon device by default.
    ET.SubElement(devices, "controller", type="usb", model="none")
    ET.SubElement(devices, "memballoon", model="none")
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode")


def check_readable(guest: GuestFiles, uri: str) -> None:
    """Raise a BootError saying what to fix if QEMU (under ``uri``) cannot read the files."""
    files = [guest.kernel, guest.initrd] + ([guest.disk] if guest.disk is not None else [])
    for f in files:
        if not Path(f).is_file():
            raise BootError(f"{f}, which the guest boots from, does not exist. Fix: build the "
                            f"guest again (guest_image.minimal or full_disk).")
    if uri.endswith("/session"):
        for f in files:
            if not os.access(f, os.R_OK):
                raise BootError(f"cannot read {f}, which the guest boots from. "
                                f"Fix: chmod u+r {f}, or build the guest again.")
        return
    user = qemu_user()
    for f in files:
        problem = _unreadable_by(Path(f), user)
        if problem:
            raise BootError(
                f"libvirt at {uri} runs QEMU as {user.pw_name}, which cannot read {f}: "
                f"{problem}. Fix: keep guest files under {paths.cache_dir()} (guest_image "
                f"does), or grant read access along the path (chmod o+x on directories, "
                f"o+r on the file).")


def qemu_user() -> pwd.struct_passwd:
    """The user qemu:///system runs QEMU as (qemu.conf's ``user``, Debian's libvirt-qemu)."""
    name = "libvirt-qemu"
    try:
        conf = Path("/etc/libvirt/qemu.conf").read_text()
    except OSError:
        conf = ""
    found = re.search(r'^\s*user\s*=\s*"\+?([^"]+)"', conf, re.M)
    name = found.group(1) if found else name
    try:
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise BootError(f"libvirt's QEMU user {name} does not exist. "
                        f"Fix: apt-get install libvirt-daemon-system (make lab does).") from None


def kvm_device_note() -> str | None:
    """Why libvirt may re-probe QEMU on every call (seconds each), or None.

    libvirt caches what QEMU can do, and throws the cache away when KVM looks usable to
    QEMU's probe but ``/dev/kvm`` is not readable and writable by QEMU's user. On a host
    without udev ``/dev/kvm`` stays root-only, and every create call re-probes, many times.
    """
    kvm = Path("/dev/kvm")
    if os.geteuid() != 0 or not kvm.exists():
        return None
    user = qemu_user()
    st = kvm.stat()
    if _may(st, user, 0o6):
        return None
    return (f"/dev/kvm is mode {st.st_mode & 0o777:o} owned by uid {st.st_uid} gid "
            f"{st.st_gid}, so libvirt's QEMU user {user.pw_name} cannot open it and libvirt "
            f"re-probes QEMU on every call (seconds per boot, even under TCG). Fix: chgrp kvm "
            f"/dev/kvm && chmod 660 /dev/kvm (what udev does on a normal Debian host).")


# --- booting ---------------------------------------------------------------------------------


@contextmanager
def boot(guest: GuestFiles, *, uri: str | None = None, accel: str | None = None,
         timeout: float | None = None, name: str | None = None,
         memory_mib: int | None = None) -> Iterator[Boot]:
    """Boot ``guest`` under libvirt, yield it once its marker is seen, then destroy it."""
    uri = uri or probes.libvirt_uri()
    accel = accel or choose_accel()
    name = name or new_name()
    if not name.startswith(PREFIX):
        raise ValueError(f"domain names must start with {PREFIX!r} (cleanup_stale finds them)")
    check_readable(guest, uri)
    libvirt, conn = connect(uri)
    workdir = disk = stream = None
    b = Boot(name=name, via="libvirt", uri=uri, accel=accel, xml="", t0=0.0, console=Console())
    try:
        workdir, disk = make_workdir(name, guest)
        b.xml = domain_xml(guest, name=name, accel=accel, memory_mib=memory_mib, disk=disk)
        b.t0 = time.monotonic()
        # Paused, so that nothing is printed before we hold the console (QEMU drops it).
        dom = conn.createXML(b.xml, libvirt.VIR_DOMAIN_START_PAUSED)
        b.times["create_call"] = time.monotonic() - b.t0
        stream = _open_console(libvirt, conn, dom, b.console)
        dom.resume()
        b.times["resumed"] = time.monotonic() - b.t0
        b.qemu_pid = libvirt_qemu_pid(uri, name)
        b.argv = logged_argv(uri, name)
        b.wait_marker(guest.marker, b.t0 + (timeout or TIMEOUTS[accel]))
        yield b
    except BaseException:
        _stop(libvirt, conn, b, stream, workdir)
        raise
    problems = _stop(libvirt, conn, b, stream, workdir)
    if problems:
        raise BootError("; ".join(problems), b)


def cleanup_stale(uri: str | None = None) -> list[str]:
    """Destroy and undefine ``edu-guest-*`` domains (and raw QEMUs) whose caller died."""
    uri = uri or probes.libvirt_uri()
    removed = []
    libvirt, conn = connect(uri)
    try:
        for dom in conn.listAllDomains(0):
            name = dom.name()
            if name.startswith(PREFIX) and not _alive(_domain_owner(dom)):
                pid = libvirt_qemu_pid(uri, name)
                _remove_domain(libvirt, conn, name)
                if pid:
                    gone(pid)
                _libvirt_log(uri, name).unlink(missing_ok=True)
                removed.append(name)
    finally:
        conn.close()
    removed += _kill_stale_raw_qemus()
    for owner in sorted(boots_dir().glob(PREFIX + "*/owner")):
        if not _alive(owner.read_text()):
            shutil.rmtree(owner.parent, ignore_errors=True)
    return removed


#: How a lesson's reset removes a guest it noted (``Lesson.made(guest=NAME, undo=UNDO)``): the
#: notebook layer is part of the engine, which never imports vm_compare, so the ledger names it.
UNDO = "vm_compare.libvirt_guest:remove_guest"


def remove_guest(name: str, uri: str | None = None) -> bool:
    """Destroy and undefine guest ``name`` if it exists (a lesson's reset); True if it did.

    Only ``edu-guest-*`` domains: a reset must never touch a guest this course did not make.
    Its QEMU is waited for, and its per-boot files (libvirt's log, a disk overlay) go too.
    """
    if not name.startswith(PREFIX):
        raise ValueError(f"{name!r} is not a guest of this course (their names start with "
                         f"{PREFIX!r}); remove it with virsh destroy and virsh undefine")
    uri = uri or probes.libvirt_uri()
    libvirt, conn = connect(uri)
    try:
        try:
            conn.lookupByName(name)
            found = True
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            found = False
        pid = libvirt_qemu_pid(uri, name) if found else None
        if found:
            _remove_domain(libvirt, conn, name)
    finally:
        conn.close()
    if pid:
        gone(pid)
    _libvirt_log(uri, name).unlink(missing_ok=True)
    shutil.rmtree(boots_dir() / name, ignore_errors=True)
    return found


def completed_xml(guest: GuestFiles, *, accel: str | None = None, uri: str | None = None
                  ) -> str:
    """The guest's domain XML as libvirt completes it (the emulator, the machine type, the
    CPU model it fills in): defined, read back and undefined at once; nothing boots."""
    uri = uri or probes.libvirt_uri()
    accel = accel or choose_accel()
    name = new_name()
    libvirt, conn = connect(uri)
    try:
        dom = conn.defineXML(domain_xml(guest, name=name, accel=accel))
        try:
            return dom.XMLDesc(0)
        finally:
            _remove_domain(libvirt, conn, name)
    finally:
        conn.close()


def boots_dir() -> Path:
    """Where per-boot files live (a disk guest's overlay); QEMU's user can read it."""
    return paths.cache_dir() / "boots"


def make_workdir(name: str, guest: GuestFiles) -> tuple[Path | None, Path | None]:
    """For a disk guest: a per-boot dir with a qcow2 overlay on the guest's disk."""
    if guest.disk is None:
        return None, None
    workdir = paths.ensure(boots_dir()) / name
    workdir.mkdir()
    os.chmod(workdir, 0o755)  # QEMU runs as another user under qemu:///system
    (workdir / "owner").write_text(owner_tag())
    overlay = workdir / "disk.qcow2"
    made = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
                           "-b", str(Path(guest.disk).resolve()), str(overlay)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        raise BootError(f"qemu-img could not put an overlay on {guest.disk}: "
                        f"{made.stderr.strip()}")
    return workdir, overlay


def gone(pid: int, timeout: float = GONE_TIMEOUT) -> bool:
    """Wait until process ``pid`` no longer exists (a zombie still counts as existing)."""
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# --- libvirt plumbing ------------------------------------------------------------------------

_events_lock = threading.Lock()
_events_running = False


def connect(uri: str):
    """``(libvirt module, connection to uri)``, with libvirt's event loop running."""
    global _events_running
    import libvirt  # lazy: importing it costs start-up time every CLI call would pay

    with _events_lock:
        if not _events_running:
            # Without this, libvirt prints every error to stderr itself, before we explain it.
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
            libvirt.virEventRegisterDefaultImpl()  # before any connection is opened
            threading.Thread(target=_run_events, args=(libvirt,), name="libvirt-events",
                             daemon=True).start()
            _events_running = True
    try:
        return libvirt, libvirt.open(uri)
    except libvirt.libvirtError as err:
        raise BootError(f"cannot connect to libvirt at {uri}: {err}. "
                        f"Fix: {probes.LIBVIRTD_FIX}") from None


def _run_events(libvirt) -> None:
    """The event loop thread: it runs the console callbacks (and keepalives) forever."""
    while True:
        libvirt.virEventRunDefaultImpl()


def _open_console(libvirt, conn, dom, console: Console):
    """A non-blocking stream on the domain's serial console, feeding ``console``."""
    stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
    dom.openConsole(None, stream, 0)
    events = (libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR
              | libvirt.VIR_STREAM_EVENT_HANGUP)

    def readable(st, event: int, _opaque) -> None:
        data: Any = b""
        if event & libvirt.VIR_STREAM_EVENT_READABLE:
            try:
                data = st.recv(65536)
            except libvirt.libvirtError:
                data = b""
            if data == -2:  # nothing after all (EAGAIN)
                return
            if data:
                console.feed(data)
                return
        # End of stream, hang-up or error: QEMU is gone, or the stream was closed.
        console.close()
        try:
            st.eventRemoveCallback()
        except libvirt.libvirtError:
            pass

    stream.eventAddCallback(events, readable, None)
    return stream


def _stop(libvirt, conn, b: Boot, stream, workdir: Path | None) -> list[str]:
    """Close the console, destroy and undefine the domain, check QEMU is gone, tidy up."""
    problems = []
    if stream is not None:
        for close in (stream.eventRemoveCallback, stream.abort):
            try:
                close()
            except libvirt.libvirtError:
                pass
    b.console.close()
    try:
        _remove_domain(libvirt, conn, b.name)
    except libvirt.libvirtError as err:
        problems.append(f"could not destroy {b.name}: {err}")
    finally:
        conn.close()
    if b.qemu_pid and not gone(b.qemu_pid):
        problems.append(_still_there(b.qemu_pid))
    log = _libvirt_log(b.uri, b.name)
    try:
        b.qemu_log = log.read_text(errors="replace")
        log.unlink()
    except OSError:
        pass
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)
    return problems


def _remove_domain(libvirt, conn, name: str) -> None:
    """Destroy (if running) and undefine (if defined) the domain ``name``, if it exists."""
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return
        raise
    for step, needed in ((dom.destroy, dom.isActive), (dom.undefine, dom.isPersistent)):
        try:
            if needed():
                step()
        except libvirt.libvirtError as err:
            # It powered itself off (a transient domain then vanishes) in between: fine.
            if err.get_error_code() not in (libvirt.VIR_ERR_NO_DOMAIN,
                                            libvirt.VIR_ERR_OPERATION_INVALID):
                raise


def libvirt_qemu_pid(uri: str, name: str) -> int | None:
    """The pid of domain ``name``'s QEMU, from libvirt's pid file (None if not running)."""
    if uri.endswith("/system"):
        pidfile = Path("/run/libvirt/qemu") / f"{name}.pid"
    else:
        runtime = os.environ.get("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}")
        pidfile = Path(runtime) / "libvirt" / "qemu" / "run" / f"{name}.pid"
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def logged_argv(uri: str, name: str) -> list[str]:
    """The QEMU command line libvirt ran for domain ``name``, from its log ([] if none)."""
    try:
        log = _libvirt_log(uri, name).read_text(errors="replace")
    except OSError:
        return []
    lines = []
    # The last start: one word or option per line, each but the last ending in " \".
    for line in log.rsplit(" starting up ", 1)[-1].splitlines()[1:]:
        lines.append(line.removesuffix("\\"))
        if not line.endswith("\\"):
            break
    return split_command(" ".join(lines))[1]


def split_command(text: str) -> tuple[dict[str, str], list[str]]:
    """A shell command line with leading ``VAR=value`` words, as (environment, argv)."""
    words = shlex.split(text)
    env = {}
    while words and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    return env, words


def _libvirt_log(uri: str, name: str) -> Path:
    """libvirt's log of the domain: its QEMU command line and QEMU's stderr."""
    if uri.endswith("/system"):
        return Path("/var/log/libvirt/qemu") / f"{name}.log"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "libvirt" / "qemu" / "log" / f"{name}.log"


def _domain_owner(dom) -> str:
    """The ``pid:starttime`` recorded in the domain's metadata ("" if none)."""
    try:
        found = ET.fromstring(dom.XMLDesc(0)).find(f"metadata/{{{OWNER_NS}}}owner")
    except ET.ParseError:
        return ""
    return found.get("owner", "") if found is not None else ""


def _kill_stale_raw_qemus() -> list[str]:
    """SIGKILL raw QEMUs (tagged EDU_GUEST_OWNER by raw_qemu) whose caller died."""
    killed = []
    for proc in Path("/proc").iterdir():
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for var in environ:
            if var.startswith(b"EDU_GUEST_OWNER=") and not _alive(var.split(b"=", 1)[1].decode()):
                try:
                    os.kill(int(proc.name), 9)
                    killed.append(f"raw qemu pid {proc.name}")
                except (OSError, ValueError):
                    pass
    return killed


# --- processes and permissions ---------------------------------------------------------------


def owner_tag() -> str:
    """This process as ``pid:starttime``: a pid alone could be reused by another process."""
    return f"{os.getpid()}:{kernel.start_time(os.getpid())}"


def _alive(owner: str) -> bool:
    """Whether the process ``pid:starttime`` still runs."""
    pid, _, started = owner.partition(":")
    return pid.isdigit() and started != "" and kernel.pid_alive(int(pid), started)


def _still_there(pid: int) -> str:
    """Why QEMU's process is still there after it was stopped: a zombie, or alive."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return f"QEMU pid {pid} is gone now"
    state = re.search(r"^State:\s*(\S)", status, re.M)
    ppid = re.search(r"^PPid:\s*(\d+)", status, re.M)
    parent = ppid.group(1) if ppid else "?"
    if state and state.group(1) == "Z":
        return (f"QEMU pid {pid} is a zombie: its parent (pid {parent}) does not reap it. "
                f"Fix: run libvirtd under a subreaper (scripts/services.sh starts it under "
                f"tini -s)")
    return f"QEMU pid {pid} (parent {parent}) still runs {GONE_TIMEOUT:g} s after destroy"


def _unreadable_by(path: Path, user: pwd.struct_passwd) -> str | None:
    """Why ``user`` cannot read ``path`` (a directory it cannot enter, or the file), or None."""
    resolved = path.resolve()
    for d in reversed(resolved.parents):
        if not _may(d.stat(), user, 0o1):
            return f"directory {d} is mode {d.stat().st_mode & 0o777:o}"
    if not _may(resolved.stat(), user, 0o4):
        return f"the file is mode {resolved.stat().st_mode & 0o777:o}"
    return None


def _may(st: os.stat_result, user: pwd.struct_passwd, bits: int) -> bool:
    """Whether ``user`` has all of ``bits`` (4 read, 2 write, 1 execute) on a file."""
    if user.pw_uid == 0:
        return True
    if st.st_uid == user.pw_uid:
        shift = 6
    elif st.st_gid in os.getgrouplist(user.pw_name, user.pw_gid):
        shift = 3
    else:
        shift = 0
    return (st.st_mode >> shift) & bits == bits


def _float(text: str | None) -> float | None:
    """``float(text)``, or None for a missing or malformed value."""
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
