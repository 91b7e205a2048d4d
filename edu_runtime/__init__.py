"""edu_runtime: a container runtime that builds each container one kernel step at a time.

Start with notebooks/00-start-here. The kernel seam is ``kernel.py``; each kernel concept
has its own module (``cgroups``, ...). Importing this package is cheap on purpose: ``edu run``
pays for every import at start-up.
"""

__version__ = "0.1.0"
