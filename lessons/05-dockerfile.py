# ---
# jupyter:
#   edu:
#     parts:
#       build:
#         needs:
#         - containers
#         what: the greeter built one instruction at a time, its history and config
#       cache:
#         needs:
#         - containers
#         what: 'app.py changed, built again: where the cache stops'
#       docker:
#         needs:
#         - containers
#         - dockerd
#         what: the same Dockerfile through docker build, history beside edu's
#       rebuilds:
#         needs:
#         - containers
#         what: rebuild times, dependencies before code against code before dependencies
#       run:
#         needs:
#         - containers
#         what: the greeter run, with its CMD and with another command
#   jupytext:
#     cell_metadata_filter: -all
#     notebook_metadata_filter: kernelspec,jupytext,edu
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 The Dockerfile: FROM, COPY, RUN, CMD
#
# *The primer's topic: writing a Dockerfile and `docker build`.* A Dockerfile is a recipe,
# and the builder follows it one line at a time. Each line either adds a **layer** (a set
# of files, stacked on the ones below) or only changes the image's **config** (its
# command, its environment, its working directory). Here you build a small app, watch each
# instruction become one or the other, then change one file and see which steps the
# builder does again, and measure what the order of the lines costs.
#
# **Learning goals.** After this lesson you can:
#
# 1. say, for each line of a Dockerfile, whether it adds a layer or changes the config, and
#    show it with `edu history` (`docker history`) and the image's config;
# 2. predict where the build cache stops hitting after a file changes, and check it in the
#    build's own output;
# 3. order a Dockerfile so that a code change rebuilds in a fraction of the time, and say
#    by how much, measured here;
# 4. write the `docker build` command for the same build, and read Docker's history of it
#    beside edu's.
#
# The first cell says which parts run live here and which replay a recording of a real run.
# Run each cell with **Shift-Enter**.

# %%
from edu_runtime.notebook import Lesson, check, exercise, predict, summary

lesson = Lesson("05-dockerfile")
lesson.image("python")  # in the store, or built from Debian's packages once

# %% [markdown]
# ## The app: a greeter
#
# A few lines of Python that print a greeting in a box, drawn by one dependency,
# [rich](https://pypi.org/project/rich/). It lives in `lessons/apps/greeter/`:

# %%
from edu_runtime.notebook import apps

APP = apps.app_dir("greeter")
for name in ("app.py", "requirements.txt", "Dockerfile"):
    print(f"──── {name}")
    print((APP / name).read_text().rstrip())

# %% [markdown]
# Line by line:
#
# - `FROM python`: start from the course's `python` image (Debian 12 and its python3);
# - `WORKDIR /app`: the directory the next lines, and the container, work in;
# - `COPY wheels/ wheels/` and `COPY requirements.txt .`: files from the **build context**
#   (the directory you build) into the image;
# - `RUN ...pip install ...`: a command, run in a container over the image so far;
# - `COPY app.py .`: the code;
# - `ENV GREETING=Hello`: an environment variable for every container of the image;
# - `CMD ["python3", "app.py"]`: the command a container runs when none is given.
#
# Why `wheels/`? The builds in this course have no network, and our `python` image is
# Debian's, which has no pip. So the lesson downloads the wheels of rich (and pip's own)
# from PyPI once, into a cache on this machine, and puts them into the build context:
# pip then installs them from files (`--no-index --find-links wheels`). It is a real
# install, just as slow, and it works offline. (`--break-system-packages`: Debian marks
# its Python as apt's, and pip refuses to install beside it unless told so.)
#
# With Docker the build is `docker build -t greeter .`; with edu, `edu build -t greeter .`.

# %% [markdown]
# ## Predict, then build
#
# The Dockerfile has 8 instructions. `FROM` brings the base image's layers with it; it adds
# none of its own.

# %%
LAYER_CHOICES = {1: "1: only RUN", 4: "4: RUN and the three COPYs",
                 5: "5: RUN, the COPYs and WORKDIR", 7: "7: every instruction"}
q_layers = predict("How many of the 7 instructions after FROM will add a layer of their "
                   "own?", list(LAYER_CHOICES.values()))
q_layers

# %% [markdown]
# ## 1. One instruction at a time
#
# The build below is `edu build --network none -t l05-greeter:1 .` run from Python, on a
# copy of the app (with its `wheels/`) in a temporary directory. Watch its output: one
# `Step N/8` per instruction, `Running in ...` where a container ran, and an image id
# after each step. The first time, `pip install` takes a few seconds; after that the build
# cache has every step (`Using cache`).

# %%
import tempfile
import time
from pathlib import Path

TAG = "l05-greeter:1"
KEPT = ("Step ", " ---> ", "Successfully", "Installing collected")


def build(context, tag, dockerfile="Dockerfile"):
    """edu build --network none -f DOCKERFILE -t TAG CONTEXT: its log (one row per
    instruction), its output, its wall time in seconds, and the cache entries it wrote."""
    from edu_runtime.images import build as builder
    from edu_runtime.images import explain
    from edu_runtime.images.store import Store, StoreError

    lesson.made(image=tag)  # noted first: reset untags it, even after a Ctrl-C
    store = Store()
    try:
        before = store.get(tag).id  # the image the tag names now, if any
    except StoreError:
        before = None
    options = builder.Options(context=context, dockerfile=context / dockerfile, tags=[tag],
                              network="none")
    # A file, not a StringIO: RUN's container writes its output there directly.
    with tempfile.TemporaryFile("w+") as out:
        b = builder.Builder(store, options, out=out)
        started = time.monotonic()
        image = b.build()
        seconds = time.monotonic() - started
        out.seek(0)
        output = out.read()
    if before not in (None, image.id) and not store.get(before).tags:
        store.remove(before)  # the tag moved on: the old image would be left as <none>
    return {"steps": explain.steps(b.log), "output": output, "seconds": seconds,
            "remembered": b.remembered}


def forget(results):
    """Give back the build cache of builds made only to be shown or measured (their edits
    are new every run, so no later build could use it): docker builder prune, for these."""
    from edu_runtime.images import build as builder
    from edu_runtime.images.store import Store

    builder.forget(Store(), [key for r in results for key in r["remembered"]])


def shown(output):
    """A build's output without the RUN's own chatter, for a projector."""
    return "\n".join(line[:96] for line in output.splitlines() if line.startswith(KEPT))


def build_it():
    from edu_runtime.images import explain
    from edu_runtime.images.store import Store

    with tempfile.TemporaryDirectory(prefix="l05-") as tmp:
        context = apps.copy("greeter", Path(tmp) / "greeter")
        result = build(context, TAG)
    print(shown(result["output"]))
    print(f"({result['seconds']:.1f} s)")
    store = Store()
    image = store.get(TAG)
    result["history"] = explain.history(image)
    result["config"] = image.config["config"]
    result["files"] = {}  # each layer: how many files, the first, where most of them are
    for r in result["steps"]:
        if r["diff_id"]:
            files = explain.layer_files(store, r["diff_id"])
            result["files"][r["diff_id"]] = {"count": len(files), "first": files[0],
                                             "where": explain.where(files, depth=4, top=1)}
    return result


built = lesson.live("build", build_it)

# %% [markdown]
# Each instruction, and what it made. A **layer** is the files that instruction added or
# changed; **config** means it changed only the image's settings, with no files at all.

# %%
def size(n):
    """Bytes as `docker images` writes them."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def what_it_made(row, files):
    """A row of the build: its layer (size, and where its files are) or its config."""
    if row["made"] == "base":
        return "the base image: its layers come with it"
    if row["made"] == "config":
        return "config: " + "; ".join(row["changes"])
    found = files[row["diff_id"]]
    if found["count"] == 1:
        return f"layer {size(row['size'])}: {found['first']}"
    (top, n), = found["where"]
    most = "" if n == found["count"] else f", {n}"
    return f"layer {size(row['size'])}: {found['count']} files{most} in {top}"


steps = built["steps"]
for row in steps:
    text = row["instruction"] if len(row["instruction"]) <= 26 else row["instruction"][:25] + "…"
    print(f"{row['step']}/{len(steps)} {text:<27} {what_it_made(row, built['files'])[:66]}")

# %%
layers = sum(r["made"] == "layer" for r in steps)
q_layers.check(LAYER_CHOICES.get(layers, str(layers)),
               why=f"{layers} of the {len(steps) - 1} instructions after FROM changed files, "
                   "so each left a layer: the RUN and the three COPYs, and WORKDIR, which "
                   "created the directory /app (a layer holding one empty directory). ENV "
                   "and CMD changed only the config: no files, no layer.")

# %% [markdown]
# ### `edu history`: the same, read back from the image
#
# An image keeps one history entry per instruction, newest first in `docker history`.
# `(no layer)` marks an instruction that changed only the config. Under ours, the python
# image's own history: how *it* was made.

# %%
print(f"{'LAYER':<14}{'CREATED BY':<58}SIZE")
for h in reversed(built["history"]):
    layer = h["layer"][7:19] if h["layer"] else "(no layer)"
    by = h["created_by"] if len(h["created_by"]) <= 56 else h["created_by"][:55] + "…"
    print(f"{layer:<14}{by:<58}{size(h['size'])}")

# %% [markdown]
# And the config those ENV, WORKDIR and CMD lines wrote: what `docker inspect
# l05-greeter:1` shows as `.Config` (`edu inspect` here). A container of the image starts
# from it.

# %%
cfg = built["config"]
for key in ("WorkingDir", "Env", "Cmd"):
    print(f"{key:<11} {cfg.get(key)}")

# %% [markdown]
# ## 2. Run it
#
# `edu run --rm l05-greeter:1` runs the image's CMD. Anything after the image name
# *replaces* the CMD: `edu run --rm l05-greeter:1 python3 app.py Ada`. The GREETING comes
# from the image's ENV.

# %%
import contextlib
import io


def run_it():
    from edu_runtime import Container

    said = {}
    for key, command in (("default", None), ("Ada", ["python3", "app.py", "Ada"])):
        c = Container(TAG, command, network="none", remove=True)
        lesson.made(container=c.id)
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            c.run()
        said[key] = printed.getvalue()
        print(said[key].rstrip())
    return said


ran = lesson.live("run", run_it)

# %% [markdown]
# ## 3. The build cache
#
# Build the same Dockerfile again with nothing changed, and every step says `Using cache`:
# the builder keys each step by the image so far and the instruction (and, for COPY, the
# bytes of the files copied), and finds the result it kept last time.
#
# Now **change one file**: the next part edits `app.py` in the copy (`VERSION = 2`, and a
# comment with the time, so each run is a new change) and builds again.

# %%
q_cache = predict("After app.py changes, which steps will print `Using cache`?",
                  ["none: a file changed, so everything is built again",
                   "every step before COPY app.py",
                   "every step except COPY app.py",
                   "only FROM"])
q_cache

# %%
from datetime import datetime


def change_and_build():
    with tempfile.TemporaryDirectory(prefix="l05-") as tmp:
        context = apps.copy("greeter", Path(tmp) / "greeter")
        app = context / "app.py"
        app.write_text(app.read_text().replace("VERSION = 1", "VERSION = 2")
                       + f"# edited {datetime.now().isoformat(timespec='seconds')}\n")
        result = build(context, "l05-greeter:2")
    forget([result])
    for row in result["steps"][1:]:
        how = "Using cache" if row["cached"] else f"built again ({row['seconds']:.2f} s)"
        text = row["instruction"] if len(row["instruction"]) <= 44 else \
            row["instruction"][:43] + "…"
        print(f"Step {row['step']}/{len(result['steps'])} {text:<45} {how}")
    print(f"the whole build: {result['seconds']:.2f} s")
    return result


changed = lesson.live("cache", change_and_build)

# %%
first_miss = next(r for r in changed["steps"][1:] if not r["cached"])
hits_before = all(r["cached"] for r in changed["steps"][1:first_miss["step"] - 1])
q_cache.check("every step before COPY app.py" if first_miss["instruction"] == "COPY app.py ."
              and hits_before else "none: a file changed, so everything is built again",
              why="the cache hits as long as a step's inputs are the same: the image so far "
                  "and the instruction, and for COPY the bytes of its files. COPY app.py "
                  "copies a changed file, so it makes a new layer, and from there on every "
                  "step sits on a new image, so ENV and CMD are done again too (cheaply: "
                  "they only write the config). Before it, the pip install was reused.")

# %% [markdown]
# The install (`RUN pip install`) came *before* `COPY app.py`, so it was reused. Had the
# Dockerfile copied the code first, any change to the code would install the dependencies
# again. That is the other order, `code-first.Dockerfile`:

# %%
print((APP / "code-first.Dockerfile").read_text().rstrip())

# %% [markdown]
# ## 4. Measured: what the order costs
#
# The next part builds both Dockerfiles once (to fill the cache), then three times each,
# alternating, after a new edit to `app.py` every time: the rebuild a developer waits for
# after each change to the code. Each build is timed from start to the tag. Predict first.

# %%
q_ratio = predict("How many times longer will the code-first Dockerfile take to rebuild "
                  "after a change to app.py?", number=True)
q_ratio

# %%
import statistics

ORDERS = {"dependencies first": ("Dockerfile", "l05-greeter:deps-first"),
          "code first": ("code-first.Dockerfile", "l05-greeter:code-first")}
REBUILDS = 3


def measure():
    times, made = {label: [] for label in ORDERS}, []
    with tempfile.TemporaryDirectory(prefix="l05-") as tmp:
        context = apps.copy("greeter", Path(tmp) / "greeter")
        app = context / "app.py"
        original = app.read_text()
        for dockerfile, tag in ORDERS.values():  # the first build of each fills the cache
            build(context, tag, dockerfile)
        for n in range(1, REBUILDS + 1):
            for label, (dockerfile, tag) in ORDERS.items():
                app.write_text(original + f"# edit {n}, {time.time_ns()}\n")
                result = build(context, tag, dockerfile)
                made.append(result)
                times[label].append(result["seconds"])
                again = [r["instruction"].split()[0] for r in result["steps"][1:]
                         if not r["cached"]]
                print(f"rebuild {n}, {label:<19} {result['seconds']:5.2f} s  "
                      f"built again: {' '.join(again)}")
    forget(made)  # the first builds' cache stays: the next run of this lesson reuses it
    return {"orders": [{"label": label, "seconds": times[label]} for label in ORDERS],
            "rebuilds": REBUILDS}


rebuilds = lesson.live("rebuilds", measure)

# %%
from edu_runtime.notebook.bars import rebuild_times

medians = {o["label"]: statistics.median(o["seconds"]) for o in rebuilds["orders"]}
ratio = medians["code first"] / medians["dependencies first"]
rebuild_times(rebuilds)

# %%
q_ratio.check(ratio, why=f"with the dependencies first, a code change rebuilds only COPY "
                         f"app.py, ENV and CMD ({medians['dependencies first']:.2f} s); with "
                         f"the code first, COPY . . misses and so does everything after it, "
                         f"the pip install included ({medians['code first']:.2f} s). Real "
                         f"apps have more dependencies than one, and the ratio grows with "
                         f"them.")

# %% [markdown]
# The rule of thumb that follows: **copy what changes rarely first, what changes often
# last.** Dependencies (`requirements.txt`, `package.json`) before code; the install right
# after them. Lesson 09 does the same for a Node.js app with `npm install`.

# %% [markdown]
# ## 5. Docker beside us (extra details)
#
# The same Dockerfile through Docker 20.10's classic builder (`DOCKER_BUILDKIT=0 docker
# build`, the builder edu follows), in the same context. Docker gets our `python` image,
# lent to it as `l05-python:edu` (`edu save python | docker load`), so its FROM line names
# that; every other line is the same. Then `docker history` beside `edu history`, one row
# per instruction. Where Docker is not running, this replays a run that had it.

# %%
def docker_beside():
    from edu_runtime.images import explain
    from edu_runtime.images.store import Store
    from edu_runtime.notebook import docker

    with tempfile.TemporaryDirectory(prefix="l05-") as tmp:
        context = apps.copy("greeter", Path(tmp) / "greeter")
        edu = build(context, TAG)
        with docker.borrowed("python", "l05-python:edu") as base:
            (context / "docker.Dockerfile").write_text(
                (context / "Dockerfile").read_text().replace("FROM python", f"FROM {base}"))
            started = time.monotonic()
            try:
                out = docker.docker("build", "--network", "none", "-f",
                                    str(context / "docker.Dockerfile"),
                                    "-t", "l05-greeter:docker", str(context),
                                    env={"DOCKER_BUILDKIT": "0"}).stdout
                seconds = time.monotonic() - started
                theirs = docker.docker("history", "--no-trunc", "--format",
                                       "{{.CreatedBy}}\t{{.Size}}",
                                       "l05-greeter:docker").stdout
            finally:
                docker.docker("rmi", "l05-greeter:docker", check=False)
    print(shown(out))
    ours = explain.history(Store().get(TAG))
    n = len(edu["steps"]) - 1  # the instructions after FROM
    rows = []
    for mine, line in zip(ours[-n:], theirs.splitlines()[:n][::-1], strict=True):
        by, _, their_size = line.partition("\t")
        rows.append({"edu": mine["created_by"], "docker": by, "edu_bytes": mine["size"],
                     "docker_size": their_size.strip()})
    print(f"docker build: {seconds:.1f} s")
    return {"rows": rows, "docker_seconds": seconds}


both = lesson.live("docker", docker_beside)

# %%
def short_by(text):
    text = text.replace("/bin/sh -c ", "").replace("#(nop) ", "").strip()
    return text if len(text) <= 40 else text[:39] + "…"


def docker_bytes(text):
    """Docker's size ("3.72MB", "355B": three digits, units of 1000) in bytes."""
    units = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}
    unit = text.lstrip("0123456789.")
    return float(text[:len(text) - len(unit)]) * units[unit]


def same_size(r):
    """Equal, to the three digits Docker prints."""
    theirs = docker_bytes(r["docker_size"])
    return abs(theirs - r["edu_bytes"]) <= 0.005 * max(theirs, r["edu_bytes"]) + 1


print(f"{'edu history':<42}{'size':>9}   {'docker history':<38}{'size':>8}")
for r in both["rows"]:
    print(f"{short_by(r['edu']):<42}{size(r['edu_bytes']):>9}   "
          f"{short_by(r['docker'])[:37]:<38}{r['docker_size']:>8}")
same_sizes = all(same_size(r) for r in both["rows"])
print("the same sizes, layer for layer:", same_sizes)
copy = both["rows"][2]  # COPY requirements.txt .: the two histories' own words
print(f"\nedu:    {copy['edu']}\ndocker: {copy['docker']}")

# %% [markdown]
# The same layers, with the same sizes, in the same order. Where the two histories differ
# is in the words: Docker writes COPY's destination as written in the Dockerfile (`in .`)
# and edu as the absolute path it resolved (`in /app/`); the `file:` digests after COPY
# are each builder's own checksum of the files; and Docker prints a JSON CMD without
# commas. None of it changes what is in the image.

# %% [markdown]
# ## Exercise
#
# ENV changes only the config, so it should never cost a layer, and a container can
# override it with `-e`. Check both: run the image built in part 1 with
# `GREETING=Bonjour` (in Docker's words, `docker run --rm -e GREETING=Bonjour
# l05-greeter:1`) and keep what it printed in `bonjour`.

# %%
ex = exercise(
    "Run l05-greeter:1 with the environment variable GREETING=Bonjour (docker run -e), "
    "and put what it printed in a variable named `bonjour`.",
    solution='''
import contextlib
import io

from edu_runtime import Container

c = Container("l05-greeter:1", env={"GREETING": "Bonjour"}, network="none", remove=True)
lesson.made(container=c.id)
with contextlib.redirect_stdout(io.StringIO()) as printed:
    c.run()
bonjour = printed.getvalue()
print(bonjour)
''')
ex

# %% [markdown]
# ## Checks

# %%
results = [
    check("every instruction after FROM made a layer or changed only the config",
          {r["made"] for r in steps[1:]} <= {"layer", "config"} and layers == 5,
          hint="run part 1: RUN, the COPYs and WORKDIR make layers; ENV and CMD do not"),
    check("the image runs its CMD, and a command after its name replaces it",
          "Hello, world!" in ran["default"] and "Hello, Ada!" in ran["Ada"],
          hint="run part 2"),
    check("after app.py changed, the cache hit every step before COPY app.py and none after",
          all(r["cached"] for r in changed["steps"][1:first_miss["step"] - 1])
          and first_miss["instruction"] == "COPY app.py ."
          and not any(r["cached"] for r in changed["steps"][first_miss["step"] - 1:]),
          hint="run part 3: the build must print Using cache up to COPY app.py"),
    check("the code-first Dockerfile rebuilt slower than the dependencies-first one",
          ratio > 1, hint="see the figure in part 4"),
    check("exercise: GREETING=Bonjour, given at run time, changed the greeting",
          lambda: "Bonjour, world!" in bonjour,
          hint="Container(..., env={'GREETING': 'Bonjour'}) is docker run -e GREETING=Bonjour"),
]
summary(results)

# %% [markdown]
# ## Reset
#
# Untag every image this lesson tagged and remove any container left behind. The cache of
# the first builds stays, as Docker's does after `docker rmi`, and the next run of this
# lesson reuses it (`edu image prune` drops it: `docker builder prune`); the changed and
# measured builds gave theirs back as they went.

# %%
lesson.reset()

# %% [markdown]
# Next: **06 a container, step by step** (notebooks/06-step-by-step.ipynb): what `docker
# run` asks of the kernel for the image you just built, one step at a time.
