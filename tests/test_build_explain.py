"""A build's instructions one by one (``Builder.log`` and ``images.explain``, lesson 05): each
a layer or a config change, from the cache or not; the same as the image's history."""

from __future__ import annotations

import os
import time

import pytest

from edu_runtime.images import build, explain
from edu_runtime.images.store import Store

DOCKERFILE = """FROM busybox
ENV GREETING=hello STAMP={stamp}
WORKDIR /app
COPY note.txt ./
RUN echo made > made.txt && rm note.txt
ENV GREETING=bonjour
CMD ["cat", "/app/made.txt"]
"""


@pytest.fixture
def built(root, busybox, tmp_path):
    """The Dockerfile built twice (the second time all from the cache); its tag removed."""
    (tmp_path / "Dockerfile").write_text(DOCKERFILE.format(stamp=f"{os.getpid()}-{time.time()}"))
    (tmp_path / "note.txt").write_text("a note\n")
    store, tag = Store(), f"edu-explain-test-{os.getpid()}:1"
    logs = []
    try:
        for _ in range(2):
            b = build.Builder(store, build.Options(context=tmp_path, tags=[tag],
                                                   network="none", quiet=True))
            image = b.build()
            logs.append(b.log)
        yield store, image, logs
    finally:
        store.remove(tag)


def test_each_instruction_is_a_layer_or_a_config_change(built):
    store, image, (first, again) = built
    rows = explain.steps(first)
    assert [r["instruction"].split()[0] for r in rows] == \
        ["FROM", "ENV", "WORKDIR", "COPY", "RUN", "ENV", "CMD"]
    assert [r["made"] for r in rows] == \
        ["base", "config", "layer", "layer", "layer", "config", "config"]
    assert [r["cached"] for r in rows] == [None] + [False] * 6
    assert rows[1]["changes"][0] == "Env + GREETING=hello"
    assert rows[2]["changes"] == ["WorkingDir = /app"]
    assert rows[5]["changes"] == ["Env GREETING=hello -> GREETING=bonjour"]
    assert rows[6]["changes"] == ['Cmd = ["cat", "/app/made.txt"]']
    assert rows[3]["size"] == len("a note\n") and rows[3]["changes"] == []
    assert all(r["seconds"] >= 0 for r in rows)
    # The second build: the same image, every step from the cache.
    assert [r["cached"] for r in explain.steps(again)] == [None] + [True] * 6
    assert [r["image"] for r in explain.steps(again)] == [r["image"] for r in rows]


def test_the_history_has_the_same_layers_and_the_layers_their_files(built):
    store, image, (first, _) = built
    rows = explain.steps(first)
    hist = explain.history(image)
    ours = hist[-6:]  # busybox's own entries come first
    assert [h["layer"] is not None for h in ours] == [r["made"] == "layer" for r in rows[1:]]
    assert [h["layer"] for h in ours if h["layer"]] == \
        [r["diff_id"] for r in rows if r["made"] == "layer"]
    assert ours[-1]["created_by"].startswith("/bin/sh -c #(nop)  CMD [")
    assert sum(h["size"] for h in hist) == image.size
    assert explain.layer_files(store, rows[3]["diff_id"]) == ["/app/note.txt"]
    assert explain.layer_files(store, rows[4]["diff_id"]) == \
        ["/app/made.txt", "/app/note.txt (deleted)"]
    assert explain.layer_files(store, rows[2]["diff_id"]) == ["/app/"]


def test_where_a_layers_files_are():
    files = ["/usr/local/lib/python3.11/dist-packages/rich/a.py",
             "/usr/local/lib/python3.11/dist-packages/rich/b.py",
             "/usr/local/lib/python3.11/dist-packages/c.py", "/usr/local/bin/x", "/tmp/"]
    assert explain.where(files) == [("/usr/local/lib/python3.11/dist-packages", 3),
                                    ("/tmp", 1)]
    assert explain.where(["/app/app.py"]) == [("/app", 1)]


def test_config_changes_of_nothing_and_of_a_removal():
    cfg = {"Env": ["A=1"], "Cmd": ["sh"]}
    assert explain.config_changes(cfg, dict(cfg)) == []
    assert explain.config_changes(cfg, {"Env": ["A=1"], "Cmd": None}) == ["Cmd removed"]
    assert explain.config_changes(None, {"User": "app"}) == ["User = app"]


def test_a_threaded_process_builds_a_run_step(root, busybox, tmp_path):
    """A Jupyter kernel is threaded, so the supervisor makes its RUN containers; it finds
    the image so far in the store, lent for the RUN, and nothing is left of it after."""
    import threading

    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)
    helper.start()
    store, tag = Store(), f"edu-threaded-build-{os.getpid()}:1"
    (tmp_path / "Dockerfile").write_text(
        f"FROM busybox\nENV STAMP={os.getpid()}-{time.time()}\nRUN echo made > /made\n")
    before = {i.id for i in store.images()}
    try:
        b = build.Builder(store, build.Options(context=tmp_path, tags=[tag], network="none",
                                               quiet=True))
        image = b.build()
        assert [r["cached"] for r in explain.steps(b.log)] == [None, False, False]
        assert explain.layer_files(store, explain.steps(b.log)[2]["diff_id"]) == ["/made"]
        assert {i.id for i in store.images()} - before == {image.id}  # no intermediate left
    finally:
        stop.set()
        helper.join()
        store.remove(tag)


def test_forget_gives_a_builds_cache_back_and_its_layers_go_with_the_tag(root, busybox,
                                                                        tmp_path):
    """A build made only to be measured drops its own cache entries (not another build's),
    and once its tag is removed, the store frees its layers."""
    store, tag = Store(), f"edu-forget-test-{os.getpid()}:1"
    stamp = f"{os.getpid()}-{time.time()}"
    (tmp_path / "Dockerfile").write_text(f"FROM busybox\nENV STAMP={stamp}\n"
                                         "RUN echo measured > /m\n")
    first = build.Builder(store, build.Options(context=tmp_path, tags=[tag], network="none",
                                               quiet=True))
    made = first.build()
    assert len(first.remembered) == 2  # ENV and RUN: FROM has no cache entry
    again = build.Builder(store, build.Options(context=tmp_path, tags=[tag], network="none",
                                               quiet=True))
    again.build()
    assert again.remembered == []  # all from the cache: nothing new written
    run_layer = explain.steps(first.log)[2]["diff_id"]
    try:
        assert build.forget(store, first.remembered) == 2
        assert build.forget(store, first.remembered) == 0  # gone already
        for key in first.remembered:
            assert not (store.root / "build-cache" / f"{key}.json").exists()
        third = build.Builder(store, build.Options(context=tmp_path, tags=[tag],
                                                   network="none", quiet=True))
        if third.build().id != made.id:  # the tag moved on: the first image is <none>
            store.remove(made.id)
        assert [r["cached"] for r in explain.steps(third.log)] == [None, False, False]
        assert build.forget(store, third.remembered) == 2
    finally:
        store.remove(tag)
    assert store.layer_info(run_layer) is None or \
        not store.layer_dir(run_layer).exists()
