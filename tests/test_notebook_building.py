"""``build_image`` (edu_runtime/notebook/building.py): ``edu build`` from a notebook, with a
bar per step and the output in a log. Real builds in the default store (as root): a RUN's
own lines reach the log, in order, the second build comes from the cache and says so, a
build arg makes a second image, a failing RUN raises a sentence with the log's last lines
and tags nothing, no thread is left behind, and from a threaded process (a notebook's
kernel) no intermediate container is left either."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from conftest import REPO, need

from edu_runtime.images.store import Store, StoreError
from edu_runtime.notebook import building

DOCKERFILE = """\
FROM busybox
RUN echo "a line from RUN" && echo {token} > /token
COPY note.txt /note.txt
ARG WORD=first
ENV WORD=$WORD
CMD ["cat", "/note.txt"]
"""


@pytest.fixture
def tags(busybox):
    """Unique tags, removed afterwards."""
    import os

    need(os.geteuid() == 0, "builds RUN steps in containers as root")
    made = []

    def new() -> str:
        made.append(f"edu-test-nbbuild-{uuid.uuid4().hex[:8]}")
        return made[-1]
    yield new
    for tag in made:
        building.log_path(tag).unlink(missing_ok=True)
        try:
            Store().remove(tag)
        except StoreError:
            pass


def context(tmp_path: Path, dockerfile: str = DOCKERFILE) -> Path:
    """A build context whose RUN and COPY no earlier build made (so none is cached)."""
    token = uuid.uuid4().hex
    (tmp_path / "Dockerfile").write_text(dockerfile.replace("{token}", token))
    (tmp_path / "note.txt").write_text(f"{token}\n")
    return tmp_path


def test_a_build_keeps_its_output_and_counts_the_cache(tags, tmp_path):
    ctx, tag = context(tmp_path), tags()
    first = building.build_image(ctx, tag, progress=False)
    assert first["steps"] == 6 and first["work"] == 2 and first["tag"] == tag
    assert Store().get(tag).id == first["id"]
    log = Path(first["log"]).read_text()
    lines = log.splitlines()
    assert "a line from RUN" in lines  # the container's own line, between its step's lines
    assert log.index("Step 2/6 : RUN") < log.index("\na line from RUN\n") < log.index("Step 3")
    assert f"Successfully tagged {tag}:latest" in log

    again = building.build_image(ctx, tag, progress=False)
    assert again["id"] == first["id"] and again["cached"] == 2  # RUN and COPY
    assert "a line from RUN" not in Path(again["log"]).read_text().splitlines()  # this build's
    line = building.said(again)
    assert line.startswith(tag) and "6 steps, RUN/COPY 2 of 2 cached" in line

    arg = building.build_image(ctx, tags(), build_args={"WORD": "second"}, progress=False)
    assert arg["cached"] == 2 and arg["id"] != first["id"]
    assert "WORD=second" in Store().get(arg["tag"]).config["config"]["Env"]


def test_a_failed_build_says_why_and_tags_nothing(tags, tmp_path):
    ctx = context(tmp_path, "FROM busybox\nRUN echo trying {token} && exit 7\n")
    tag = tags()
    with pytest.raises(building.BuildFailed) as failed:
        building.build_image(ctx, tag, progress=False)
    text = str(failed.value)
    assert "failed (exit 7)" in text and "returned a non-zero code: 7" in text
    assert "trying" in text
    assert str(building.log_path(tag)) in text
    with pytest.raises(StoreError):
        Store().get(tag)


def test_from_a_threaded_process_no_intermediate_container_is_left(tags, tmp_path):
    """A Jupyter kernel has threads. The build runs as ``edu build`` in a process of its
    own, which forks its RUN containers itself and removes each: none is left behind."""
    from edu_runtime.life import control

    before = {r["id"] for r in control.ls(True)}
    ctx, tag = context(tmp_path), tags()
    script = textwrap.dedent(f"""
        import threading, time
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
        from edu_runtime.notebook import building
        built = building.build_image({str(ctx)!r}, {tag!r}, progress=False)
        print(built["work"], open(built["log"]).read().splitlines().count("a line from RUN"))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "1"]
    time.sleep(0.5)  # a container record written back late would be there by now
    assert {r["id"] for r in control.ls(True)} == before


def test_the_log_is_read_step_by_step():
    text = ("Step 1/4 : FROM busybox\n ---> 71bc4366c859\nStep 2/4 : RUN echo hi\n"
            " ---> Using cache\n ---> 1\nStep 3/4 : ENV A=b\n ---> Using cache\n"
            "Step 4/4 : COPY a /a\n ---> 2\n")
    assert building.read_log(text) == {"steps": 4, "done": 4, "work": 2, "cached": 1}
    assert building.read_log("") == {"steps": 0, "done": 0, "work": 0, "cached": 0}
    assert building.read_steps(text + "Removing intermediate container 3\n") == [
        {"step": 1, "instruction": "FROM busybox", "cached": False, "id": "71bc4366c859"},
        {"step": 2, "instruction": "RUN echo hi", "cached": True, "id": "1"},
        {"step": 3, "instruction": "ENV A=b", "cached": True, "id": ""},
        {"step": 4, "instruction": "COPY a /a", "cached": False, "id": "2"}]


def test_a_build_says_which_cache_entries_it_wrote_and_forget_takes_them(tags, tmp_path):
    from edu_runtime.images import build

    ctx = context(tmp_path)
    first = building.build_image(ctx, tags(), progress=False)
    assert [r["cached"] for r in first["rows"]] == [False] * 6
    assert len(first["remembered"]) == 5  # one entry per step after FROM
    again = building.build_image(ctx, tags(), progress=False)
    assert again["remembered"] == [] and [r["id"] for r in again["rows"]] == \
        [r["id"] for r in first["rows"]]
    fresh = building.build_image(ctx, tags(), progress=False, no_cache=True)
    assert not any(r["cached"] for r in fresh["rows"]) and len(fresh["remembered"]) == 5
    assert Path(fresh["log"]).read_text().startswith("edu build --no-cache -t ")
    assert build.forget(Store(), first["remembered"] + fresh["remembered"]) >= 5
    assert not any((Store().root / "build-cache" / f"{k}.json").exists()
                   for k in first["remembered"] + fresh["remembered"])
