"""The ``edu`` command as installed: a launcher that starts Python without ``site``.

pip writes ``.venv/bin/edu`` as ``#!.venv/bin/python`` and three lines of Python. Before
those lines run, Python's ``site`` module sets up the third-party packages: it reads the
venv's ``.pth`` files and imports what they name (setuptools' distutils hack among them).
That costs 3 to 4 ms of every start (bench/cli_startup.py), and a thin ``edu run``
(``fastrun``) needs none of it: the standard library and edu_cli are enough. So the
project's own installers (scripts/setup.sh, deploy/hub/install.py) write this launcher over
pip's: ``python -S``, with the directory edu_cli is in put on the path by hand.
``edu_cli.main`` runs ``site`` itself when a command needs more than the thin path.

    .venv/bin/python -m edu_cli.launcher PATH [ROOT]    # ROOT: where edu_cli is

Introduced in notebooks/07-run-it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def text(python: str, root: str) -> str:
    """The launcher's source, for interpreter ``python`` and edu_cli's parent ``root``."""
    return (f"#!{python} -S\n"
            "# edu's command, written by edu_cli/launcher.py over pip's: -S skips `site`,\n"
            "# which edu_cli.main sets up once a command needs more than the thin path.\n"
            "import sys\n"
            f"sys.path.insert(0, {root!r})\n"
            "from edu_cli.main import main\n"
            "sys.exit(main())\n")


def write(path: Path, python: str, root: str) -> None:
    """Write the launcher to ``path`` (mode 0755), atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text(python, root))
    tmp.chmod(0o755)
    os.replace(tmp, path)


if __name__ == "__main__":
    here = str(Path(__file__).resolve().parent.parent)
    write(Path(sys.argv[1]), sys.executable, sys.argv[2] if len(sys.argv) > 2 else here)
