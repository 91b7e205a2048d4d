"""`edu build` against `docker build` (Docker 20.10's classic builder), case by case.

Every case of tests/dockerfiles is built by both, from the same busybox (ours, loaded into
Docker), and what comes out must be the same, instruction for instruction: the `Step N/M`
lines, the config a Dockerfile sets (Env, Cmd, Entrypoint, WorkingDir, ExposedPorts, User,
Labels, Volumes, StopSignal, Shell, Healthcheck, OnBuild), the number of layers, every file
of the final image (type, mode, owner, size, link target, content), and what the image
prints when it runs. tests/docker_reference.py is the Docker half.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import uuid
from pathlib import Path

import docker_reference as ref
import pytest
from conftest import need

from edu_runtime.images import build
from edu_runtime.images.store import Store

CASES = ref.cases()


@pytest.fixture(scope="module")
def docker_base(python):
    need(ref.docker_up(), "dockerd is not running (scripts/services.sh start docker)")
    need(os.geteuid() == 0, "root")
    base = ref.load_base()
    # The same name on edu's side, for COPY --from=edu-test-busybox:latest.
    assert edu(python, "tag", "busybox", ref.BASE_TAG).returncode == 0
    yield base
    edu(python, "rmi", ref.BASE_TAG)


def edu(python: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-m", "edu_cli.main", *argv], capture_output=True,
                          text=True, timeout=600)


def edu_build(python: str, case: Path, tag: str, made: list[str]) -> dict:
    """The edu half of reference(): the same fields, from edu's build and store."""
    args = ref.case_args(case)
    for before in args.get("before", []):
        out = edu(python, "build", "--no-cache", "--network", "none", "--build-arg",
                  "BASE=busybox", "-t", before["tag"], str(case / before["dir"]))
        assert out.returncode == 0, out.stdout + out.stderr
        made.append(before["tag"])
    # --no-cache: the reference's step images are removed after each case, so Docker never
    # uses a cache here either (and cached layers keep the mtimes of an earlier checkout).
    cmd = ["build", "--no-cache", "--network", "none", "-t", tag, "--build-arg",
           "BASE=busybox"]
    for name, value in args.get("build_args", {}).items():
        cmd += ["--build-arg", f"{name}={value}"]
    if args.get("target"):
        cmd += ["--target", args["target"]]
    out = edu(python, *cmd, str(case))
    result = {"exit_code": out.returncode, "log": out.stdout + out.stderr,
              "steps": [line for line in out.stdout.splitlines() if line.startswith("Step ")]}
    if out.returncode != 0:
        return result
    made.append(tag)
    store = Store()
    image = store.get(tag)
    cfg = image.config.get("config") or {}
    result["config"] = {key: cfg.get(key) for key in ref.CONFIG_FIELDS}
    result["layers"] = len(image.diff_ids)
    result["files"] = image_files(store, image)
    run = edu(python, "run", "--rm", "--network", "none", tag)
    result["output"], result["run_exit_code"] = run.stdout, run.returncode
    return result


def image_files(store: Store, image) -> dict[str, dict]:
    """Every path of the image's merged layers, in files_of_tar()'s terms."""
    state = build.state_of(image)
    files: dict[str, dict] = {}
    with build._image_root(store, state) as root:
        top = os.open(f"/proc/self/fd/{root}", os.O_RDONLY | os.O_DIRECTORY)
        try:
            _walk(top, "", files)
        finally:
            os.close(top)
    return files


def _walk(dirfd: int, prefix: str, files: dict[str, dict]) -> None:
    for name in sorted(os.listdir(dirfd)):
        rel = f"{prefix}{name}"
        if rel.split("/")[0] in ref.EXPORT_ADDED or rel in ref.EXPORT_ADDED:
            continue
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        kind = ("dir" if stat.S_ISDIR(st.st_mode) else "symlink" if stat.S_ISLNK(st.st_mode)
                else "file" if stat.S_ISREG(st.st_mode) else "other")
        entry = {"type": kind, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
                 "gid": st.st_gid, "size": st.st_size if kind == "file" else 0,
                 "link": os.readlink(name, dir_fd=dirfd) if kind == "symlink" else None}
        if kind == "file":
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dirfd)
            with os.fdopen(fd, "rb") as f:
                entry["sha256"] = hashlib.sha256(f.read()).hexdigest()
        files[rel] = entry
        if kind == "dir":
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dirfd)
            try:
                _walk(sub, rel + "/", files)
            finally:
                os.close(sub)


def _plain_links(files: dict[str, dict]) -> dict[str, dict]:
    """A tar's hard links as the files they are (a walked tree cannot tell them apart)."""
    out = {}
    for path, entry in files.items():
        if entry["type"] == "hardlink":
            target = files[entry["link"].strip("/").removeprefix("./")]
            entry = {**target, "mode": entry["mode"], "uid": entry["uid"], "gid": entry["gid"]}
        out[path] = entry
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_edu_builds_what_docker_builds(case, docker_base, python):
    want = ref.reference(case)
    made: list[str] = []
    try:
        got = edu_build(python, case, f"edu-vs-{case.name}:{uuid.uuid4().hex[:8]}", made)
        assert got["steps"] == [s for s in want["steps"]], got["log"]
        assert (got["exit_code"] == 0) == (want["exit_code"] == 0), got["log"] + want["log"]
        if want["exit_code"] != 0:
            return
        assert got["config"] == want["config"]
        assert got["layers"] == want["layers"], (got["log"], want["history"])
        assert got["files"] == _plain_links(want["files"])
        assert (got["output"], got["run_exit_code"]) == (want["output"],
                                                         want["run_exit_code"])
    finally:
        for tag in reversed(made):
            edu(python, "rmi", "-f", tag)


def test_every_case_is_documented():
    """Each case says what it covers and how BuildKit would differ (the README points here)."""
    assert sorted(ref.CASES) == sorted(c.name for c in CASES)
    assert all(v.get("covers") and v.get("buildkit") for v in ref.CASES.values())
    json.dumps(ref.CASES)
