"""edu_runtime.notebook: the course's face in JupyterLab: widgets, figures, checks, replay, reset.

The engine never imports this package; this package uses only the engine's public face.
Importing it is cheap, and works where the engine cannot (a Mac, Binder): ipywidgets is
imported when the first widget is drawn, the container machinery when a container is made,
so a replay needs neither::

    from edu_runtime.notebook import Lesson, predict, exercise, check, summary
    lesson = Lesson("06-step-by-step")      # which parts run live here, which replay
    view = lesson.stepper("stepper", "busybox", ["sh"], network="bridge")
    view                                     # buttons in JupyterLab, text elsewhere
    result = lesson.live("fast", measure)    # measure() for real, or its recording
    lesson.reset()                           # remove what the lesson made, and say what

Introduced in notebooks/00-start-here.
"""

from __future__ import annotations

import importlib
from typing import Any

#: The public names, and the module each lives in (imported when first used).
_FROM = {"Lesson": "lesson", "StepperView": "stepper", "step_through": "stepper",
         "predict": "checks", "exercise": "checks", "check": "checks", "summary": "checks",
         "port": "course", "ports": "course", "RecordingError": "replay",
         "course_plan": "lesson", "doctor_report": "lesson", "wait_until": "lesson",
         "doctor_table": "tables", "plan_table": "tables", "waterfall": "figures"}
__all__ = sorted(_FROM)


def __getattr__(name: str) -> Any:
    module = _FROM.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_FROM))
