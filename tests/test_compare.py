"""`edu compare` end to end, for real: the same busybox image as an edu container and as a
libvirt guest (TCG here), measured; the result's schema, the kernels, and the figures."""

from __future__ import annotations

import json
import os

from conftest import need

from edu_runtime import paths


def test_quick_comparison(tmp_path):
    need(os.geteuid() == 0, "root (qemu:///system)")
    from vm_compare import compare, kernel_pkg, plots

    need(kernel_pkg.installed_kernel() is not None, "no guest kernel: python -m vm_compare.setup")
    out = tmp_path / "out"
    before = sorted(paths.state_dir().glob("containers/*"))
    result = compare.run(quick=True, out=out)
    saved = json.loads((out / "compare.json").read_text())
    assert saved["schema"] == compare.SCHEMA == "edu.compare/1"
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
    assert [p["count"] for p in saved["scale"]["guests"]] == [1]
    assert [s["name"] for s in saved["phases"]["container"]][:2] == ["fork", "cgroup"]
    assert saved["phases"]["vm"][-1]["name"] == "init to marker"
    # Every figure is a real PNG with a title and both axes labelled.
    assert sorted(os.path.basename(f) for f in result["figures"]) == [
        "memory.png", "scale.png", "sizes.png", "startup.png", "waterfall.png"]
    for figure in result["figures"]:
        data = open(figure, "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
        for title, xlabel, ylabel in plots.LABELS[os.path.basename(figure)]:
            assert title and xlabel and ylabel
    assert sorted(paths.state_dir().glob("containers/*")) == before  # all removed
