"""PID 1 and signals for lesson 07 (edu_runtime/notebook/signals.py): SIGTERM's disposition
read from the kernel's masks; a shell as PID 1 outlives `stop`'s SIGTERM until SIGKILL, and
with --init it goes at once (143), while an interactive bash ignores it either way; several
containers stopped at once, each timed; the figure of those times fits a projector."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from conftest import wait_for
from test_plots import _overlap, drawn_texts

from edu_runtime.notebook import signals

PROGRAM = r"""
import signal, sys, time
how = sys.argv[1]
if how == "caught":
    signal.signal(signal.SIGTERM, lambda *_: None)
elif how == "ignored":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
elif how in ("blocked", "awaited"):
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
print("ready", flush=True)
if how == "awaited":
    signal.sigtimedwait([signal.SIGTERM], 30)
time.sleep(30)
"""


@pytest.mark.parametrize("how", ["caught", "ignored", "blocked", "awaited", "default"])
def test_sigterm_reads_the_kernels_masks(how):
    proc = subprocess.Popen([sys.executable, "-c", PROGRAM, how], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert wait_for(lambda: signals.sigterm(proc.pid) == how, 5), signals.sigterm(proc.pid)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert signals.sigterm(proc.pid) == ""  # gone


ROWS = [{"label": "sh as PID 1", "seconds": 10.31, "exit_code": 137, "timeout": 10},
        {"label": "sh, --init", "seconds": 0.32, "exit_code": 143, "timeout": 10,
         "init": True},
        {"label": "bash -it as PID 1", "seconds": 10.3, "exit_code": 137, "timeout": 10},
        {"label": "bash -it, --init", "seconds": 10.29, "exit_code": 137, "timeout": 10,
         "init": True}]


@pytest.mark.parametrize("replay", ["", "replay of a real run on Debian 12, 2 cores, DATE"])
def test_the_stop_figure_fits_a_projector_with_the_ratio(replay):
    fig = signals.stop_figure(ROWS, faster=("sh as PID 1", "sh, --init"), replay=replay)
    texts = drawn_texts(fig)
    page = fig.bbox
    for text, box in texts:  # inside the figure, large enough
        assert box.x0 >= page.x0 - 1 and box.x1 <= page.x1 + 1, text.get_text()
        assert box.y0 >= page.y0 - 1 and box.y1 <= page.y1 + 1, text.get_text()
        assert text.get_fontsize() >= 12, text.get_text()
    for i, (a, box_a) in enumerate(texts):
        for b, box_b in texts[i + 1:]:
            assert not _overlap(box_a, box_b), (a.get_text(), b.get_text())
    words = [t.get_text() for t, _ in texts]
    assert fig.get_suptitle() == "How long `stop` takes: ×32 faster with --init"
    assert (replay or "measured live on this machine") in words
    assert "10.3 s, SIGKILL (137)" in words and "0.3 s, SIGTERM (143)" in words
    assert " SIGKILL after 10 s" in words
    (ax,) = fig.axes
    assert "(s)" in ax.get_xlabel() and ax.get_ylabel()
    assert [t.get_text() for t in ax.get_yticklabels()] == [r["label"] for r in ROWS]
    with pytest.raises(ValueError, match="no rows"):
        signals.stop_figure([])


def edu(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edu_cli.main", *args], capture_output=True,
                          text=True, timeout=120)


def test_pid1_and_stop_all_on_real_containers(root, busybox):
    """sh as PID 1 ignores SIGTERM (default action, but PID 1): SIGKILL after the timeout;
    with --init, tini (asleep in sigtimedwait) takes it and passes it on: at once."""
    tag = uuid.uuid4().hex[:6]
    plain, init, tty = f"t-sh-{tag}", f"t-init-{tag}", f"t-tty-{tag}"
    try:
        for name, flags in ((plain, ["-d"]), (init, ["-d", "--init"]), (tty, ["-dit"])):
            out = edu("run", "--network", "none", "--name", name, *flags, "busybox", "sh",
                      *(["-c", "sleep 600 & wait"] if name != tty else []))
            assert out.returncode == 0, out.stderr
        p = signals.wait_ready(plain)
        assert p["comm"] == "sh" and p["sigterm"] == "default" and p["nspid"][-1] == "1"
        p = signals.wait_ready(init)
        # tini sleeps in sigtimedwait (a second at a time: between two, all is blocked)
        assert p["comm"] == "docker-init" and p["sigterm"] in ("awaited", "blocked")
        assert [(k["comm"], k["sigterm"]) for k in p["children"]] == [("sh", "default")]
        p = signals.wait_ready(tty)  # an interactive shell: it has printed its prompt
        assert p["comm"] == "sh" and p["sigterm"] == "ignored"
        timed = signals.stop_all([plain, init, tty], timeout=2)
    finally:
        edu("rm", "-f", plain, init, tty)
    assert 2 <= timed[plain]["seconds"] < 5 and timed[plain]["exit_code"] == 137
    assert timed[init]["seconds"] < 1.5 and timed[init]["exit_code"] == 143
    assert 2 <= timed[tty]["seconds"] < 5 and timed[tty]["exit_code"] == 137
    assert timed[plain]["timeout"] == 2


def test_pid1_of_a_container_that_is_not_running_says_so(root, busybox):
    name = f"t-gone-{uuid.uuid4().hex[:6]}"
    try:
        assert edu("run", "--network", "none", "--name", name, "busybox", "true").returncode == 0
        with pytest.raises(RuntimeError, match="not running"):
            signals.pid1(name)
    finally:
        edu("rm", "-f", name)
