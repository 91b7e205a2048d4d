"""The stepper widget: one container made one kernel step at a time, with buttons.

A student presses **Next step** and watches the kernel change: what the step does, the calls
it made, what undoing it means, a before/after table of the state it changed (namespace
inodes, mounts, cgroup files, CapEff decoded, Seccomp, uid_map, links), a timing bar per
step, and the container's ``/proc/PID/ns`` and ``/proc/PID/status`` as the host sees them.
**Run to end** applies the rest; **Reset** undoes everything, so the host is as it was.

Why a plain class around the widgets rather than a widget subclass: a terminal, a test or
an exported HTML page has no widget manager, and should neither pay for importing
ipywidgets nor get an empty box. The view keeps the state; ``text()`` and ``html()`` draw it
without widgets, and the widgets (built on first display) show the same HTML. Printing a
view gives the same content as text.

Everything shown comes from the engine's public face: the stepper's ``upcoming`` steps and
the ``StepRecord`` each ``advance()`` leaves in the container's trace. Stepping works the same
whether this process forked the container or a helper did (a Jupyter kernel is threaded, so
there the supervisor makes it: life/remote.py).

Introduced in notebooks/06-step-by-step.
"""

from __future__ import annotations

import html as _html
import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any

#: Long lists are cut to this many items, then "... N more".
MAX_ITEMS = 6
#: Lines of /proc/PID/status the host panel shows, in this order.
STATUS_KEYS = ("Name", "State", "PPid", "NSpid", "Uid", "Gid", "CapEff", "CapBnd",
               "NoNewPrivs", "Seccomp", "Seccomp_filters")
SECCOMP_MODES = {"0": "disabled", "1": "strict", "2": "filter"}
BAR_CHARS = 30  # the text timing bar's width at the slowest step
# Large enough for a projector: the widget's own type, and the colours of each side.
FONT = "font-family: sans-serif; font-size: 16px; line-height: 1.4;"
MONO = "font-family: monospace; font-size: 15px;"
COLOURS = {"host": "#1f77b4", "child": "#ff7f0e", "failed": "#d62728"}
CHANGED_BG = "#fff3b0"
CURRENT_BG = "#e8f4ff"


@dataclass
class PlanStep:
    """What a student reads about a step before it is applied."""

    name: str
    side: str
    explain: str
    lesson: str

    @property
    def does(self) -> str:
        """The explanation without its "Undo:" sentence."""
        return self.explain.partition("Undo:")[0].strip()

    @property
    def undo(self) -> str:
        """What undoing the step means (the explanation's "Undo:" sentence)."""
        return self.explain.partition("Undo:")[2].strip() or "nothing to undo"


# ---- what a record changed, as table rows -------------------------------------------------

def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested observations as one level: ``{"net": {"container": x}}`` -> ``{"net.container": x}``;
    multi-line text (a cgroup's cpu.stat) becomes a list of lines."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key in sorted(value, key=str):
            out.update(flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return out if out or not prefix else {prefix: "{}"}
    if isinstance(value, str) and "\n" in value:
        value = value.splitlines()
    return {prefix or "value": value}


def show(value: Any) -> str:
    """One value as a student reads it: text as is, others as JSON, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def cut(items: list[str], limit: int = MAX_ITEMS) -> list[str]:
    """The first ``limit`` items, then "... N more" if there were more."""
    return items if len(items) <= limit else [*items[:limit], f"... {len(items) - limit} more"]


@dataclass
class Row:
    """One changed key of one step: its value before and after, as lines to show."""

    step: str
    key: str
    before: list[str]
    after: list[str]


def rows(rec) -> list[Row]:
    """The keys a step's observation changed, sorted; lists show what came and went first."""
    before, after = flatten(rec.before), flatten(rec.after)
    out = []
    for key in sorted(set(before) | set(after)):
        b, a = before.get(key), after.get(key)
        if b == a:
            continue
        if isinstance(a, list) or isinstance(b, list):
            b_items, a_items = [show(x) for x in b or []], [show(x) for x in a or []]
            gone = [f"- {x}" for x in b_items if x not in a_items]
            new = [f"+ {x}" for x in a_items if x not in b_items]
            kept = [x for x in a_items if x in b_items]
            out.append(Row(rec.name, key,
                           cut(gone + kept) if b is not None else ["-"],
                           cut(new + kept) if a is not None else ["-"]))
        else:
            out.append(Row(rec.name, key, [show(b)], [show(a)]))
    return out


# ---- the host's view of the container's PID 1 ----------------------------------------------

def host_view(pid: int) -> list[tuple[str, str]]:
    """``(raw line, what it means)`` for /proc/PID/ns/* and /proc/PID/status, read from the
    host; the namespaces compared with this process's own."""
    from .. import kernel

    if not pid or not kernel.pid_alive(pid):
        return []
    out = []
    for name in sorted(kernel.NAMESPACES):
        theirs, ours = _readlink(f"/proc/{pid}/ns/{name}"), _readlink(f"/proc/self/ns/{name}")
        meaning = "unreadable" if theirs == "?" else (
            "the host's own" if theirs == ours else "new: not the host's")
        out.append((f"/proc/{pid}/ns/{name} -> {theirs}", meaning))
    status = kernel.proc_status(pid)
    for key in STATUS_KEYS:
        if key in status:
            out.append((f"{key}:\t{status[key]}", _meaning(key, status[key])))
    return out


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _meaning(key: str, value: str) -> str:
    from .. import kernel

    if key in ("CapEff", "CapBnd"):
        caps = [c.removeprefix("CAP_").lower() for c in kernel.decode_caps(value)]
        return f"{len(caps)} capabilities: " + ", ".join(cut(caps, 8)) if caps else "none"
    if key == "Seccomp":
        return SECCOMP_MODES.get(value, "unknown")
    if key == "NSpid":
        pids = value.split()
        return (f"pid {pids[0]} on the host, {pids[-1]} inside its pid namespace"
                if len(pids) > 1 else "the host's pid namespace")
    if key == "NoNewPrivs":
        return "set: exec can never gain privileges" if value == "1" else "not set"
    if key in ("Uid", "Gid"):
        return "real, effective, saved, filesystem"
    return ""


# ---- the view ------------------------------------------------------------------------------

STEPPING, RUNNING, FAILED, RESET = "stepping", "running", "failed", "reset"


class StepperView:
    """The stepper widget over one container: Next step, Run to end, Reset.

    ``view.next()``, ``view.run_to_end()`` and ``view.reset()`` do what the buttons do
    (``view.next_button.click()`` presses one). ``text()`` is the same content as text.
    """

    def __init__(self, container):
        self.container = container
        # What Reset starts again from: the same spec, made the same way.
        self._spec = dict(container.spec)
        self._store = container.store
        self._fork_here = container.fork_here
        self.stepper = None
        self.plan: list[PlanStep] = []
        self.records: list = []
        self.state = STEPPING
        self.error = ""
        self.said: list[str] = []  # what the last Reset removed
        self._pids: set[int] = set()
        self._ui = None
        self.replay: str | None = None  # the banner, when this view replays a recording
        #: Called with each new container (the first, and each after Reset): a lesson
        #: notes it, so its reset finds it after a Ctrl-C or a kernel restart.
        self.on_open = None
        self._open()

    # ---- the three buttons ------------------------------------------------------------------

    def next(self):
        """Apply the next step (a fresh container after Reset); its record, or None."""
        return self._run("next")

    def run_to_end(self) -> None:
        """Apply every remaining step: the command runs."""
        self._run("rest")

    def reset(self) -> list[str]:
        """Undo everything this view made, so the host is as before; what was removed."""
        c, said = self.container, []
        try:
            if c is not None and self.state == STEPPING and self.stepper is not None:
                applied = sum(1 for r in self.records if not r.error)
                self.stepper.abort()
                said.append(f"undid the {applied} applied step(s) of container "
                            f"{c.id[:12]}, newest first")
            elif c is not None and self.state == RUNNING:
                _kill_and_remove(c)
                said.append(f"killed, waited for and removed container {c.id[:12]}")
            elif c is not None and self.state == FAILED:
                said.append(f"nothing to undo: container {c.id[:12]}'s failed start undid "
                            "itself")
            else:
                said.append("nothing to undo")
        except Exception as exc:
            self.error = f"Reset could not finish: {exc}. Press Reset again, or run edu ps -a"
            self._refresh()
            raise
        self.container = self.stepper = None
        self.records, self.error, self.state, self.said = [], "", RESET, said
        self._refresh()
        return said

    # ---- stepping ---------------------------------------------------------------------------

    def _open(self) -> None:
        """A container of the spec (a fresh one after Reset) and a stepper over it."""
        from ..container import Container

        if self.container is None:
            self.container = Container(**self._spec, store=self._store,
                                       fork_here=self._fork_here)
        if self.on_open is not None:
            self.on_open(self.container)
        self.stepper = self.container.steps()
        # The local stepper's plan is its context's steps; a helper's sends its plan.
        steps = getattr(self.stepper, "plan", None) or self.stepper.ctx.steps
        self.plan = [PlanStep(s.name, s.side, s.explain, s.lesson) for s in steps]
        self.state, self.said = STEPPING, []

    def _run(self, op: str):
        if self.state in (RUNNING, FAILED):
            return None
        new = []
        try:
            if self.state == RESET:
                self._open()
            trace = self.container.trace
            seen = len(trace.steps)
            upcoming = self.stepper.upcoming
            try:
                if op == "next":
                    self.stepper.advance()
                else:
                    self.stepper.run_rest()
            finally:
                new = list(trace.steps[seen:])
        except StopIteration:
            pass
        except Exception as exc:  # noqa: BLE001 - a student reads it, in the widget
            self.error = str(exc) or type(exc).__name__
            self.state = FAILED
            if self.container is not None and not any(r.error for r in new):
                # A helper answers a failed step with its sentence only: show it as a record.
                from ..steps import StepRecord

                step = _failed_step(exc, self.plan) or upcoming
                new.append(StepRecord(step.name, step.side, error=self.error))
        self.records.extend(new)
        self._note_pids()
        if self.state == STEPPING and self.stepper.upcoming is None:
            self.state = RUNNING
        self._refresh()
        return new[-1] if new else None

    def _note_pids(self) -> None:
        if self.container is not None and self.container.pid:
            self._pids.add(self.container.pid)
        for rec in self.records:
            for key, value in (*flatten(rec.before).items(), *flatten(rec.after).items()):
                if key.endswith(("pid", "procs")) and str(value).isdigit():
                    self._pids.add(int(value))

    # ---- what is shown ----------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The container's PID 1 as the host sees it, while it exists (else 0)."""
        if self.container is None or self.state in (FAILED, RESET):
            return 0
        return self.container.pid

    @property
    def upcoming(self) -> PlanStep | None:
        """The step Next will apply, or None when the command runs (or the start failed)."""
        if self.state in (RUNNING, FAILED):
            return None
        done = self.stepper.index if self.stepper is not None else 0
        return self.plan[done] if done < len(self.plan) else None

    def host_view(self) -> list[tuple[str, str]]:
        """The host panel's lines: read now, or as recorded after the last replayed step."""
        return host_view(self.pid)

    def _plan_step(self, name: str) -> PlanStep | None:
        return next((p for p in self.plan if p.name == name), None)

    def timings(self) -> list[tuple[str, str, float, str]]:
        """``(step, side, ms, error)`` for each step applied so far, in order."""
        return [(r.name, r.side, max(r.ms, 0.0), r.error) for r in self.records]

    def title(self) -> str:
        """One line: the image, the command, and how far the start has come."""
        spec = self._spec
        cmd = " ".join(spec.get("command") or []) or "(the image's command)"
        done = sum(1 for r in self.records if not r.error)
        where = {STEPPING: f"step {done} of {len(self.plan)}",
                 RUNNING: f"all {len(self.plan)} steps applied: the command runs",
                 FAILED: "the start failed and was undone",
                 RESET: "reset: the host is as it was"}[self.state]
        cid = f" {self.container.id[:12]}" if self.container is not None else ""
        head = f"Container{cid} ({spec.get('image')} {cmd}): {where}"
        return f"[{self.replay}] {head}" if self.replay else head

    # ---- text ---------------------------------------------------------------------------------

    def text(self, normalise: bool = False) -> str:
        """Everything the widget shows, as plain text. With ``normalise``, pids, namespace
        inodes and timings are placeholders, so two runs compare equal."""
        out = [self.title(), ""]
        out += self._text_explain()
        out += ["", "What changed (before -> after):"]
        table = [r for rec in self.records for r in rows(rec) or [Row(rec.name, "", [], [])]]
        if not table:
            out.append("  nothing yet: press Next step")
        for r in table:
            if not r.key:
                out.append(f"  {r.step}: no observed change")
                continue
            out.append(f"  {r.step}: {r.key}")
            out += [f"      before  {line}" for line in r.before]
            out += [f"      after   {line}" for line in r.after]
        out += ["", "Time per step:"]
        out += self._text_timing(normalise)
        out += ["", f"From the host (PID {self.pid or '-'}):"]
        view = self.host_view()
        out += [f"  {raw}" + (f"    ({meaning})" if meaning else "") for raw, meaning in view] \
            or [f"  {self._no_host_view()}"]
        out += ["", "Introduced in notebooks/06-step-by-step"]
        text = "\n".join(out)
        return self._normalise(text) if normalise else text

    def _text_explain(self) -> list[str]:
        out = []
        if self.said:
            out += ["Reset: " + "; ".join(self.said) + ".",
                    "Next step starts a fresh container of the same spec."]
        if self.error:
            out.append(f"ERROR: {self.error}")
        if self.records:
            rec = self.records[-1]
            step = self._plan_step(rec.name)
            out.append(f"Last step: {rec.name} ({rec.side})" + (" FAILED" if rec.error else ""))
            if step:
                out += [f"  What it does: {step.does}", f"  Undo: {step.undo}"]
            out.append("  Calls:")
            out += [f"    {line}" for line in cut(rec.lines(), 12)] or ["    (none)"]
            if step:
                out.append(f"  Taught in {step.lesson}")
        nxt = self.upcoming
        if nxt is not None:
            out += [f"Next step: {nxt.name} ({nxt.side})", f"  What it does: {nxt.does}",
                    f"  Undo: {nxt.undo}"]
        elif self.state == RUNNING:
            out.append("The command runs: Reset kills and removes the container.")
        return out

    def _text_timing(self, normalise: bool) -> list[str]:
        times = self.timings()
        if not times:
            return ["  none yet"]
        slowest = max(ms for _, _, ms, _ in times) or 1.0
        out = []
        for name, side, ms, error in times:
            bar = "#" * max(1, round(ms / slowest * BAR_CHARS))
            if normalise:
                bar = "#"
            label = "failed" if error else f"{ms:8.2f} ms"
            out.append(f"  {name:<16}{side:<6} {bar:<{BAR_CHARS}} {label}")
        total = sum(ms for _, _, ms, _ in times)
        out.append(f"  {'total':<22} {'':<{BAR_CHARS}} {total:8.2f} ms")
        return out

    def _no_host_view(self) -> str:
        if self.state == RESET:
            return "no container: Reset removed it"
        if self.state == FAILED:
            return "no container: its failed start was undone"
        if self.state == RUNNING:
            return "the container's process has exited"
        return "PID 1 does not exist yet: the namespaces step forks it"

    def _normalise(self, text: str) -> str:
        text = re.sub(r"(\w+):\[\d+\]", r"\1:[INODE]", text)
        text = re.sub(r"\d+\.\d\d ms", "<t> ms", text)
        if self.container is not None:
            text = text.replace(self.container.id[:12], "<id>")
        pids = list((self._pids | {os.getpid(), self.pid}) - {0})
        if self.pid and self.replay is None:
            from .. import kernel

            ppid = kernel.proc_status(self.pid).get("PPid", "")
            pids += [int(ppid)] if ppid.isdigit() else []
        for pid in pids:
            text = re.sub(rf"(?<!\d){pid}(?!\d)", "<pid>", text)
        return text

    def __repr__(self) -> str:
        return self.text()

    def __str__(self) -> str:
        return self.text()

    def _repr_pretty_(self, p, cycle: bool) -> None:
        p.text(self.text())

    # ---- HTML -------------------------------------------------------------------------------

    def html(self) -> str:
        """Everything the widget shows, as one HTML fragment (an exported page's fallback)."""
        return (f"<div style='{FONT}'><h3 style='margin:4px 0'>{_e(self.title())}</h3>"
                f"{self.html_explain()}{self.html_table()}{self.html_timing()}"
                f"{self.html_host()}{self._backlink()}</div>")

    def html_explain(self) -> str:
        """The last step (what it did, its calls, its undo) and the next one."""
        parts = []
        if self.said:
            parts.append(f"<p><b>Reset:</b> {_e('; '.join(self.said))}. Next step starts a "
                         "fresh container of the same spec.</p>")
        if self.error:
            parts.append(f"<p style='color:{COLOURS['failed']}'><b>Error:</b> "
                         f"{_e(self.error)}</p>")
        if self.records:
            rec = self.records[-1]
            step = self._plan_step(rec.name)
            calls = "<br>".join(_e(line) for line in cut(rec.lines(), 12)) or "(none)"
            parts.append(
                f"<div style='background:{CURRENT_BG};padding:6px'><b>Last step: "
                f"{_e(rec.name)}</b> ({_e(rec.side)})"
                + (" <b style='color:#d62728'>FAILED</b>" if rec.error else "")
                + (f"<br>{_e(step.does)}<br><i>Undo:</i> {_e(step.undo)}" if step else "")
                + f"<br><i>Calls:</i><div style='{MONO}'>{calls}</div>"
                + (f"<small>Taught in {_e(step.lesson)}</small>" if step else "") + "</div>")
        nxt = self.upcoming
        if nxt is not None:
            parts.append(f"<p><b>Next step: {_e(nxt.name)}</b> ({_e(nxt.side)})<br>"
                         f"{_e(nxt.does)}<br><i>Undo:</i> {_e(nxt.undo)}</p>")
        elif self.state == RUNNING:
            parts.append("<p>The command runs: Reset kills and removes the container.</p>")
        return "".join(parts)

    def html_table(self) -> str:
        """Before/after of every key each applied step changed; the last step's rows shaded."""
        head = ("<tr><th align='left'>step</th><th align='left'>state</th>"
                "<th align='left'>before</th><th align='left'>after</th></tr>")
        body = []
        for i, rec in enumerate(self.records):
            bg = f"background:{CURRENT_BG};" if i == len(self.records) - 1 else ""
            changed = rows(rec)
            if not changed:
                body.append(f"<tr style='{bg}'><td>{_e(rec.name)}</td>"
                            "<td colspan='3'><i>no observed change</i></td></tr>")
            for r in changed:
                body.append(
                    f"<tr style='{bg}' class='edu-row'><td>{_e(r.step)}</td>"
                    f"<td style='{MONO}'>{_e(r.key)}</td>"
                    f"<td style='{MONO}'>{_cells(r.before)}</td>"
                    f"<td style='{MONO}'>{_cells(r.after)}</td></tr>")
        if not body:
            body.append("<tr><td colspan='4'><i>nothing yet: press Next step</i></td></tr>")
        return (f"<h4 style='margin:6px 0'>What changed</h4><div style='max-height:420px;"
                f"overflow:auto'><table style='border-collapse:collapse'>{head}"
                f"{''.join(body)}</table></div>")

    def html_timing(self) -> str:
        """A bar per applied step, as long as the step took (the slowest fills the width)."""
        times = self.timings()
        if not times:
            return "<h4 style='margin:6px 0'>Time per step</h4><p><i>none yet</i></p>"
        slowest = max(ms for _, _, ms, _ in times) or 1.0
        bars = []
        for name, side, ms, error in times:
            colour = COLOURS["failed"] if error else COLOURS.get(side, "#777")
            width = max(2, round(ms / slowest * 360))
            label = "failed" if error else f"{ms:.2f} ms"
            bars.append(f"<div class='edu-bar' style='display:flex;align-items:center'>"
                        f"<span style='width:150px'>{_e(name)}</span>"
                        f"<span style='display:inline-block;height:14px;width:{width}px;"
                        f"background:{colour}'></span>"
                        f"<span style='margin-left:8px;{MONO}'>{label}</span></div>")
        total = sum(ms for _, _, ms, _ in times)
        legend = " ".join(f"<span style='color:{c}'>&#9632; {k}</span>"
                          for k, c in COLOURS.items())
        return (f"<h4 style='margin:6px 0'>Time per step ({total:.2f} ms in all)</h4>"
                f"{''.join(bars)}<small>{legend}</small>")

    def html_host(self) -> str:
        """/proc/PID/ns and /proc/PID/status of the container's PID 1, read from the host."""
        view = self.host_view()
        if not view:
            body = f"<i>{_e(self._no_host_view())}</i>"
        else:
            body = "<table>" + "".join(
                f"<tr><td style='{MONO}'>{_e(raw)}</td><td>{_e(meaning)}</td></tr>"
                for raw, meaning in view) + "</table>"
        return (f"<h4 style='margin:6px 0'>From the host: PID {self.pid or '-'}</h4>{body}")

    def _backlink(self) -> str:
        return "<p><small>Introduced in notebooks/06-step-by-step</small></p>"

    def _repr_mimebundle_(self, include=None, exclude=None):
        data = self.widget._repr_mimebundle_(include=include, exclude=exclude)
        data = dict(data) if data else {}
        # Where no widget manager runs (an exported page, a notebook without its kernel),
        # the HTML and the text say the same as the widget.
        data["text/html"] = self.html()
        data["text/plain"] = self.text()
        return data

    # ---- widgets (ipywidgets imported here, on first display) -------------------------------

    @property
    def widget(self):
        """The ipywidgets box: buttons, explanation, table, timing bars, host panel."""
        if self._ui is None:
            import ipywidgets as w

            ui = {"next": w.Button(description="Next step", button_style="primary",
                                   icon="step-forward"),
                  "rest": w.Button(description="Run to end", icon="fast-forward"),
                  "reset": w.Button(description="Reset", button_style="warning", icon="undo"),
                  "title": w.HTML(), "explain": w.HTML(), "table": w.HTML(),
                  "timing": w.HTML(), "host": w.HTML()}
            for key in ("next", "rest", "reset"):
                ui[key].layout = w.Layout(width="160px", height="40px")
            ui["next"].on_click(lambda _: self.next())
            ui["rest"].on_click(lambda _: self.run_to_end())
            ui["reset"].on_click(lambda _: self.reset())
            ui["box"] = w.VBox([ui["title"], w.HBox([ui["next"], ui["rest"], ui["reset"]]),
                                ui["explain"], ui["table"], ui["timing"], ui["host"],
                                w.HTML(self._backlink())])
            self._ui = ui
            self._refresh()
        return self._ui["box"]

    @property
    def next_button(self):
        """The Next step button."""
        return self._button("next")

    @property
    def run_button(self):
        """The Run to end button."""
        return self._button("rest")

    @property
    def reset_button(self):
        """The Reset button."""
        return self._button("reset")

    def _button(self, key: str):
        self.widget  # noqa: B018 - built on first use
        return self._ui[key]

    def _refresh(self) -> None:
        ui = self._ui
        if ui is None:
            return
        ui["title"].value = f"<h3 style='{FONT} margin:4px 0'>{_e(self.title())}</h3>"
        ui["explain"].value = f"<div style='{FONT}'>{self.html_explain()}</div>"
        ui["table"].value = f"<div style='{FONT}'>{self.html_table()}</div>"
        ui["timing"].value = f"<div style='{FONT}'>{self.html_timing()}</div>"
        ui["host"].value = f"<div style='{FONT}'>{self.html_host()}</div>"
        done = self.state in (RUNNING, FAILED)
        ui["next"].disabled = ui["rest"].disabled = done


def _e(text: str) -> str:
    return _html.escape(str(text))


def _cells(lines: list[str]) -> str:
    out = []
    for line in lines:
        mark = line.startswith(("+ ", "- "))
        style = f" style='background:{CHANGED_BG}'" if mark or len(lines) == 1 else ""
        out.append(f"<div{style}>{_e(line)}</div>")
    return "".join(out)


def _failed_step(exc: Exception, plan: list[PlanStep]) -> PlanStep | None:
    """The step an error names: the last of its "step: step: sentence" prefixes that is a
    step of the plan (a helper's "rest" names the first step it was asked for, then the
    one that failed)."""
    names = {p.name: p for p in plan}
    found = names.get(getattr(exc, "step", ""))
    for part in str(exc).split(": ")[:-1]:
        found = names.get(part, found)
    return found


def _kill_and_remove(c, timeout: float = 10) -> None:
    """Kill a running container, wait for it (its teardown), and remove what is left."""
    try:
        c.kill()
    except Exception:  # noqa: BLE001 - it may have exited already; wait says how
        pass
    c.wait()
    # A helper answers the wait before its teardown: wait for the record to say so.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = json.loads(c.paths.record.read_text()).get("status")
        except (OSError, ValueError):
            return  # removed with the container (--rm)
        if status == "exited":
            break
        time.sleep(0.05)
    c.remove(force=True)


def step_through(image, command: list[str] | None = None, **options) -> StepperView:
    """The stepper widget over a new container: ``Container(image, command, **options)``."""
    from ..container import Container

    return StepperView(Container(image, command, **options))


# ---- recording and replaying a stepper (lessons/recordings; notebook/replay.py) --------------

def record_steps(image, command: list[str] | None = None, **options) -> dict[str, Any]:
    """Step a new container of this spec to the end for real, as a student would, keeping
    each step's record and the host panel after it; then reset. JSON data for a replay."""
    view = step_through(image, command, **options)
    cid, steps = view.container.id, []
    try:
        while view.upcoming is not None:
            rec = view.next()
            if rec is None:
                break
            steps.append({"record": rec.to_dict(), "pid": view.pid,
                          "host": [list(line) for line in view.host_view()]})
        if view.error:
            raise RuntimeError(f"the recorded start failed: {view.error}")
    finally:
        view.reset()
    return {"spec": {k: v for k, v in view._spec.items() if _jsonable(v)},
            "plan": [{"name": p.name, "side": p.side, "explain": p.explain, "lesson": p.lesson}
                     for p in view.plan],
            "id": cid[:12],
            "steps": steps}


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True


class _Record:
    """A recorded step, read back without the engine (a replay may run where it cannot)."""

    def __init__(self, data: dict[str, Any]):
        self.name, self.side = data["name"], data["side"]
        self.start, self.end = data.get("start", 0.0), data.get("end", 0.0)
        self.before, self.after = data.get("before") or {}, data.get("after") or {}
        self.error = data.get("error", "")
        self.syscalls = [tuple(c) for c in data.get("syscalls") or []]

    @property
    def ms(self) -> float:
        return (self.end - self.start) * 1e3

    def lines(self) -> list[str]:
        return [f"{c[0]}({', '.join(map(str, c[1:]))})" if len(c) > 1 else str(c[0])
                for c in self.syscalls]


class _ReplayedStepper:
    """What a StepperView steps: the recorded steps, one per Next."""

    def __init__(self, view: ReplayedStepperView):
        self.view, self.index = view, 0

    @property
    def upcoming(self):
        return self.view.plan[self.index] if self.index < len(self.view.data["steps"]) \
            else None

    def advance(self):
        steps = self.view.data["steps"]
        if self.index >= len(steps):
            raise StopIteration
        self.view.container.trace.steps.append(_Record(steps[self.index]["record"]))
        self.index += 1

    def run_rest(self) -> None:
        while self.upcoming is not None:
            self.advance()

    def abort(self) -> None:
        self.index = 0


class _ReplayedContainer:
    def __init__(self, data: dict[str, Any]):
        from types import SimpleNamespace

        self.id = (data.get("id") or "replay").ljust(12, "0")
        self.trace = SimpleNamespace(steps=[])
        self.spec = data["spec"]


class ReplayedStepperView(StepperView):
    """The stepper over a recording: the same buttons, table, bars and host panel, each
    showing what the real run showed, under the replay banner. Nothing is made on this
    host, so Reset only rewinds."""

    def __init__(self, data: dict[str, Any], banner: str):
        self.data = data
        self.container = _ReplayedContainer(data)
        self._spec = dict(data["spec"])
        self._store, self._fork_here = None, False
        self.stepper = None
        self.plan = [PlanStep(**p) for p in data["plan"]]
        self.records = []
        self.state, self.error, self.said = STEPPING, "", []
        self._pids: set[int] = set()
        self._ui = None
        self.replay = banner
        self.on_open = None
        self._open()

    def _open(self) -> None:
        self.container = _ReplayedContainer(self.data)
        self.stepper = _ReplayedStepper(self)
        self.state, self.said = STEPPING, []

    def reset(self) -> list[str]:
        said = ["a replay: nothing was made on this host, so nothing to undo"]
        self.container = self.stepper = None
        self.records, self.error, self.state, self.said = [], "", RESET, said
        self._refresh()
        return said

    @property
    def pid(self) -> int:
        if self.state in (FAILED, RESET) or not self.records:
            return 0
        return self.data["steps"][len(self.records) - 1].get("pid", 0)

    def host_view(self) -> list[tuple[str, str]]:
        if self.state in (FAILED, RESET) or not self.records:
            return []
        return [tuple(line) for line in self.data["steps"][len(self.records) - 1]["host"]]

    def _note_pids(self) -> None:
        pass
