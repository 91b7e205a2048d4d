"""Predictions, exercises and self-checks: plain functions, no server.

- ``q = predict("Which step makes hostname differ?", ["uts", "mount", "cgroup"])`` asks
  before a cell runs (radio buttons in JupyterLab; ``q.choose("uts")`` anywhere). After the
  cell, ``q.check(actual, why="...")`` says whether the prediction was right, and *why* the
  answer is what it is, which matters most when it was wrong. A number works too:
  ``predict("How many times longer will the VM take to start?", number=True)``, right when
  within a factor of ``within`` of the measurement.
- ``ex = exercise("Make a container whose hostname is your name, without --hostname",
  solution='''...''')`` shows the task with its solution hidden (a click reveals it;
  ``ex.reveal()`` prints it). With ``EDU_SOLVE=1`` (the tests) the solution runs in the
  notebook, so the checks after it can pass.
- ``check("the container's hostname is yours", ok, hint="...")`` prints a pass, or a
  "not yet" with the hint; ``summary(results)`` counts them.

Introduced in notebooks/00-start-here.
"""

from __future__ import annotations

import html
import os
import sys
from typing import Any

PASS_MARK, FAIL_MARK = "\u2714", "\u2718"


class Prediction:
    """A question asked before a cell runs; ``check`` compares it with what really happened."""

    def __init__(self, question: str, choices: list[str] | None = None, *,
                 number: bool = False, within: float = 3.0):
        self.question, self.choices = question, list(choices or [])
        self.number, self.within = number, within
        self.answer: Any = None
        self._ui = None

    def choose(self, answer: Any) -> Prediction:
        """Make (or change) the prediction without the buttons."""
        if self.number:
            answer = float(answer)
        elif answer not in self.choices:
            raise ValueError(f"{answer!r} is not one of the choices: {', '.join(self.choices)}")
        self.answer = answer
        return self

    def right(self, actual: Any) -> bool:
        if self.answer is None:
            return False
        if self.number:
            a, b = float(self.answer), float(actual)
            return a > 0 and b > 0 and max(a, b) / min(a, b) <= self.within
        return self.answer == actual

    def verdict(self, actual: Any, why: str = "") -> str:
        shown = f"{actual:.3g}" if self.number and isinstance(actual, int | float) else actual
        if self.answer is None:
            head = f"You made no prediction. The answer: {shown}."
        elif self.right(actual):
            head = f"{PASS_MARK} Right: you predicted {self.answer}, and it is {shown}."
        else:
            head = f"{FAIL_MARK} You predicted {self.answer}; it is {shown}."
        return head + (f" Why: {why}" if why else "")

    def check(self, actual: Any, why: str = "") -> Said:
        """Whether the prediction was right, and why the answer is what it is: shown as
        the cell's result, true when right."""
        return Said(self.verdict(actual, why), self.right(actual))

    # ---- display ----------------------------------------------------------------------

    def text(self) -> str:
        if self.number:
            how = "a number: q.choose(20)"
        else:
            how = " | ".join(self.choices) + f"   (choose with q.choose({self.choices[0]!r}))"
        return f"Predict: {self.question}\n  {how}"

    def _repr_mimebundle_(self, include=None, exclude=None):
        data = dict(self.widget._repr_mimebundle_(include=include, exclude=exclude) or {})
        data["text/plain"] = self.text()
        data["text/html"] = f"<p><b>Predict:</b> {html.escape(self.question)}</p>"
        return data

    @property
    def widget(self):
        if self._ui is None:
            import ipywidgets as w

            label = w.HTML(f"<b style='font-size:16px'>Predict:</b> "
                           f"<span style='font-size:16px'>{html.escape(self.question)}</span>")
            if self.number:
                box = w.FloatText(description="your guess", value=0)
                box.observe(lambda ch: ch["new"] and self.choose(ch["new"]), names="value")
            else:
                box = w.RadioButtons(options=self.choices, value=None,
                                     layout=w.Layout(width="max-content"))
                box.observe(lambda ch: ch["new"] is not None and self.choose(ch["new"]),
                            names="value")
            self._ui = w.VBox([label, box])
        return self._ui


def predict(question: str, choices: list[str] | None = None, *, number: bool = False,
            within: float = 3.0) -> Prediction:
    """Ask before running: choices (radio buttons) or a number (right within a factor)."""
    if not number and not choices:
        raise ValueError("predict() needs choices, or number=True")
    return Prediction(question, choices, number=number, within=within)


class Exercise:
    """A task applying the lesson's idea to a new case, with a solution to reveal."""

    def __init__(self, task: str, solution: str):
        self.task, self.solution = task, solution.strip("\n")

    def reveal(self) -> None:
        print(self.solution)

    def text(self) -> str:
        return f"Exercise: {self.task}\n  (the solution is hidden: ex.reveal() shows it)"

    def _repr_html_(self) -> str:
        return (f"<div style='border-left:4px solid #1f77b4;padding:4px 10px;font-size:16px'>"
                f"<b>Exercise:</b> {html.escape(self.task)}<details><summary>Show the "
                f"solution</summary><pre>{html.escape(self.solution)}</pre></details></div>")

    def __repr__(self) -> str:
        return self.text()


def solving() -> bool:
    """``EDU_SOLVE=1``: exercises run their solutions (the tests' top-to-bottom runs)."""
    return os.environ.get("EDU_SOLVE", "") not in ("", "0")


def exercise(task: str, solution: str) -> Exercise:
    """The exercise, shown with its solution hidden; with ``EDU_SOLVE=1`` it is solved here,
    in the notebook's own namespace (the caller's)."""
    ex = Exercise(task, solution)
    if solving():
        namespace = sys._getframe(1).f_globals
        exec(compile(ex.solution, "<solution>", "exec"), namespace)  # noqa: S102
    return ex


def check(what: str, ok: Any, hint: str = "") -> bool:
    """One self-check: ``ok`` is a bool, or a function returning one (an exception counts as
    not yet, with its message). Prints a pass, or "not yet" and the hint."""
    detail = ""
    if callable(ok):
        try:
            ok = ok()
        except Exception as exc:  # noqa: BLE001 - a student's state, not a crash
            ok, detail = False, f" ({exc})"
    if ok:
        print(f"  {PASS_MARK} {what}")
    else:
        print(f"  {FAIL_MARK} not yet: {what}{detail}" + (f"\n      hint: {hint}" if hint else ""))
    return bool(ok)


def summary(results: list[bool]) -> Said:
    """``3 of 4 checks passed``, as the cell's result (true when all passed)."""
    text = f"{sum(results)} of {len(results)} checks passed" + (
        "." if all(results) else ": read the hints above, then run the checks again.")
    return Said(text, all(results))


class Said(str):
    """A sentence shown as a cell's result (no quotes), with a truth value: a prediction
    that was right, checks that all passed."""

    def __new__(cls, text: str, ok: bool = True):
        self = super().__new__(cls, text)
        self.ok = ok
        return self

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, p, cycle: bool) -> None:
        p.text(str(self))
