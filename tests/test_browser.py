"""A real browser on the real lab: Debian's Chromium, driven by Playwright, opens a notebook in
JupyterLab started as `make lab` starts it, runs all its cells, and presses the stepper
widget's Next step to the end, as a student would.

What only a browser can show: that the widget renders as a widget (ipywidgets 8's manager in
JupyterLab 4, not the text fallback), that each press reaches the kernel and comes back as a
new table and a new timing bar, and that no cell shows an error. Three screenshots of the
widget (after the first step, half-way, at the end) are saved under the test's tmp_path, and
copied to $EDU_SCREENSHOTS when it is set (docs/stepper.png, in the README, was taken so).

Every lesson runs so (issue 17): ``test_a_lesson_runs_live_in_a_real_browser`` is each
lesson's one live run in CI (it replaced nbclient's), with the exercises solved, on an empty
store for the lessons that make their own images (tests/test_lessons.SHARED_STORE says which
do not). It fails on any error output, on a figure that is not drawn as an image or a widget
that is not drawn as a widget (their text fallbacks: ``<Figure size ...>``, ``VBox(children=
...)``), and on a lesson that scrolls sideways in JupyterLab's presentation mode (View >
Presentation Mode) on a 1280x720 window, whose font must be larger than the normal one. Its
screenshots (the top in presentation mode, the first figure, the first widget) are saved under
the test's tmp_path and $EDU_SCREENSHOTS; docs/lesson-*.png, in the README, were taken so.

Chromium is Debian's (`scripts/setup.sh --test` installs the chromium package); Playwright
never downloads a browser here (`playwright install` cannot work offline).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import hoststate
import pytest
from conftest import REPO, need
from test_lab import lab_server
from test_lessons import BANNER, LESSONS, SHARED_STORE, errors, execute, records, text

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
        try:
            with urllib.request.urlopen(f"{base}/api/kernels?token={token}", timeout=5) as r:
                kernels = json.load(r)
        except urllib.error.HTTPError as exc:
            # jupyter_server answers 500 while a kernel is still starting (its last_activity
            # is None until then: "expected a datetime, not the NoneType None"): not yet.
            if exc.code != 500:
                raise
            kernels = []
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


@contextlib.contextmanager
def notebook_page(browser, tmp_path: Path, name: str, env: dict[str, str], tag: str):
    """Serve the notebooks as `make lab` does and open ``name`` with its kernel idle; yields
    the page. What the page showed when something failed is kept as ``TAG-failed.png``;
    an error the page itself threw fails the test too."""
    jupyter = tmp_path / "jupyter"
    jupyter.mkdir()
    quiet_settings(jupyter)
    page_errors: list[str] = []
    with lab_server(jupyter, env=env) as (base, token, _):
        page = browser.new_page(viewport={"width": 1400, "height": 2000})
        page.set_default_timeout(30_000)
        page.on("pageerror", lambda exc: page_errors.append(str(exc)))
        try:
            open_notebook(page, base, token, name)
            yield page
        except Exception:
            with contextlib.suppress(Exception):  # what the page showed, for the artefacts
                page.screenshot(path=str(tmp_path / f"{tag}-failed.png"))
                keep([tmp_path / f"{tag}-failed.png"])
            raise
        finally:
            page.close()
    assert not page_errors, f"the page threw: {page_errors}"


def drive(browser, tmp_path: Path, name: str, env: dict[str, str], tag: str,
          timeout: float) -> list[Path]:
    """Serve, open ``name``, run all, step to the end."""
    with notebook_page(browser, tmp_path, name, env, tag) as page:
        run_all(page, timeout)
        shots = step_to_the_end(page, tmp_path, tag)
    assert len(shots) == 3 and all(s.stat().st_size for s in shots)
    keep(shots)
    return shots


def scratch(tmp_path: Path, name: str, cells: list[str], heading: str = "") -> dict:
    """A notebook of ``cells`` (after a markdown ``heading``, if any) in a directory of its
    own; the environment that has the lab serve that directory."""
    import nbformat

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(heading)] if heading else []
    nb.cells += [nbformat.v4.new_code_cell(src) for src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, notebooks / name)
    return dict(os.environ, EDU_NOTEBOOK_DIR=str(notebooks))


def test_the_stepper_widget_in_a_real_browser(browser, tmp_path):
    """The widget alone, in a scratch notebook: it renders, and Next steps it to the end."""
    env = scratch(tmp_path, "scratch.ipynb", [SCRATCH])
    drive(browser, tmp_path, "scratch.ipynb", env, "stepper", timeout=60)


# ---- every lesson (issue 17) ---------------------------------------------------------------

#: What each output is drawn as. A figure must be an image that loaded; a widget must be a
#: widget (ipywidgets' own DOM, no "Error displaying widget"); no output may be the text a
#: figure or a widget falls back to when it cannot be drawn.
RENDERS_JS = r"""() => {
    const FALLBACK = new RegExp('^\\s*(<Figure size \\d|<IPython\\.core\\.display|' +
        '<matplotlib\\.|[A-Z]\\w*\\((children|value|layout|description|outputs|options)=)');
    const r = {images: 0, widgets: 0, bad: []};
    for (const o of document.querySelectorAll('.jp-Notebook .jp-OutputArea-output')) {
        const mime = o.dataset.mimeType || '';
        const said = o.textContent.trim().slice(0, 100);
        if (mime.startsWith('image/')) {
            r.images++;
            const img = o.querySelector('img');
            if (!(img && img.complete && img.naturalWidth > 0) && !o.querySelector('svg'))
                r.bad.push(`a ${mime} figure did not load`);
        } else if (!mime) {  // a widget's output: ipywidgets draws it, with no mime type
            r.widgets++;
            if (!o.querySelector('.jupyter-widgets') || /Error displaying widget/.test(said))
                r.bad.push(`a widget was not drawn: ${said}`);
        } else if (FALLBACK.test(o.textContent)) {
            r.bad.push(`a text fallback instead of a figure or widget: ${said}`);
        }
    }
    return r;
}"""

#: Every cell scrolled into view (content-visibility skips laying out those off screen), and
#: whatever would scroll sideways: the notebook itself, or any element inside a cell whose
#: content is wider than it (an editor's long line, a wide table or output).
SIDEWAYS_JS = r"""() => {
    const wide = [];
    const outer = document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer');
    for (const cell of document.querySelectorAll('.jp-Notebook .jp-Cell')) {
        cell.scrollIntoView();
        for (const e of [cell, ...cell.querySelectorAll('*')]) {
            const x = getComputedStyle(e).overflowX;
            if ((x === 'auto' || x === 'scroll') && e.scrollWidth > e.clientWidth + 1)
                wide.push(`${e.scrollWidth}px in ${e.clientWidth}px: ` +
                          `${cell.textContent.trim().slice(0, 70)}`);
        }
    }
    if (outer.scrollWidth > outer.clientWidth + 1)
        wide.push(`the notebook: ${outer.scrollWidth}px in ${outer.clientWidth}px`);
    return [...new Set(wide)];
}"""

FONTS_JS = """() => ({
    text: parseFloat(getComputedStyle(document.querySelector(
        '.jp-Notebook .jp-RenderedMarkdown p')).fontSize),
    code: parseFloat(getComputedStyle(document.querySelector(
        '.jp-Notebook .cm-content')).fontSize)})"""


def renders(page) -> dict:
    """Each figure and widget scrolled into view (so it is drawn), then what they are."""
    for item in page.locator(".jp-Notebook .jp-OutputArea-output[data-mime-type^='image/'], "
                             ".jp-Notebook .jp-OutputArea-output:not([data-mime-type])").all():
        item.scroll_into_view_if_needed()
    page.wait_for_function("""() => [...document.querySelectorAll(
        '.jp-Notebook .jp-OutputArea-output img')].every(i => i.complete)""")
    return page.evaluate(RENDERS_JS)


def shoot(page, selector: str, path: Path) -> Path | None:
    """A screenshot of the first ``selector`` (with its cell's prompt), if the lesson has one."""
    first = page.locator(selector).first
    if not first.count():
        return None
    cell = page.locator(".jp-Notebook .jp-Cell", has=first).first
    cell.scroll_into_view_if_needed()
    cell.screenshot(path=str(path))
    return path


def presentation_mode(page, out: Path, tag: str) -> Path:
    """View > Appearance > Presentation Mode on a 1280x720 window: a larger font, and nothing
    in the lesson scrolls sideways. A screenshot of the lesson's top, as a class sees it."""
    page.set_viewport_size({"width": 1280, "height": 720})
    normal = page.evaluate(FONTS_JS)
    page.click(".lm-MenuBar-itemLabel:text-is('View')")
    page.hover(".lm-Menu-itemLabel:text-is('Appearance')")
    page.click(".lm-Menu-itemLabel:text-is('Presentation Mode')")
    page.wait_for_selector(".jp-LabShell.jp-mod-presentationMode")
    shown = page.evaluate(FONTS_JS)
    assert shown["text"] > normal["text"] and shown["code"] > normal["code"], \
        f"presentation mode did not enlarge the font: {normal} then {shown}"
    wide = page.evaluate(SIDEWAYS_JS)
    assert not wide, "in presentation mode at 1280x720, these scroll sideways:\n" + \
        "\n".join(wide)
    # Back to the top; the cells there are laid out again (content-visibility) a few frames
    # after the scroll: wait until the first one is on screen with its text.
    page.evaluate("""async () => {
        document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer').scrollTop = 0;
        for (let i = 0; i < 3; i++) await new Promise(r => requestAnimationFrame(r));
    }""")
    page.wait_for_function("""() => {
        const first = document.querySelector('.jp-Notebook .jp-Cell .jp-RenderedMarkdown');
        const box = first && first.getBoundingClientRect();
        return box && box.height > 0 && box.top >= 0 && box.top < innerHeight &&
            first.innerText.trim().length > 0;
    }""")
    shot = out / f"{tag}-presentation.png"
    page.screenshot(path=str(shot))
    return shot


def lesson_in_browser(browser, tmp_path: Path, name: str, env: dict[str, str],
                      timeout: float) -> tuple[str, dict, list[Path]]:
    """Serve the course as `make lab` does, open the lesson, Run All, check what was drawn,
    step a stepper to the end, then presentation mode; the text of every output."""
    shots: list[Path] = []
    with notebook_page(browser, tmp_path, f"{name}.ipynb", env, name) as page:
        run_all(page, timeout)
        drawn = renders(page)
        assert not drawn["bad"], "\n".join(drawn["bad"])
        outputs = "\n".join(page.eval_on_selector_all(
            ".jp-Notebook .jp-OutputArea-output", "els => els.map(e => e.textContent)"))
        shots += [s for s in (
            shoot(page, ".jp-OutputArea-output[data-mime-type^='image/']",
                  tmp_path / f"{name}-figure.png"),
            shoot(page, ".jp-OutputArea-output:not([data-mime-type]) .jupyter-widgets",
                  tmp_path / f"{name}-widget.png")) if s]
        if page.locator("button.widget-button", has_text="Next step").count():
            shots += step_to_the_end(page, tmp_path, name)
        shots.append(presentation_mode(page, tmp_path, name))
    keep(shots)
    return outputs, drawn, shots


def quiesce(env: dict[str, str] | None = None) -> None:
    """Stop the supervisor a lesson's containers were made by (of the store ``env`` names):
    its warm bridge and rules are not leaks while it lives; once it has gone, whatever is
    left is."""
    subprocess.run([sys.executable, "-c",
                    "from edu_runtime.life import client; client.shutdown()"],
                   cwd=REPO, capture_output=True, timeout=60, env={**os.environ, **(env or {})})


@pytest.fixture
def clean_host(root, busybox):
    """The host before the test (tests/hoststate.py), and a check that it is so again once
    the lesson's supervisor has gone. The machine's own supervisor is stopped too when
    nobody else runs a container on it (a colleague's run beside the tests is theirs)."""
    from edu_runtime import paths

    def settle(env: dict[str, str] | None = None) -> None:
        if env:
            quiesce(env)
        if not hoststate.others():
            quiesce()

    settle()
    before = hoststate.snapshot()
    volumes = records(paths.state_dir(), "volumes")

    def check(env: dict[str, str] | None = None) -> None:
        settle(env)
        assert hoststate.wait_clean(before) == {}
        assert records(paths.state_dir(), "volumes") == volumes

    return check


@pytest.mark.slow
@pytest.mark.parametrize("name", LESSONS)
def test_a_lesson_runs_live_in_a_real_browser(name, browser, tmp_path, clean_host):
    """Each lesson's live run in CI: in JupyterLab, in Chromium, with its exercises solved (so
    every check must pass), leaving the host as it was and its committed files unchanged.
    Lessons that make their own images start on an empty store and then run a second time
    (in nbclient, as a kernel restarted from the top would): that run finds what the first
    left, which is nothing to rebuild and nothing to remove."""
    store = {} if name in SHARED_STORE else {"EDU_STATE_DIR": str(tmp_path / "state"),
                                             "EDU_RUN_DIR": str(tmp_path / "run")}
    env = {k: v for k, v in os.environ.items()
           if k not in ("EDU_REPLAY", "EDU_RECORD", "EDU_SOLVE")}
    env.update(store, EDU_SOLVE="1")
    committed = [REPO / "notebooks" / f"{name}.ipynb", REPO / "lessons" / f"{name}.py"]
    before = {p: p.read_bytes() for p in committed if p.exists()}
    try:
        outputs, drawn, shots = lesson_in_browser(browser, tmp_path, name, env, timeout=900)
        assert BANNER not in outputs, "a live run replayed something on a host that can do it all"
        summaries = [line.strip() for line in outputs.splitlines() if " checks passed" in line]
        failed = [line.strip() for line in outputs.splitlines()  # the failing checks' lines,
                  if line.strip().startswith(("✘", "✗")) or "not yet" in line]  # and hints
        assert summaries and all(s.startswith(tuple(f"{n} of {n} " for n in range(1, 50)))
                                 for s in summaries), (summaries, failed)
        assert f"Reset {name}:" in outputs
        assert all(s.stat().st_size for s in shots)
        if store:  # it made its own base images, as `docker run` pulls them
            assert "Unable to find image '" in outputs
            again = execute(name, tmp_path, EDU_SOLVE="1", **store)
            assert not errors(again)
            assert "Unable to find image" not in "\n".join(text(c) for c in again["cells"])
            quiesce(store)
            assert records(tmp_path / "state") == []
            assert records(tmp_path / "state", "volumes") == []  # anonymous ones too
    finally:  # a failed run's supervisor and containers must not outlive its store
        quiesce(store)
    changed = [str(p.relative_to(REPO)) for p, data in before.items() if p.read_bytes() != data]
    assert not changed, f"{changed} changed during the browser run (saved by the lab?)"
    clean_host(store)


#: A notebook that draws everything wrong: the checks above must see each fault.
FAULTS = [
    'from IPython.display import display\n'
    'display({"text/plain": "<Figure size 640x480 with 1 Axes>"}, raw=True)',
    'display({"text/plain": "VBox(children=(Button(description=\'Next step\'),))",\n'
    '         "application/vnd.jupyter.widget-view+json":\n'
    '             {"model_id": "0" * 32, "version_major": 2, "version_minor": 0}}, raw=True)',
    'wide = "' + "a very long line that no projector shows whole, " * 6 + '"',
]


def test_the_checks_see_a_text_fallback_a_broken_widget_and_a_line_too_wide(browser,
                                                                           tmp_path):
    """The lesson test's own checks fail where they should: a figure's text fallback, a
    widget whose model is gone ("Error displaying widget"), a code line wider than a 1280x720
    window in presentation mode."""
    env = scratch(tmp_path, "faults.ipynb", FAULTS, heading="Faults, on purpose.")
    with notebook_page(browser, tmp_path, "faults.ipynb", env, "faults") as page:
        run_all(page, 60)
        bad = renders(page)["bad"]
        assert any("text fallback" in b and "<Figure size" in b for b in bad), bad
        assert any("widget was not drawn" in b for b in bad), bad
        with pytest.raises(AssertionError, match="scroll sideways") as wide:
            presentation_mode(page, tmp_path, "faults")
        assert "a very long line" in str(wide.value)
