# ---
# jupyter:
#   edu:
#     parts:
#       build:
#         needs:
#         - containers
#         - bridge
#         what: edu build -t node-app, npm install in its RUN step
#       change:
#         needs:
#         - containers
#         - bridge
#         what: server.js changed, built again, the container replaced
#       registry:
#         needs:
#         - containers
#         what: node-app pushed to a registry of our own, searched and pulled
#       run:
#         needs:
#         - containers
#         - bridge
#         what: edu run -d -p PORT:8080 node-app, and its page fetched
#       times:
#         needs:
#         - containers
#         - bridge
#         what: first build, code change, package.json change, timed three times each
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
# # 09 A Node.js app: `build -t`, `run -p 47561:8080 -d`, and the cache
#
# *The primer's topic: a Node.js app built with `docker build -t node-app .` and run with
# `docker run -p 47561:8080 -d node-app`.* You build the primer's app, with its dependency
# installed by `npm` during the build, put it on a registry the way you would put it on
# Docker Hub, run it and fetch its page. Then you change one line of its code and build
# again, and see which steps the build cache saves you, in seconds.
#
# **Learning goals.** After this lesson you can:
#
# 1. read the primer's Node.js Dockerfile line by line, and say which line makes which
#    layer (and which layer holds `node_modules`);
# 2. build it with `edu build -t node-app` (`docker build`), push it to a registry, and find
#    it there with `search` and `pull`;
# 3. run it detached on a published port and fetch its page from the host;
# 4. predict which steps a code change rebuilds, and which a change to `package.json`
#    rebuilds, and show it with the build's own output and the time it took.
#
# The first cell says which parts run live here and which replay a recording of a real run.
# Run each cell with **Shift-Enter**.

# %%
from edu_runtime.notebook import Lesson, check, exercise, port, predict, summary

lesson = Lesson("09-node-app")
lesson.image("node")  # in the store, or built from Debian's packages once (with npm)

# %% [markdown]
# ## The app
#
# It lives in `lessons/apps/node-app/`: a web server, `server.js`, written with one
# dependency, [express](https://expressjs.com/). `package.json` names the dependency,
# `package-lock.json` pins the exact version of it and of each package it needs in turn
# (`npm install` writes it; you commit it). The course's `node` image is Debian 12's
# nodejs 18 with its npm 9, as every node image on Docker Hub has npm.

# %%
import json

from edu_runtime.notebook import apps

APP = apps.app_dir("node-app")
for name in ("server.js", "package.json", "Dockerfile", ".dockerignore"):
    print(f"──── {name}")
    print((APP / name).read_text().rstrip())
LOCK = json.loads((APP / "package-lock.json").read_text())["packages"]
print(f"──── package-lock.json: {len(LOCK) - 1} packages pinned, express "
      f"{LOCK['node_modules/express']['version']} among them")

# %% [markdown]
# The Dockerfile, line by line:
#
# - `FROM node`: start from the `node` image: Debian, nodejs and npm;
# - `WORKDIR /app`: the directory the next lines, and the container, work in (made if
#   missing);
# - `COPY package*.json ./`: **only** `package.json` and `package-lock.json`, not the code;
# - `RUN npm install`: npm reads them and installs express and its 67 dependencies into
#   `/app/node_modules`, downloading them from the npm registry: this RUN has the network;
# - `COPY . .`: now the code, everything in the build context except what
#   `.dockerignore` names (a `node_modules` of your own would otherwise be copied over
#   the one npm just installed);
# - `EXPOSE 8080`: a note in the config that the app listens on 8080 (it publishes
#   nothing: `-p` does);
# - `CMD ["node", "server.js"]`: what a container of the image runs.
#
# Why two COPYs and not one `COPY . .` before `npm install`? Each step is cached by what
# goes into it. Copying only the package files first means the install depends only on
# them: change the code, and the install is reused. Lesson 05 measured that order for a
# Python app; here you will see it for npm.

# %% [markdown]
# ## 1. `edu build -t node-app`
#
# In a terminal: `edu build -t node-app lessons/apps/node-app` (with Docker, `docker build
# -t node-app .` in that directory). The cell runs that very command, with a bar per step;
# the whole output goes to a log. The first time, `npm install` downloads 68 packages; the
# next time every step comes from the cache.

# %%
from pathlib import Path

TAG = "node-app"


def steps_said(built):
    """The build's steps as it printed them: cached or built, and the image so far."""
    for r in built["rows"]:
        how = "the base" if r["step"] == 1 else "Using cache" if r["cached"] else "built"
        text = r["instruction"] if len(r["instruction"]) <= 27 else r["instruction"][:26] + "…"
        print(f"Step {r['step']}/{built['steps']} : {text:<28} {how:<12} ---> {r['id']}")


def build_it():
    from edu_runtime.images import bootstrap, explain
    from edu_runtime.images.store import Store
    from edu_runtime.notebook.building import build_image

    labels = Store().get("node").config["config"].get("Labels") or {}
    if " npm=" not in " " + labels.get(bootstrap.PACKAGES, ""):  # made before node had npm
        print("This store's node image has no npm (it predates the course's node with npm): "
              "building it again, as `edu bootstrap node` would")
        bootstrap.bootstrap(Store(), "node", refresh=True)
    lesson.made(image=TAG)  # noted first: reset untags it, even after a Ctrl-C
    built = build_image(APP, TAG)
    print(f"$ edu build -t {TAG} lessons/apps/node-app")
    steps_said(built)
    npm = [ln for ln in Path(built["log"]).read_text().splitlines() if ln.startswith("added ")]
    print("npm said:", npm[0] if npm else "nothing: RUN npm install came from the cache")
    print(f"({built['seconds']:.1f} s)")
    store = Store()
    image = store.get(TAG)
    layers = []
    for h in explain.history(image)[-7:]:
        if h["layer"]:
            where = explain.where(explain.layer_files(store, h["layer"]), depth=2, top=2)
            layers.append({"by": h["created_by"], "size": h["size"], "where": where})
    return {**built, "layers": layers, "npm": npm[0] if npm else ""}


built = lesson.live("build", build_it)

# %% [markdown]
# The layers the app added on top of `node`, and where their files are (`edu history
# node-app` lists them; `docker history` the same):

# %%
def size(n):
    """Bytes as `docker images` writes them."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


for layer in built["layers"]:
    by = layer["by"].replace("/bin/sh -c ", "").replace("#(nop) ", "")
    by = by if len(by) <= 30 else by[:29] + "…"
    where = ", ".join(f"{n} in {d}" for d, n in layer["where"]) or "an empty directory"
    print(f"{by:<31}{size(layer['size']):>9}   {where}")

# %% [markdown]
# `npm install` made the big layer: `node_modules`, and npm's own download cache under
# `/root/.npm` (Docker Hub's node images keep it too, unless a Dockerfile runs `npm cache
# clean --force` in the same RUN). The code layer is a few kB. Keep that in mind for the
# rebuild.

# %% [markdown]
# ## 2. Where images come from: push, search, pull
#
# The primer's students find images on Docker Hub. A registry is a web server with one
# HTTP API for images; Docker Hub is one, and lesson 04 started one of our own on
# 127.0.0.1. This part starts one again, **tags** `node-app` with the registry's name and
# **pushes** it (`docker tag node-app 127.0.0.1:PORT/edu/node-app:1`, then `docker push`),
# **searches** the registry for `node`, and **pulls** the image by that name, as a
# classmate would. (On Docker Hub the name would be `YOURNAME/node-app:1`, after `docker
# login`.)

# %%
import io

REGISTRY = "l09-registry"


def statuses(buffer):
    """What `docker push` and `pull` leave on screen: each layer's last status only."""
    skip = ("Preparing", "Pulling fs layer", "Verifying Checksum", "Download complete",
            "Waiting")
    return [ln for ln in buffer.getvalue().splitlines() if ln.strip() and not ln.endswith(skip)]


def push_search_pull():
    from edu_runtime.images import local_registry, registry
    from edu_runtime.images.store import Store

    lesson.made(registry=REGISTRY)
    served = local_registry.start(REGISTRY)
    store = Store()
    remote = f"{served.address}/edu/node-app:1"
    lesson.made(image=remote)
    store.tag(TAG, remote)
    out = io.StringIO()
    pushed = registry.push(store, remote, progress=registry.Progress(out))
    print(f"$ edu push {remote}")
    print("\n".join(statuses(out)))
    print(f"\n$ edu search {served.address}/node")
    found = registry.search_registry(served.address, "node")
    for f in found:
        print(f"  {f.name:<40} tags: {', '.join(f.tags)}")
    store.remove(remote)  # as if it had never been here by that name
    out = io.StringIO()
    pulled = registry.pull(store, remote, progress=registry.Progress(out))
    print(f"\n$ edu pull {remote}")
    print("\n".join(statuses(out)))
    print(f"Digest: {pulled.digest}")
    return {"address": served.address, "found": [f.name for f in found],
            "digest": pushed.digest, "pulled": pulled.image.id, "built": store.get(TAG).id,
            "pulled_digest": pulled.digest}


shared = lesson.live("registry", push_search_pull)

# %% [markdown]
# The pull downloaded nothing: the registry's manifest names the image by its config's
# digest, its **ID**, and this store has an image with that ID, because it built it, so
# `pull` only gave it the registry's name back. A classmate's machine, which has never
# seen it, would download each layer it lacks (lesson 04 did that). The same digest the
# push printed, the same image:

# %%
print(f"pushed {shared['digest'][:19]}…, pulled {shared['pulled_digest'][:19]}…")
print(f"image ID pulled {shared['pulled'][7:19]}, built {shared['built'][7:19]}: the same "
      f"image: {shared['pulled'] == shared['built']}")

# %% [markdown]
# ## 3. `edu run -p PORT:8080 -d node-app`, and fetch it
#
# The primer's command is `docker run -p 47561:8080 -d node-app`: detached (`-d`), and
# the host's port 47561 forwarded to the container's 8080, where the app listens. The
# course takes the host port from one setting, `port("node")` (47561 unless your
# instructor gave you a range). The cell runs it with a name, then asks for the page
# from the host, as `curl http://127.0.0.1:PORT/` would.

# %%
PORT = port("node")
NAME = "l09-node-app"
print(f"edu run -d --name {NAME} -p {PORT}:8080 node-app")

# %%
q_host = predict("The page will say 'Hello from ...'. Whose name comes after 'from'?",
                 ["this machine's hostname", "the container's short ID",
                  "node-app, the image's name", "localhost"])
q_host

# %%
import time
import urllib.request


def fetch(url, timeout=15.0):
    """The page at ``url``, waiting until the app answers (node starts in a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return urllib.request.urlopen(url, timeout=2).read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def run_it():
    from edu_runtime import Container

    c = Container(TAG, name=NAME, publish=[f"{PORT}:8080"])
    lesson.made(container=c.id)
    c.start()
    page = fetch(f"http://127.0.0.1:{PORT}/")
    versions = json.loads(fetch(f"http://127.0.0.1:{PORT}/version"))
    print(f"$ edu run -d --name {NAME} -p {PORT}:8080 {TAG}\n{c.id}")
    print(f"$ curl http://127.0.0.1:{PORT}/\n{page.rstrip()}")
    print(f"$ curl http://127.0.0.1:{PORT}/version\n{json.dumps(versions)}")
    return {"id": c.id, "page": page, "versions": versions}


ran = lesson.live("run", run_it)

# %%
said_from = ran["page"].split("Hello from ", 1)[-1].split(",")[0]
q_host.check("the container's short ID" if said_from == ran["id"][:12] else said_from,
             why=f"the page said {said_from}: os.hostname() inside the container is the "
                 "container's own hostname (its UTS namespace, lesson 06), and Docker and "
                 "edu set it to the first 12 digits of the container's ID unless you give "
                 "--hostname.")

# %% [markdown]
# The app answered on the host's port: the engine forwarded 127.0.0.1:PORT to the
# container's address on the bridge, port 8080 (lesson 08 takes that apart). And
# `/version` says express is the version the lock pinned, installed by the build.

# %% [markdown]
# ## 4. Change the code, build again
#
# A developer's day: edit `server.js`, rebuild, run the new version. The next part copies
# the app, changes `VERSION = '1'` to `'2'` in the copy's `server.js` (and adds a comment
# with the time, so each run of the lesson is a new change), and builds it as `node-app`
# again: `edu build -t node-app .` in the copy. Then it replaces the container with one of
# the new image. Predict first.

# %%
q_cache = predict("After server.js changes, which steps will say `Using cache`?",
                  ["none: a file changed, so everything is built again",
                   "WORKDIR, COPY package*.json and RUN npm install",
                   "every step except COPY . .",
                   "only WORKDIR"])
q_cache

# %%
import tempfile
from datetime import datetime


def forget(*builds):
    """Give back the build cache of builds made only to be shown or measured (their edits
    are new every run, so no later build could use it): docker builder prune, for these."""
    from edu_runtime.images import build as builder
    from edu_runtime.images.store import Store

    builder.forget(Store(), [key for b in builds for key in b["remembered"]])


def rebuild(context, tag, progress=False):
    """build_image, and the image the tag named before removed if nothing names it now
    (as `docker build` would leave it, as <none>)."""
    from edu_runtime.images.store import Store, StoreError
    from edu_runtime.notebook.building import build_image

    store = Store()
    try:
        before = store.get(tag).id
    except StoreError:
        before = None
    lesson.made(image=tag)
    result = build_image(context, tag, progress=progress)
    if before not in (None, result["id"]) and not store.get(before).tags:
        store.remove(before)
    return result


def change_and_rebuild():
    from edu_runtime import Container

    with tempfile.TemporaryDirectory(prefix="l09-") as tmp:
        context = apps.copy("node-app", Path(tmp) / "node-app")
        server = context / "server.js"
        server.write_text(server.read_text().replace("VERSION = '1'", "VERSION = '2'")
                          + f"// edited {datetime.now().isoformat(timespec='seconds')}\n")
        again = rebuild(context, TAG, progress=True)
    forget(again)
    print("$ edu build -t node-app .   (server.js changed)")
    steps_said(again)
    print(f"({again['seconds']:.2f} s)")
    Container.get(NAME).remove(force=True)  # docker rm -f, then run the new image
    c = Container(TAG, name=NAME, publish=[f"{PORT}:8080"])
    lesson.made(container=c.id)
    c.start()
    page = fetch(f"http://127.0.0.1:{PORT}/")
    print(f"$ edu rm -f {NAME} && edu run -d --name {NAME} -p {PORT}:8080 {TAG}")
    print(f"$ curl http://127.0.0.1:{PORT}/\n{page.rstrip()}")
    return {**again, "page": page}


changed = lesson.live("change", change_and_rebuild)

# %%
def by_step(rows):
    return {r["instruction"]: r for r in rows}


now, then = by_step(changed["rows"]), by_step(built["rows"])
hits = [r["instruction"].split()[0] + " " + r["instruction"].split()[1]
        for r in changed["rows"][1:] if r["cached"]]
q_cache.check("WORKDIR, COPY package*.json and RUN npm install"
              if hits == ["WORKDIR /app", "COPY package*.json", "RUN npm"]
              else ", ".join(hits) or "none: a file changed, so everything is built again",
              why="a step is cached when its inputs are the same: the image below it and "
                  "the instruction, and for COPY the bytes it copies. package*.json did not "
                  "change, so the COPY of them and the npm install on top were reused. "
                  "COPY . . copies the changed server.js, so it made a new layer, and "
                  "EXPOSE and CMD sit on that new layer, so they were done again too "
                  "(cheaply: they only write the config).")
same = now["RUN npm install"]["id"] == then["RUN npm install"]["id"]
print(f"RUN npm install: ---> {then['RUN npm install']['id']} before, "
      f"---> {now['RUN npm install']['id']} now: the same image, layers and all: {same}")

# %% [markdown]
# The new container answers `version 2`, with a new ID. `node_modules` came with the
# npm layer from the cache: npm did not run, and nothing was downloaded.

# %% [markdown]
# ## 5. Measured: what the order saves
#
# Three builds, timed from start to tag:
#
# - **first build**: nothing in the cache after `FROM node`, so npm downloads and installs
#   everything;
# - **server.js changed**: the rebuild you just saw;
# - **package.json changed** (a word added to its description): COPY package*.json misses,
#   so `npm install` runs again, and everything after it.
#
# Each round builds a fresh copy whose Dockerfile has one extra line after FROM, a
# `LABEL` with the round's number and a random word: so its cache is its own, its first
# build is a real first build, and it gives its cache back at the end. Three rounds.

# %%
q_ratio = predict("How many times faster will the rebuild after a change to server.js "
                  "be than the first build?", number=True)
q_ratio

# %%
import statistics
import uuid

ROUNDS = 3


def measure():
    times = {"first": [], "code": [], "deps": []}
    made = []
    with tempfile.TemporaryDirectory(prefix="l09-") as tmp:
        for n in range(1, ROUNDS + 1):
            context = apps.copy("node-app", Path(tmp) / f"round-{n}")
            word = f"{n}-{uuid.uuid4().hex[:8]}"
            dockerfile = context / "Dockerfile"
            dockerfile.write_text(dockerfile.read_text().replace(
                "FROM node\n", f"FROM node\nLABEL lesson09.round={word}\n"))
            first = rebuild(context, "l09-measure")
            server = context / "server.js"
            server.write_text(server.read_text() + f"// edit {word}\n")
            code = rebuild(context, "l09-measure")
            package = context / "package.json"
            meta = json.loads(package.read_text())
            meta["description"] += f" ({word})"
            package.write_text(json.dumps(meta, indent=2) + "\n")
            deps = rebuild(context, "l09-measure")
            made += [first, code, deps]
            for key, b in (("first", first), ("code", code), ("deps", deps)):
                times[key].append(b["seconds"])
            npm = {key: by_step(b["rows"])["RUN npm install"]["cached"]
                   for key, b in (("first", first), ("code", code), ("deps", deps))}
            print(f"round {n}: first build {first['seconds']:5.2f} s, server.js changed "
                  f"{code['seconds']:5.2f} s, package.json changed {deps['seconds']:5.2f} s  "
                  f"(npm install cached: {npm['first']}, {npm['code']}, {npm['deps']})")
    forget(*made)
    return {"builds": [{"label": "first build", "seconds": times["first"]},
                       {"label": "server.js changed", "seconds": times["code"]},
                       {"label": "package.json changed", "seconds": times["deps"]}],
            "rounds": ROUNDS}


measured = lesson.live("times", measure)

# %%
from edu_runtime.notebook.bars import build_times

medians = {b["label"]: statistics.median(b["seconds"]) for b in measured["builds"]}
ratio = medians["first build"] / medians["server.js changed"]
build_times(measured)

# %%
q_ratio.check(ratio, why=f"the first build runs npm install, which downloads and unpacks "
                         f"68 packages ({medians['first build']:.2f} s); after a code change "
                         f"only COPY . ., EXPOSE and CMD are done again "
                         f"({medians['server.js changed']:.2f} s). A change to package.json "
                         f"costs almost a first build ({medians['package.json changed']:.2f} "
                         f"s): npm installs everything again, not just what changed.")

# %% [markdown]
# Here npm downloads through a fast network from a registry that answers quickly, and the
# app has one dependency. A real app has hundreds, and a slow network turns seconds into
# minutes: the ratio only grows. That is why every Node.js Dockerfile you meet copies
# `package*.json` first.
#
# **Docker beside us.** The same three builds through Docker's classic builder
# (`DOCKER_BUILDKIT=0 docker build`) hit and miss the cache at the same steps:
# `tests/test_node_app.py` checks it, from the same `node` image lent to Docker. The lesson
# does not run it live: handing Docker the 350 MB image takes about 20 s here. In Docker's
# words the whole lesson is:
#
#     docker build -t node-app .
#     docker tag node-app 127.0.0.1:PORT/edu/node-app:1 && docker push 127.0.0.1:PORT/edu/node-app:1
#     docker run -d --name l09-node-app -p 47561:8080 node-app
#     curl http://127.0.0.1:47561/
#     (edit server.js) docker build -t node-app . && docker rm -f l09-node-app && docker run ...

# %% [markdown]
# ## Exercise
#
# Make the app greet with `Hi from` instead of `Hello from`: in a copy of the app (use
# `apps.copy("node-app", DIR)`), change `server.js`, build it as `l09-hi` with
# `build_image` (from `edu_runtime.notebook.building`), and keep what it returned in `hi`.
# Before you run it: which steps will come from the cache?

# %%
ex = exercise(
    "Build a copy of the app whose server.js says 'Hi from' instead of 'Hello from', "
    "tagged l09-hi, with build_image; keep its result in a variable named `hi`.",
    solution='''
import tempfile
from pathlib import Path

from edu_runtime.notebook import apps
from edu_runtime.notebook.building import build_image

lesson.made(image="l09-hi")
with tempfile.TemporaryDirectory() as tmp:
    context = apps.copy("node-app", Path(tmp) / "node-app")
    server = context / "server.js"
    server.write_text(server.read_text().replace("Hello from", "Hi from"))
    hi = build_image(context, "l09-hi")
for row in hi["rows"][1:]:
    print(f"{row['instruction']:<28}", "Using cache" if row["cached"] else "built")
''')
ex

# %% [markdown]
# ## Checks

# %%
def hi_says_hi():
    from edu_runtime.images.store import Store

    store = Store()
    code = store.layer_dir(store.get("l09-hi").diff_ids[-1]) / "app/server.js"
    return "Hi from" in code.read_text() and by_step(hi["rows"])["RUN npm install"]["cached"]


results = [
    check("node-app was built, npm install in its RUN step",
          built["steps"] == 7 and "RUN npm install" in by_step(built["rows"]),
          hint="run part 1"),
    check("the registry has node-app, and the pull gave back the very image built",
          any(n.endswith("edu/node-app") for n in shared["found"])
          and shared["pulled"] == shared["built"]
          and shared["digest"] == shared["pulled_digest"], hint="run part 2"),
    check("the app answered on the published port, from its container",
          ran["page"].startswith(f"Hello from {ran['id'][:12]}, version 1"),
          hint="run part 3: edu run -d -p PORT:8080 node-app, then fetch 127.0.0.1:PORT"),
    check("after server.js changed, npm install came from the cache and COPY . . did not",
          now["RUN npm install"]["cached"] and not now["COPY . ."]["cached"] and same
          and "version 2" in changed["page"],
          hint="run part 4: package*.json are copied before the code"),
    check("a code change rebuilt faster than the first build and than a package.json change",
          ratio > 1 and medians["package.json changed"] > medians["server.js changed"],
          hint="see the figure in part 5"),
    check("exercise: l09-hi says 'Hi from', and its npm install came from the cache",
          hi_says_hi, hint="change server.js in a copy, then build_image(copy, 'l09-hi')"),
]
summary(results)

# %% [markdown]
# ## Reset
#
# Stop and remove the container, stop the lesson's registry (its storage goes with it) and
# untag every image this lesson tagged. The cache of the first build stays, as Docker's
# does after `docker rmi`, so the next run of the lesson builds `node-app` from the cache
# (`edu image prune` drops it: `docker builder prune`); the changed and measured builds gave
# theirs back as they went.

# %%
lesson.reset()

# %% [markdown]
# Next: **10 limits and security** (notebooks/10-limits-and-security.ipynb): what stops a
# container like this one from using all the memory, forking without end, or reaching the
# host.
