"""How long `edu` takes to start, beside runc's and docker's command-line tools.

`edu run` pays for every import on every start, so the CLI's start-up is the floor under
every container it starts. This measures `edu --version` against bare Python and against
the Go CLIs of the real peers, alternating, and reports medians and ratios.

    .venv/bin/python bench/cli_startup.py [--runs 30]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alternate, report, save, timed  # noqa: E402


def main() -> None:
    """Run the benchmark and save bench/results/cli_startup.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    edu = str(Path(sys.executable).parent / "edu")
    contenders = {
        "python -c pass": timed([sys.executable, "-c", "pass"]),
        "edu --version": timed([edu, "--version"]),
        "edu doctor --help": timed([edu, "doctor", "--help"]),
    }
    for name, cmd in (("runc --version", ["runc", "--version"]),
                      ("docker --version", ["docker", "--version"])):
        if shutil.which(cmd[0]):
            contenders[name] = timed(cmd)
    times = alternate(contenders, args.runs, desc="cli start-up")
    result = report("CLI start-up", times, baseline="python -c pass")
    print(f"saved {save('cli_startup', result)}")


if __name__ == "__main__":
    main()
