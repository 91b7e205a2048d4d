"""Tests for vm_compare's foundation: the cpio writer, the probe guest, and the doctor probes.

Nothing here mocks QEMU: the probe guest really boots (under TCG, which works everywhere), and
the archive writer is checked against the real ``cpio`` tool. Only the verdict functions get
invented facts, because no single host can show "KVM works", "KVM hangs" and "nothing boots".
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
from conftest import need

from vm_compare import initramfs, probe_guest, probes
from vm_compare.probe_guest import BootResult


@pytest.fixture
def cache_dir(tmp_path, monkeypatch, kernel):
    """A private cache dir for doctor verdicts that still sees the real guest kernel."""
    # Link the fetched kernel in, so the test does not download it again.
    guest = tmp_path / "cache" / "guest" / "kernel"
    guest.mkdir(parents=True)
    (guest / kernel.root.name).symlink_to(kernel.root)
    monkeypatch.setenv("EDU_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


# --- initramfs: the newc writer against the real cpio tool -----------------------------------


def sample_entries() -> list[initramfs.Entry]:
    return [
        initramfs.regular("init", b"#!/bin/sh\necho hi\n", 0o755),
        initramfs.regular("etc/motd", b"odd length!"),  # exercises the 4-byte padding
        initramfs.regular("empty", b""),
        initramfs.directory("proc", 0o555),
        initramfs.symlink("bin/sh", "busybox"),
        initramfs.regular("bin/busybox", bytes(range(256)) * 3, 0o755),
        initramfs.chardev("dev/console", 5, 1),
    ]


def test_newc_lists_with_cpio(tmp_path):
    archive = initramfs.write_newc(sample_entries(), tmp_path / "a.cpio")
    listing = subprocess.run(
        ["cpio", "-it", "--quiet"], stdin=archive.open("rb"), capture_output=True, check=True
    )
    names = listing.stdout.decode().split()
    # Sorted, with the parents ("bin", "dev", "etc") added automatically.
    assert names == [
        "bin", "bin/busybox", "bin/sh", "dev", "dev/console", "empty", "etc", "etc/motd",
        "init", "proc",
    ]  # fmt: skip


def test_newc_extracts_with_cpio(tmp_path):
    archive = initramfs.write_newc(sample_entries(), tmp_path / "a.cpio")
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(
        ["cpio", "-idm", "--quiet", "--no-absolute-filenames"],
        stdin=archive.open("rb"),
        cwd=out,
        check=True,
        capture_output=True,
    )
    assert (out / "init").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert stat.S_IMODE((out / "init").stat().st_mode) == 0o755
    assert (out / "etc/motd").read_bytes() == b"odd length!"
    assert stat.S_IMODE((out / "etc/motd").stat().st_mode) == 0o644
    assert (out / "empty").read_bytes() == b""
    assert (out / "bin/busybox").read_bytes() == bytes(range(256)) * 3
    assert os.readlink(out / "bin/sh") == "busybox"
    assert stat.S_IMODE((out / "proc").stat().st_mode) == 0o555
    assert (out / "init").stat().st_mtime == initramfs.MTIME
    if os.geteuid() == 0:  # only root may mknod
        console = (out / "dev/console").stat()
        assert stat.S_ISCHR(console.st_mode)
        assert (os.major(console.st_rdev), os.minor(console.st_rdev)) == (5, 1)


def test_newc_is_deterministic(tmp_path):
    shuffled = list(reversed(sample_entries()))
    a = initramfs.write_newc_gz(sample_entries(), tmp_path / "a.img").read_bytes()
    b = initramfs.write_newc_gz(shuffled, tmp_path / "b.img").read_bytes()
    assert a == b


def test_newc_rejects_bad_paths():
    with pytest.raises(ValueError):
        initramfs.regular("../escape", b"")
    with pytest.raises(ValueError):
        initramfs.newc_bytes([initramfs.regular("x", b"1"), initramfs.regular("/x", b"2")])


# --- the probe guest, booted for real -------------------------------------------------------


def qemu_children() -> list[str]:
    """Processes (zombies included) whose parent is this test process."""
    me = str(os.getpid())
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:  # fields: state, ppid, ...
            found.append(f"{pid} state={fields[0]}")
    return found


def qemu_using(initrd: Path) -> list[str]:
    """PIDs of any process whose command line mentions the probe initramfs."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if str(initrd).encode() in cmdline and b"qemu" in cmdline:
            found.append(pid)
    return found


@pytest.mark.slow
def test_probe_guest_boots_under_tcg(kernel):
    boot = probe_guest.boot_raw("tcg", timeout=90, kernel=kernel)
    assert boot.seen, f"no marker; console:\n{boot.console}\nstderr:\n{boot.stderr}"
    assert 0 < boot.seconds < 90
    host_boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    # A different kernel really booted: its own boot id, and the pinned release, not the host's.
    assert boot.fields["boot_id"] != host_boot_id
    assert len(boot.fields["boot_id"]) == 36
    assert boot.fields["uname"] == kernel.release
    assert boot.fields["uname"] != platform.release()
    assert float(boot.fields["uptime"]) > 0
    assert boot.returncode == 0  # poweroff -f made QEMU exit by itself
    assert not boot.timed_out
    assert qemu_children() == []


def test_boot_timeout_kills_and_reaps_qemu(cache_dir, kernel):
    # A private cache dir gives this test its own initramfs path, so a probe guest that some
    # other process boots at the same time (edu doctor, a parallel test run) is not counted.
    initrd = probe_guest.ensure_probe_initramfs()
    assert initrd.is_relative_to(cache_dir)
    start = time.monotonic()
    boot = probe_guest.boot_raw("tcg", timeout=0.5, kernel=kernel)
    assert time.monotonic() - start < 5
    assert not boot.seen and boot.seconds is None and boot.timed_out
    assert boot.returncode == -9  # we killed it
    assert qemu_children() == []  # reaped: no zombie
    assert qemu_using(initrd) == []  # and nothing still running
    leftovers = [p.name for p in initrd.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_probe_initramfs_is_cached():
    image = probe_guest.ensure_probe_initramfs()
    before = (image.stat().st_mtime_ns, image.read_bytes())
    again = probe_guest.ensure_probe_initramfs()
    assert again == image
    assert (image.stat().st_mtime_ns, image.read_bytes()) == before


def test_marker_parsing():
    fields = probe_guest.parse_marker("EDU-PROBE-READY boot_id=abc uname=6.1.0-1-amd64 uptime=2.5")
    assert fields == {"boot_id": "abc", "uname": "6.1.0-1-amd64", "uptime": "2.5"}
    with pytest.raises(ValueError):
        probe_guest.parse_marker("something else")


# --- verdicts over injected facts -----------------------------------------------------------


def fake_boot(accel: str, seen: bool, seconds=None, timed_out=False, rc=0, stderr="") -> BootResult:
    return BootResult(
        accel=accel,
        seen=seen,
        seconds=seconds,
        wall=seconds or 12.0,
        timeout=12.0 if accel == "kvm" else 60.0,
        timed_out=timed_out,
        returncode=rc,
        stderr=stderr,
    )


def test_verdict_kvm_ok():
    v = probes.kvm_verdict(fake_boot("kvm", True, 0.4), fake_boot("tcg", True, 6.5))
    assert v["status"] == "pass"
    assert v["data"]["accel"] == "kvm"
    assert "0.4 s" in v["summary"]
    assert v["fix"] is None


def test_verdict_kvm_hangs_tcg_ok():
    v = probes.kvm_verdict(
        fake_boot("kvm", False, timed_out=True, rc=-9), fake_boot("tcg", True, 6.5)
    )
    assert v["status"] == "warn"
    assert v["data"]["accel"] == "tcg"
    assert "KVM unusable (guest did not reach its marker in 12 s), using TCG" in v["summary"]
    assert v["fix"]


def test_verdict_kvm_refused_tcg_ok():
    kvm = fake_boot("kvm", False, rc=1, stderr="qemu-system-x86_64: failed to initialize kvm: "
                    "Permission denied")  # fmt: skip
    v = probes.kvm_verdict(kvm, fake_boot("tcg", True, 6.5))
    assert v["status"] == "warn"
    assert "Permission denied" in v["summary"]


def test_verdict_nothing_boots():
    v = probes.kvm_verdict(
        fake_boot("kvm", False, timed_out=True, rc=-9),
        fake_boot("tcg", False, timed_out=True, rc=-9),
    )
    assert v["status"] == "fail"
    assert v["data"]["accel"] is None
    assert v["fix"]
    assert probes.kvm_verdict(None, None)["status"] == "fail"


# --- probe_kvm end to end, and its per-boot cache -------------------------------------------


def test_probe_kvm_without_kernel(tmp_path, monkeypatch):
    monkeypatch.setenv("EDU_CACHE_DIR", str(tmp_path / "empty-cache"))
    v = probes.probe_kvm()
    assert v["status"] == "fail"
    assert "make lab" in v["fix"]


@pytest.mark.slow
def test_probe_kvm_runs_once_then_uses_cache(cache_dir):
    first = probes.probe_kvm(progress=lambda _msg: None)
    assert first["status"] in ("pass", "warn"), first["summary"]
    assert first["data"]["cached"] is False
    assert first["data"]["accel"] in ("kvm", "tcg")
    cache = probes.kvm_cache_path()
    assert cache.is_relative_to(cache_dir)
    content = cache.read_bytes()
    assert json.loads(content)["key"]["host_boot_id"] == probes.host_boot_id()

    start = time.monotonic()
    second = probes.probe_kvm(progress=lambda _msg: None)
    assert time.monotonic() - start < 2  # no boot: a TCG boot alone takes several seconds
    assert second["data"]["cached"] is True
    assert cache.read_bytes() == content
    assert {k: v for k, v in second.items() if k != "data"} == {
        k: v for k, v in first.items() if k != "data"
    }
    assert qemu_children() == []


@pytest.mark.slow
def test_probe_kvm_cache_is_keyed_by_host_boot(cache_dir, kernel):
    # A verdict cached during "a previous boot" of the host must not be believed.
    key = probes._kvm_cache_key(kernel)
    key["host_boot_id"] = "00000000-0000-0000-0000-000000000000"
    stale = probes.result("kvm", "pass", "stale", accel="kvm")
    probes._write_cache(probes.kvm_cache_path(), key, stale)
    fresh = probes.probe_kvm(progress=lambda _msg: None)
    assert fresh["data"]["cached"] is False
    assert fresh["summary"] != "stale"
    stored = json.loads(probes.kvm_cache_path().read_text())
    assert stored["key"]["host_boot_id"] == probes.host_boot_id()


# --- libvirt --------------------------------------------------------------------------------


def test_domain_types_parsing():
    xml = """<capabilities><guest><arch name='x86_64'>
        <domain type='qemu'/><domain type='kvm'/></arch></guest>
        <guest><arch name='i686'><domain type='qemu'/></arch></guest></capabilities>"""
    assert probes.domain_types(xml) == ["kvm", "qemu"]
    assert probes.domain_types(xml, arch="aarch64") == []


def test_libvirt_verdicts_over_facts():
    assert probes.libvirt_verdict({"module": False})["fix"] == probes.LIBVIRT_MISSING_FIX
    refused = probes.libvirt_verdict(
        {"module": True, "uri": "qemu:///system", "error": "Failed to connect socket"}
    )
    assert refused["status"] == "fail" and refused["fix"] == probes.LIBVIRTD_FIX
    ok = probes.libvirt_verdict(
        {"module": True, "uri": "qemu:///system", "error": None, "libvirt_version": "9.0.0",
         "hypervisor_version": "7.2.0", "driver": "QEMU", "domain_types": ["kvm", "qemu"]}
    )  # fmt: skip
    assert ok["status"] == "pass"
    assert ok["data"]["domain_types"] == ["kvm", "qemu"]


@pytest.fixture
def libvirt_facts():
    """Facts from the real libvirt daemon; skipped (or failed under CI) when it is not there."""
    facts = probes.libvirt_facts()
    if not facts["module"]:
        need(False, "the libvirt Python module is not installed")
    if facts["error"]:
        need(False, f"libvirtd is not reachable at {facts['uri']}: {facts['error']}")
    return facts


def test_probe_libvirt_real(libvirt_facts):
    v = probes.probe_libvirt()
    assert v["status"] == "pass", v
    assert v["data"]["uri"] == probes.libvirt_uri()
    assert "qemu" in v["data"]["domain_types"]
    assert v["data"]["libvirt_version"].count(".") == 2


def test_probe_libvirt_refused_is_a_sentence():
    need(shutil.which("libvirtd") is not None, "libvirt is not installed here")
    v = probes.probe_libvirt("qemu+unix:///system?socket=/nonexistent/libvirt-sock")
    if v["status"] == "fail" and v["fix"] == probes.LIBVIRT_MISSING_FIX:
        need(False, "the libvirt Python module is not installed")
    assert v["status"] == "fail"
    assert v["summary"].startswith("cannot connect to")
    assert v["fix"] == probes.LIBVIRTD_FIX
