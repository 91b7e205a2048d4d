"""Tests for vm_compare.guest_image: VMs that run the same image as the container.

Nothing is mocked: the images come from the edu store, the guests are built into the real
cache (so the full-disk guest, the slowest to build, is built once and reused by later
runs), and they boot for real under QEMU TCG. Every boot must leave no QEMU process,
zombie or temporary file behind, also when we kill it at a deadline. (Only QEMU processes
that are our children are counted: other tests may boot the same cached guests meanwhile.)

Measured on the course VM (2 cores, TCG, other test suites running beside it): the minimal
busybox guest builds in 0.4-1.3 s and prints its marker 12-18 s after QEMU starts (the guest's
uptime is then 4-5 s: before the kernel's clock starts, the emulated firmware loads it and it
decompresses itself). The full-disk debian guest builds in about 21 s the first time (apt-get
of systemd included; 7 s once edu build has cached that layer) and prints its marker,
multi-user.target reached, 32-60 s after QEMU starts (uptime 24-47 s). The timeouts below are
about three times that.
"""

from __future__ import annotations

import gzip
import os
import platform
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
from conftest import need
from test_vm_probes import qemu_children

from vm_compare import guest_image, initramfs, kernel_pkg

FULL_DISK_TIMEOUT = 180.0  # seconds: ~3x the 32-60 s the full-disk guest takes to its marker
MINIMAL_TIMEOUT = 60.0  # ~3x the 12-18 s of the minimal guest
HELLO = ["sh", "-c", "echo hello from $(hostname) on $(uname -r)"]


@pytest.fixture
def leaves_nothing():
    """The test leaves no QEMU child (or zombie), no build or boot temp dir, nothing in /tmp."""
    tmp_before = _tmp_entries()
    yield
    assert qemu_children() == []
    leftovers = [p.name for p in guest_image.guests_dir().iterdir()
                 if p.name.startswith((".tmp-", ".boot-"))]
    assert leftovers == []
    assert _tmp_entries() - tmp_before == set()


def _tmp_entries() -> set[str]:
    """What QEMU or a careless build could leave in /tmp or /var/tmp (vl.* is QEMU's)."""
    found = set()
    for tmp in ("/tmp", "/var/tmp"):
        found |= {f"{tmp}/{name}" for name in os.listdir(tmp)
                  if name.startswith(("vl.", "qemu", "edu", "guest", ".tmp-", ".boot-"))}
    return found


def _host_boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _unpack(initrd: Path, dest: Path) -> Path:
    """Unpack a gzipped newc initramfs with the real cpio tool, as root keeps owners."""
    dest.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], cwd=dest,
                   input=gzip.decompress(initrd.read_bytes()), check=True, capture_output=True)
    return dest


def _tree(root: Path) -> dict[str, tuple]:
    """path -> (type and mode, uid, gid, symlink target or file bytes) of every entry."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                what = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                what = path.read_bytes()
            else:
                what = None
            out[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, what)
    return out


# --- the minimal guest ----------------------------------------------------------------------


@pytest.mark.slow
def test_minimal_busybox_guest_boots_and_runs_the_command(kernel, busybox, leaves_nothing):
    files = guest_image.minimal("busybox", HELLO, progress=lambda _msg: None)
    assert files.kind == "minimal" and files.disk is None
    assert files.image_id == busybox.id
    assert files.kernel == kernel.vmlinuz
    assert files.command == HELLO
    assert "console=ttyS0" in files.cmdline and "printk.time=1" in files.cmdline
    boot = guest_image.boot_raw(files, timeout=MINIMAL_TIMEOUT)
    print(f"minimal busybox: built in {files.build_seconds} s, marker after "
          f"{boot.ready_seconds} s (guest uptime {boot.fields.get('uptime')} s)")
    assert boot.ready, f"no marker; console:\n{boot.console}\nstderr:\n{boot.stderr}"
    # Another kernel really booted: its own boot id, and the pinned release, not the host's.
    assert boot.fields["boot_id"] != _host_boot_id()
    assert len(boot.fields["boot_id"]) == 36
    assert boot.fields["uname"] == kernel.release != platform.release()
    assert float(boot.fields["uptime"]) > 0
    assert boot.output().strip() == f"hello from edu-guest on {kernel.release}"
    assert boot.exit_code == 0
    assert boot.returncode == 0  # the guest powered itself off
    assert not boot.timed_out
    assert qemu_children() == []  # QEMU exited and was reaped


def test_minimal_initramfs_is_the_image_plus_init(busybox, tmp_path, leaves_nothing):
    from edu_runtime.images.store import Store

    files = guest_image.minimal("busybox", HELLO, progress=lambda _msg: None)
    (layer,) = Store().lowerdirs(busybox)
    unpacked = _tree(_unpack(files.initrd, tmp_path / "initrd"))
    image = {path: info for path, info in _tree(layer).items()
             if not stat.S_ISCHR(info[0])}  # device nodes are not copied
    ours = {path: info for path, info in unpacked.items() if path not in image}
    assert sorted(ours) == [".edu", ".edu/busybox", ".edu/run", "dev/console", "init"]
    # Every file of the image, with its mode, owner, and bytes or link target.
    assert {path: unpacked[path] for path in image} == image
    assert stat.S_IMODE(unpacked["root"][0]) == 0o700  # modes are kept, not normalised
    run = unpacked[".edu/run"][3].decode()
    assert guest_image.MARKER in run and "/bin/sh -c" in run  # resolved on the image's PATH
    assert files.sizes["rootfs"] == sum(len(info[3]) for info in image.values()
                                        if stat.S_ISREG(info[0]))
    assert files.sizes["initrd"] == files.initrd.stat().st_size
    assert files.sizes["kernel"] == kernel_pkg.installed_kernel().vmlinuz.stat().st_size


def test_guest_is_cached_by_image_and_command(busybox, leaves_nothing):
    first = guest_image.minimal("busybox", HELLO, progress=lambda _msg: None)
    mtime = first.initrd.stat().st_mtime_ns
    start = time.monotonic()
    again = guest_image.minimal("busybox", HELLO, progress=lambda _msg: None)
    assert time.monotonic() - start < 1.0
    assert again.build_seconds == 0.0
    assert again.initrd == first.initrd and again.initrd.stat().st_mtime_ns == mtime
    other = guest_image.minimal("busybox", ["true"], progress=lambda _msg: None)
    assert other.initrd != first.initrd
    default = guest_image.minimal("busybox", progress=lambda _msg: None)
    assert default.command == ["sh"]  # the image's Cmd, as edu run would use it


def test_whiteouts_opaque_dirs_and_hardlinks_are_honoured(busybox, tmp_path, leaves_nothing):
    from edu_runtime.images import build
    from edu_runtime.images.store import Store

    # A RUN layer on top of busybox: a deleted file (a whiteout), a directory deleted and made
    # again (an opaque directory: nothing of the lower /usr shows through), and a hardlink.
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM busybox\n"
        "RUN rm /bin/vi && rm -rf /usr && mkdir -p /usr/edu && echo kept > /usr/edu/file"
        " && ln /usr/edu/file /usr/edu/link\n")
    store = Store()
    image = build.build(store, build.Options(context=context, quiet=True))
    assert len(store.lowerdirs(image)) == 2
    files = guest_image.minimal(image.id, ["cat", "/usr/edu/link"], progress=lambda _m: None)
    root = _unpack(files.initrd, tmp_path / "initrd")
    assert not (root / "bin/vi").exists() and not (root / "bin/vi").is_symlink()
    assert (root / "bin/sh").is_symlink()  # the rest of the lower layer is there
    assert sorted(p.name for p in (root / "usr").iterdir()) == ["edu"]
    assert (root / "usr/edu/file").read_text() == "kept\n"
    assert (root / "usr/edu/file").stat().st_ino == (root / "usr/edu/link").stat().st_ino
    assert (root / "usr/edu/file").stat().st_nlink == 2


def test_boot_timeout_kills_and_reaps_qemu(busybox, leaves_nothing):
    files = guest_image.minimal("busybox", ["sleep", "3600"], progress=lambda _msg: None)
    start = time.monotonic()
    boot = guest_image.boot_raw(files, timeout=1.0)
    assert time.monotonic() - start < 10
    assert boot.timed_out and not boot.ready and boot.exit_code is None
    assert boot.returncode == -9  # we killed it
    assert qemu_children() == []  # killed and reaped: no zombie


@pytest.mark.slow
def test_long_running_command_keeps_the_guest_up(kernel, busybox, leaves_nothing):
    files = guest_image.minimal("busybox", ["sleep", "3600"], progress=lambda _msg: None)
    boot = guest_image.boot_raw(files, timeout=35.0)
    assert boot.ready, f"no marker; console:\n{boot.console}"
    assert boot.ready_seconds < 25  # so the guest stayed up at least 10 s after its marker
    assert boot.exit_code is None and guest_image.EXIT_MARKER not in boot.console
    assert boot.timed_out and boot.returncode == -9
    assert qemu_children() == []  # killed and reaped: no zombie


def test_marker_parsing():
    line = "EDU-GUEST-READY boot_id=abc uname=6.1.0-1-amd64 uptime=2.5"
    assert guest_image.parse_ready(line) == {"boot_id": "abc", "uname": "6.1.0-1-amd64",
                                             "uptime": "2.5"}
    assert guest_image.parse_ready("[ 1.0] x\r EDU-GUEST-READY boot_id=b")["boot_id"] == "b"
    with pytest.raises(ValueError):
        guest_image.parse_ready("EDU-PROBE-READY boot_id=abc")


def test_initramfs_keeps_hardlinks_and_owners(tmp_path):
    source = tmp_path / "big"
    source.write_bytes(os.urandom(3 << 20))  # streamed from disk, not held in memory
    os.chmod(source, 0o4751)
    st = source.stat()
    entries = [initramfs.host_file("a/one", str(source), st),
               initramfs.hardlink("b/two", "a/one"),
               initramfs.Entry("owned", stat.S_IFDIR | 0o750, uid=1234, gid=5678)]
    archive = initramfs.write_newc(entries, tmp_path / "a.cpio")
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet"], stdin=archive.open("rb"), cwd=out, check=True,
                   capture_output=True)
    one, two = (out / "a/one").stat(), (out / "b/two").stat()
    assert one.st_ino == two.st_ino and one.st_nlink == 2
    assert (out / "a/one").read_bytes() == source.read_bytes()
    assert stat.S_IMODE(one.st_mode) == 0o4751
    if os.geteuid() == 0:  # only root's cpio gives files away
        owned = (out / "owned").stat()
        assert (owned.st_uid, owned.st_gid) == (1234, 5678)
    with pytest.raises(ValueError):
        initramfs.newc_bytes([initramfs.hardlink("x", "missing")])


# --- the full-disk guest --------------------------------------------------------------------


@pytest.mark.slow
def test_full_disk_guest_boots_systemd_to_multi_user(kernel, busybox, leaves_nothing):
    command = ["sh", "-c", "cat /proc/1/comm; systemctl is-system-running --wait; hostname"]
    files = guest_image.full_disk("debian", command, progress=print)
    assert files.kind == "full-disk" and files.disk is not None
    assert "root=/dev/vda" in files.cmdline
    info = subprocess.run(["qemu-img", "info", "--output=json", str(files.disk)],
                          capture_output=True, text=True, check=True).stdout
    assert '"format": "qcow2"' in info
    sizes = files.sizes
    assert sizes["disk_virtual"] > sizes["rootfs"] + sizes["modules"] + sizes["guest_os"]
    assert 0 < sizes["disk_actual"] < sizes["disk_virtual"]
    assert sizes["guest_os"] > 10 << 20  # systemd and its friends
    disk_before = (files.disk.stat().st_mtime_ns, files.disk.stat().st_size)

    boot = guest_image.boot_raw(files, timeout=FULL_DISK_TIMEOUT)
    print(f"full-disk debian: built in {files.build_seconds} s, marker after "
          f"{boot.ready_seconds} s (guest uptime {boot.fields.get('uptime')} s)")
    assert boot.ready, f"no marker; console:\n{boot.console}\nstderr:\n{boot.stderr}"
    assert boot.fields["boot_id"] != _host_boot_id()
    assert boot.fields["uname"] == kernel.release
    # systemd is PID 1, it reached its goal with no failed unit, and the disk is ours.
    assert boot.output().split() == ["systemd", "running", "edu-guest"], boot.console
    assert boot.exit_code == 0 and boot.returncode == 0 and not boot.timed_out
    assert guest_image.FAIL_MARKER not in boot.console
    # The boot wrote to a throw-away overlay: the cached disk is as it was built.
    assert (files.disk.stat().st_mtime_ns, files.disk.stat().st_size) == disk_before
    assert qemu_children() == []  # QEMU exited and was reaped


def test_failed_build_leaves_nothing_behind(busybox, leaves_nothing):
    # busybox has no apt-get, so adding systemd to it fails inside edu build's RUN.
    before = sorted(os.listdir(guest_image.guests_dir()))
    with pytest.raises(guest_image.GuestImageError, match="could not add systemd"):
        guest_image.full_disk("busybox", progress=lambda _msg: None)
    assert sorted(os.listdir(guest_image.guests_dir())) == before


@pytest.mark.slow
def test_full_disk_boot_timeout_kills_qemu_and_drops_its_overlay(busybox, leaves_nothing):
    files = guest_image.full_disk("debian", progress=print)  # cached by the test above
    boot = guest_image.boot_raw(files, timeout=2.0)
    assert boot.timed_out and not boot.ready and boot.returncode == -9
    assert qemu_children() == []  # and the fixture checks that the overlay's dir is gone


def test_guest_files_are_readable_by_libvirt_qemu(busybox, leaves_nothing):
    need(shutil.which("runuser") is not None, "runuser (util-linux) is missing")
    need(subprocess.run(["id", "libvirt-qemu"], capture_output=True).returncode == 0,
         "no libvirt-qemu user: libvirt-daemon-system is not installed")
    minimal = guest_image.minimal("busybox", HELLO, progress=lambda _msg: None)
    paths = [minimal.kernel, minimal.initrd]
    disks = sorted(guest_image.guests_dir().glob("disk-*/disk.qcow2"))
    paths += disks[:1]  # the full-disk test above built one (when it ran)
    for path in paths:
        check = subprocess.run(["runuser", "-u", "libvirt-qemu", "--", "head", "-c", "1",
                                str(path)], capture_output=True)
        assert check.returncode == 0, f"libvirt-qemu cannot read {path}: {check.stderr!r}"
