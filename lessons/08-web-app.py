# ---
# jupyter:
#   edu:
#     parts:
#       behind:
#         needs:
#         - containers
#         - bridge
#         - root
#         what: 'behind -p: the netns, the veth pair, the bridge, the DNAT rule, conntrack'
#       compose:
#         needs:
#         - containers
#         - bridge
#         - root
#         what: 'the same app as a compose file: up, the site, down (the volume stays),
#           up again, down -v'
#       docker:
#         needs:
#         - containers
#         - dockerd
#         what: docker run -p beside edu's, and Docker's DNAT rule in iptables
#       hub:
#         needs:
#         - containers
#         what: a registry of our own as the lesson's Docker Hub; push, search, pull,
#           images
#       images:
#         needs:
#         - containers
#         - bridge
#         - root
#         what: 'edu build: wordpress and mariadb from Debian''s packages'
#       install:
#         needs:
#         - containers
#         - bridge
#         - root
#         what: WordPress's installer, the install and a post, all with HTTP requests
#       run:
#         needs:
#         - containers
#         - bridge
#         - root
#         what: a database and edu run --name l08-web -p PORT:80 -d wordpress on one
#           network
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
# # 08 A web app with `--name web -p 8080:80 -d wordpress`
#
# *The primer's topic: a real app.* "`docker search wordpress`, `docker pull wordpress`,
# `docker images`; then `docker run --name web -p 8080:80 -d wordpress`, and open
# http://localhost:8080 in a browser: WordPress's installer." Here you do all of it for real,
# with a WordPress and a MariaDB built here from Debian's packages, and then you look behind
# `-p 8080:80`: what the kernel does so that a request to your machine's port 8080 reaches
# port 80 inside a container.
#
# **Learning goals.** After this lesson you can:
#
# 1. find an image in a registry (`search`), fetch it (`pull`) and list it (`images`), and
#    say what a pull downloads when the layers are already there;
# 2. run a web app and its database as two containers on one network, publish the app's
#    port with `-p`, and install WordPress and write a post with plain HTTP requests;
# 3. show, from the host, the four things behind `-p`: the container's network namespace,
#    the veth pair with one end in it, the bridge, and the DNAT rule, with the raw line of
#    each and what it means;
# 4. read the kernel's connection table (conntrack) and find your own request in it, with the
#    address it was sent to and the address that answered;
# 5. run the same two containers from a compose file, and say what `down` and `down -v`
#    keep;
# 6. say how Docker does the same (iptables, docker-proxy), and where edu differs.
#
# The first cell says which parts run live on this machine and which replay a recording of a
# real run (and why). Run each cell with **Shift-Enter**.

# %%
from edu_runtime.notebook import Lesson, check, exercise, port, predict, summary, wait_until

lesson = Lesson("08-web-app")
lesson.image("debian")  # the base of both app images
lesson.image("busybox")  # for the Docker comparison

# %% [markdown]
# ## The application
#
# ```
#            this notebook (or your browser): http://127.0.0.1:PORT
#                                   |            -p 127.0.0.1:PORT:80
#              [ l08-web: apache + PHP + WordPress, port 80 ]
#                                   |            l08-net, a bridge
#              [ l08-db: MariaDB, known on l08-net as "db", port 3306 ]
# ```
#
# The names and settings of the lesson, in one place. The host port comes from the course's
# setting (`port("web")`, 8080 unless your classroom gives each student a range). The primer
# says `--name web`; the lesson's containers start with `l08-` so they never clash with a
# `web` of yours.

# %%
from edu_runtime.notebook.course import lessons_dir

APPS = lessons_dir() / "apps"  # wordpress/ and mariadb/: a Dockerfile each
NET = "l08-net"
WEB, DB = "l08-web", "l08-db"
PORT = port("web")
URL = f"http://127.0.0.1:{PORT}"
REGISTRY = "l08-registry"  # the lesson's own registry (stands in for Docker Hub)
DB_ENV = {"MARIADB_ROOT_PASSWORD": "l08-root-pw", "MARIADB_DATABASE": "wordpress",
          "MARIADB_USER": "wordpress", "MARIADB_PASSWORD": "l08-wp-pw"}
WP_ENV = {"WORDPRESS_DB_HOST": "db", "WORDPRESS_DB_USER": "wordpress",
          "WORDPRESS_DB_PASSWORD": "l08-wp-pw", "WORDPRESS_DB_NAME": "wordpress"}
ADMIN = {"user": "teacher", "password": "l08-teacher-pw", "email": "teacher@example.test"}
print(f"network {NET}, containers {WEB} and {DB}, WordPress on {URL}/")

# %% [markdown]
# A small helper the parts share: print one HTTP request on one line, as a browser's network
# tab shows it. (`wait_until`, from the course's notebook layer, waits until something is
# true, with a time limit.)

# %%
import time


def show(page):
    """One request: method, path, status, where a redirect points, the time it took."""
    to = f" -> {page['location'][:24]}" if page["location"] else ""
    print(f"  {page['method']:<4} {page['path'][:46]:<47}{page['status']}{to:<28}"
          f"{page['ms']:6.0f} ms")


# %% [markdown]
# ## 1. The images, built here
#
# The primer pulls `wordpress` and `mariadb` from Docker Hub. There is no Docker Hub here, so
# the course builds them the way such images are made: a Dockerfile on a Debian base that
# installs Debian's own packages. `lessons/apps/wordpress/` holds WordPress's (open it beside
# the notebook):
#
# - `apt-get install wordpress apache2 libapache2-mod-php php-mysql`: WordPress is PHP files,
#   apache serves them, `mod_php` runs them, `php-mysql` talks to the database;
# - `config-default.php` takes the database from the environment, as the official image
#   does: `WORDPRESS_DB_HOST`, `WORDPRESS_DB_USER`, `WORDPRESS_DB_PASSWORD`,
#   `WORDPRESS_DB_NAME` (and `WORDPRESS_TABLE_PREFIX`);
# - the entrypoint gives each container its own secret keys ("salts") on its first start,
#   then runs apache in the foreground as PID 1, its logs on stdout and stderr (`edu logs`);
# - no request leaves the host: WordPress normally calls wordpress.org for updates, news and
#   translations; here its HTTP client refuses any other host (`WP_HTTP_BLOCK_EXTERNAL`).
#
# `mariadb` is lesson 02's image, unchanged. In a terminal:
#
#     edu build -t wordpress lessons/apps/wordpress
#     edu build -t mariadb lessons/apps/mariadb
#
# The first build on a machine downloads about 60 MB of packages and takes about half a
# minute each; the build cache keeps every step, so the next one takes a second.

# %%
def build_images():
    from edu_runtime.images.store import Store
    from edu_runtime.notebook.building import build_image, said

    built = {}
    for tag in ("wordpress", "mariadb"):
        lesson.made(image=tag)
        built[tag] = build_image(APPS / tag, tag)
        print(said(built[tag]))
    config = Store().get("wordpress").config["config"]
    print("\nwordpress, as docker inspect shows its config:")
    for key in ("Entrypoint", "Cmd", "ExposedPorts"):
        print(f"  {key:<13} {config.get(key)}")
    return built


built = lesson.live("images", build_images)

# %% [markdown]
# ## 2. `search`, `pull`, `images`: a registry of our own as Docker Hub
#
# Docker Hub is a registry: a web server that keeps images and hands them out. The lesson
# starts one of its own (Debian's `docker-registry`, on a free port of 127.0.0.1, as in
# lesson 04) and pushes both images to it as `library/wordpress` and `library/mariadb`:
# Docker Hub's official images live under `library/`, so `wordpress` is short for
# `docker.io/library/wordpress:latest`. Then the primer's three commands, against it:
#
#     edu search 127.0.0.1:REG/
#     edu pull 127.0.0.1:REG/library/wordpress
#     edu images

# %%
q_pull = predict("This machine built wordpress a minute ago. `edu pull` of the same image "
                 "from the registry downloads:",
                 ["every layer again: a pull always downloads",
                  "nothing: every layer is already here",
                  "only the top layer: the one that changed"])
q_pull


# %%
def hub():
    import io

    from edu_runtime.images import local_registry, registry
    from edu_runtime.images.store import Store

    lesson.made(registry=REGISTRY)
    served = local_registry.start(REGISTRY)
    reg, store = served.address, Store()
    print(f"registry: docker-registry, pid {served.pid}, on {reg} only")
    for name in ("wordpress", "mariadb"):
        remote = f"{reg}/library/{name}:latest"
        lesson.made(image=remote)
        store.tag(name, remote)  # docker tag wordpress REG/library/wordpress
        out = io.StringIO()
        pushed = registry.push(store, remote, progress=registry.Progress(out))
        done = [line for line in out.getvalue().splitlines() if line.endswith(
            ("Pushed", "Mounted from library/wordpress"))]
        print(f"$ edu push {remote}\n  {len(done)} layers: "
              f"{', '.join(sorted({d.split(': ', 1)[1] for d in done}))}; "
              f"digest {pushed.digest[:19]}...")
    print(f"\n$ edu search {reg}/")
    found = registry.search_registry(reg, "")
    for f in found:
        print(f"  {f.name:<44} tags: {', '.join(f.tags)}")
    out = io.StringIO()
    pulled = registry.pull(store, f"{reg}/library/wordpress:latest",
                           progress=registry.Progress(out))
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    status = sorted({line.split(": ", 1)[1] for line in lines[1:] if ": " in line})
    print(f"\n$ edu pull {reg}/library/wordpress")
    print("\n".join("  " + line for line in lines))
    print(f"  Digest: {pulled.digest[:19]}...")
    if not status:
        print("  (no layer listed: the store has every one; Docker says \"Image is up to "
              "date\")")
    print("\n$ edu images")
    print(f"  {'REPOSITORY':<44}{'TAG':<8}{'IMAGE ID':<14}SIZE")
    for image in store.images():
        for tag in image.familiar_tags():
            repo, _, version = tag.rpartition(":")
            if repo.split("/")[-1] in ("wordpress", "mariadb"):
                print(f"  {repo:<44}{version:<8}{image.short_id:<14}{image.size / 1e6:.0f} MB")
    return {"registry": reg, "found": [f.name for f in found], "pull_lines": lines,
            "pull_status": status, "digest": pulled.digest}


hubbed = lesson.live("hub", hub)

# %%
q_pull.check("nothing: every layer is already here" if not hubbed["pull_status"]
             or hubbed["pull_status"] == ["Already exists"] else
             "every layer again: a pull always downloads",
             why="a pull asks the registry for the image's manifest, the list of its layers "
                 "by digest, and downloads only the layers the store lacks. This machine "
                 "built them, so it has them all: the pull has nothing to fetch. A "
                 "classmate's machine would download each layer once (and the debian base "
                 "only once for both images: it is the same layer, with the same digest).")

# %% [markdown]
# Both names, `wordpress` and `127.0.0.1:REG/library/wordpress`, have one **IMAGE ID**: they
# are two names of one image, as `wordpress` and `docker.io/library/wordpress` are on a
# machine with Docker. Where edu and Docker differ: `docker search` asks Docker Hub's own
# search service; `edu search` reads the registry's catalog, which any registry can serve.

# %% [markdown]
# ## 3. A database, then `edu run --name l08-web -p PORT:80 -d wordpress`
#
# WordPress needs a database, so first a network and MariaDB on it, known there as `db`:
#
#     edu network create l08-net
#     edu run -d --name l08-db --network l08-net --network-alias db \
#         -e MARIADB_ROOT_PASSWORD=... -e MARIADB_DATABASE=wordpress \
#         -e MARIADB_USER=wordpress -e MARIADB_PASSWORD=... mariadb
#     edu run -d --name l08-web --network l08-net -p 127.0.0.1:PORT:80 \
#         -e WORDPRESS_DB_HOST=db -e WORDPRESS_DB_USER=wordpress \
#         -e WORDPRESS_DB_PASSWORD=... -e WORDPRESS_DB_NAME=wordpress wordpress
#
# `-p 127.0.0.1:PORT:80` is the primer's `-p 8080:80` on the loopback address only: a
# WordPress that is not installed yet belongs to whoever opens its installer first, so it
# should not be reachable from the room's network. `-d` runs it in the background.

# %%
def run_them():
    from edu_runtime import Container, networks
    from edu_runtime.life import control

    lesson.made(network=NET)
    networks.create(NET)
    db = Container("mariadb", name=DB, hostname="db", network=NET, aliases=["db"],
                   env=DB_ENV)
    lesson.made(container=db.id)
    db.start()
    took = wait_until(f"{DB} healthy", lambda: control.inspect(DB)["State"].get(
        "Health", {}).get("Status") == "healthy")
    print(f"{DB} is healthy after {took:.1f} s")
    # The kernel's connection table now, for this network's addresses: part 5 tells the
    # connections l08-web opens from those that were there before it.
    import ipaddress

    from edu_runtime.networks import conntrack, registry

    subnet = ipaddress.ip_network(registry.get(NET)["subnet"])
    before = sorted([proto, t.src, t.sport, t.dst, t.dport] for proto, t in conntrack.keys()
                    if ipaddress.ip_address(t.src) in subnet)
    web = Container("wordpress", name=WEB, hostname="web", network=NET, env=WP_ENV,
                    publish=[f"127.0.0.1:{PORT}:80"])
    lesson.made(container=web.id)
    web.start()
    print(f"{WEB} started: {web.id[:12]}")
    print("\n$ edu ps")
    for name in (WEB, DB):
        info = control.inspect(name)
        ports = info["NetworkSettings"].get("Ports") or {}
        shown = ", ".join(f"{b[0]['HostIp']}:{b[0]['HostPort']}->{p}"
                          for p, b in ports.items() if b)
        health = info["State"].get("Health", {}).get("Status", "")
        print(f"  {name:<9}{info['Config']['Image']:<11}"
              f"{info['State']['Status'] + (f' ({health})' if health else ''):<20}{shown}")
    return {"web": web.id, "db": db.id, "conntrack_before": before}


ran = lesson.live("run", run_them)

# %% [markdown]
# ## 4. The installer, the install and a post, with HTTP requests
#
# A browser at http://127.0.0.1:PORT/ would show WordPress's installer. The notebook sends
# the very requests a browser sends (`edu_runtime.notebook.wordpress`: `urllib` and a cookie
# jar), one at a time, each timed, redirects shown rather than followed.

# %%
q_first = predict("The very first GET / of a WordPress that was never installed answers:",
                  ["200: the blog's front page, empty",
                   "302: a redirect to the installer, /wp-admin/install.php",
                   "500: an error, the database has no tables yet"])
q_first


# %%
def install_and_post():
    from edu_runtime.notebook import wordpress

    site = wordpress.Site(URL)

    def answering():
        try:
            return site.get("/")["status"] in (200, 302)
        except wordpress.WordPressError:
            return False
    wait_until("WordPress answering", answering, timeout=30)
    site.pages.clear()
    first = site.get("/")
    installer = site.get("/wp-admin/install.php")
    print("the installer's page:", wordpress.page_text(installer["text"])["title"])
    site.install("Hello from lesson 08", ADMIN["user"], ADMIN["password"], ADMIN["email"])
    site.login(ADMIN["user"], ADMIN["password"])
    made = site.post("A real post", "Written with HTTP requests from a notebook, stored in "
                     "MariaDB, served by WordPress in a container.")
    seen = site.read(made["id"])
    site.get("/")
    site.get("/wp-admin/")
    print("\nevery request, in order:")
    for page in site.pages:
        show(page)
    print(f"\nthe post, as a visitor reads it ({URL}/?p={made['id']}):")
    print(f"  <title> {seen['title']}")
    for line in seen["lines"][:4]:
        print(f"  | {line}")
    return {"first": {k: first[k] for k in ("status", "location")}, "post": made,
            "seen": seen, "pages": site.pages}


installed = lesson.live("install", install_and_post)

# %%
q_first.check("302: a redirect to the installer, /wp-admin/install.php"
              if installed["first"]["status"] == 302 else
              "200: the blog's front page, empty",
              why="WordPress finds no tables in its database (the database exists: the "
                  "mariadb container made it from MARIADB_DATABASE) and sends every visitor "
                  "to its installer. The installer's form makes the tables, the first user "
                  "and the sample post.")

# %% [markdown]
# Every page answered in well under 2 s. On a machine with no internet that is not a given:
# WordPress asks wordpress.org for news, versions and translations from its dashboard and
# installer, and each call would wait for a network that is not there. The image switches
# those calls off, and part 5 shows, from the kernel's own table, that the container opened
# no connection but to its database (step 6).

# %% [markdown]
# ## 5. Behind `-p`: what the kernel does with your request
#
# The notebook asked `127.0.0.1:PORT`, an address of the *host*. Apache listens on port 80
# in the *container*, which has its own network stack. Four kernel objects join them, and
# each can be read from the host:
#
# 1. the container's **network namespace**: its own interfaces, addresses and routes;
# 2. a **veth pair**: two interfaces joined like the ends of a cable, one in the host, one in
#    the container (there called `eth0`);
# 3. a **bridge**, a switch in the kernel, that the host end is plugged into, with the host's
#    own address on the network (the gateway);
# 4. a **DNAT rule** in edu's nftables table: "a TCP packet for 127.0.0.1:PORT: send it to the
#    container's address, port 80 instead".
#
# And the kernel remembers each connection it rewrote: the **conntrack** entry. The cell
# sends one request on a connection it keeps open, and finds that connection in the table.

# %%
q_from = predict("Apache logs the address each request came from. For the notebook's "
                 "request to 127.0.0.1:PORT, it logs:",
                 ["127.0.0.1: the notebook's address",
                  "the bridge's gateway address (10.x.y.1)",
                  "the host's address on the room's network"])
q_from


# %%
def behind():
    import http.client
    import os

    from edu_runtime.life import control
    from edu_runtime.networks import bridge, conntrack, nat, registry

    info = control.inspect(WEB)
    pid = info["State"]["Pid"]
    ip = info["NetworkSettings"]["Networks"][NET]["IPAddress"]
    network = registry.get(NET)
    out = {"ip": ip, "gateway": network["gateway"], "bridge": network["bridge"]}

    print("1. the network namespace (an inode number names it)")
    ns = {who: (path, os.readlink(path)) for who, path in
          (("this notebook, on the host", "/proc/self/ns/net"), (WEB, f"/proc/{pid}/ns/net"))}
    for who, (path, link) in ns.items():
        print(f"  {path:<20} {link:<22} ({who})")
    out["netns"] = {who: link for who, (_, link) in ns.items()}
    inside = bridge.container_view(pid)
    print(f"  inside {WEB}: " + "; ".join(inside["addresses"]) + "; routes: "
          + "; ".join(inside["routes"]))

    print("\n2. the veth pair: the host's end names its peer by ifindex (iflink)")
    host_end = bridge.veth_names(ran["web"])[0]
    sysfs = {k: open(f"/sys/class/net/{host_end}/{k}").read().strip()
             for k in ("ifindex", "iflink")}
    said = control.exec_run(WEB, ["cat", "/sys/class/net/eth0/ifindex",
                                  "/sys/class/net/eth0/iflink"]).output.split()
    print(f"  host:   {host_end:<13} ifindex {sysfs['ifindex']:>6}  iflink {sysfs['iflink']:>6}")
    print(f"  {WEB}: {'eth0':<13} ifindex {said[0]:>6}  iflink {said[1]:>6}")
    out["veth"] = {"host": host_end, **sysfs, "eth0_ifindex": said[0], "eth0_iflink": said[1]}

    print("\n3. the bridge, with the host's end plugged in")
    view = bridge.host_view(network, host_end)
    br = view[network["bridge"]]
    print(f"  {network['bridge']}: {br['state']}, address {br['address']} (the gateway), "
          f"ports: {', '.join(br['ports'])}")
    print(f"  {host_end}: master {view[host_end]['master']}, {view[host_end]['state']}")
    out["bridge_ports"] = br["ports"]

    print(f"\n4. the DNAT rule: nft list table ip edu, the rule tagged with {WEB}'s id")
    rules = nat.rule_lines(f"edu:{ran['web']}")
    for line in rules:
        print("  " + line.replace(ran["web"], ran["web"][:12] + "..."))
    out["dnat"] = rules
    masq = [line for line in nat.rule_lines(f"edu-net:{network['bridge']}")
            if "127.0.0.0/8" in line and "masquerade" in line]
    for line in masq:
        print("  " + line)
    out["masquerade"] = masq

    print("\n5. conntrack: the notebook's own request, while its connection is open")
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
    try:
        conn.request("GET", "/?p=1")
        conn.getresponse().read()
        mine = conn.sock.getsockname()[1]
        entry = [e for e in conntrack.involving("127.0.0.1")
                 if e.original.sport == mine and e.original.dport == PORT]
    finally:
        conn.close()
    raw = entry[0].line.split(" mark=")[0] if entry else "(not found)"
    print("  /proc/net/nf_conntrack (conntrack -L prints the same, without 'ipv4 2'):")
    print("  " + " ".join(raw.split()))
    out["conntrack"] = raw
    out["entry"] = ({"original": str(entry[0].original), "reply": str(entry[0].reply),
                     "dnat": entry[0].dnat, "snat": entry[0].snat} if entry else None)
    print(f"\n6. every connection {WEB} itself opened since it started (conntrack again)")
    before = {(p, conntrack.Tuple(src, dst, sport, dport))
              for p, src, sport, dst, dport in ran["conntrack_before"]}
    opened = conntrack.opened_by(ip, before)
    db_ip = control.inspect(DB)["NetworkSettings"]["Networks"][NET]["IPAddress"]
    where = {}
    for e in opened:
        to = f"{e.proto} {e.original.dst}:{e.original.dport}"
        where[to] = where.get(to, 0) + 1
    for to, n in sorted(where.items()):
        print(f"  {to:<24} {n:>3} connection(s)" + (f"  ({DB})" if db_ip in to else ""))
    print(f"  anywhere else: {sum(n for to, n in where.items() if db_ip not in to)}"
          " (no DNS lookup, no wordpress.org)")
    out["opened"] = where
    out["db_ip"] = db_ip
    log = [line for _, line in control.logs(WEB) if "GET /?p=1 " in line]
    out["logged_from"] = log[-1].split()[0] if log else ""
    print(f"\n{WEB}'s access log: {log[-1].strip()[:90] if log else '(nothing)'}")
    return out


seen = lesson.live("behind", behind)

# %%
q_from.check("the bridge's gateway address (10.x.y.1)"
             if seen["logged_from"] == seen["gateway"] else "127.0.0.1: the notebook's address",
             why="a reply to 127.0.0.1 would stay inside the container (its own loopback), so "
                 "edu also rewrites the *source* of a loopback request to the gateway's "
                 "address (the masquerade rule for 127.0.0.0/8), and the kernel puts both "
                 "addresses back on the way out. Docker does the same with its docker-proxy "
                 "process for 127.0.0.1, which connects from the gateway too.")

# %% [markdown]
# The same on one picture: the request's path, each box a kernel object with the name and
# number the kernel gave it, and the conntrack entry that brings the answer back.

# %%
from edu_runtime.notebook.portpath import port_path

port_path(seen, PORT, lesson.banner("behind"))

# %% [markdown]
# What each raw line says:
#
# - **netns**: `net:[4026531840]` is the host's network namespace; the container's has
#   another number. Its interfaces, addresses, routes and ports are its own, which is why
#   apache can listen on port 80 without clashing with anything on the host.
# - **veth**: the host's end has an `ifindex` (its number) and an `iflink` (its peer's
#   number). Inside the container, `eth0`'s `ifindex` is the host end's `iflink` and the
#   other way round: one cable, two ends, in two namespaces. (`docker exec web cat
#   /sys/class/net/eth0/iflink` is how one finds a Docker container's veth, too.)
# - **bridge**: the switch whose ports are the host ends of every container on `l08-net`
#   (here both `l08-web`'s and `l08-db`'s), with the gateway address on it.
# - **DNAT**: `publish ip daddr 127.0.0.1 tcp dport PORT dnat to 10.x.y.z:80` reads "in the
#   chain `publish`: a packet for 127.0.0.1, TCP port PORT: rewrite its destination to the
#   container's address, port 80". The `masquerade` rule reads "a packet from 127.0.0.0/8
#   going out to the bridge: give it the bridge's own address as its source".
# - **conntrack**: the first `src=... dst=... sport=... dport=...` is the request as the
#   notebook sent it (to 127.0.0.1:PORT); the second is how the answer comes back: *from*
#   the container's port 80, *to* the gateway. The kernel rewrote the first packet with the
#   rules above, then rewrites every later packet of the connection from this entry alone.
# - **what l08-web opened**: the same table, read for entries whose *original* source is
#   l08-web's address: only TCP connections to the database's port 3306. A DNS lookup would
#   be a `udp ... :53` entry, a call to wordpress.org a `tcp ... :443` one; there are none.

# %% [markdown]
# ### Extra details: Docker's `-p`, beside edu's
#
# Docker publishes a port with **iptables** rules in its own chains (`DOCKER` in the `nat`
# table) and, for each port, a **docker-proxy** process that also listens on it (for
# requests from the host itself, where the `nat` rule does not apply by default). The cell
# runs busybox's web server in Docker with `-p 127.0.0.1::80` (Docker picks a free port) and
# shows its rule beside edu's.
#
#     docker run -d --name l08-docker-web -p 127.0.0.1::80 busybox httpd -f -p 80
#     iptables -t nat -S DOCKER
#     docker port l08-docker-web

# %%
def docker_beside():
    import subprocess

    from edu_runtime.notebook.docker import borrowed, docker

    name = "l08-docker-web"
    with borrowed("busybox", "l08-busybox:edu") as image:
        docker("rm", "-f", name, check=False)
        try:
            docker("run", "-d", "--name", name, "-p", "127.0.0.1::80", image, "sh", "-c",
                   "echo hello from docker > /tmp/index.html && httpd -f -p 80 -h /tmp")
            mapped = docker("port", name, "80/tcp").stdout.split()[0]
            ip = docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name).stdout.strip()
            rules = subprocess.run(["iptables", "-t", "nat", "-S", "DOCKER"],
                                   capture_output=True, text=True).stdout.splitlines()
            rule = [r for r in rules if f"{ip}:80" in r]
            proxy = subprocess.run(["pgrep", "-af", f"docker-proxy.*-container-ip {ip} "],
                                   capture_output=True, text=True).stdout.split()
        finally:
            docker("rm", "-f", name, check=False)
    print(f"$ docker port {name}\n  80/tcp -> {mapped}")
    print("$ iptables -t nat -S DOCKER   (its rule)")
    for r in rule:
        print("  " + r)
    print("docker-proxy:", " ".join(proxy[1:])[:100] if proxy else "(none)")
    print("\nedu's, for l08-web:")
    for line in seen["dnat"]:
        print("  " + line.split(" comment")[0])
    return {"mapped": mapped, "rule": rule, "proxy": bool(proxy)}


dockers = lesson.live("docker", docker_beside)

# %% [markdown]
# The same idea in two languages: Docker's `-d 127.0.0.1/32 ... --dport N -j DNAT
# --to-destination 172.17.0.2:80` is edu's `ip daddr 127.0.0.1 tcp dport N dnat to
# 10.x.y.z:80`. Where they differ: Docker writes iptables rules (which, on Debian 12, are
# themselves nftables rules in an `ip nat` table), edu writes nftables rules in its own `ip
# edu` table; and Docker's docker-proxy answers requests from the host itself, where edu
# uses a DNAT rule in its `output` chain plus `route_localnet` on the bridge.

# %% [markdown]
# ## Exercise
#
# Find the host's end of **l08-db**'s veth pair using only what the container says about its
# own `eth0` (its `iflink`) and what the host's `/sys/class/net/*/ifindex` files say. Put its
# name in `db_veth`. (This is how you find a Docker container's veth too.)

# %%
ex = exercise(
    "Read /sys/class/net/eth0/iflink inside l08-db (control.exec_run), then find the host "
    "interface whose /sys/class/net/NAME/ifindex is that number; put its name in db_veth.",
    solution='''
from pathlib import Path

from edu_runtime.life import control

peer = control.exec_run(DB, ["cat", "/sys/class/net/eth0/iflink"]).output.strip()
db_veth = [p.name for p in Path("/sys/class/net").iterdir()
           if (p / "ifindex").read_text().strip() == peer][0]
print(f"{DB}'s eth0 is cabled to the host's {db_veth} (ifindex {peer})")
''')
ex

# %% [markdown]
# ## 6. The same app as a compose file
#
# Two `run` commands with a dozen flags are easy to get wrong. A **compose file** writes them
# down once: `lessons/apps/wordpress/compose.yaml` has the two services, the database's
# environment, a **named volume** for its data, and `depends_on: condition:
# service_healthy`, so WordPress starts only once the database's healthcheck passes. One
# command makes the network, the volume and both containers, in that order:
#
#     edu compose -p l08-site up -d        # docker compose -p l08-site up -d
#     edu compose -p l08-site down         # containers and network go; the volume stays
#     edu compose -p l08-site down -v      # ... and the volume too
#
# (`-p l08-site` names the project; without it the directory's name, `wordpress`, would.)
# The cell first removes `l08-web` and `l08-db` (`edu rm -f`): the port is theirs. Then it
# brings the project up, installs the site and writes a post, takes it `down`, brings it
# `up` again and visits, then `down -v`, and `up` once more.

# %%
q_kept = predict("After `edu compose down` and a second `up` (new containers), GET / answers:",
                 ["302 to the installer: the containers are new, so is the site",
                  "200: the site is there, with its post",
                  "an error: the new database cannot read the old data"])
q_kept


# %%
COMPOSE_FILE = APPS / "wordpress" / "compose.yaml"
PROJECT = "l08-site"


def compose_site():
    import os

    from edu_runtime import compose, volumes
    from edu_runtime.life import control
    from edu_runtime.notebook import wordpress

    for name in (WEB, DB):  # docker rm -f l08-web l08-db: the port is theirs
        control.remove(name, force=True, volumes=True)  # -v: l08-db's anonymous volume
    project = compose.load([COMPOSE_FILE], project_name=PROJECT,
                           environ={**os.environ, "WP_PORT": str(PORT)})
    for svc in project.services:
        lesson.made(container=project.container_name(svc))
    for res in project.networks.values():
        lesson.made(network=res.name)
    for res in project.volumes.values():
        lesson.made(volume=res.name)
    print("compose.yaml, without its comments:")
    for line in COMPOSE_FILE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            print("  " + line.split("  #")[0].rstrip())

    def up(label):
        said = []
        start = time.monotonic()
        compose.up(project, say=said.append)
        print(f"\n$ edu compose -p {PROJECT} up -d   {label}")
        print("\n".join(" " + line for line in said if "Waiting" not in line))
        site = wordpress.Site(URL)

        def answering():
            try:
                return site.get("/")["status"] in (200, 302)
            except wordpress.WordPressError:
                return False
        wait_until("WordPress answering", answering, timeout=30)
        page = site.get("/")
        print(f"  GET / -> {page['status']} {page['location']}  "
              f"({time.monotonic() - start:.1f} s after up)")
        return site, page

    def down(volumes_too):
        said = []
        compose.down(project, volumes=volumes_too, say=said.append)
        print(f"\n$ edu compose -p {PROJECT} down{' -v' if volumes_too else ''}")
        print("\n".join(" " + line for line in said))
        kept = sorted(v["Name"] for v in volumes.ls() if v["Name"].startswith(PROJECT))
        print(f"  volumes left: {', '.join(kept) or 'none'}; containers left: "
              f"{len(compose.ps(project))}")
        return kept

    out = {}
    site, first = up("(the first time)")
    out["first"] = first["status"]
    site.install("A site kept in a volume", ADMIN["user"], ADMIN["password"], ADMIN["email"])
    site.login(ADMIN["user"], ADMIN["password"])
    made = site.post("Still here?", "Written before docker compose down.")
    print(f"  installed, and post {made['id']} written: 'Still here?'")
    rows = compose.ps(project)
    print(f"\n$ edu compose -p {PROJECT} ps")
    for row in rows:
        print(f"  {row['name']:<22}{row['service']:<11}{row['status']:<24}{row['ports']}")
    out["ps"] = [{k: row[k] for k in ("name", "service", "status")} for row in rows]
    out["after_down"] = down(False)
    site, again = up("(the volume is the one from before)")
    seen = site.read(made["id"])
    print(f"  GET /?p={made['id']} -> {seen['status']}: {seen['lines'][:1]}")
    out["again"] = again["status"]
    out["seen"] = seen["lines"][:2]
    out["after_down_v"] = down(True)
    _, fresh = up("(after down -v: a new, empty volume)")
    out["fresh"] = fresh["status"]
    down(True)
    return out


composed = lesson.live("compose", compose_site)

# %%
q_kept.check("200: the site is there, with its post" if composed["again"] == 200 else
             "302 to the installer: the containers are new, so is the site",
             why="down removed the containers and the network, but a named volume is not "
                 "part of any container: the new database container found the old data in "
                 "it (its entrypoint says so) and WordPress found its tables there. Only "
                 "down -v removes the volume; after it, the next up starts from nothing, "
                 "and GET / is the installer again.")

# %% [markdown]
# What each command keeps:
#
# | | containers | network `l08-site_default` | volume `l08-site_db-data` (the site) |
# |---|---|---|---|
# | `up -d` | made (db first, then wordpress once db is healthy) | made | made if missing |
# | `down` | removed | removed | **kept** |
# | `down -v` | removed | removed | removed |
#
# The same holds for Docker's `docker compose`. Its names are the same (`PROJECT-SERVICE-1`,
# `PROJECT_default`); the older `docker-compose` 1.29 writes `PROJECT_SERVICE_1`.

# %% [markdown]
# ## Checks

# %%
results = [
    check("the registry listed both images, and the pull had nothing to download",
          {n.split("/", 1)[1] for n in hubbed["found"]} >= {"library/wordpress",
                                                           "library/mariadb"}
          and set(hubbed["pull_status"]) <= {"Already exists"},
          hint="part 2: edu search, then edu pull"),
    check("the first visit was sent to the installer",
          installed["first"] == {"status": 302, "location": "/wp-admin/install.php"},
          hint="part 4: the first GET /"),
    check("the post was published and a visitor read it back",
          installed["post"]["status"] == "publish"
          and installed["seen"]["lines"][:1] == ["A real post"],
          hint="part 4: the last lines of its output"),
    check("every page answered in under 2 s",
          max(p["ms"] for p in installed["pages"]) < 2000,
          hint="part 4: the times on the right"),
    check("the veth's two ends name each other",
          seen["veth"]["iflink"] == seen["veth"]["eth0_ifindex"]
          and seen["veth"]["ifindex"] == seen["veth"]["eth0_iflink"],
          hint="part 5, step 2"),
    check("the conntrack entry shows the DNAT to port 80 and the gateway as the source",
          bool(seen["entry"]) and seen["entry"]["dnat"] and seen["entry"]["snat"]
          and seen["entry"]["reply"].startswith(f"{seen['ip']}:80 -> {seen['gateway']}:"),
          hint="part 5, step 5"),
    check("l08-web opened connections to its database only (nothing left the host)",
          bool(seen["opened"]) and all(to == f"tcp {seen['db_ip']}:3306"
                                       for to in seen["opened"]),
          hint="part 5, step 6"),
    check("down kept the volume (the site came back with its post); down -v removed it",
          composed["after_down"] == [f"{PROJECT}_db-data"] and composed["again"] == 200
          and composed["seen"][:1] == ["Still here?"] and composed["after_down_v"] == []
          and composed["fresh"] == 302,
          hint="part 6: the volumes left after each down"),
    check("exercise: db_veth is l08-db's veth, on the bridge",
          lambda: db_veth in seen["bridge_ports"] and db_veth != seen["veth"]["host"],
          hint="run the exercise: iflink inside l08-db, ifindex on the host"),
]
summary(results)

# %% [markdown]
# ## Reset
#
# Removes the containers, the network, the lesson's registry (and what was pushed to it) and
# the image tags the lesson made, and says what it removed. The build cache keeps the
# images' layers, so building them again takes a second.

# %%
lesson.reset()

# %% [markdown]
# Next: **[09 a Node.js app](09-node-app.ipynb)**: your own image with `edu build -t`, run on
# `-p 47561:8080`, and rebuilt from the cache after a code change.
