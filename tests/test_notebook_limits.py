"""Lesson 10's throttling figure: fits a projector, writes the share it got on itself, and a
replay says so."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from test_plots import drawn_texts, fits_a_projector  # noqa: E402

from edu_runtime.notebook import limits  # noqa: E402

ROWS = [{"t": 0.25 * (i + 1), "cpu_percent": 50.0 + (i % 2), "throttled_periods": 3 * (i + 1),
         "throttled_ns": 125_000_000 * (i + 1)} for i in range(12)]
FREE = [{**r, "cpu_percent": 99.0, "throttled_periods": 0, "throttled_ns": 0} for r in ROWS]


def test_the_throttle_figure_fits_a_projector():
    fig = limits.throttle_figure(ROWS, 0.5, FREE)
    words = [t.get_text() for t, _ in fits_a_projector(fig)]
    assert fig.get_suptitle() == "--cpus 0.5: it got 50 % of one core (×1.01 its quota)"
    assert "quota: 50 %" in words and "36 periods throttled,\n1500 ms in all" in words
    assert any(w.startswith("measured live on this machine") for w in words)
    left, right = fig.axes
    assert "CPU %" in left.get_ylabel() and "ms" in right.get_ylabel()


def test_a_replayed_figure_says_so():
    banner = "replay of a real run on lab-vm, 2026-12-06"
    fig = limits.throttle_figure(ROWS, 0.5, banner=banner)
    assert banner in [t.get_text() for t, _ in drawn_texts(fig)]
    assert limits.got([]) == 0.0
