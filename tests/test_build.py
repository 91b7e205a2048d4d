"""`edu build` and `edu commit` for real: RUN in real containers, layers from their upper dirs,
the cache, multi-stage builds, and the errors a student meets. What docker build produces for
the same Dockerfiles is compared in tests/test_build_vs_docker.py."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import tarfile
import threading
import uuid
from pathlib import Path

import pytest
from conftest import need, snapshot

from edu_runtime.images.store import Store, StoreError


@pytest.fixture
def edu(python, busybox):
    need(os.geteuid() == 0, "root")
    made = []

    def run(*argv, check=True, cwd=None):
        out = subprocess.run([python, "-m", "edu_cli.main", *argv], capture_output=True,
                             text=True, timeout=300, cwd=cwd)
        if check:
            assert out.returncode == 0, out.stdout + out.stderr
        for i, word in enumerate(argv[:-1]):  # every image a test made, also once re-tagged
            if out.returncode == 0 and argv[0] in ("build", "commit") and word == "-t":
                made.append(Store().get(argv[i + 1]).id)
        if out.returncode == 0 and argv[0] == "commit":
            made.append(Store().get(argv[-1]).id)
        return out
    run.tag = lambda: made.append(f"edu-test-build-{uuid.uuid4().hex[:8]}") or made[-1]
    yield run
    for ref in reversed(made):
        run("rmi", "-f", ref, check=False)


def context(tmp_path: Path, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(text)
    return ctx


def layers(tag: str) -> list[str]:
    return Store().get(tag).diff_ids


def staging_left() -> list[str]:
    return sorted(os.listdir(Store().tmp))


def test_build_run_copy_and_the_layers_they_make(edu, tmp_path):
    tag = edu.tag()
    ctx = context(tmp_path, "FROM busybox\n"
                            "ENV GREETING=hello\n"
                            "WORKDIR /app\n"
                            "COPY hello.txt ./\n"
                            "RUN echo \"$GREETING from run\" > run.txt && rm /etc/passwd\n"
                            "RUN true\n"
                            "RUN rm -rf /app && mkdir /app && echo new > /app/only\n"
                            'CMD ["sh", "-c", "ls /app; cat /etc/passwd 2>&1 | head -1"]\n',
                  {"hello.txt": "hi\n"})
    before = snapshot()
    out = edu("build", "-t", tag, str(ctx))
    assert "Step 8/8 : CMD" in out.stdout and f"Successfully tagged {tag}:latest" in out.stdout
    base = layers("busybox")
    # WORKDIR made /app, COPY and the two changing RUNs made one layer each; RUN true none.
    assert len(layers(tag)) == len(base) + 4
    run = edu("run", "--rm", tag)
    # The last RUN replaced /app (an opaque directory), the first deleted /etc/passwd
    # (a whiteout): both hold in the final image.
    assert run.stdout == "only\ncat: can't open '/etc/passwd': No such file or directory\n"
    config = json.loads(edu("inspect", tag).stdout)[0]["Config"]
    assert "GREETING=hello" in config["Env"] and config["WorkingDir"] == "/app"
    assert snapshot() == before and staging_left() == []


def test_cache_hits_misses_and_no_cache(edu, tmp_path):
    tag = edu.tag()
    nonce = uuid.uuid4().hex  # the cache is global, as Docker's: new content, new keys
    ctx = context(tmp_path, "FROM busybox\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\n",
                  {"a.txt": f"one {nonce}\n"})
    edu("build", "-t", tag, str(ctx))
    first = Store().get(tag).id
    again = edu("build", "-t", tag, str(ctx)).stdout
    assert again.count("Using cache") == 2 and Store().get(tag).id == first
    os.utime(ctx / "a.txt", (1, 1))  # a new mtime is not a change (Docker ignores it too)
    assert edu("build", "-t", tag, str(ctx)).stdout.count("Using cache") == 2
    (ctx / "a.txt").write_text(f"two {nonce}\n")
    changed = edu("build", "-t", tag, str(ctx)).stdout
    assert "Using cache" not in changed
    for out in (again, changed):  # the last step's ID is the image's, as Docker prints it
        steps = [line.split()[-1] for line in out.splitlines() if line.startswith(" ---> ")]
        assert out.splitlines()[-2] == f"Successfully built {steps[-1]}"
    assert edu("run", "--rm", tag, "cat", "/b.txt").stdout == f"two {nonce}\n"
    assert "Using cache" not in edu("build", "--no-cache", "-t", tag, str(ctx)).stdout


def test_build_args_target_and_multi_stage(edu, tmp_path):
    tag = edu.tag()
    ctx = context(tmp_path, "ARG BASE=busybox\n"
                            "FROM $BASE AS maker\n"
                            "ARG WHO=nobody\n"
                            "RUN mkdir /out && echo made-by-$WHO > /out/file\n"
                            "FROM busybox AS final\n"
                            "COPY --from=maker /out/file /from-maker\n"
                            "COPY --from=busybox /bin/busybox /copied/busybox\n"
                            "CMD cat /from-maker\n")
    edu("build", "--build-arg", "WHO=student", "-t", tag, str(ctx))
    assert edu("run", "--rm", tag).stdout == "made-by-student\n"
    # The maker stage's files are not in the final image, only what was copied.
    assert edu("run", "--rm", tag, "ls", "/out", check=False).returncode != 0
    assert edu("run", "--rm", tag, "/copied/busybox", "echo", "ok").stdout == "ok\n"
    edu("build", "--target", "maker", "-t", tag, str(ctx))
    assert edu("run", "--rm", tag, "cat", "/out/file").stdout == "made-by-nobody\n"
    bad = edu("build", "--target", "nope", "-t", tag, str(ctx), check=False)
    assert bad.returncode == 1 and "failed to reach build target nope" in bad.stderr


def test_add_extracts_a_local_tar_and_copy_chown(edu, tmp_path):
    tag = edu.tag()
    ctx = context(tmp_path, "FROM busybox\n"
                            "ADD bundle.tar.gz /opt/\n"
                            "COPY --chown=1234:5678 data /data\n"
                            "COPY --chown=nobody plain.txt /plain.txt\n",
                  {"data/x": "x\n", "plain.txt": "p\n"})
    inner = tmp_path / "inner.txt"
    inner.write_text("from the tar\n")
    with tarfile.open(ctx / "bundle.tar.gz", "w:gz") as tar:
        tar.add(inner, arcname="pkg/inner.txt")
    edu("build", "-t", tag, str(ctx))
    out = edu("run", "--rm", tag, "sh", "-c",
              "cat /opt/pkg/inner.txt; stat -c '%u:%g %n' /data /data/x /plain.txt").stdout
    nobody = edu("run", "--rm", "busybox", "id", "-u", "nobody").stdout.strip()
    assert out.splitlines() == ["from the tar", "1234:5678 /data", "1234:5678 /data/x",
                                f"{nobody}:{nobody} /plain.txt"]


def test_run_uses_the_network_unless_none(edu, tmp_path):
    """RUN reaches the host through the default bridge (here: a server on the gateway's
    address, never outside the machine); with --network none it cannot."""
    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "pkg.txt").write_text("downloaded\n")
    server = http.server.ThreadingHTTPServer(
        ("0.0.0.0", 0), lambda *a: Handler(*a, directory=str(tmp_path / "www")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        tag = edu.tag()
        ctx = context(tmp_path, "FROM busybox\nARG URL\nRUN wget -q -O /pkg.txt $URL\n")
        url = f"http://10.77.0.1:{port}/pkg.txt"
        edu("build", "--build-arg", f"URL={url}", "-t", tag, str(ctx))
        assert edu("run", "--rm", tag, "cat", "/pkg.txt").stdout == "downloaded\n"
        cut = edu("build", "--no-cache", "--network", "none", "--build-arg", f"URL={url}",
                  "-t", tag, str(ctx), check=False)
        assert cut.returncode == 1 and "returned a non-zero code: 1" in cut.stderr
    finally:
        server.shutdown()


def test_errors_are_sentences_and_nothing_half_built_is_tagged(edu, tmp_path):
    tag = edu.tag()
    before = snapshot()
    cases = [
        ("FROM busybox\nRUNN echo\n", 1, "Dockerfile:2: unknown instruction: RUNN"),
        ("FROM busybox\nRUN echo output-before-failing; exit 3\n", 3,
         "The command '/bin/sh -c echo output-before-failing; exit 3' returned a non-zero "
         "code: 3"),
        ("FROM busybox\nCOPY missing.txt /\n", 1, "missing.txt"),
        ("FROM busybox\nCOPY ../outside /\n", 1, "outside the build context: ../outside"),
        ("FROM no-such-image-here\n", 1, "no-such-image-here"),
        ("FROM busybox\nCOPY --chmod=755 a /\n", 1, "--chmod needs BuildKit"),
    ]
    for text, code, words in cases:
        ctx = context(tmp_path, text)
        out = edu("build", "-t", tag, str(ctx), check=False)
        assert out.returncode == code and words in out.stderr, (text, out.stderr)
        if "output-before-failing" in text:
            assert "output-before-failing" in out.stdout  # the RUN's own output is shown
        with pytest.raises(StoreError):
            Store().get(tag)
    assert snapshot() == before and staging_left() == []
    assert not [d for d in (Path(os.environ.get("EDU_STATE_DIR", "/var/lib/edu"))
                            / "containers").glob("*") if d.is_dir()]


def test_commit_turns_a_container_into_an_image(edu, tmp_path):
    """The primer's point, shown: an image is a frozen container."""
    name, tag = f"c-{uuid.uuid4().hex[:8]}", edu.tag()
    edu("run", "--name", name, "busybox", "sh", "-c",
        "echo committed > /note && rm /etc/passwd")
    try:
        edu("commit", "-m", "a note", "--change", 'CMD ["cat", "/note"]', name, tag)
    finally:
        edu("rm", name)
    assert edu("run", "--rm", tag).stdout == "committed\n"
    assert edu("run", "--rm", tag, "ls", "/etc/passwd", check=False).returncode != 0
    assert len(layers(tag)) == len(layers("busybox")) + 1
    history = edu("history", tag).stdout
    assert "a note" in history or "echo committed" in history
    bad = edu("commit", name, tag, check=False)
    assert bad.returncode == 1 and "No such container" in bad.stderr
