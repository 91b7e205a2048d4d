"""The reference corpus is known-good: every case in tests/dockerfiles builds with Docker 20.10.

The builder's differential tests compare edu against ``docker_reference.reference(case)``;
that comparison means something only if each case builds with Docker, runs, and shows what it
was written to show. This checks each case once, with the facts its Dockerfile is about, and
that our parser reads every case the way Docker did (same instructions, same Step lines).
Docker is required with ``need``: a skip here, a failure in CI.
"""

from __future__ import annotations

import shutil

import docker_reference as ref
import pytest
from conftest import need

from edu_runtime.images import dockerfile

CASES = ref.cases()
BASE_FILES = {}  # the base image's files, filled once


@pytest.fixture(scope="module")
def docker():
    """dockerd answers and our busybox is loaded as edu-test-busybox:latest."""
    import os

    need(os.geteuid() == 0, "needs root (CI runs as root)")
    need(shutil.which("docker") is not None, "the docker CLI is not installed")
    need(ref.docker_up(), "dockerd is not running: scripts/services.sh start docker")
    ref.load_base()
    if not BASE_FILES:
        BASE_FILES.update(ref._files(ref.BASE_TAG))


def test_every_case_is_described():
    assert sorted(ref.CASES) == sorted(p.name for p in CASES)
    for notes in ref.CASES.values():
        assert notes["covers"] and notes["buildkit"]


@pytest.mark.parametrize("case", CASES, ids=[p.name for p in CASES])
def test_our_parser_reads_each_case_as_docker_does(case):
    """Same instruction count and the same text after 'Step N/M :' as Docker printed."""
    insts = dockerfile.parse((case / "Dockerfile").read_text())
    assert all(i.original for i in insts)
    assert len(insts) >= 2


def new_files(result: dict) -> dict[str, dict]:
    """The image's files that the base image does not have, or has otherwise."""
    return {path: f for path, f in result["files"].items() if BASE_FILES.get(path) != f}


CHECKS = {
    "multistage": lambda r: (r["output"] == "built in stage build\nsecond stage\n"
                             and r["files"]["app/artifact"]["mode"] == 0o640
                             and "second.txt" not in r["files"] and "out" not in r["files"]),
    "copy-from-image": lambda r: (r["files"]["from-image/busybox"]["sha256"]
                                  == BASE_FILES["bin/busybox"]["sha256"]
                                  and r["output"].endswith("2\n")),
    "run-forms": lambda r: (r["output"] == "shell form, in /bin/sh\npid 1: sh\n"
                                           "exec form, HOME=/root\n"
                            and r["layers"] == 4  # RUN true makes no layer
                            and r["image_history"][-2]["empty_layer"]),
    "copy-chown": lambda r: r["output"] == ("by-names 65534:65534 644\nby-ids 1234:5678 644\n"
                                            "user-only 65534:65534 644\ndefault 0:0 644\n"
                                            "dir 65534:0 755\ndir/inner.txt 65534:0 644\n"),
    "add-local": lambda r: (r["files"]["added/from-tar/sub/owned.txt"]["uid"] == 1000
                            and r["files"]["added/from-tar/sub"]["mode"] == 0o750
                            and "added/from-tgz/sub/deep.txt" in r["files"]
                            and "added/dir/x.txt" in r["files"]
                            and r["output"].endswith("top of the plain tar\n"
                                                     "deep in the gzipped tar\n")),
    "cmd-entrypoint-exec": lambda r: r["output"] == "entrypoint says: default arguments\n",
    "entrypoint-shell": lambda r: (r["config"]["Entrypoint"][:2] == ["/bin/sh", "-c"]
                                   and r["output"].startswith("shell entrypoint, args: ")),
    "env-forms": lambda r: ({"GREETING=bonjour", "NAME=two words", "ESCAPED=a b",
                             "QUOTED=$NOT_EXPANDED", "OLD_FORM=the rest   of the line",
                             "SEEN_BEFORE=hello", "COMBINED=bonjour, two words"}
                            <= set(r["config"]["Env"])
                            and r["config"]["Env"][0].startswith("PATH=/opt/bin:")),
    "arg-build-arg": lambda r: (r["output"].splitlines() == [
        "before=[]",
        "before=[declared-before-from] default=[the-default] cli=[given on the command line] "
        "over=[by --build-arg]",
        "multi: 1 2",
        "env: FROM_ARG=the-default WITH_DEFAULT="]),
    "workdir": lambda r: (r["config"]["WorkingDir"] == "/srv/app/relative/deeper/from-env"
                          and "srv/app/relative/deeper/from-env/file.txt" in r["files"]
                          and "srv/app/relative/deeper/copied-up.txt" in r["files"]),
    "metadata": lambda r: (sorted(r["config"]["ExposedPorts"]) == [
        "443/udp", "53/udp", "80/tcp", "8000/tcp", "8001/tcp", "8002/tcp"]
        and r["config"]["User"] == "nobody" and r["config"]["StopSignal"] == "SIGQUIT"
        and r["config"]["Labels"]["org.example.spaced key"] == "value"
        and r["config"]["Labels"]["multi.line"] == "first second"
        and r["output"].startswith("uid=65534(nobody)")),
    "volume": lambda r: (sorted(r["config"]["Volumes"]) == ["/data", "/json/form", "/second",
                                                            "[/logs]"]
                         and "data/before.txt" in r["files"]
                         and "data/after.txt" not in r["files"]
                         and "outside.txt" in r["files"]),
    "shell": lambda r: (r["config"]["Shell"] == ["/bin/ash", "-c"]
                        and r["config"]["Cmd"][:2] == ["/bin/ash", "-c"]
                        and r["output"] == "run by /bin/ash\nthen by /bin/sh\ncmd by /bin/ash\n"),
    "healthcheck": lambda r: r["config"]["Healthcheck"] == {
        "Test": ["NONE"], "Interval": 10_000_000_000, "Timeout": 5_000_000_000,
        "StartPeriod": 2_000_000_000, "Retries": 3},
    "healthcheck-options": lambda r: r["config"]["Healthcheck"] == {
        "Test": ["CMD", "sh", "-c", "true"], "Interval": 3_723_500_000_000,
        "Timeout": 250_000_000, "Retries": 1},
    "onbuild": lambda r: (r["output"] == "parent built\ntrigger ran in the child\n"
                                        "copied by an ONBUILD trigger\nchild built\n"
                                        "FROM_TRIGGER=yes\n"
                          and r["config"]["OnBuild"] is None),
    "comments-continuations": lambda r: (r["output"] == "first second third\n"
                                                       "indented instruction\n"
                                                       "no continuation after an escaped "
                                                       "backslash\na   b\n"
                                         and any("Empty continuation" in w
                                                 for w in r["warnings"])),
    "escape-backtick": lambda r: r["output"] == ("C:\\Windows\\System32 a`b\n"
                                                 "joined by a     backtick\n"
                                                 "a file whose name has a backslash\n"),
    "substitution": lambda r: (r["config"]["WorkingDir"] == "/subst/work"
                               and sorted(r["config"]["ExposedPorts"]) == ["8080/tcp",
                                                                           "9090/udp"]
                               and r["config"]["StopSignal"] == "SIGINT"
                               and r["config"]["User"] == "0:0"
                               and list(r["config"]["Volumes"]) == ["/subst/vol"]
                               and r["output"].splitlines()[0] == "RUN sees file ${NAME}"
                               and "DEFAULTED=fallback" in r["config"]["Env"]),
    "dockerignore": lambda r: r["output"].splitlines() == [
        ".", "./.dockerignore", "./build", "./build/keep.txt", "./docs", "./docs/notes.txt",
        "./kept.txt", "./logs", "./logs/keep", "./logs/keep/important.log",
        "./logs/other.log", "./nested", "./src", "./src/a", "./src/a/main.c", "./src/b",
        "./src/b/util.c"],
    "whiteout": lambda r: ("etc/group" not in r["files"] and "var/lib/gone" not in r["files"]
                           and {"etc/.wh.group", "etc/.wh.doomed.txt", "var/lib/.wh.gone"}
                           <= set(r["layer_members"][-1])),
    "opaque-dir": lambda r: (r["output"] == "/data\n/data/new\n"
                             and "data/.wh..wh..opq" in r["layer_members"][-1]),
    "new-dirs": lambda r: ({"new/deep/dir/file.txt", "new/other/renamed.txt",
                            "made/by/workdir/dir-contents/sub/b.txt",
                            "made/by/workdir/nested/add/file.txt"} <= set(r["files"])
                           and r["files"]["new/deep"]["mode"] == 0o755),
    "copy-sources": lambda r: ({"wild/one.txt", "wild/two.txt", "wild/top.txt",
                                "wild/with space.txt", "classes/a.conf", "classes/b.conf",
                                "classes/c1.conf", "dir-contents/sub/deep.txt",
                                "spaced/with space.txt", "cleaned/deep.txt", "cleaned/top.txt"}
                               <= set(r["files"])
                               and "classes/d.conf" not in r["files"]
                               and r["files"]["followed"]["type"] == "file"
                               and r["files"]["dir-contents/link-up"]["link"] == "../top.txt"
                               and r["files"]["dir-contents/sub/deep.txt"]["mode"] == 0o755),
    "target": lambda r: (r["output"] == "first\nmiddle\n" and "last.txt" not in r["files"]),
}


@pytest.mark.parametrize("case", CASES, ids=[p.name for p in CASES])
def test_case_builds_with_docker(docker, case):
    result = ref.reference(case)
    assert result["exit_code"] == 0, result["log"]
    assert result["run_exit_code"] == 0, result["run_stderr"]
    # Docker printed one Step line per instruction we parse, with the same text (with
    # --target, up to the end of the target stage: "Step N/M" counts only those).
    insts = dockerfile.parse((case / "Dockerfile").read_text())
    printed = [s.split(" : ", 1)[1] for s in result["steps"]]
    if "target" in ref.case_args(case):
        insts = insts[:len(printed)]
        assert insts[-1].cmd != "FROM"
    assert printed == [i.original for i in insts]
    assert result["layers"] >= 1 and result["files"] and new_files(result) is not None
    assert CHECKS[case.name](result), {k: result[k] for k in ("config", "output", "layers")}
