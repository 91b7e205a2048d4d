"""`edu compare` end to end, for real: the same busybox image as an edu container and as a
libvirt guest (TCG here), measured; the result's schema, the kernels, and the figures."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

import pytest
from conftest import need, wait_for
from test_plots import check_figures

from edu_runtime import paths


def test_quick_comparison(tmp_path):
    need(os.geteuid() == 0, "root (qemu:///system)")
    from vm_compare import compare, kernel_pkg, libvirt_guest

    need(kernel_pkg.installed_kernel() is not None, "no guest kernel: python -m vm_compare.setup")
    out = tmp_path / "out"
    before = sorted(paths.state_dir().glob("containers/*"))
    noted = []  # a lesson's ledger: told of each container and guest before it is made
    result = compare.run(quick=True, out=out, note=lambda **thing: noted.append(thing))
    saved = json.loads((out / "compare.json").read_text())
    assert saved["schema"] == compare.SCHEMA == "edu.compare/2"
    machine = saved["machine"]
    assert machine["accel"] in ("kvm", "tcg") and machine["cores"] >= 1 and machine["cpu"]
    rows = saved["startup"]
    assert {"edu container", f"libvirt guest ({machine['accel']})",
            f"raw qemu ({machine['accel']})"} <= set(rows)
    for row in rows.values():
        assert len(row["runs_s"]) == 3 and row["min_s"] <= row["median_s"] <= row["max_s"]
    # The container shares the host's kernel; the guest has one of its own.
    kernel = saved["kernel"]
    assert kernel["container"]["boot_id"] == kernel["host"]["boot_id"]
    assert kernel["container"]["uname"] == platform.release()  # read inside, and the host's
    assert kernel["guest"]["boot_id"] and kernel["guest"]["boot_id"] != kernel["host"]["boot_id"]
    assert kernel["guest"]["uname"] == kernel_pkg.installed_kernel().release
    mem = saved["memory"]["pss_kib"]
    assert all(v > 0 for v in mem.values()) and "PSS" in saved["memory"]["method"]
    sizes = saved["sizes"]
    assert sizes["container"]["unpacked"] > 0 and sizes["vm"]["kernel"] > 0
    assert [g["image"] for g in sizes["groups"]] == ["busybox"]
    scale = saved["scale"]  # --quick: containers 1 and 10, and the start-up's own guest
    assert [p["count"] for p in scale["guests"]] == [1] and scale["quick"] is True
    assert [p["count"] for p in scale["containers"]] == [1, 10]
    assert scale["stopped"] == {"containers": None, "guests": None}
    assert all(0 < p["free"] <= 1 and p["pss_kib"] > 0 for p in scale["containers"])
    assert [s["name"] for s in saved["phases"]["container"]][:2] == ["fork", "cgroup"]
    assert saved["phases"]["vm"][-1]["name"] == "init to marker"
    # Every figure is a real PNG, and redrawn from the saved JSON alone it fits a projector.
    assert sorted(os.path.basename(f) for f in result["figures"]) == [
        "memory.png", "scale.png", "sizes.png", "startup.png", "waterfall.png"]
    for figure in result["figures"]:
        data = open(figure, "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    check_figures(saved)
    assert sorted(paths.state_dir().glob("containers/*")) == before  # all removed
    # 3 runs, the memory's and 10 for scale, at least; 3 guests (--quick: no warm-up boot).
    containers = [n["container"] for n in noted if "container" in n]
    guests = [n["guest"] for n in noted if "guest" in n]
    assert len(containers) >= 14 and len(set(containers)) == len(containers)
    assert len(guests) == 3 and all(g.startswith(libvirt_guest.PREFIX) for g in guests)
    assert not [g for g in guests if libvirt_guest.remove_guest(g)]  # each one is gone


def test_quick_comparison_as_a_student(student, kernel):
    """Rootless, as a real user: the container side, runc beside it (a rootless spec) and
    qemu:///session guests, on the guest kernel root's set-up fetched (world-readable)."""
    import shutil
    import subprocess

    out = student.home / "compare-results"
    done = student.edu("compare", "--quick", "--out", str(out), timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    saved = json.loads((out / "compare.json").read_text())
    accel = saved["machine"]["accel"]
    rows = saved["startup"]
    assert {"edu container", f"libvirt guest ({accel})", f"raw qemu ({accel})"} <= set(rows)
    if shutil.which("runc"):
        assert "runc" in rows, saved["skipped"]
    for row in rows.values():
        assert len(row["runs_s"]) == 3 and row["min_s"] <= row["median_s"] <= row["max_s"]
    assert all(v > 0 for v in saved["memory"]["pss_kib"].values())
    k = saved["kernel"]
    assert k["container"]["boot_id"] == k["host"]["boot_id"] != k["guest"]["boot_id"]
    assert k["guest"]["uname"] == kernel.release
    assert not (student.home / ".cache/edu/guest/kernel").exists()  # root's, not a download
    assert saved["sizes"]["container"]["unpacked"] > 0 and saved["sizes"]["vm"]["kernel"] > 0
    assert len(saved["figures"]) == 5 and all(os.path.exists(f) for f in saved["figures"])
    # Nothing of the comparison is left running: no container, no guest.
    assert not list((student.runtime_dir / "edu/containers").glob("*"))
    assert subprocess.run(["pgrep", "-u", str(student.uid), "qemu-system"],
                          capture_output=True).returncode == 1


# ---- what lesson 01 shows beside the comparison ------------------------------------------------

def _domains() -> list[str]:
    return subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
                          capture_output=True, text=True, check=True).stdout.split()


@pytest.fixture
def busybox_guest(kernel, busybox):
    need(os.geteuid() == 0, "root (qemu:///system)")
    from vm_compare import guest_image

    return guest_image.minimal("busybox", ["sleep", "3600"], progress=lambda _text: None)


def test_remove_guest_removes_a_course_guest_running_or_defined(busybox_guest):
    """A lesson's reset: destroy and undefine by name, QEMU gone; never another's domain."""
    from vm_compare import libvirt_guest, probes

    uri = probes.libvirt_uri()
    accel = libvirt_guest.choose_accel()
    running, defined = libvirt_guest.new_name(), libvirt_guest.new_name()
    libvirt, conn = libvirt_guest.connect(uri)
    try:
        conn.createXML(libvirt_guest.domain_xml(busybox_guest, name=running, accel=accel), 0)
        conn.defineXML(libvirt_guest.domain_xml(busybox_guest, name=defined, accel=accel))
    finally:
        conn.close()
    pid = libvirt_guest.libvirt_qemu_pid(uri, running)
    try:
        assert pid and {running, defined} <= set(_domains())
        assert libvirt_guest.remove_guest(running) is True
        assert not Path(f"/proc/{pid}").exists()
        assert libvirt_guest.remove_guest(defined) is True
    finally:
        for name in (running, defined):
            libvirt_guest.remove_guest(name)
    assert not {running, defined} & set(_domains())
    assert libvirt_guest.remove_guest(running) is False  # gone already: nothing removed
    with pytest.raises(ValueError, match="not a guest of this course"):
        libvirt_guest.remove_guest("debian12")


def test_completed_xml_is_libvirts_own_and_leaves_no_domain(busybox_guest):
    import xml.etree.ElementTree as ET

    from vm_compare import domain, libvirt_guest

    before = _domains()
    xml = libvirt_guest.completed_xml(busybox_guest)
    dom = ET.fromstring(xml)
    assert dom.findtext("devices/emulator", "").endswith("qemu-system-x86_64")
    assert dom.find("os/type").get("machine") != "pc"  # libvirt chose a versioned machine
    assert dom.findtext("os/kernel") == str(busybox_guest.kernel)
    assert {"hypervisor", "kernel", "initrd", "emulator"} <= {
        e["what"] for e in domain.key_lines(xml)}
    assert dom.findtext("name") not in _domains() and _domains() == before


def test_the_hosts_ps_shows_the_containers_sleep_and_only_the_guests_qemu(busybox):
    need(os.geteuid() == 0, "root (qemu:///system)")
    from vm_compare import libvirt_guest, processes

    records = sorted(paths.state_dir().glob("containers/*"))
    noted = []
    r = processes.both_running(note=lambda **thing: noted.append(thing))
    # Told before each was made, with the names a reset needs.
    assert noted == [{"container": r["container"]["id"]},
                     {"guest": r["guest"]["name"], "undo": libvirt_guest.UNDO}]
    # Each one's own ps: the container sees its shell; the guest a whole system, its kernel's
    # threads included.
    assert "sh -c ps" in r["container"]["ps"] and "kthreadd" not in r["container"]["ps"]
    assert "[kthreadd]" in r["guest"]["ps"] and "sh -c ps" in r["guest"]["ps"]
    # The host's: the container's sleep, and of the guest only qemu, with no child.
    sleep, qemu = r["rows"]
    assert sleep["argv"] == processes.COMMAND and sleep["who"].startswith("the container's")
    assert qemu["pid"] == r["guest"]["qemu_pid"]
    assert qemu["argv"][0].endswith("qemu-system-x86_64") and qemu["threads"] >= 2
    assert {"pid": sleep["pid"], "whose": "the container"} in r["running_command"]
    assert r["qemu_children"] == []
    assert "none of the guest's" in processes.report(r)
    # Both stopped: no guest, no qemu, no container left.
    assert libvirt_guest.remove_guest(r["guest"]["name"]) is False
    assert not Path(f"/proc/{qemu['pid']}").exists()
    # (the supervisor answers a wait first, then removes the container: a moment later)
    assert wait_for(lambda: sorted(paths.state_dir().glob("containers/*")) == records)
