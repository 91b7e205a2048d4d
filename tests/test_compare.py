"""`edu compare` end to end, for real: the same busybox image as an edu container and as a
libvirt guest (TCG here), measured; the result's schema, the kernels, and the figures."""

from __future__ import annotations

import json
import os

from conftest import need
from test_plots import check_figures

from edu_runtime import paths


def test_quick_comparison(tmp_path):
    need(os.geteuid() == 0, "root (qemu:///system)")
    from vm_compare import compare, kernel_pkg

    need(kernel_pkg.installed_kernel() is not None, "no guest kernel: python -m vm_compare.setup")
    out = tmp_path / "out"
    before = sorted(paths.state_dir().glob("containers/*"))
    result = compare.run(quick=True, out=out)
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
