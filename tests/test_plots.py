"""The figures of `edu compare`, drawn from result JSON alone (no boot), checked as a projector
would show them: no text over other text or off the figure, large type, integer counts, the
ratio written in bold, the accelerator said once, one colour each for container and VM; and the
scale run's stop rule, fed measurements. The same checks run on a real run in test_compare."""

from __future__ import annotations

import re
from unittest import mock

import pytest

from vm_compare import compare, plots

MIB = 2**20


def synthetic(schema: str = compare.SCHEMA) -> dict:
    """A small result of the current schema (busybox, plus debian with its full-disk guest)."""
    result = {
        "schema": schema, "image": "busybox", "guest": "minimal",
        "machine": {"cpu": "test", "cores": 2, "kernel": "6.1", "python": "3.11",
                    "accel": "tcg"},
        "references": compare.REFERENCES,
        "startup": {
            "edu container": {"kind": "container", "runs_s": [0.025, 0.028, 0.064]},
            "libvirt guest (tcg)": {"kind": "vm", "runs_s": [7.1, 6.9, 7.2]},
            "raw qemu (tcg)": {"kind": "vm", "runs_s": [6.0, 6.6, 6.8]},
            "runc": {"kind": "peer", "runs_s": [0.03, 0.043, 0.042]},
            "docker run": {"kind": "peer", "runs_s": [0.22, 0.39, 0.27]}},
        "memory": {"method": "PSS", "pss_kib": {"container (sleep)": 546,
                                                "guest (sleep, tcg)": 217012}},
        "phases": {"container": [{"name": n, "start_ms": i * 2.0, "ms": 1.5}
                                 for i, n in enumerate(["fork", "cgroup", "namespaces",
                                                        "rootfs", "pivot_root", "exec"])],
                   "vm": [{"name": "qemu start to first console byte", "start_ms": 0,
                           "ms": 5500},
                          {"name": "kernel to init (printk)", "start_ms": 5500, "ms": 1400},
                          {"name": "init to marker", "start_ms": 6900, "ms": 200}]},
    }
    for row in result["startup"].values():
        row.update(compare._median(row["runs_s"]))
    busybox = {"kernel": 8247232, "initrd": 2067411, "rootfs": 1982364, "guest_os": 1982736}
    debian = {"kernel": 8247232, "initrd": 2500000, "rootfs": 116548453, "guest_os": 55002258,
              "modules": 397620634, "disk_virtual": 952107008, "disk_actual": 598679552}
    groups = [compare.size_group("busybox", 1982364, "minimal", busybox),
              compare.size_group("debian", 116548453, "full-disk", debian)]
    result["sizes"] = {"container": {"unpacked": 1982364, "compressed": 1036292},
                       "vm": busybox, "groups": groups, "largest_mib": 10.0,
                       "stacks": {"container (busybox)": groups[0]["container"],
                                  "VM (minimal guest)": groups[0]["vm"]}}
    result["scale"] = {
        "plan": {"containers": [1, 10, 50], "guests": [1, 2, 4]}, "quick": False,
        "limits": {"min_free": 0.2, "max_boot_s": 60},
        "containers": [{"count": n, "start_s": 0.03 * n, "pss_kib": 540 * n}
                       for n in (1, 10, 50)],
        "guests": [{"count": n, "start_s": 7.5 * n, "pss_kib": 217000 * n} for n in (1, 2)],
        "stopped": {"containers": None, "guests": "free memory below 20% (18% left)"}}
    return result


def as_schema_1(result: dict) -> dict:
    """The same result as `edu compare` wrote it before /2: no groups, plan or stop."""
    old = dict(result, schema="edu.compare/1")
    old["sizes"] = {k: v for k, v in result["sizes"].items() if k != "groups"}
    old["scale"] = {k: result["scale"][k] for k in ("containers", "guests")}
    return old


def drawn_texts(fig) -> list:
    """(Text, its window extent) of every non-empty text the renderer really drew."""
    from matplotlib.text import Text

    drawn = []
    original = Text.draw

    def draw(self, renderer):
        original(self, renderer)
        if self.get_visible() and self.get_text().strip():
            drawn.append((self, self.get_window_extent(renderer)))

    with mock.patch.object(Text, "draw", draw):
        fig.canvas.draw()
    return drawn


def _overlap(a, b, slack: float = 0.5) -> bool:
    return (min(a.x1, b.x1) - max(a.x0, b.x0) > slack
            and min(a.y1, b.y1) - max(a.y0, b.y0) > slack)


def fits_a_projector(fig) -> list:
    """No text leaves the figure or overlaps another, none smaller than 12 pt; the texts."""
    texts = drawn_texts(fig)
    page = fig.bbox
    for text, box in texts:
        assert (box.x0 >= page.x0 - 1 and box.y0 >= page.y0 - 1 and box.x1 <= page.x1 + 1
                and box.y1 <= page.y1 + 1), text.get_text()
        assert text.get_fontsize() >= 12, text.get_text()
    for i, (a, box_a) in enumerate(texts):
        for b, box_b in texts[i + 1:]:
            assert not _overlap(box_a, box_b), (a.get_text(), b.get_text())
    return texts


def _rgb(artist) -> tuple:
    from matplotlib.colors import to_rgb
    from matplotlib.lines import Line2D

    if isinstance(artist, Line2D):
        return tuple(round(c, 3) for c in to_rgb(artist.get_color()))
    face = artist.get_facecolor()
    face = face[0] if getattr(face, "ndim", 1) == 2 else face
    return tuple(round(float(c), 3) for c in face[:3])


def check_figures(result: dict) -> dict:
    """Every figure of ``result`` passes the projector checks; the figures by file name."""
    from matplotlib.colors import to_rgb

    figures = plots.figures(result)
    assert sorted(figures) == sorted(plots.FIGURES)
    colours: dict[str, set] = {"container": set(), "vm": set()}
    for name, fig in figures.items():
        texts = drawn_texts(fig)
        page = fig.bbox
        for text, box in texts:  # nothing off the figure, nothing too small to read
            assert (box.x0 >= page.x0 - 1 and box.y0 >= page.y0 - 1
                    and box.x1 <= page.x1 + 1 and box.y1 <= page.y1 + 1), (name, text)
            assert text.get_fontsize() >= 12, (name, text.get_text())
        for i, (a, box_a) in enumerate(texts):
            for b, box_b in texts[i + 1:]:
                assert not _overlap(box_a, box_b), (name, a.get_text(), b.get_text())
        words = [t.get_text() for t, _ in texts]
        title = fig.get_suptitle()
        assert title in words and fig._suptitle.get_fontsize() >= 16
        accel = [w for w in words if "TCG" in w or "KVM" in w]
        assert len(accel) == 1 and result["machine"]["accel"].upper() in accel[0], (name, accel)
        ratios = [t for t, _ in texts if re.search(r"VM .*×\d", t.get_text())]
        assert ratios and all(t.get_fontweight() == "bold" for t in ratios), (name, words)
        for ax in fig.axes:  # units on every value axis
            assert "(" in ax.get_xlabel(), (name, ax.get_xlabel())
            if ax.get_yscale() == "log":  # the scale figure's values are up the y axis
                assert "(" in ax.get_ylabel(), (name, ax.get_ylabel())
            if "how many" in ax.get_xlabel():  # counts: whole numbers only
                low, high = ax.get_xlim()
                ticks = [t for t in ax.get_xticks() if low <= t <= high]
                assert ticks and all(float(t).is_integer() for t in ticks), ticks
                assert not [t for t in ax.xaxis.get_minorticklabels() if t.get_text()]
        for artist in fig.findobj(lambda a: a.get_gid() in colours):
            colours[artist.get_gid()].add(_rgb(artist))
    for kind, seen in colours.items():  # one colour each, the same in every figure
        assert seen == {tuple(round(c, 3) for c in to_rgb(plots.COLORS[kind]))}, (kind, seen)
    return figures


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plots._plt().close("all")


def test_synthetic_figures_fit_a_projector():
    figures = check_figures(synthetic())
    # The size figure shows debian with its full-disk guest: MB against (nearly) GB.
    words = [t.get_text() for t, _ in drawn_texts(figures["sizes.png"])]
    assert any("debian" in w for w in words) and any("full-disk" in w for w in words)
    assert any("908 MiB disk" in w for w in words), words
    # The scale figure says why the VMs stopped.
    words = [t.get_text() for t, _ in drawn_texts(figures["scale.png"])]
    assert any("stopped: free memory below 20%" in w for w in words), words
    assert figures["startup.png"].get_size_inches().tolist() == [12.8, 7.2]


def test_quick_runs_say_so_on_the_scale_figure():
    result = synthetic()
    result["scale"].update(quick=True, plan={"containers": [1, 10], "guests": [1]},
                           stopped={"containers": None, "guests": None},
                           guests=result["scale"]["guests"][:1],
                           containers=result["scale"]["containers"][:2])
    figures = check_figures(result)
    words = [t.get_text() for t, _ in drawn_texts(figures["scale.png"])]
    assert any("quick run; a full run goes to 50" in w for w in words), words
    assert any("quick run; a full run goes to 4" in w for w in words), words


def test_schema_1_results_are_still_drawn():
    old = as_schema_1(synthetic())
    new = compare.upgrade(old)
    assert new["schema"] == compare.SCHEMA == "edu.compare/2" and old["schema"].endswith("/1")
    assert [g["image"] for g in new["sizes"]["groups"]] == ["busybox"]
    assert new["scale"]["plan"] == {"containers": [1, 10, 50], "guests": [1, 2]}
    check_figures(old)
    with pytest.raises(compare.CompareError, match="edu.compare/9"):
        compare.upgrade(dict(old, schema="edu.compare/9"))


def _series(boots: list[float], free_after: dict[int, float], plan=(1, 2, 4)):
    """scale_series over fake instances: their boot seconds, and free memory by count."""
    started = []

    def start_one():
        started.append(boots[len(started)])
        return started[-1]

    def free():
        return min([1.0] + [f for n, f in free_after.items() if len(started) >= n])

    return scale_series(plan, start_one, lambda: 1000 * len(started), free)


def scale_series(plan, start_one, measure, free):
    return compare.scale_series(plan, start_one, measure, lambda text: None, free=free)


def test_scale_stop_rule():
    assert compare.scale_stop(0.5) is None and compare.scale_stop(0.5, 59.0) is None
    assert "below 20%" in compare.scale_stop(0.19)
    assert "over 60 s" in compare.scale_stop(0.9, 61.0)
    # The whole plan, when nothing runs short.
    points, why = _series([7, 8, 9, 10], {})
    assert [p["count"] for p in points] == [1, 2, 4] and why is None
    assert [p["pss_kib"] for p in points] == [1000, 2000, 4000]
    # Free memory falls below 20% once two run: the third is never started.
    points, why = _series([7, 8, 9, 10], {2: 0.15})
    assert [p["count"] for p in points] == [1, 2] and "free memory below 20% (15% left)" == why
    # The third boot takes 61 s: it is counted, and no fourth is started.
    points, why = _series([7, 8, 61, 10], {})
    assert [p["count"] for p in points] == [1, 2, 3] and "61 s" in why
    # A slow last boot finishes the plan: nothing was left to stop.
    points, why = _series([7, 8, 9, 70], {})
    assert [p["count"] for p in points] == [1, 2, 4] and why is None
