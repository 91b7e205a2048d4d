"""Lessons 03's and 05's figures fit a projector: every word inside the figure, none over
another, large type, labelled axes with units, the ratio in the title, and a replayed value
said to be one in the subtitle."""

from __future__ import annotations

import pytest
from test_plots import fits_a_projector

from edu_runtime.notebook import bars

DOCKER = {"parts": {"dockerd": 70_000, "containerd": 38_000, "shim": 9_000}}
EDU = {"parts": {"supervisor": 29_000}}
REBUILDS = {"orders": [{"label": "dependencies first", "seconds": [0.41, 0.38, 0.45]},
                      {"label": "code first", "seconds": [3.1, 2.9, 3.3]}]}


@pytest.fixture(autouse=True)
def _close():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def projector(fig) -> list[str]:
    texts = fits_a_projector(fig)
    (ax,) = fig.axes
    assert "(MiB)" in ax.get_xlabel() or "(s)" in ax.get_ylabel()
    assert ax.get_xlabel() and ax.get_ylabel()
    return [t.get_text() for t, _ in texts]


def test_engine_memory_has_the_ratio_and_each_part():
    words = projector(bars.engine_memory(DOCKER, EDU))
    assert f"×{(70 + 38 + 9) / 29:.1f}" in " ".join(words)
    assert any("dockerd" in w for w in words) and any("supervisor" in w for w in words)
    assert any(w.startswith("measured live") for w in words)


def test_a_small_part_is_named_below_instead_of_inside_its_bar():
    words = projector(bars.engine_memory({"parts": {**DOCKER["parts"], "shim": 900}}, EDU))
    assert any(w.startswith("too small to label: shim 0.9 MiB") for w in words)


def test_a_replayed_side_says_so():
    banner = "replay of a real run on Debian GNU/Linux 12, 2 cores, 2026-01-01"
    words = projector(bars.engine_memory({**DOCKER, "replay": banner}, EDU))
    assert any(w.startswith(banner) for w in words)
    words = projector(bars.rebuild_times({**REBUILDS, "replay": banner}))
    assert any(w.startswith(banner) for w in words)


def test_rebuild_times_has_the_ratio_of_the_medians():
    words = " ".join(projector(bars.rebuild_times(REBUILDS)))
    assert f"×{3.1 / 0.41:.1f}" in words and "median 0.41 s" in words
    assert "median of 3 rebuilds" in words


def test_a_large_ratio_is_written_without_its_tenths():
    slow = {"orders": [REBUILDS["orders"][0], {"label": "code first", "seconds": [30.0]}]}
    assert "×73 longer" in " ".join(projector(bars.rebuild_times(slow)))


def test_no_memory_measured_is_refused():
    with pytest.raises(ValueError, match="no memory"):
        bars.engine_memory({"parts": {"dockerd": None}}, EDU)


BUILDS = {"builds": [{"label": "first build\n(--no-cache)", "seconds": [3.4, 3.1]},
                     {"label": "server.js changed", "seconds": [0.12, 0.1]},
                     {"label": "package.json changed", "seconds": [2.9, 3.0]}]}


def test_build_times_has_the_first_build_over_the_code_change():
    words = " ".join(projector(bars.build_times(BUILDS)))
    assert f"×{3.25 / 0.11:.0f} faster" in words and "median 0.11 s" in words
    assert "median of 2 builds" in words and "package.json changed" in words
    banner = "replay of a real run on Debian GNU/Linux 12, 2 cores, 2026-01-01"
    assert banner in " ".join(projector(bars.build_times({**BUILDS, "replay": banner})))
