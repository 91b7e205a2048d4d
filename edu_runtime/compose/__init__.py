"""``edu compose``: a subset of the compose specification, done properly.

- ``project``: a compose file read, interpolated (``${VAR:-default}``, ``.env``), checked and
  normalised into a ``Project`` of ``Service``s, with Compose v2's names and labels;
- ``schema``: the checks, against the official compose-spec JSON schema (vendored in
  ``edu_runtime/data``) and then against the keys this subset supports;
- ``engine``: the verbs (up, down, ps, logs, build, pull, stop, start, restart) over the
  runtime's own containers, networks and volumes.

Used as ``from edu_runtime import compose``: ``p = compose.load(["compose.yaml"])``,
``compose.up(p)``, ``compose.ps(p)``, ``compose.down(p, volumes=True)``.

Introduced in notebooks/08-web-app.
"""

from .engine import build, containers, down, logs, ps, pull, restart, start, stop, up
from .project import Project, Resource, Service, load
from .schema import ComposeError

__all__ = ["ComposeError", "Project", "Resource", "Service", "build", "containers", "down",
           "load", "logs", "ps", "pull", "restart", "start", "stop", "up"]
