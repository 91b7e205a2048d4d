"""The Dockerfile parser and builder under any input (issue 16, hypothesis).

Any text at all (instructions, continuation lines, heredocs, escapes, parser directives,
JSON forms, unicode, NUL bytes, CRLF, very long lines) either parses or raises
``DockerfileError`` whose message starts ``Dockerfile:LINE: `` with a line of the file;
substituting each parsed instruction's variables, and reading its ports and healthcheck,
raise nothing else either. A sample of Dockerfiles
that parse is built with ``edu build`` on busybox: each builds and is tagged, or fails with
``Dockerfile:LINE: ...`` or one of Docker's build sentences, never a traceback, and
nothing half-built is tagged or left behind. A handful of edge cases go through Docker's
classic builder too: where Docker refuses a Dockerfile, edu refuses it, at the same line.

The examples are derandomized: every run tries the same ones.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import docker_reference as ref
import pytest
from conftest import need, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edu_runtime.images import dockerfile as df
from edu_runtime.images.store import Store, StoreError

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
LINE_ERROR = re.compile(r"Dockerfile:(\d+): \S")

_KEYWORDS = [*df.INSTRUCTIONS, "from", "run", "ONBUILD RUN", "ONBUILD ONBUILD",
             "HEALTHCHECK CMD", "HEALTHCHECK NONE", "BOGUS", "#", "# escape=`", "# escape=\\",
             "# syntax=x", "# escape=x", " ", "\t"]
_ARGS = ["", " ", "busybox", "busybox AS a", "busybox AS A", "AS", "a=b", "=b", "a", '"a b"',
         "'x'", '["a"]', '["a", 1]', "[", "[]", "{}", '["a" "b"]', "$X", "${X:-y}", "${X#y}",
         "${", "${X:?no}", "--chown=1:1 a b", "--from=0 a b", "--bogus=1 x", "--from",
         "--interval=0s CMD true", "--retries=x CMD x", "80/tcp", "80/xyz", "\\", "`",
         "<<EOF", "\0", "é", "\u2028", "\ufeff", "x" * 70_000, "a\\\n b", "a`\n b",
         "--mount=type=cache x", "a b c", "\r"]
_LINE = st.tuples(st.sampled_from(_KEYWORDS), st.lists(st.sampled_from(_ARGS), max_size=3)) \
    .map(lambda t: " ".join([t[0], *t[1]]))
_TEXT = (st.lists(_LINE | st.text(max_size=20), max_size=6)
         .flatmap(lambda lines: st.sampled_from(["\n", "\r\n", "\\\n", "\n\n", "`\n"])
                  .map(lambda sep: sep.join(lines)))
         | st.text(max_size=40))


def _check_line(exc: df.DockerfileError, text: str) -> None:
    match = LINE_ERROR.match(str(exc))
    assert match, (str(exc), text)
    assert 1 <= int(match[1]) <= text.count("\n") + 1, (str(exc), text)


@settings(max_examples=1500, **SETTINGS)
@given(text=_TEXT)
def test_any_text_parses_or_names_a_line(text):
    try:
        instructions = df.parse(text)
    except df.DockerfileError as exc:
        _check_line(exc, text)
        return
    env = {"X": "1"}
    for inst in instructions:
        try:
            expanded = df.expand_instruction(inst, env)
            if inst.cmd == "HEALTHCHECK":
                df.healthcheck(expanded)
            elif inst.cmd == "EXPOSE":
                df.expose_ports(expanded.args)
        except df.DockerfileError as exc:  # the builder adds the instruction's line
            assert exc.line in (None, inst.line), (str(exc), text)


# ---- building a sample ------------------------------------------------------------------------

#: Lines after ``FROM busybox``: mostly valid, some refused only at build time.
_BODY = st.sampled_from([
    "ENV A=1 B=\"two words\"", "ENV =x", "LABEL a=b", "ARG V=3", "ARG", "WORKDIR /app",
    "WORKDIR $NOPE/x", "USER 1000:1000", "USER nobody", "EXPOSE 80 443/udp", "EXPOSE 80/xyz",
    "EXPOSE abc", "CMD [\"echo\", \"hi\"]", "CMD echo hi", "ENTRYPOINT [\"sh\", \"-c\"]",
    "COPY f.txt /f.txt", "COPY missing /x", "COPY --chown=1:1 f.txt /g",
    "COPY --chown=nobody f.txt /g",
    "COPY --from=nosuchstage /a /b", "ADD f.txt /h", "VOLUME /data", "VOLUME [\"\"]",
    "STOPSIGNAL SIGTERM", "STOPSIGNAL NOPE", "SHELL [\"/bin/sh\", \"-c\"]",
    "HEALTHCHECK --interval=5s CMD true", "HEALTHCHECK --interval=1ns CMD true",
    "ONBUILD RUN true bad-fuzz", "RUN true bad-fuzz", "RUN : bad-fuzz; exit 3",
    "RUN [\"/nonexistent\", \"bad-fuzz\"]",
    "RUN echo é > /u # bad-fuzz", "FROM busybox AS second", "COPY --from=0 /bin/true /t",
    "WORKDIR relative", "ENV P=${A:-d}", "LABEL \"k k\"=v", "USER ${U:?no user}",
])
_DOCKERFILE = st.lists(_BODY, min_size=1, max_size=4).map(
    lambda body: "\n".join(["FROM busybox", *body]) + "\n")
#: What Docker's builder says when a build fails past the parser (20.10's words), besides
#: ``Dockerfile:LINE:``; edu's build sentences start with these.
BUILD_SENTENCES = ("The command ", "COPY failed", "ADD failed", "failed to ", "Unable to ",
                   "unable to ", "No such image", "invalid ")


def _host() -> set:
    """What a build could leave: mounts, children, cgroups and container dirs, without
    those of containers other work on this host runs meanwhile (ours run "bad-fuzz")."""
    from edu_runtime.life import states

    state = snapshot()
    others = {r["id"] for r in states.records()
              if not any("bad-fuzz" in word for word in r.get("command") or [])}
    return ({(key, item) for key in ("cgroups", "containers") for item in state[key]
             if not any(cid in item for cid in others)}
            | {("mounts", state["mounts"]), ("children", tuple(state["children"])),
               ("subreaper", state["subreaper"])})


def _edu(python: str, *argv: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-m", "edu_cli.main", *argv], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def builds(python, busybox, tmp_path_factory):
    """Builds a sample of generated Dockerfiles with ``edu build``; the outcomes, and what
    the host had before and after (the tags it made removed first)."""
    need(os.geteuid() == 0, "root")
    ctx = tmp_path_factory.mktemp("fuzzctx")
    (ctx / "f.txt").write_text("file\n")
    before = _host()
    store_tmp_before = sorted(os.listdir(Store().tmp))
    outcomes: list[tuple[str, str, subprocess.CompletedProcess]] = []

    @settings(max_examples=10, **SETTINGS)
    @given(text=_DOCKERFILE)
    def build_one(text):
        tag = f"bad-fuzz-{uuid.uuid4().hex[:8]}:latest"
        (ctx / "Dockerfile").write_text(text)
        out = _edu(python, "build", "-q", "-t", tag, str(ctx))
        outcomes.append((text, tag, out))

    build_one()
    tagged = []
    for _, tag, _out in outcomes:
        try:
            Store().get(tag)
            tagged.append(tag)
        except StoreError:
            pass
    for tag in tagged:
        _edu(python, "rmi", "-f", tag)
    return outcomes, tagged, (before, _host()), (store_tmp_before,
                                                    sorted(os.listdir(Store().tmp)))


def test_a_sample_builds_or_fails_with_a_sentence(builds):
    outcomes, tagged, _, _ = builds
    assert len(outcomes) == 10
    for text, tag, out in outcomes:
        assert "Traceback" not in out.stderr, (text, out.stderr)
        if out.returncode == 0:
            assert tag in tagged, text
            continue
        assert tag not in tagged, (text, "a failed build left its tag")
        last = out.stderr.strip().splitlines()[-1]
        match = LINE_ERROR.match(last)
        if match:
            assert 1 <= int(match[1]) <= text.count("\n"), (text, last)
        else:
            assert last.startswith(BUILD_SENTENCES), (text, out.stderr)


def test_builds_leave_nothing_behind(builds):
    from edu_runtime import paths
    from edu_runtime.life import states

    _, _, (before, after), (tmp_before, tmp_after) = builds
    assert {t for t in before if t[0] not in ("cgroups", "containers")} == \
        {t for t in after if t[0] not in ("cgroups", "containers")}
    # Of the new cgroups and container directories, those still there and no other
    # container's: another's has them a moment before its record (and after, as it goes).
    cdir = paths.state_dir() / "containers"
    new = {(kind, item) for kind, item in after - before
           if (Path(item).exists() if kind == "cgroups" else (cdir / item).exists())
           and not any(r["id"] in item for r in states.records()
                       if not any("bad-fuzz" in w for w in r.get("command") or []))}
    assert new == set()
    # The store's staging dirs are PID-RANDOM; a live process's are its work in progress.
    left = [d for d in set(tmp_after) - set(tmp_before)
            if not os.path.exists(f"/proc/{d.split('-')[0]}")]
    assert left == []


# ---- beside Docker's classic builder ---------------------------------------------------------

#: Dockerfiles both builders refuse, and the line each must name (None: the file as a whole).
EDGES = {
    "heredoc": ("FROM {base}\nRUN <<EOF\necho hi\nEOF\n", 3),
    "unknown": ("FROM {base}\nRUNN x\n", 2),
    "env-blank": ("FROM {base}\nENV =x\n", 2),
    "json-numbers": ("FROM {base}\nSHELL [\"sh\", 1]\n", 2),
    "bad-escape": ("# escape=x\nFROM {base}\n", 1),
    "before-from": ("RUN true\nFROM {base}\n", 1),
    "stage-name": ("FROM {base} AS a b\n", 1),
    "long-line": ("FROM {base}\nRUN " + "x" * 70_000 + "\n", 2),
    "nul": ("FROM {base}\nRUN\0 true\n", 2),
    "crlf-continuation": ("FROM {base}\r\nRUNN a \\\r\n b\r\n", 2),
}


@pytest.mark.parametrize("case", sorted(EDGES))
def test_edge_cases_beside_docker(python, busybox, tmp_path, case):
    need(ref.docker_up(), "dockerd is not running: scripts/services.sh start docker")
    text, line = EDGES[case]
    (tmp_path / "Dockerfile").write_text(text.format(base=ref.load_base()))
    theirs = subprocess.run(["docker", "build", "-q", str(tmp_path)], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    assert theirs.returncode != 0, theirs.stdout
    (tmp_path / "Dockerfile").write_text(text.format(base="busybox"))
    ours = _edu(python, "build", "-q", str(tmp_path))
    assert ours.returncode != 0 and "Traceback" not in ours.stderr, ours.stderr
    assert ours.stderr.strip().splitlines()[-1].startswith(f"Dockerfile:{line}: "), ours.stderr
    said = re.search(r"line (\d+)", theirs.stderr)
    if said:  # Docker names a line for parse errors: the same one
        assert int(said[1]) == line, theirs.stderr
