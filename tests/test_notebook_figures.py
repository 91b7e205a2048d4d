"""The notebook's figures (edu_runtime/notebook/figures.py), checked as a projector shows
them: no text over other text or off the figure, type large enough to read, units on the
axes, the stepper's colours for each side, the total written on the figure, and a replay
banner as the subtitle of a figure drawn from a recording. Drawn from JSON alone: no root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO
from test_plots import _rgb, fits_a_projector

from edu_runtime.notebook import figures
from edu_runtime.notebook.stepper import COLOURS

# The steps of a root container on the bridge, with durations (ms) like a real fast run's.
STEPS = [("fork", "host", 0.8), ("cgroup", "host", 0.7), ("cgroup join", "child", 0.5),
         ("namespaces", "child", 3.2), ("bridge", "host", 126.5), ("veth", "host", 8.5),
         ("nat", "host", 14.3), ("propagation", "child", 0.2), ("rootfs", "child", 0.75),
         ("special mounts", "child", 1.1), ("name files", "child", 0.37),
         ("pivot_root", "child", 0.19), ("hostname", "child", 0.05),
         ("loopback", "child", 0.17), ("seccomp", "child", 0.49),
         ("capabilities", "child", 0.23), ("exec", "child", 1.7)]


def trace(steps=STEPS, gap_ms: float = 0.15, **extra) -> dict:
    """A Trace.to_dict() of these steps, one after another with a message's gap between."""
    t, out = 1000.0, []
    for name, side, ms in steps:
        out.append({"name": name, "side": side, "start": t, "end": t + ms / 1e3,
                    "syscalls": [], "before": {}, "after": {}, "error": ""})
        t += (ms + gap_ms) / 1e3
    return {"schema": "edu.trace/2", "container": "ab" * 32, "image": "busybox",
            "command": ["sh", "-c", "sleep 3600 & wait"], "started": 999.99, "exit": {},
            "steps": out, **extra}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    figures._plt().close("all")


def check_projector(fig) -> list[str]:
    """The projector checks; the words drawn."""
    texts = fits_a_projector(fig)
    (ax,) = fig.axes
    assert "(ms)" in ax.get_xlabel() and ax.get_ylabel()
    assert fig._suptitle.get_fontsize() >= 16
    return [t.get_text() for t, _ in texts]


def bar_colours(fig) -> dict[str, set]:
    seen: dict[str, set] = {}
    for artist in fig.findobj(lambda a: a.get_gid() in COLOURS):
        seen.setdefault(artist.get_gid(), set()).add(_rgb(artist))
    return seen


def test_a_live_waterfall_fits_a_projector_with_the_total_and_the_stepper_colours():
    from matplotlib.colors import to_rgb

    fig = figures.waterfall(trace())
    words = check_projector(fig)
    total = sum(ms for *_, ms in STEPS) + 0.15 * (len(STEPS) - 1)
    assert fig.get_suptitle().endswith(f"{figures.duration(total)} from fork to exec")
    assert any("measured live on this machine: busybox sh -c 'sleep 3600 & wait'" in w
               for w in words), words
    assert "126 ms" in words and "0.05 ms" in words and "1.7 ms" in words  # each bar's time
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [s[0] for s in STEPS]
    assert any(w.startswith("host side: ") for w in words)
    colours = bar_colours(fig)
    for side in ("host", "child"):
        assert colours[side] == {tuple(round(c, 3) for c in to_rgb(COLOURS[side]))}, side
    assert fig.get_size_inches().tolist() == [12.8, 7.2]
    assert figures.png(fig).startswith(b"\x89PNG")


def test_a_replayed_trace_says_so_in_the_subtitle():
    banner = "replay of a real run on Debian GNU/Linux 12 (bookworm), 2 cores, Linux 6.1, " \
             "2025-01-01"
    words = check_projector(figures.waterfall(trace(replay=banner)))
    assert banner in words and not any("measured live" in w for w in words)


def test_a_slow_last_step_a_failed_one_and_a_longer_plan_still_fit():
    steps = [("holder", "host", 40.0), ("fork", "host", 1.0), ("id maps", "host", 2.0),
             *STEPS[1:-1], ("exec", "child", 300.0)]
    fig = figures.waterfall(trace(steps))
    check_projector(fig)
    failed = trace(STEPS)
    failed["steps"][-1]["error"] = "exec: No such file or directory"
    fig = figures.waterfall(failed)
    words = check_projector(fig)
    assert "failed" in words and fig.get_suptitle().endswith("from fork to exec, which failed")
    assert "failed" in bar_colours(fig)


def test_a_trace_without_steps_is_refused_with_a_sentence():
    with pytest.raises(ValueError, match="no steps"):
        figures.waterfall(trace([]))


def test_the_recorded_fast_run_of_lesson_06_draws():
    path = REPO / "lessons" / "recordings" / "06-step-by-step" / "fast.json"
    if not Path(path).exists():
        pytest.skip("lesson 06 has no recording yet (make record LESSON=06-step-by-step)")
    data = json.loads(path.read_text())
    check_projector(figures.waterfall({**data, "replay": "replay of a real run on X, DATE"}))
