"""The soak's short form (issue 16): 100 randomized operations through the real ``edu``
command, every invariant checked after each (bench/soak.py is the long form, 500, and says
what is checked); the soak's mistakes once each beside Docker (the same exit codes); and the
supervisor's lock in ``/run/edu``, which no longer stays behind its supervisor.

The seed is fixed here, so that every CI run tries the same operations and a failure is
one command to replay: ``bench/soak.py --ops 100 --seed 16``. The bench draws a new seed
each run (and prints it) to find what this one does not.
"""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO, need

sys.path.insert(0, str(REPO / "bench"))

SEED = 16


def test_100_randomized_operations_keep_every_invariant_and_leave_nothing(busybox):
    import soak

    seed = SEED
    result = soak.soak(100, seed, every=50, progress=False)
    soak.show(result)
    assert result["findings"] == [], f"seed {seed}"
    assert result["operations"] == 100
    assert result["leaks"] == {}, f"seed {seed}"
    assert result["traces"] == [], f"seed {seed}"  # no record, pin, volume, network file
    assert set(result["per_kind"]) == set(soak.WEIGHTS)  # every kind of operation ran
    # No supervisor's lock outlives its supervisor (the state directory's other counts are
    # the whole host's, others' work included: bench/soak.py reports them).
    first, last = result["rows"][0], result["rows"][-1]
    assert last["stale supervisor locks"] <= first["stale supervisor locks"]


def test_the_soaks_mistakes_are_refused_with_dockers_exit_codes(busybox):
    """Each mistake the soak makes, once, in edu and in Docker: a name in use, exec into a
    container that is not running, network rm and volume rm of one in use."""
    import uuid

    import docker_reference as ref

    need(ref.docker_up(), "dockerd is not running: scripts/services.sh start docker")
    import soak

    codes = {}
    for tool, image in (("edu", "busybox"), ("docker", ref.load_base())):
        cmd = soak.edu_command() if tool == "edu" else ["docker"]
        tag = f"sk-m{uuid.uuid4().hex[:6]}"

        def run(*argv, cmd=cmd):
            return subprocess.run([*cmd, *argv], capture_output=True, text=True, timeout=60)
        try:
            assert run("network", "create", tag).returncode == 0
            assert run("volume", "create", tag).returncode == 0
            assert run("run", "-d", "--name", tag, "--network", tag, "-v", f"{tag}:/data",
                       image, "sleep", "60").returncode == 0
            assert run("create", "--name", tag + "-idle", image, "true").returncode == 0
            codes[tool] = [run("run", "-d", "--name", tag, image, "true").returncode,
                           run("exec", tag + "-idle", "true").returncode,
                           run("network", "rm", tag).returncode,
                           run("volume", "rm", tag).returncode]
        finally:
            run("rm", "-f", tag, tag + "-idle")
            run("network", "rm", tag)
            run("volume", "rm", tag)
    assert codes["edu"] == codes["docker"] == [125, 1, 1, 1]


HOLD = ("import fcntl, sys\n"
        "f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX)\n"
        "print('held', flush=True); sys.stdin.read()\n")

#: A supervisor of its own state and run directories, with no network to keep warm (as a
#: rootless user's): it starts, finds nothing to do, and idles out at once. Nothing of the
#: host's default store or its bridges is touched.
SUPERVISOR = ("from edu_runtime import paths\n"
              "paths.is_root = lambda: False\n"
              "from edu_runtime.life import supervisor\n"
              "supervisor.main()\n")


def test_a_supervisor_removes_its_lock_as_it_exits_and_those_of_supervisors_gone(
        tmp_path, python):
    need(os.geteuid() == 0, "root (the supervisor runs as root here)")
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    for scope in ("dead0001", "dead0002"):  # what a SIGKILLed supervisor leaves
        (run / f"supervisor-{scope}.lock").touch()
        (run / f"supervisor-{scope}.sock").touch()
    held = run / "supervisor-a11ve001.lock"  # a live one's: held, so left alone
    holder = subprocess.Popen([python, "-c", HOLD, str(held)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        env = {**os.environ, "EDU_STATE_DIR": str(tmp_path / "state"),
               "EDU_RUN_DIR": str(run), "EDU_SUPERVISOR_IDLE": "0.2"}
        out = subprocess.run([python, "-c", SUPERVISOR], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert sorted(p.name for p in run.iterdir()) == [held.name]
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)


def test_two_supervisors_of_one_store_racing_on_a_lock_being_removed_serve_one_at_a_time(
        tmp_path, python):
    """An exiting supervisor removes its lock while a new one waits on it: the new one finds
    it locked a file that is no longer the path's, and takes the path's new file. Two of them
    started together: both end (the second finds the first answering, or serves after it),
    and the run directory is empty."""
    need(os.geteuid() == 0, "root (the supervisor runs as root here)")
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    env = {**os.environ, "EDU_STATE_DIR": str(tmp_path / "state"), "EDU_RUN_DIR": str(run),
           "EDU_SUPERVISOR_IDLE": "0.2"}
    procs = [subprocess.Popen([python, "-c", SUPERVISOR], env=env, cwd=REPO,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for p in procs:
        assert p.wait(timeout=60) == 0, p.stderr.read()
        p.stderr.close()
    assert list(run.iterdir()) == []
