"""A warm `edu build` answered from the last build's record (edu_runtime/images/warm.py):
the same lines as the builder prints, and the builder again as soon as anything it would
look at has changed: a file's bytes (same size, same mtime), its mode, the base image a tag
names, the image a tag names, a cache entry. Timing is bench/build_tiny.py's."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import need

from edu_runtime.images import build as build_mod
from edu_runtime.images import warm
from edu_runtime.images.store import Store

#: ``edu build`` as a student types it, telling (on stderr's last line) whether the builder
#: was imported, i.e. whether the record answered.
CLI = ("import sys; from edu_cli.main import main; code = main(); "
       "print('builder' if 'edu_runtime.images.build' in sys.modules else 'replayed', "
       "file=sys.stderr); sys.exit(code)")


@pytest.fixture
def edu(python, busybox):
    """Run the CLI; afterwards the test's tags, and the cache entries and records of its
    builds (only those: other sessions build beside it) are gone.
    ``edu.base`` is busybox's image under a tag of the test's own (other sessions may move
    ``busybox`` meanwhile, and a moved base is a miss)."""
    need(os.geteuid() == 0, "root")
    store = Store()
    tags: list[str] = []
    keys: set[str] = set()

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([python, "-c", CLI, *argv], capture_output=True, text=True,
                              timeout=120)

    def build(*argv: str) -> tuple[str, str]:
        """(stdout, "builder" or "replayed") of a build that must succeed."""
        out = run("build", *argv)
        assert out.returncode == 0, out.stdout + out.stderr
        ctx = Path(argv[-1])
        keys.update(step[0] for step in json.loads(record_of(ctx).read_text())["steps"])
        return out.stdout, out.stderr.splitlines()[-1]
    run.build = build
    run.tag = lambda: tags.append(f"edu-test-warm-{uuid.uuid4().hex[:8]}") or tags[-1]
    run.base = run.tag()
    assert run("tag", busybox.id, run.base).returncode == 0
    yield run
    for tag in tags:
        run("rmi", tag)
    build_mod.forget(store, sorted(keys))


def tiny(tmp_path: Path, base: str, run: bool = False) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(
        f"FROM {base}\nCOPY hello.txt /hello.txt\n"
        + ("RUN cat /hello.txt > /copy.txt\n" if run else "LABEL made=here\n")
        + 'CMD ["cat", "/hello.txt"]\n')
    (ctx / "hello.txt").write_text(f"hello {uuid.uuid4().hex}\n")  # new content, new keys
    return ctx


def record_of(ctx: Path) -> Path:
    return Path(warm.where(str(Store().root), str(ctx), str(ctx / "Dockerfile")))


def test_a_warm_rebuild_prints_what_the_builder_prints(edu, tmp_path):
    tag = edu.tag()
    ctx = tiny(tmp_path, edu.base, run=True)
    cold, how = edu.build("-t", tag, str(ctx))
    assert how == "builder" and "Running in" in cold
    record_of(ctx).unlink()  # the builder's own warm output, for comparison
    by_builder, how = edu.build("-t", tag, str(ctx))
    assert how == "builder" and by_builder.count("Using cache") == 3
    replayed, how = edu.build("-t", tag, str(ctx))
    assert how == "replayed" and replayed == by_builder
    assert by_builder.splitlines()[-1] == f"Successfully tagged {tag}:latest"
    quiet, how = edu.build("-q", "-t", tag, str(ctx))
    assert how == "replayed" and quiet == Store().get(tag).id + "\n"
    # Another tag is another build: the builder runs, and its record replaces this one (one
    # file per context directory, however many builds: nothing piles up).
    other = edu.tag()
    assert edu.build("-t", other, str(ctx))[1] == "builder"
    assert f"{other}:latest" in json.loads(record_of(ctx).read_text())["tags"][0]
    assert edu.build("-t", other, str(ctx))[1] == "replayed"


def test_a_changed_file_misses_even_with_its_size_and_mtime(edu, tmp_path):
    tag = edu.tag()
    ctx = tiny(tmp_path, edu.base)
    edu.build("-t", tag, str(ctx))
    assert edu.build("-t", tag, str(ctx))[1] == "replayed"
    hello = ctx / "hello.txt"
    st = hello.stat()
    hello.write_text(hello.read_text().upper())  # same size
    os.utime(hello, ns=(st.st_atime_ns, st.st_mtime_ns))  # same times
    out, how = edu.build("-t", tag, str(ctx))
    assert how == "builder" and out.count("Using cache") == 0
    assert edu.build("-t", tag, str(ctx))[1] == "replayed"
    hello.chmod(0o600)  # a mode is part of the key too
    out, how = edu.build("-t", tag, str(ctx))
    assert how == "builder" and out.count("Using cache") == 0
    (ctx / ".dockerignore").write_text("hello.txt\n")  # now the file is not sent at all
    gone = edu("build", "-t", tag, str(ctx))
    assert gone.returncode == 1 and "hello.txt" in gone.stderr


def test_a_moved_tag_or_base_or_a_dropped_entry_runs_the_builder(edu, tmp_path):
    tag, base = edu.tag(), edu.tag()
    assert edu("tag", edu.base, base).returncode == 0
    ctx = tiny(tmp_path, base=base)
    first, _ = edu.build("-t", tag, str(ctx))
    image = Store().get(tag).id
    assert edu.build("-t", tag, str(ctx))[1] == "replayed"
    # The tag now names another image: the builder runs, and moves it back.
    assert edu("tag", edu.base, tag).returncode == 0
    out, how = edu.build("-t", tag, str(ctx))
    assert how == "builder" and out.count("Using cache") == 3 and Store().get(tag).id == image
    # The base's tag now names another image: every step is new.
    assert edu("tag", tag, base).returncode == 0
    out, how = edu.build("-t", tag, str(ctx))
    assert how == "builder" and "Using cache" not in out and Store().get(tag).id != image
    # The last step's cache entry dropped: the record goes with it; that step is made anew.
    assert edu("tag", edu.base, base).returncode == 0
    assert edu.build("-t", tag, str(ctx))[1] == "builder"
    assert edu.build("-t", tag, str(ctx))[1] == "replayed"
    record = record_of(ctx)
    build_mod.forget(Store(), [json.loads(record.read_text())["steps"][-1][0]])
    assert not record.exists()
    out, how = edu.build("-t", tag, str(ctx))
    assert how == "builder" and out.count("Using cache") == 2


def test_a_multi_stage_build_with_args_and_a_target_is_replayed_as_built(edu, tmp_path):
    tag = edu.tag()
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"ARG BASE={edu.base}\nFROM $BASE AS first\nCOPY a.txt /a.txt\nARG WHO\n"
        f"LABEL who=$WHO\nFROM {edu.base} AS second\nCOPY --from=first /a.txt /b.txt\n"
        f"FROM {edu.base}\nCMD echo {uuid.uuid4().hex}\n")  # (every key the test's own)
    (ctx / "a.txt").write_text(uuid.uuid4().hex)
    argv = ("-t", tag, "--build-arg", "WHO=me", "--build-arg", "UNUSED=1", "--target",
            "second", str(ctx))
    edu.build(*argv)
    record_of(ctx).unlink()
    by_builder, how = edu.build(*argv)
    assert how == "builder" and "[Warning] One or more build-args ['UNUSED']" in by_builder
    replayed, how = edu.build(*argv)
    assert how == "replayed" and replayed == by_builder
    assert edu.build(*argv[:-3], str(ctx))[1] == "builder"  # no --target: another build
