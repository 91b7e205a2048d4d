"""libvirt_guest and raw_qemu: real guests under libvirt and under raw QEMU, and nothing left.

No mocks: every boot here is a real QEMU started by the real libvirtd (TCG on a host where
KVM hangs), read through libvirt's console stream. The guest is a stand-in with the
contract ``guest_image`` gives its guests (a marker line with boot_id, uname and uptime,
then the command, then "EDU-GUEST-EXIT code=N" and power off): doctor's probe kernel and
busybox with our own /init. After every boot, including a timeout, an exception raised in
the ``with`` block, Ctrl-C and a caller killed outright, we look for what could leak: the
domain (``virsh list --all``), QEMU's process or its zombie, and per-boot files. One more
test boots guest_image's own minimal guest of the busybox image.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO, need

from edu_runtime import paths
from vm_compare import initramfs, libvirt_guest, probe_guest, probes, raw_qemu
from vm_compare.libvirt_guest import Boot, BootError, BootTimeout, Console

READY = "EDU-GUEST-READY"
# The probe guest's /init, given guest_image's contract: its marker, then the command, then
# the exit line, then power off.
INIT = probe_guest.INIT_SCRIPT.replace(probe_guest.MARKER, READY).replace(
    "poweroff -f", 'sh /command\necho "EDU-GUEST-EXIT code=$?"\npoweroff -f')
COMMAND = "echo hello from the guest\nexit 3\n"


def guest_files(**fields):
    """A GuestFiles, or an object of the same shape while guest_image is not written yet."""
    try:
        from vm_compare.guest_image import GuestFiles
    except ImportError:
        return SimpleNamespace(**fields)
    return GuestFiles(**fields)


@pytest.fixture(scope="module")
def uri():
    """libvirtd answers at the URI libvirt_guest uses."""
    facts = probes.libvirt_facts()
    need(facts["module"] and not facts["error"], f"libvirt unusable: {facts.get('error')}")
    return facts["uri"]


@pytest.fixture(scope="module")
def guest(uri, kernel):
    """The stand-in guest, its initramfs where libvirt's QEMU user can read it."""
    entries = [e for e in probe_guest.probe_entries(probe_guest._read_busybox())
               if e.path != "init"]
    entries += [initramfs.regular("init", INIT.encode(), 0o755),
                initramfs.regular("command", COMMAND.encode())]
    initrd = initramfs.write_newc_gz(entries, paths.ensure(paths.cache_dir() / "guest")
                                     / f"test-libvirt-guest-{os.getpid()}.img")
    yield guest_files(kind="minimal", image="probe", image_id="test", kernel=kernel.vmlinuz,
                      initrd=initrd, disk=None, marker=READY, command=["sh", "/command"],
                      cmdline="console=ttyS0 printk.time=1 panic=-1", sizes={},
                      build_seconds=0.0)
    initrd.unlink()


@pytest.fixture
def disk_guest(guest):
    """The same guest with a (blank) qcow2 disk, which it leaves alone."""
    disk = paths.cache_dir() / "guest" / f"test-libvirt-disk-{os.getpid()}.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    os.chmod(disk, 0o644)
    yield guest_files(**{**vars(guest), "kind": "full-disk", "disk": disk})
    disk.unlink()


def leftovers(uri: str, name: str, pid: int | None) -> list[str]:
    """Everything of boot ``name`` that is still there: domain, process, zombie, files."""
    found = []
    domains = subprocess.run(["virsh", "-c", uri, "list", "--all", "--name"],
                             capture_output=True, text=True, check=True).stdout.split()
    if name in domains:
        found.append(f"domain {name}")
    if pid is not None and Path(f"/proc/{pid}").exists():
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        found.append(f"process {pid} in state {state}")
    for proc in Path("/proc").iterdir():
        try:
            if f"guest={name},".encode() in (proc / "cmdline").read_bytes():
                found.append(f"process {proc.name} running {name}")
        except OSError:
            pass
    if uri.endswith("/system"):
        places = ["/run/libvirt", "/var/lib/libvirt", "/var/log/libvirt"]
    else:
        places = [Path.home() / ".cache/libvirt", Path.home() / ".config/libvirt",
                  Path(os.environ.get("XDG_RUNTIME_DIR", "/nonexistent")) / "libvirt"]
    for place in [*places, libvirt_guest.boots_dir()]:
        for root, dirs, files in os.walk(place):  # errors (a dir vanishing) are ignored
            found += [os.path.join(root, n) for n in dirs + files if name in n]
    return found + [str(p) for p in Path("/tmp").glob(f"*{name}*")]


def test_boot_under_libvirt(uri, guest, kernel):
    accel = libvirt_guest.choose_accel()
    with libvirt_guest.boot(guest) as b:
        assert b.via == "libvirt" and b.uri == uri and b.accel == accel
        assert b.name.startswith("edu-guest-")
        # type='kvm' only when doctor's probe boot under KVM worked; here KVM hangs: TCG.
        assert ET.fromstring(b.xml).get("type") == {"kvm": "kvm", "tcg": "qemu"}[accel]
        assert ET.fromstring(b.xml).find("devices/interface") is None
        assert b.marker_line.startswith(READY)
        # A kernel of its own: not the host's boot, and the guest kernel's release.
        assert b.boot_id and b.boot_id != probes.host_boot_id()
        assert b.uname == kernel.release
        assert b.qemu_pid and f"guest={b.name},".encode() in \
            Path(f"/proc/{b.qemu_pid}/cmdline").read_bytes()
        # What libvirt ran (from its log) is what domainXMLToNative, raw_qemu's source, says,
        # but for the monitor socket and key file of the running domain that adapt drops.
        _, native = raw_qemu.native_command(b.xml, uri)
        assert b.argv[0].endswith("qemu-system-x86_64") and "-S" in b.argv
        assert raw_qemu.adapt(b.argv)[0] == raw_qemu.adapt(native)[0]
        t = b.times
        assert 0 < t["create_call"] < t["first_byte"] <= t["init"] <= t["marker"]
        assert 0 < t["kernel_to_init"] < b.uptime
        assert t["init_to_marker"] == pytest.approx(b.uptime - t["kernel_to_init"])
        assert b.wait_exit(30) == 3
        assert "hello from the guest" in b.console.text
        name, pid = b.name, b.qemu_pid
    assert b.times["marker"] <= b.times["exit"]
    assert "qemu-system-x86_64" in b.qemu_log  # libvirt's log, read before it was deleted
    assert leftovers(uri, name, pid) == []


def test_guest_image_minimal_guest(uri, busybox):
    try:
        from vm_compare import guest_image
    except ImportError:
        need(False, "vm_compare.guest_image is not there yet")
    g = guest_image.minimal("busybox", ["sh", "-c", "echo from busybox; exit 7"],
                            progress=lambda _msg: None)
    with libvirt_guest.boot(g) as b:
        assert b.boot_id != probes.host_boot_id() and b.times["kernel_to_init"] > 0
        assert b.wait_exit(60) == 7
        assert "from busybox" in b.console.text
    assert leftovers(uri, b.name, b.qemu_pid) == []


def test_impossible_timeout_leaves_nothing(uri, guest):
    start = time.monotonic()
    with pytest.raises(BootTimeout) as caught:
        with libvirt_guest.boot(guest, accel="tcg", timeout=0.5):
            pytest.fail("the guest cannot reach its marker in 0.5 s")
    b = caught.value.boot
    assert time.monotonic() - start < 30  # not a whole boot (the create call may be slow)
    assert b.marker_line is None and "within" in str(caught.value)
    assert leftovers(uri, b.name, b.qemu_pid) == []


def test_exception_in_the_block_leaves_nothing(uri, disk_guest):
    before = Path(disk_guest.disk).read_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        with libvirt_guest.boot(disk_guest, accel="tcg") as b:
            disk = ET.fromstring(b.xml).find("devices/disk")
            assert disk.find("target").attrib == {"dev": "vda", "bus": "virtio"}
            overlay = Path(disk.find("source").get("file"))
            # The guest writes to a per-boot overlay, never to the image's own disk.
            assert overlay.parent == libvirt_guest.boots_dir() / b.name and overlay.exists()
            assert ET.fromstring(b.xml).findtext("memory") == "512"
            raise RuntimeError("boom")
    assert not overlay.parent.exists()
    assert Path(disk_guest.disk).read_bytes() == before
    assert leftovers(uri, b.name, b.qemu_pid) == []


def test_ctrl_c_while_booting_leaves_nothing(uri, guest):
    """Ctrl-C once QEMU runs the guest, whose marker never comes: the interrupt lands in the
    middle of the boot however fast this machine boots (no timer racing the boot)."""
    name = libvirt_guest.new_name()
    never = guest_files(**{**vars(guest), "marker": "EDU-NEVER-PRINTED"})

    def interrupt_once_running():
        deadline = time.monotonic() + 120
        while libvirt_guest.libvirt_qemu_pid(uri, name) is None:
            if time.monotonic() > deadline or stop.is_set():
                return
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    stop = threading.Event()
    sender = threading.Thread(target=interrupt_once_running, daemon=True)
    sender.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            with libvirt_guest.boot(never, accel="tcg", name=name, timeout=300):
                pytest.fail("the guest cannot print a marker it does not have")
    finally:
        stop.set()
        sender.join()
    assert leftovers(uri, name, None) == []


def test_cleanup_stale_removes_a_dead_callers_domain(uri, guest):
    name = libvirt_guest.new_name()
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        from types import SimpleNamespace
        from pathlib import Path
        from vm_compare import libvirt_guest
        g = SimpleNamespace(kernel=Path({str(guest.kernel)!r}), initrd=Path({str(guest.initrd)!r}),
                            disk=None, cmdline="console=ttyS0", marker="NEVER-PRINTED")
        with libvirt_guest.boot(g, accel="tcg", name={name!r}, timeout=300):
            pass
        """)], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while (pid := libvirt_guest.libvirt_qemu_pid(uri, name)) is None:
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.1)
        assert name not in libvirt_guest.cleanup_stale()  # its caller is alive: not stale
    finally:
        child.kill()
        child.wait()
    assert name in libvirt_guest.cleanup_stale()
    assert leftovers(uri, name, pid) == []


def test_raw_qemu_boots_the_same_guest_with_libvirts_argv(uri, guest):
    with raw_qemu.boot(guest, accel="tcg") as b:
        assert b.via == "raw qemu" and b.accel == "tcg"
        assert b.marker_line.startswith(READY)
        assert b.boot_id and b.boot_id != probes.host_boot_id()
        assert 0 < b.times["create_call"] < b.times["first_byte"] <= b.times["marker"]
        assert b.times["kernel_to_init"] > 0
        # The argv is libvirt's, changed only where it needs libvirt.
        _, native = raw_qemu.native_command(b.xml, uri)
        assert raw_qemu.adapt(native)[0] == b.argv
        assert "-S" in native and "-S" not in b.argv
        assert "-chardev" in b.argv and "stdio,id=charserial0" in b.argv
        assert [w for w in native if w not in b.argv] == [
            w for w in native if w == "-S" or "charmonitor" in w or "secret" in w
            or w in ("-mon", "-no-shutdown", "pty,id=charserial0")]
        assert b.argv[0] == native[0] and "-accel" in b.argv
        assert b.argv[b.argv.index("-accel") + 1] == "tcg"
        assert b.wait_exit(30) == 3
        name, pid = b.name, b.qemu_pid
    assert leftovers(uri, name, pid) == []


def test_raw_qemu_timeout_kills_and_reaps(uri, guest):
    with pytest.raises(BootTimeout) as caught:
        with raw_qemu.boot(guest, accel="tcg", timeout=0.5):
            pytest.fail("the guest cannot reach its marker in 0.5 s")
    b = caught.value.boot
    assert b.qemu_pid and leftovers(uri, b.name, b.qemu_pid) == []


# --- no boot: the XML, the phases, the permission check -------------------------------------


def test_domain_xml(guest, disk_guest):
    tcg = ET.fromstring(libvirt_guest.domain_xml(guest, name="edu-guest-x", accel="tcg"))
    assert tcg.get("type") == "qemu" and tcg.findtext("vcpu") == "1"
    assert tcg.find("memory").attrib == {"unit": "MiB"} and tcg.findtext("memory") == "256"
    assert tcg.findtext("os/kernel") == str(guest.kernel)
    assert tcg.findtext("os/initrd") == str(guest.initrd)
    assert tcg.findtext("os/cmdline") == guest.cmdline
    assert tcg.find("devices/serial").get("type") == "pty"
    assert tcg.find("devices/console/target").attrib == {"type": "serial", "port": "0"}
    assert tcg.find("devices/interface") is None and tcg.find("devices/disk") is None
    kvm = ET.fromstring(libvirt_guest.domain_xml(disk_guest, name="edu-guest-x", accel="kvm",
                                                 disk=Path("/x.qcow2")))
    assert kvm.get("type") == "kvm" and kvm.findtext("memory") == "512"
    assert kvm.find("devices/disk/source").get("file") == "/x.qcow2"


def test_phases_from_the_console():
    b = Boot(name="edu-guest-x", via="libvirt", uri="", accel="tcg", xml="",
             t0=time.monotonic(), console=Console())
    for line in (b"\x1b[2J", b"[    0.000000] Linux version 6.1.0\r\n",
                 b"[    1.250000] Run /init as init process\r\n",
                 f"{READY} boot_id=abc uname=6.1.0 uptime=1.75\r\n".encode()):
        b.console.feed(line)
    b.wait_marker(READY, time.monotonic() + 1)
    assert (b.boot_id, b.uname, b.uptime) == ("abc", "6.1.0", 1.75)
    assert b.times["kernel_to_init"] == 1.25 and b.times["init_to_marker"] == 0.5
    assert 0 <= b.times["first_byte"] <= b.times["init"] <= b.times["marker"]
    assert b.phases["total_to_marker"] == b.times["marker"]
    b.console.close()
    with pytest.raises(BootError, match="stopped before printing EDU-GUEST-EXIT"):
        b.wait_exit(5)


def test_unreadable_files_are_named_with_their_fix(tmp_path, guest):
    need(os.geteuid() == 0, "qemu:///system (root) runs QEMU as another user")
    hidden = tmp_path / "private"
    hidden.mkdir(mode=0o700)
    (hidden / "vmlinuz").write_bytes(b"")
    with pytest.raises(BootError, match=r"cannot read .*private.*chmod o\+x"):
        libvirt_guest.check_readable(guest_files(**{**vars(guest), "kernel": hidden / "vmlinuz"}),
                                     "qemu:///system")
    libvirt_guest.check_readable(guest, "qemu:///system")


def test_session_uri_as_a_plain_user(busybox, student):
    """Not root: `qemu:///session`, a real user's own libvirtd (started on demand by the
    client), boots the same guest files (they are world-readable) and leaves no domain."""
    import dataclasses
    import json

    from vm_compare import guest_image

    guest = guest_image.minimal("busybox", ["sleep", "3600"], progress=lambda s: None)
    spec = {k: (str(v) if isinstance(v, Path) else v)
            for k, v in dataclasses.asdict(guest).items()}
    spec_file = student.home / "guest.json"
    spec_file.write_text(json.dumps(spec))
    os.chown(spec_file, student.uid, student.gid)
    script = textwrap.dedent("""
        import json, os
        from pathlib import Path
        import libvirt
        from vm_compare import guest_image, libvirt_guest
        d = json.load(open(os.environ["GUEST"]))
        d["kernel"], d["initrd"], d["disk"] = Path(d["kernel"]), Path(d["initrd"]), None
        g = guest_image.GuestFiles(**d)
        with libvirt_guest.boot(g, uri="qemu:///session", accel="tcg") as b:
            print(os.getuid(), b.uri, b.boot_id)
        print(len(libvirt.open("qemu:///session").listAllDomains()))
    """)
    try:
        out = student.run([student.python, "-c", script], env={"GUEST": str(spec_file)})
    finally:
        spec_file.unlink()
    assert out.returncode == 0, out.stderr
    uid, uri, boot_id = out.stdout.splitlines()[0].split()
    assert (uid, uri) == (str(student.uid), "qemu:///session")
    assert boot_id != Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert out.stdout.splitlines()[1] == "0"
