"""edu_runtime.notebook: the course's face in JupyterLab: widgets, figures, checks, reset.

The engine never imports this package; this package uses only the engine's public face.
Importing it is cheap on purpose: ipywidgets is imported when the first widget is drawn,
so a terminal or a test that prints a view as text never pays for it; the container
machinery is imported when a container is made::

    from edu_runtime.notebook import step_through
    view = step_through("busybox", ["sh"])   # the stepper widget over one container
    view                                      # buttons in JupyterLab, text elsewhere

Introduced in notebooks/06-step-by-step.
"""

from __future__ import annotations

from .stepper import StepperView, step_through

__all__ = ["StepperView", "step_through"]
