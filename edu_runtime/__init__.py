"""edu_runtime: a container runtime that builds each container one kernel step at a time.

The public face, for lessons and notebooks (and anyone who would rather write Python than
type ``edu``)::

    from edu_runtime import Container, Stepper, Trace, images, networks, volumes

    c = Container("busybox", ["echo", "hello"])   # docker create
    c.run()                                       # docker start -a; returns the exit code
    for record in Container("busybox", ["true"]).steps():
        print(record.name, record.after)          # one kernel step at a time

Start with notebooks/00-start-here. The kernel seam is ``kernel.py``; each kernel concept
has its own module (``cgroups``, ``namespaces``, ...); networking is ``networks/``, a
container's life after its start is ``life/``, images are ``images/``.

Importing this package is free on purpose: ``edu run`` pays for every import at start-up,
so the names above are imported when first used (PEP 562), not here.
"""

__version__ = "0.1.0"

#: The public names that are not modules of this package, and where each lives.
_FACE = {"Container": "container", "Stepper": "container", "Trace": "steps",
         "StepRecord": "steps", "StepError": "steps"}
__all__ = sorted([*_FACE, "images", "networks", "volumes"])


def __getattr__(name: str):
    if name in _FACE:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_FACE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
