"""`make lab` starts dockerd as root where docker is installed, so lessons can show Docker
beside edu; where docker is absent it says the Docker cells will replay, and goes on.

`make lab` prepares with `scripts/setup.sh` (no --test): these tests run exactly that.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from conftest import IN_CI, REPO, need, wait_for

LAB_STEP = "services: dockerd, so lessons can show Docker beside edu"


def lab_setup(env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """What `make lab` runs before JupyterLab; it must succeed."""
    out = subprocess.run([str(REPO / "scripts/setup.sh")], capture_output=True, text=True,
                         env=env, stdin=subprocess.DEVNULL, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def docker_answers() -> bool:
    return subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                          capture_output=True, timeout=30).returncode == 0


def test_make_lab_starts_dockerd_as_root(root):
    need(shutil.which("dockerd") is not None, "docker.io is not installed")
    # On CI's own machine, stop it first, so the lab's set-up must start it. Elsewhere other
    # test sessions may be using it: there, set-up must find it running and leave it be.
    stopped = False
    if IN_CI:
        subprocess.run([str(REPO / "scripts/services.sh"), "stop", "docker"], check=True,
                       capture_output=True)
        stopped = wait_for(lambda: not docker_answers(), timeout=30)
    out = lab_setup()
    assert LAB_STEP in out.stdout
    assert ("dockerd: started" if stopped else "dockerd: ") in out.stdout, out.stdout
    assert docker_answers(), "docker info does not answer after make lab's set-up"
    # Idempotent: a second run finds it and starts nothing.
    again = lab_setup()
    assert "dockerd: already running" in again.stdout, again.stdout
    assert docker_answers()


def test_without_docker_the_lab_says_the_docker_cells_replay(root, tmp_path):
    """A PATH with every command but docker and dockerd: set-up says the Docker cells will
    replay, starts no dockerd, and finishes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for d in os.environ["PATH"].split(":"):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            target = os.path.join(d, name)
            if name not in ("docker", "dockerd") and not (bin_dir / name).exists() \
                    and os.access(target, os.X_OK):
                (bin_dir / name).symlink_to(target)
    env = dict(os.environ, PATH=str(bin_dir))
    assert subprocess.run(["bash", "-c", "command -v dockerd docker"], env=env).returncode
    out = lab_setup(env)
    assert "docker is not installed: the Docker cells will replay" in out.stdout, out.stdout
    assert "dockerd: started" not in out.stdout
