# ---
# jupyter:
#   edu:
#     parts:
#       docker:
#         needs:
#         - containers
#         - dockerd
#         what: the restart rules, in edu and in Docker
#       failover:
#         needs:
#         - containers
#         - bridge
#         - root
#         what: a replica killed (the front skips it), a replica crashed (--restart)
#       images:
#         needs:
#         - containers
#         - bridge
#         - root
#         what: 'edu build: the mariadb image from Debian''s mariadb-server, the counter
#           app (two versions) and the nginx front'
#       new-app:
#         needs:
#         - containers
#         - bridge
#         - root
#         what: the app killed and replaced by its next version
#       new-db:
#         needs:
#         - containers
#         - bridge
#         - root
#         what: the database stopped (the app answers 503), then replaced on its volume
#       scale-out:
#         needs:
#         - containers
#         - bridge
#         - root
#         what: 1, 2 and 4 replicas behind an nginx front, under a burst of requests
#       together:
#         needs:
#         - containers
#         - bridge
#         - root
#         what: a database and an app on one network, counting visits
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
# # 02 Why containers: independence, microservices, scale-out
#
# *The primer's topic: why containers.* "Put each part of an application in a container of
# its own: the web app in one, its database in another. Each part can then be stopped,
# upgraded or copied without touching the others (**independence**, **microservices**),
# and a busy part runs as several copies behind a load balancer (**scale-out**). An
# orchestrator keeps it all running." Here you do each of those things for real, with a
# real database (MariaDB, built here from Debian's packages) and a small web app that
# counts its visits in it.
#
# **Learning goals.** After this lesson you can:
#
# 1. run an app and its database as two containers on one network, and show that the data
#    outlives the app: kill the app, start its next version, and the count goes on;
# 2. show that a stopped database makes the app answer `503` in well under 2 s (not hang),
#    and that each part is replaced without touching the other (its PID does not change);
# 3. build a database image from a Dockerfile and configure it as the official `mariadb`
#    image is configured: with environment variables, its data in a volume, a healthcheck;
# 4. put 1, 2 and 4 replicas of the app behind a round-robin front, and read the figure:
#    when more replicas help, and when this machine's cores are the limit;
# 5. say what a restart policy does and does not do, and what an orchestrator adds.
#
# The first cell says which parts run live on this machine, and which replay a recording of
# a real run (and why). Run each cell with **Shift-Enter**.

# %%
from edu_runtime.notebook import Lesson, check, exercise, port, predict, summary, wait_until

lesson = Lesson("02-why-containers")
lesson.image("debian")  # the base of the database and of the front
lesson.image("python")  # the base of the app
lesson.image("busybox")  # for the Docker comparison at the end

# %% [markdown]
# ## The application
#
# Everything runs on one user-defined network, `l02-net`, where containers find each other
# by name. By the end of the lesson it looks like this:
#
# ```
#                 your browser, or this notebook: http://127.0.0.1:PORT
#                                     |
#                          [ l02-front: nginx ]              part 5
#                        /       |        |       \
#              [ l02-app-1 ] [ l02-app-2 ] [ l02-app-3 ] [ l02-app-4 ]
#                        \       |        |       /
#                     [ l02-db: MariaDB, known as "db" ] --- volume l02-db-data
# ```
#
# The app (`lessons/apps/counter/counter.py`, about 100 lines) answers `GET /` with JSON:
# which replica answered, its version, and the number of visits so far, which it keeps in
# the database, never in itself. It serves one request at a time, as an app server with a
# single worker does.
#
# The names and settings of the lesson, in one place. The host port comes from the course's
# setting (`port("scale")`), and is published on 127.0.0.1 only: nothing outside this
# machine can reach the lesson's containers.

# %%
from edu_runtime.notebook.course import lessons_dir

APPS = lessons_dir() / "apps"  # the Dockerfiles: mariadb/, counter/, front/
NET = "l02-net"  # the user network
DATA = "l02-db-data"  # the database's volume
PORT = port("scale")  # 127.0.0.1:PORT is the app, then the front
DB_ENV = {"MARIADB_ROOT_PASSWORD": "l02-root-pw", "MARIADB_DATABASE": "counter",
          "MARIADB_USER": "counter", "MARIADB_PASSWORD": "l02-counter-pw"}
APP_ENV = {"DB_HOST": "db", "DB_NAME": "counter", "DB_USER": "counter",
           "DB_PASSWORD": "l02-counter-pw"}
print(f"network {NET}, volume {DATA}, published on http://127.0.0.1:{PORT}/")

# %% [markdown]
# Two helpers the parts share: read a container's state the way `docker inspect` shows it,
# and print one visit on one line. (`wait_until`, from the course's notebook layer, waits
# until something is true, with a time limit.)

# %%
import time


def state(name):
    """docker inspect NAME: its State, and its RestartCount and address on NET."""
    from edu_runtime.life import control

    info = control.inspect(name)
    net = (info["NetworkSettings"].get("Networks") or {}).get(NET) or {}
    return {**info["State"], "RestartCount": info["RestartCount"],
            "IPAddress": net.get("IPAddress", "")}


def healthy(name):
    return state(name).get("Health", {}).get("Status") == "healthy"


def answering(path="/health"):
    from edu_runtime.notebook.scaleout import visit

    return visit(PORT, path, timeout=1)["status"] == 200


def show(seen):
    """One visit, on one line: the status, the JSON answer, the time it took."""
    print(f"  GET / -> {seen['status'] or seen['error']}  {seen['answer'] or ''}  "
          f"({seen['ms']:.0f} ms)")


def counted(seen):
    """The number of visits an answer gave (a sentence, if the app could not count)."""
    if seen["status"] != 200:
        raise RuntimeError(f"the app did not count the visit: it answered "
                           f"{seen['status'] or seen['error']} {seen['answer'] or ''}")
    return seen["answer"]["visits"]


# %% [markdown]
# ## 1. The images: a real database, built here
#
# The primer runs `docker run mariadb`, pulled from Docker Hub. This course has no Docker
# Hub, so it builds the database image the way such images are made: a Dockerfile, on a
# Debian base, installing Debian's own `mariadb-server` package.
# `lessons/apps/mariadb/` holds it, beside its entrypoint script; read them. Like the
# official image:
#
# - it is configured by environment variables: `MARIADB_ROOT_PASSWORD`, `MARIADB_DATABASE`,
#   `MARIADB_USER`, `MARIADB_PASSWORD`;
# - the **first start** of a container finds an empty data directory and initialises it
#   (system tables, root's password, the database and its user); later starts find a
#   database there and use it;
# - its data directory, `/var/lib/mysql`, is a `VOLUME`: it lives outside the container;
# - a healthcheck logs in over TCP, so `ps` says `(healthy)` only once clients can (the
#   official image ships such a script, `healthcheck.sh`, and leaves it to you to use it in
#   a `--health-cmd`; ours has it as its `HEALTHCHECK`).
#
# The app and the front are two more Dockerfiles: `counter/` (Debian's python3 and PyMySQL)
# and `front/` (Debian's nginx). The app is built twice: version 1, and version 2, which
# differs by one build argument. In a terminal, with Docker or edu:
#
#     edu build -t mariadb lessons/apps/mariadb
#     edu build -t l02-counter:1 lessons/apps/counter
#     edu build -t l02-counter:2 --build-arg VERSION=2 lessons/apps/counter
#     edu build -t l02-front lessons/apps/front
#
# The first build takes about half a minute (apt-get downloads MariaDB). The cache keeps
# every step, so the next time (and in lesson 08, which runs WordPress on this database)
# each one says `Using cache`. A bar shows each step; the whole output goes to a log.

# %%
BUILDS = [("mariadb", "mariadb", {}), ("l02-counter:1", "counter", {}),
          ("l02-counter:2", "counter", {"VERSION": "2"}), ("l02-front", "front", {})]


def build_images():
    from edu_runtime.images.store import Store
    from edu_runtime.notebook.building import build_image, said

    built = {}
    for tag, app, args in BUILDS:
        lesson.made(image=tag)
        built[tag] = build_image(APPS / app, tag, build_args=args)
        print(said(built[tag]))
    config = Store().get("mariadb").config["config"]
    print("\nmariadb, as docker inspect shows its config:")
    for key in ("Entrypoint", "Cmd", "Volumes", "ExposedPorts", "Healthcheck"):
        value = config.get(key)
        if key == "Healthcheck":
            value = f"{value['Test']} every {value['Interval'] / 1e9:.0f} s"
        print(f"  {key:<13} {value}")
    return built


built = lesson.live("images", build_images)

# %% [markdown]
# `Volumes` is where the data will live, `Entrypoint` the script that sets the database up on
# a first start, `Healthcheck` the command the engine runs inside the container every second
# to ask "can a client log in yet?".

# %% [markdown]
# ## 2. Two containers, one application
#
# First the network and the volume, then the database, then the app. In Docker's words:
#
#     docker network create l02-net
#     docker volume create l02-db-data
#     docker run -d --name l02-db --network l02-net --network-alias db \
#         -e MARIADB_ROOT_PASSWORD=... -e MARIADB_DATABASE=counter \
#         -e MARIADB_USER=counter -e MARIADB_PASSWORD=... \
#         -v l02-db-data:/var/lib/mysql mariadb
#     docker run -d --name l02-app --network l02-net -e DB_HOST=db -e DB_PASSWORD=... \
#         -p 127.0.0.1:PORT:8000 l02-counter:1
#     curl http://127.0.0.1:PORT/
#
# `--network-alias db` gives the database a service name, `db`: the app is told `DB_HOST=db`
# and never needs to know which container that is. The cell waits for the database to be
# `healthy`, then visits the app three times.

# %%
def together():
    from edu_runtime import Container, networks, volumes

    lesson.made(network=NET)
    networks.create(NET)
    lesson.made(volume=DATA)
    volumes.create(DATA)
    db = Container("mariadb", name="l02-db", hostname="db", network=NET, aliases=["db"],
                   env=DB_ENV, volumes=[f"{DATA}:/var/lib/mysql"])
    lesson.made(container=db.id)
    db.start()
    took = wait_until("l02-db healthy", lambda: healthy("l02-db"))
    print(f"l02-db is healthy after {took:.1f} s; what its entrypoint said:")
    for _, line in db.logs():
        if "[Entrypoint]" in line:
            print("  " + line.split("[Entrypoint]: ")[-1].rstrip())
    app = Container("l02-counter:1", name="l02-app", hostname="l02-app", network=NET,
                    env=APP_ENV, publish=[f"127.0.0.1:{PORT}:8000"])
    lesson.made(container=app.id)
    app.start()
    wait_until("l02-app answering", answering, timeout=20)
    from edu_runtime.notebook.scaleout import visit

    print(f"\nthree visits to http://127.0.0.1:{PORT}/ :")
    seen = [visit(PORT) for _ in range(3)]
    for one in seen:
        show(one)
    return {"visits": [counted(s) for s in seen]}


first = lesson.live("together", together)

# %% [markdown]
# Two containers, each with its own processes, its own files and its own address, on one
# network. The app has no database inside it, and the database knows nothing of the app: the
# only thing between them is a TCP connection to `db:3306`.

# %% [markdown]
# ## 3. Kill the app; start its next version
#
# The app is a process in a container. Kill it, remove it, and start version 2 of the app
# in its place (`docker rm -f l02-app`, then `docker run ... l02-counter:2`): a new
# container from a new image, with nothing of the old one.

# %%
q_count = predict("The app's container is killed and replaced by version 2. The next visit "
                  "says the number of visits is:",
                  ["1: a new app starts counting again",
                   "4: the count goes on from where it was",
                   "none: the new version cannot start, the old one's data is gone"])
q_count


# %%
def new_app():
    from edu_runtime import Container
    from edu_runtime.notebook.scaleout import visit

    db_before = state("l02-db")
    Container.get("l02-app").remove(force=True)  # docker rm -f l02-app
    print("l02-app (version 1) killed and removed")
    app = Container("l02-counter:2", name="l02-app", hostname="l02-app", network=NET,
                    env=APP_ENV, publish=[f"127.0.0.1:{PORT}:8000"])
    lesson.made(container=app.id)
    app.start()
    wait_until("l02-app answering", answering, timeout=20)
    print("l02-app (version 2) started; one visit:")
    seen = visit(PORT)
    show(seen)
    counted(seen)
    db_after = state("l02-db")
    print(f"\nthe database meanwhile: pid {db_before['Pid']} -> {db_after['Pid']}, started "
          f"{db_before['StartedAt'][11:19]} -> {db_after['StartedAt'][11:19]}")
    return {"answer": seen["answer"], "db_before": db_before, "db_after": db_after}


second = lesson.live("new-app", new_app)

# %%
q_count.check("4: the count goes on from where it was"
              if second["answer"]["visits"] == first["visits"][-1] + 1 else
              "1: a new app starts counting again",
              why="the count was never in the app: it is a row in the database, and the "
                  "database's files are in a volume. A container is disposable when what "
                  "matters is kept outside it. The database did not even notice: same "
                  "process, same start time.")

# %% [markdown]
# This is the primer's **independence**: the app was upgraded (a new image, a new
# container) while the database ran on, untouched. With Docker it is the same two
# commands, and with Compose `docker compose up -d app` after changing the app's tag.

# %% [markdown]
# ## 4. Stop the database; then replace it
#
# Now the other way round. `docker stop l02-db`, and visit the app while its database is
# gone.

# %%
q_down = predict("The database is stopped. The next visit to the app:",
                 ["hangs until the browser gives up",
                  "gets an error answer (503) within a second or two",
                  "is counted anyway: the app keeps the count until the database is back"])
q_down


# %%
def new_db():
    from edu_runtime import Container
    from edu_runtime.notebook.scaleout import visit

    app_before = state("l02-app")
    db = Container.get("l02-db")
    db.stop()  # docker stop l02-db: SIGTERM, and MariaDB shuts down cleanly
    print("l02-db stopped; a visit:")
    down = visit(PORT, timeout=10)
    show(down)
    db.remove()  # docker rm l02-db: the container goes, its volume stays
    new = Container("mariadb", name="l02-db", hostname="db", network=NET, aliases=["db"],
                    env=DB_ENV, volumes=[f"{DATA}:/var/lib/mysql"])
    lesson.made(container=new.id)
    new.start()
    took = wait_until("the new l02-db healthy", lambda: healthy("l02-db"))
    said = [line.split("[Entrypoint]: ")[-1].rstrip() for _, line in new.logs()
            if "[Entrypoint]" in line]
    print(f"\na new l02-db on the same volume, healthy after {took:.1f} s. Its entrypoint:")
    for line in said:
        print("  " + line)
    print("a visit:")
    back = visit(PORT)
    show(back)
    counted(back)
    app_after = state("l02-app")
    print(f"\nthe app meanwhile: pid {app_before['Pid']} -> {app_after['Pid']}, started "
          f"{app_before['StartedAt'][11:19]} -> {app_after['StartedAt'][11:19]}")
    return {"down": down, "back": back["answer"], "entrypoint": said,
            "app_before": app_before, "app_after": app_after}


third = lesson.live("new-db", new_db)

# %%
q_down.check("gets an error answer (503) within a second or two"
             if third["down"]["status"] == 503 and third["down"]["ms"] < 2000 else
             "hangs until the browser gives up",
             why="the app gives each database call a deadline (1 s to connect), and says "
                 "503 Service Unavailable: 'I am up, what I need is not'. Here it was even "
                 "quicker: with the database gone, the name db left the app's /etc/hosts, so "
                 "the lookup failed at once. Without deadlines, one missing part freezes "
                 "every part that waits for it.")

# %% [markdown]
# The new database container started from an empty writable layer, but its entrypoint found
# a database in the volume, so it set nothing up again and the count went on. The app was
# never restarted: same PID. In real life this is how a database is upgraded: a new tag
# (`mariadb:10.11` to `mariadb:11.4`) on the same volume. Debian 12 has one MariaDB, so here
# the new container runs the same image; what the lesson shows is what happens to the data
# and to the app.

# %% [markdown]
# ## 5. Scale-out: 1, 2, 4 replicas behind a front
#
# One replica serves one request at a time. To serve more, run more copies of the app
# (**replicas**), and put a **front** before them that hands each request to the next
# replica in turn (*round robin*). The front here is nginx, from Debian's packages
# (`lessons/apps/front/`); its list of replicas comes from an environment variable:
#
#     docker run -d --name l02-app-1 --network l02-net --restart on-failure ... l02-counter:2
#     docker run -d --name l02-front --network l02-net -p 127.0.0.1:PORT:80 \
#         -e BACKENDS="l02-app-1:8000 l02-app-2:8000" l02-front
#
# (Compose does the same with `docker compose up --scale app=4`.) For N = 1, 2 and 4, the
# cell starts the replicas, a front for them, and sends the front two bounded bursts from
# this notebook, 8 requests at a time, to 127.0.0.1 only:
#
# - 96 visits that each **wait 20 ms in the database** (`/?wait_ms=20`: a slower query, as
#   a real page has), time when a replica can do nothing else;
# - 400 visits that **do not wait**: pure work for the machine's CPU cores.
#
# Each answer says which replica served it.

# %%
q_scale = predict("Visits that wait 20 ms: with 4 replicas instead of 1, how many times "
                  "more visits a second will the front serve?", number=True)
q_scale

# %%
REPLICAS = (1, 2, 4)
BURSTS = {"wait": ("/?wait_ms=20", 96), "fast": ("/", 400)}
LABELS = {"wait": "visits that wait 20 ms", "fast": "visits that do not wait"}


def start_replica(number):
    """docker run -d --restart on-failure --name l02-app-N ... l02-counter:2"""
    from edu_runtime import Container
    from edu_runtime.life import control

    c = Container("l02-counter:2", name=f"l02-app-{number}", hostname=f"app-{number}",
                  network=NET, env=APP_ENV)
    lesson.made(container=c.id)
    c.create(restart="on-failure")  # docker create --restart on-failure
    control.start(c.id)  # docker start


def start_front(count):
    """A front for replicas 1..count (the old front, if any, goes first: it holds PORT)."""
    from edu_runtime import Container

    try:
        Container.get("l02-front").remove(force=True)
    except Exception:  # noqa: BLE001 - there was none yet
        pass
    backends = " ".join(f"l02-app-{i}:8000" for i in range(1, count + 1))
    front = Container("l02-front", name="l02-front", network=NET, env={"BACKENDS": backends},
                      publish=[f"127.0.0.1:{PORT}:80"])
    lesson.made(container=front.id)
    front.start()
    wait_until("the front answering", answering, timeout=20)


def scale():
    from edu_runtime import Container
    from edu_runtime.notebook.scaleout import burst, said

    Container.get("l02-app").remove(force=True)  # the single app gives way (and PORT)
    runs = {kind: [] for kind in BURSTS}
    started = 0
    for n in REPLICAS:
        while started < n:
            started += 1
            start_replica(started)
        start_front(n)
        print(f"{n} replica(s) behind the front:")
        for kind, (path, requests) in BURSTS.items():
            run = burst(PORT, requests, clients=8, path=path)
            runs[kind].append({**run, "replicas_started": n})
            print(f"  {kind:<4} {said(run)}")
    return {"runs": runs}


scaled = lesson.live("scale-out", scale)

# %%
from edu_runtime.notebook.scaleout import ratio, scale_figure

scale_figure(scaled["runs"], LABELS, banner=lesson.banner("scale-out"))

# %%
q_scale.check(ratio(scaled["runs"]["wait"]),
              why="while a replica waits for the database it can serve nobody else; four "
                  "replicas wait side by side, so four times the visits get through, nearly. "
                  "The visits that do not wait (grey) are another story: each one is CPU "
                  "work, and this machine's few cores are shared by the front, every "
                  "replica, the database and this notebook's own client. A second replica "
                  "can use a second core; once the cores are busy, more replicas on the same "
                  "machine add nothing. Scale-out then means more machines, which is what an "
                  "orchestrator spreads replicas over.")

# %% [markdown]
# Left: each replica served the same share, `requests / N`: that is round robin. Right: the
# throughput against N, on log scales, with the ratio at 4 replicas in the legend. Two lessons
# in one figure: replicas help as long as what limits a replica is *waiting* (one request at a
# time, a slow query, another service); they do not create CPU cores.

# %% [markdown]
# ## 6. When a replica dies: the front, and a restart policy
#
# Two ways to lose a replica:
#
# - **you** kill it: `docker kill l02-app-4`;
# - it **crashes**: here its process is killed from the host (`kill -9 PID`), as the
#   kernel's OOM killer or a segmentation fault would end it. The engine did not ask for it.
#
# The replicas were started with `--restart on-failure`: when one exits with an error, the
# engine (edu's supervisor, dockerd for Docker) starts it again.

# %%
q_fail = predict("l02-app-4 is killed. Of the next 48 visits through the front, how many "
                 "fail?", ["none: the front skips it", "about a quarter: its share",
                           "all of them, until it is back"])
q_fail


# %%
def failover():
    import os
    import re
    import signal

    from edu_runtime import Container
    from edu_runtime.life import control
    from edu_runtime.notebook.scaleout import burst, said

    address = state("l02-app-4")["IPAddress"]
    control.kill("l02-app-4")  # docker kill l02-app-4
    wait_until("l02-app-4 exited", lambda: not state("l02-app-4")["Running"], timeout=10)
    killed = burst(PORT, 48, clients=4)
    print(f"after docker kill l02-app-4 ({address}): {said(killed)}")
    # The front's own words: it tried app-4's address, gave up, and moved on.
    skipped = list(dict.fromkeys(  # each kind of line once, in the log's order
        re.sub(r".*\*\d+ (.*) while connecting to upstream.*upstream: "
               r'"http://([^/"]+)/.*', r"\1: \2", line.strip())
        for _, line in Container.get("l02-front").logs()
        if "while connecting to upstream" in line))
    for line in skipped:
        print(f"  the front's log: {line}")

    before = state("l02-app-2")
    os.kill(before["Pid"], signal.SIGKILL)  # a crash: nobody asked the engine
    took = wait_until("l02-app-2 running again",
                      lambda: state("l02-app-2")["Pid"] not in (0, before["Pid"]), timeout=20)
    app2 = Container.get("l02-app-2")
    health = ["python3", "-c", "import urllib.request as u; "
              "u.urlopen('http://127.0.0.1:8000/health', timeout=1)"]
    wait_until("l02-app-2 answering", lambda: app2.exec(health).exit_code == 0, timeout=20)
    after = state("l02-app-2")
    print(f"\nl02-app-2's process killed with SIGKILL (pid {before['Pid']}): running again "
          f"after {took:.2f} s, pid {after['Pid']}, RestartCount {after['RestartCount']}, "
          f"address {before['IPAddress']} -> {after['IPAddress']}")
    crashed = burst(PORT, 48, clients=4)
    print(f"after the crash: {said(crashed)}")
    app4 = state("l02-app-4")
    print(f"\nl02-app-4: {app4['Status']}, RestartCount {app4['RestartCount']}")
    return {"killed": killed, "crashed": crashed, "skipped": skipped, "app2": after,
            "app2_before": before, "app4": app4}


failed = lesson.live("failover", failover)

# %%
q_fail.check("none: the front skips it" if failed["killed"]["codes"] == {"200": 48} else
             "about a quarter: its share",
             why="the front tried l02-app-4's address, got no answer within its 300 ms "
                 "connect timeout, sent that request to the next replica, and left app-4 out "
                 "for a while (its log above says so). The client never saw an error; the "
                 "other three replicas served it all.")

# %% [markdown]
# What the restart policy did, and did not do:
#
# - the **crashed** replica came back by itself in well under a second (`RestartCount 1`, a
#   new PID, the same address, so the front found it again);
# - the **killed** one stayed down: `docker kill` is a decision, and a restart policy respects
#   it (Docker's rule too, checked below).
#
# ### What orchestrators add
#
# A restart policy is one engine, on one machine, restarting one container. An orchestrator
# (Kubernetes, Docker Swarm, Nomad) keeps a **desired state** instead: "4 replicas of
# `l02-counter:2`". Whatever makes the count wrong (a crash, a kill, a whole machine lost),
# it starts replacements, on any machine of the cluster. It updates the front's list of
# replicas itself (here we restarted nginx by hand whenever the list changed, and a
# replica that came back on a *new* address would have been lost to it), sends requests
# only to replicas whose readiness check passes, replaces replicas one at a time for an
# upgrade (no `503` window as in part 4), and adds replicas when the load grows.

# %% [markdown]
# ### Extra details: Docker's restart rules, beside edu's
#
# The same small container in each engine, started with `--restart on-failure`: it exits
# with an error the first time it runs, and sleeps the next time. Then `kill` it. In
# Docker's words:
#
#     docker run -d --name l02-crashy --restart on-failure busybox \
#         sh -c '[ -e /crashed ] && exec sleep 600; touch /crashed; exit 3'
#     docker inspect -f '{{.RestartCount}} {{.State.Status}}' l02-crashy
#     docker kill l02-crashy
#
# `/crashed` is written in the container's writable layer, which a restart keeps: a restart
# is the same container started again, not a new one. Where Docker is not running, this
# replays a run that had it.

# %%
import subprocess
import tempfile
from pathlib import Path

CRASHY = ["sh", "-c", "[ -e /crashed ] && exec sleep 600; touch /crashed; exit 3"]


def docker_busybox():
    """busybox in Docker: its own, or ours loaded into it; (name, whether we loaded it)."""
    if subprocess.run(["docker", "image", "inspect", "busybox"],
                      capture_output=True).returncode == 0:
        return "busybox", False
    from edu_runtime.images import archive, store

    with tempfile.TemporaryDirectory() as tmp:
        tar = archive.save(store.Store(), ["busybox"], Path(tmp) / "busybox.tar")
        out = subprocess.run(["docker", "load", "-i", str(tar)], capture_output=True,
                             text=True, check=True).stdout
    return out.split("Loaded image: ")[-1].split()[0], True


def docker_inspect(name):
    out = subprocess.run(["docker", "inspect", "-f", "{{.RestartCount}} {{.State.Status}}",
                          name], capture_output=True, text=True, check=True).stdout.split()
    return {"RestartCount": int(out[0]), "Status": out[1]}


def restart_rules():
    from edu_runtime import Container
    from edu_runtime.life import control

    seen = {}
    c = Container("busybox", CRASHY, name="l02-crashy", network="none")
    lesson.made(container=c.id)
    c.create(restart="on-failure")
    control.start(c.id)
    wait_until("edu's l02-crashy restarted", lambda: state("l02-crashy")["RestartCount"] >= 1
               and state("l02-crashy")["Running"], timeout=20)
    seen["edu"] = {"crashed": dict(state("l02-crashy"))}
    control.kill("l02-crashy")
    time.sleep(1.5)  # longer than either engine's first restart delay
    seen["edu"]["killed"] = state("l02-crashy")
    c.remove(force=True)

    image, loaded = docker_busybox()
    try:
        subprocess.run(["docker", "run", "-d", "--name", "l02-crashy", "--network", "none",
                        "--restart", "on-failure", image, *CRASHY], check=True,
                       capture_output=True)
        wait_until("Docker's l02-crashy restarted", lambda: docker_inspect("l02-crashy")
                   == {"RestartCount": 1, "Status": "running"}, timeout=20)
        seen["docker"] = {"crashed": docker_inspect("l02-crashy")}
        subprocess.run(["docker", "kill", "l02-crashy"], check=True, capture_output=True)
        time.sleep(1.5)
        seen["docker"]["killed"] = docker_inspect("l02-crashy")
    finally:
        subprocess.run(["docker", "rm", "-f", "l02-crashy"], capture_output=True)
        if loaded:  # leave Docker's images as they were
            subprocess.run(["docker", "rmi", image], capture_output=True)
    print(f"{'':26}{'edu':<24}docker")
    for when, what in (("crashed", "after its first run"), ("killed", "after kill + 1.5 s")):
        row = [f"{seen[who][when]['Status']}, {seen[who][when]['RestartCount']} restart(s)"
               for who in ("edu", "docker")]
        print(f"{what:<26}{row[0]:<24}{row[1]}")
    return {who: {when: {"Status": v["Status"], "RestartCount": v["RestartCount"]}
                  for when, v in seen[who].items()} for who in seen}


rules = lesson.live("docker", restart_rules)

# %% [markdown]
# The same rules in both: an exit with an error is restarted (once, here, since the second
# run sleeps); a `kill` is not. Where they differ: Docker keeps its containers' restart
# policies in dockerd, and restarts them after a reboot (`--restart always`); edu's
# supervisor lives only while it has containers, and after a reboot nothing comes back.

# %% [markdown]
# ## Exercise
#
# The count is in the database, not in the app: show it without the app. The `mariadb`
# image can be a client too: its entrypoint runs any command that is not the server, as the
# official image's does (`docker run --rm --network l02-net mariadb mariadb -h db ...`).

# %%
ex = exercise(
    "Run a one-off container of the mariadb image on l02-net that runs the mariadb client "
    "against db (user counter, database counter) and prints SELECT n FROM visits; put the "
    "number in count_in_db.",
    solution='''
import contextlib
import io

from edu_runtime import Container

said = io.StringIO()
client = Container("mariadb", ["mariadb", "-h", "db", "-u", "counter",
                               "-pl02-counter-pw", "counter", "--skip-column-names",
                               "-e", "SELECT n FROM visits"], network=NET, remove=True)
lesson.made(container=client.id)
with contextlib.redirect_stdout(said):
    client.run()  # docker run --rm --network l02-net mariadb mariadb -h db ...
count_in_db = int(said.getvalue().split()[-1])
print("visits, read from the database itself:", count_in_db)
''')
ex

# %% [markdown]
# ## Checks

# %%
seen_last = max(failed["crashed"]["visits"], failed["killed"]["visits"])
shares_even = all(max(r["replicas"].values()) - min(r["replicas"].values()) <= 1
                  and len(r["replicas"]) == r["replicas_started"]
                  for runs in scaled["runs"].values() for r in runs)
results = [
    check("the count went on across the new version of the app",
          second["answer"]["visits"] == first["visits"][-1] + 1
          and second["answer"]["version"] == "2",
          hint="run parts 2 and 3 again, in order"),
    check("with the database stopped, the app answered 503 in under 2 s",
          third["down"]["status"] == 503 and third["down"]["ms"] < 2000,
          hint="part 4: the app's answer while l02-db was stopped"),
    check("each part was replaced without touching the other (the other's PID unchanged)",
          second["db_before"]["Pid"] == second["db_after"]["Pid"]
          and third["app_before"]["Pid"] == third["app_after"]["Pid"],
          hint="compare the pids printed at the end of parts 3 and 4"),
    check("the new database found the old one's data: the count went on",
          third["back"]["visits"] == second["answer"]["visits"] + 1,
          hint="the new l02-db must use the same volume, l02-db-data"),
    check("round robin: in every burst, each replica served the same share (within 1)",
          shares_even, hint="see the left of the figure"),
    check("4 replicas served more than twice the waiting visits of 1",
          ratio(scaled["runs"]["wait"]) > 2, hint="see the right of the figure"),
    check("after docker kill, nothing failed and the killed replica served nothing",
          failed["killed"]["codes"] == {"200": 48}
          and "app-4" not in failed["killed"]["replicas"],
          hint="part 6's first burst"),
    check("the crashed replica came back by itself, and served again",
          failed["app2"]["RestartCount"] == 1 and "app-2" in failed["crashed"]["replicas"],
          hint="--restart on-failure: part 6's second burst"),
    check("exercise: count_in_db is the count the app last reported",
          lambda: count_in_db == seen_last,
          hint="run the exercise: the mariadb client in a container on l02-net"),
]
summary(results)

# %% [markdown]
# ## Reset
#
# Removes every container, the volume (and so the visits), the network and the image tags
# the lesson made, and says what it removed. The build cache keeps the images' layers, so
# building them again (here, or in lesson 08) takes a second.

# %%
lesson.reset()

# %% [markdown]
# Next: **[03 installing](03-installing.ipynb)**: what an engine is made of, Docker's and
# edu's, part by part.
