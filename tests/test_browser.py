"""A real browser on the real lab: Debian's Chromium, driven by Playwright, opens a notebook in
JupyterLab started as `make lab` starts it, runs all its cells, and presses the stepper
widget's Next step to the end, as a student would.

What only a browser can show: that the widget renders as a widget (ipywidgets 8's manager in
JupyterLab 4, not the text fallback), that each press reaches the kernel and comes back as a
new table and a new timing bar, and that no cell shows an error. Three screenshots of the
widget (after the first step, half-way, at the end) are saved under the test's tmp_path, and
copied to $EDU_SCREENSHOTS when it is set (docs/stepper.png, in the README, was taken so).

Chromium is Debian's (`scripts/setup.sh --test` installs the chromium package); Playwright
never downloads a browser here (`playwright install` cannot work offline).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO, need
from test_lab import lab_server

CHROMIUM = "/usr/bin/chromium"
#: The lesson the browser test opens, in the course's notebooks/ as `make lab` serves it.
LESSON = "06-step-by-step.ipynb"
#: The scratch notebook's one cell: the widget alone, over `busybox sh`.
SCRATCH = ('from edu_runtime.notebook import step_through\n'
           'view = step_through("busybox", ["sh"])\n'
           'view')
# An error output is rendered as stderr text (JupyterLab 4 gives it the mime type
# application/vnd.jupyter.stderr, as a stream to stderr): IPython's traceback, or for a
# SyntaxError its "Cell In[N], line M", and the exception's name at the start of a line.
ERROR_TEXT = re.compile(r"Traceback \(most recent call last\)|^\s*Cell In\[\d+\], line \d+"
                        r"|^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b", re.M)
#: The stepper's box, and its HTML panes found by their headings (its own, not a fallback).
STEPPER_JS = """() => {
    const box = [...document.querySelectorAll('.jupyter-widgets.widget-vbox')].find(b =>
        [...b.querySelectorAll('button.widget-button')].some(x =>
            x.textContent.trim() === 'Next step'));
    if (!box) return null;
    const panes = [...box.querySelectorAll('.widget-html-content')];
    const pane = h => (panes.find(p => p.textContent.includes(h)) || {}).innerHTML;
    const next = [...box.querySelectorAll('button.widget-button')].find(x =>
        x.textContent.trim() === 'Next step');
    return {table: pane('What changed'), timing: pane('Time per step'),
            title: (panes[0] || {}).textContent, explain: panes[1] && panes[1].textContent,
            disabled: next.disabled};
}"""


@pytest.fixture
def browser():
    """Headless Chromium (Debian's), as root needs it: no sandbox; /dev/shm may be small."""
    need(os.geteuid() == 0, "the stepper's containers are made as root (CI runs as root)")
    need(os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: scripts/setup.sh --test "
                                       "installs Debian's chromium package")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "playwright is missing: pip install -e '.[dev]' (scripts/setup.sh)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


def quiet_settings(config_dir: Path) -> None:
    """No autosave in the test's own settings (JUPYTER_CONFIG_DIR is its tmp): a lesson's
    outputs must never be written back to notebooks/, however slow the run."""
    path = config_dir / "lab/user-settings/@jupyterlab/docmanager-extension"
    path.mkdir(parents=True, exist_ok=True)
    (path / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": False}))


def open_notebook(page, base: str, token: str, name: str) -> None:
    """Open ``name`` and wait for its kernel: connected (the server says so) and idle."""
    page.goto(f"{base}/lab/tree/{name}?token={token}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator")
    # The toolbar says idle before any kernel exists; a Run All then does nothing.
    deadline = time.monotonic() + 60
    while True:
        with urllib.request.urlopen(f"{base}/api/kernels?token={token}", timeout=5) as r:
            kernels = json.load(r)
        status = page.get_attribute(".jp-Notebook-ExecutionIndicator", "data-status")
        if any(k["connections"] and k["execution_state"] == "idle" for k in kernels) \
                and status == "idle":
            break
        assert time.monotonic() < deadline, f"no idle kernel: {kernels}, toolbar {status}"
        time.sleep(0.1)
    # More room for the notebook: fold the file browser away (the current left tab).
    side = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
    if side.count():
        side.click()


def prompts(page) -> list[str]:
    return page.eval_on_selector_all(".jp-CodeCell .jp-InputArea-prompt",
                                     "els => els.map(e => e.textContent.trim())")


def run_all(page, timeout: float) -> None:
    """Run > Run All Cells, from the menu, then wait for the last cell to finish; no error."""
    before = prompts(page)
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
    # Every cell is queued at once ([*]); an error stops the rest, which go back to [ ].
    page.wait_for_function("""before => {
        const now = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
            .map(e => e.textContent.trim());
        return now.some((p, i) => p !== before[i]);
    }""", arg=before, timeout=10_000)
    page.wait_for_function("""() => {
        const busy = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
            .some(e => e.textContent.trim() === '[*]:');
        const status = document.querySelector('.jp-Notebook-ExecutionIndicator');
        return !busy && status && status.dataset.status === 'idle';
    }""", timeout=timeout * 1000)
    time.sleep(0.2)  # the last outputs' renderers
    errors = [text for text in page.eval_on_selector_all(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]',
        "els => els.map(e => e.textContent)") if ERROR_TEXT.search(text)]
    assert not errors, "a cell's output is an error:\n" + "\n".join(errors)
    done = prompts(page)
    assert all(re.fullmatch(r"\[\d+\]:", p) for p in done), \
        f"Run All did not run every cell (an error stops it): prompts {done}"


def stepper(page) -> dict:
    state = page.evaluate(STEPPER_JS)
    assert state is not None, "no stepper widget with a Next step button"
    return state


def step_to_the_end(page, out: Path, tag: str) -> list[Path]:
    """Press Next step until it is disabled; after each press the table's and the timing
    bar's HTML must change. Screenshots after the first step, half-way and at the end."""
    widget = page.locator(".jupyter-widgets.widget-vbox",
                          has=page.locator("button.widget-button", has_text="Next step")).first
    widget.wait_for()
    # A widget, not its fallback: JupyterLab drew buttons (and said no "Error displaying").
    assert page.locator("text=Error displaying widget").count() == 0
    button = widget.locator("button.widget-button", has_text="Next step")
    state = stepper(page)
    assert state["table"] and state["timing"], "the widget has no table or timing bar"
    if state["disabled"]:  # a lesson may have run it to the end: start again
        reset(page, widget)
        state = stepper(page)
    # "step 0 of 17", or after a Reset none yet: Next makes a fresh container of 17 steps.
    where = re.search(r"step (\d+) of (\d+)", state["title"])
    plan = int(where.group(2)) - int(where.group(1)) if where else None
    shots, presses = [], 0
    while not state["disabled"]:
        assert presses < (plan or 100), f"Next step still enabled after {presses} presses"
        button.click()
        presses += 1
        page.wait_for_function(f"""old => {{
            const s = ({STEPPER_JS})();
            return s && s.table !== old.table && s.timing !== old.timing;
        }}""", arg=state, timeout=30_000)
        state = stepper(page)
        assert "FAILED" not in state["explain"] and "Error:" not in state["explain"], \
            state["explain"]
        if plan is None:
            plan = int(re.search(r"step \d+ of (\d+)", state["title"]).group(1))
        if presses in (1, max(2, plan // 2)) or state["disabled"]:
            shots.append(out / f"{tag}-{len(shots) + 1}-step-{presses}.png")
            widget.screenshot(path=str(shots[-1]))
    assert presses == plan, f"{presses} presses for a plan of {plan} steps"
    assert "the command runs" in state["title"], state["title"]
    # Reset, as a student ends: the widget undoes its container and says so.
    reset(page, widget)
    return shots


def reset(page, widget) -> None:
    widget.locator("button.widget-button", has_text="Reset").click()
    page.wait_for_function(f"() => ({STEPPER_JS})().title.includes('reset:')",
                           timeout=30_000)


def keep(shots: list[Path]) -> None:
    """Copy the screenshots to $EDU_SCREENSHOTS (CI's artefacts), when it is set."""
    where = os.environ.get("EDU_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        for shot in shots:
            shutil.copy2(shot, Path(where) / shot.name)


def drive(browser, tmp_path: Path, name: str, env: dict[str, str], tag: str,
          timeout: float) -> list[Path]:
    """Serve, open ``name``, run all, step to the end; the page's own errors fail it too."""
    jupyter = tmp_path / "jupyter"
    jupyter.mkdir()
    quiet_settings(jupyter)
    with lab_server(jupyter, env=env) as (base, token, _):
        page = browser.new_page(viewport={"width": 1400, "height": 2000})
        page.set_default_timeout(30_000)
        page_errors: list[str] = []
        page.on("pageerror", lambda exc: page_errors.append(str(exc)))
        try:
            open_notebook(page, base, token, name)
            run_all(page, timeout)
            shots = step_to_the_end(page, tmp_path, tag)
        except Exception:
            with contextlib.suppress(Exception):  # what the page showed, for the artefacts
                page.screenshot(path=str(tmp_path / f"{tag}-failed.png"))
                keep([tmp_path / f"{tag}-failed.png"])
            raise
        finally:
            page.close()
    assert not page_errors, f"the page threw: {page_errors}"
    assert len(shots) == 3 and all(s.stat().st_size for s in shots)
    keep(shots)
    return shots


def test_the_stepper_widget_in_a_real_browser(browser, tmp_path):
    """The widget alone, in a scratch notebook: it renders, and Next steps it to the end."""
    import nbformat

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(SCRATCH)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, notebooks / "scratch.ipynb")
    env = dict(os.environ, EDU_NOTEBOOK_DIR=str(notebooks))
    drive(browser, tmp_path, "scratch.ipynb", env, "stepper", timeout=60)


def test_lesson_06_runs_and_steps_in_a_real_browser(browser, tmp_path):
    """Lesson 06 as a student opens it from `make lab`: every cell runs without an error,
    and its stepper steps to the end. Its committed file is left as it was (stripped)."""
    lesson = REPO / "notebooks" / LESSON
    assert lesson.exists(), f"notebooks/{LESSON} is missing: the browser test opens it"
    paired = REPO / "lessons" / f"{lesson.stem}.py"
    before = {p: p.read_bytes() for p in (lesson, paired) if p.exists()}
    try:
        drive(browser, tmp_path, LESSON, dict(os.environ), "lesson-06", timeout=240)
    finally:
        changed = [str(p.relative_to(REPO)) for p, data in before.items()
                   if p.read_bytes() != data]
    assert not changed, f"{changed} changed during the browser run (saved by the lab?)"
