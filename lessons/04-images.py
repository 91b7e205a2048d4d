# ---
# jupyter:
#   edu:
#     parts:
#       digests:
#         needs:
#         - containers
#         what: a manifest, a config and a layer, as the registry serves them
#       docker:
#         needs:
#         - containers
#         - dockerd
#         what: docker pulls the same image from our registry, and whites out a file
#       overlay:
#         needs:
#         - containers
#         what: a container's overlay mount, a copy-up and a whiteout
#       pinning:
#         needs:
#         - containers
#         - root
#         what: a tag moved to another image; the digest still runs the old one
#       pull:
#         needs:
#         - containers
#         what: search, then pull on a machine that has never seen the images, then
#           images
#       registry:
#         needs:
#         - containers
#         what: a registry of our own, and two images pushed to it
#       signature:
#         needs:
#         - containers
#         what: labels, and an image signed and verified with skopeo and a GPG key
#       tamper:
#         needs:
#         - containers
#         what: a changed archive refused by load, a changed blob refused by pull
#       versions:
#         needs:
#         - containers
#         - root
#         what: one command in debian 11 and in debian 12
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
# # 04 Images: layers, digests, official images, versions
#
# *The primer's topic: images, official images and versions.* The primer says: "an image is a
# read-only template; you `docker search` it on Docker Hub, `docker pull` it, and `docker
# images` lists it; official images are the trusted ones; tags are versions." Here you take
# each of those words apart on your own machine, with a registry of your own (there is no
# Docker Hub here, and you would not be allowed to tamper with it anyway).
#
# **Learning goals.** After this lesson you can:
#
# 1. push an image to a registry, search it, pull it on a "new machine", and say which layers
#    the pull downloaded, and why;
# 2. compute a blob's sha256 yourself and match it to its manifest, and show that `load` and
#    `pull` refuse an image whose bytes were changed;
# 3. find a container's layers in its overlay mount, and show the *copy-up* of a changed file
#    and the *whiteout* of a deleted one, from the host;
# 4. say what "official" really promises (provenance), and sign and verify an image, then
#    watch a changed manifest fail the verification;
# 5. run the same command in two versions of one base, and pin a tag to a digest.
#
# Run each cell with **Shift-Enter**. The first one says which parts run live here.

# %%
from edu_runtime.notebook import Lesson, check, exercise, predict, summary

lesson = Lesson("04-images")
lesson.image("busybox")  # in the store, or built from Debian's packages once

# %% [markdown]
# ## 1. A registry of our own
#
# A **registry** is a web server that keeps images and hands them out over one HTTP API
# (the OCI distribution spec). Docker Hub is one. The open-source registry, *distribution*
# (the `registry:2` image), is another; Debian packages it as `docker-registry`. Docker's
# documentation starts it as a container (`docker run -d -p 5000:5000 registry:2`); this
# lesson starts it as a plain process, on a free port of **127.0.0.1**, so nothing outside
# this machine can reach it. The lesson's reset stops it and deletes what it stored.
#
# The first part starts it, builds the lesson's small app image (`FROM busybox`, plus two
# files, each its own layer), and pushes both images. Lesson 05 explains every line of a
# Dockerfile; here, only count the layers.

# %%
import contextlib
import io
import json
import re
import tempfile
import textwrap
from pathlib import Path

REGISTRY = "l04-registry"  # the registry's name, for the reset
APP = "l04-greeting:1"  # the lesson's app image
DOCKERFILE = """\
FROM busybox
LABEL org.opencontainers.image.title="greeting" \\
      org.opencontainers.image.source="lessons/04-images.py" \\
      org.opencontainers.image.authors="the course"
COPY motd /etc/motd
COPY greeting /srv/greeting
CMD ["cat", "/srv/greeting"]
"""
FILES = {"motd": "Welcome to lesson 04.\n", "greeting": "hello from layer 3\n"}


def our_registry():
    """The lesson's registry: started the first time (noted for the reset first), then the
    same one again."""
    from edu_runtime.images import local_registry

    lesson.made(registry=REGISTRY)
    return local_registry.start(REGISTRY)


def short(text):
    """Digests and ids cut to 12 digits, and temp dirs dropped, so a line fits the projector."""
    text = re.sub(r"\b([0-9a-f]{12})[0-9a-f]{52}\b", r"\1…", str(text))
    return re.sub(r"/tmp/[^/ ]+/", "", text)


def say(text, width=92):
    """A long sentence (a refusal, a verdict) wrapped for the projector."""
    print(textwrap.fill(short(text), width, subsequent_indent="    "))


def docker_lines(buffer):
    """What `docker pull` and `push` leave on screen: each layer's last status only."""
    skip = ("Preparing", "Pulling fs layer", "Verifying Checksum", "Download complete")
    return [short(line) for line in buffer.getvalue().splitlines() if not line.endswith(skip)]


# %%
def push_them():
    from edu_runtime.images import build, registry
    from edu_runtime.images.store import Store

    served = our_registry()
    print(f"registry: docker-registry, pid {served.pid}, listening on {served.address} only")
    store = Store()
    with tempfile.TemporaryDirectory() as context:
        (Path(context) / "Dockerfile").write_text(DOCKERFILE)
        for name, text in FILES.items():
            (Path(context) / name).write_text(text)
        lesson.made(image=APP)
        app = build.build(store, build.Options(context=Path(context), tags=[APP],
                                               network="none", quiet=True))
    print(f"built {APP}: {len(app.diff_ids)} layers, image ID {app.short_id}")
    pushed = {}
    for local, remote in (("busybox:latest", f"{served.address}/edu/busybox:latest"),
                          (APP, f"{served.address}/edu/greeting:1")):
        lesson.made(image=remote)
        store.tag(local, remote)  # docker tag
        out = io.StringIO()
        pushed[remote] = registry.push(store, remote, progress=registry.Progress(out)).digest
        print(f"$ edu push {remote}")
        print("\n".join(docker_lines(out)))
    return {"address": served.address, "port": served.port, "pushed": pushed,
            "app_id": app.id, "app_layers": len(app.diff_ids)}


pushed = lesson.live("registry", push_them)
REG = pushed["address"]  # 127.0.0.1:PORT: the registry part of every name below

# %% [markdown]
# The name says where an image lives: `127.0.0.1:PORT/edu/greeting:1` is *registry*
# `127.0.0.1:PORT`, *repository* `edu/greeting`, *tag* `1`. Docker's short names are the
# same thing with a default: `busybox` means `docker.io/library/busybox:latest`.
#
# `Mounted from edu/busybox`: greeting's bottom layer *is* busybox's layer (the same bytes,
# so the same digest), and the registry had it already, in another repository. edu asked it
# to link the blob instead of uploading it again. Each push ends with the **digest** of what
# was pushed: hold on to it.

# %% [markdown]
# ### The primer's Docker Hub steps, for real: `search`, `pull`, `images`
#
# To pull for real, we need a machine that has never seen these images. A second, empty
# image store stands in for it (a classmate's laptop). It pulls busybox first, then greeting.

# %%
q_layers = predict("The new machine pulled busybox first. Of greeting's 3 layers, how many "
                   "will its pull download?", ["0", "1", "2", "3"])
q_layers


# %%
def search_pull_images():
    from edu_runtime.images import registry
    from edu_runtime.images.store import Store

    reg = our_registry().address
    print(f"$ edu search {reg}/")
    found = registry.search_registry(reg, "")
    for f in found:
        print(f"  {f.name:<36} tags: {', '.join(f.tags)}")
    with tempfile.TemporaryDirectory() as laptop_dir:
        laptop = Store(Path(laptop_dir) / "store")
        status = {}
        for ref in (f"{reg}/edu/busybox:latest", f"{reg}/edu/greeting:1"):
            out = io.StringIO()
            pulled = registry.pull(laptop, ref, progress=registry.Progress(out))
            lines = docker_lines(out)
            status[ref] = [line.split(": ", 1)[1] for line in lines[1:]]
            print(f"$ edu pull {ref}")
            print("\n".join(lines + [f"Digest: {short(pulled.digest)}"]))
        print("$ edu images")
        print(f"  {'REPOSITORY':<32}{'TAG':<8}{'IMAGE ID':<14}SIZE")
        for image in laptop.images():
            for tag in image.familiar_tags():
                repo, _, version = tag.rpartition(":")
                print(f"  {repo:<32}{version:<8}{image.short_id:<14}{image.size / 1e6:.2f} MB")
    return {"found": [f.name for f in found], "status": status}


pulled = lesson.live("pull", search_pull_images)

# %%
greeting = pulled["status"][f"{REG}/edu/greeting:1"]
q_layers.check(str(greeting.count("Pull complete")),
               why=f"greeting's layers were: {', '.join(greeting)}. Its bottom layer *is* "
                   "busybox's, byte for byte, so it has the same digest, and a machine that "
                   "has the digest has the layer. A pull downloads only the layers it lacks; "
                   "that is why images share a common base.")

# %% [markdown]
# Where edu and Docker differ: `docker search` asks Docker Hub's own search service, which is
# not part of the registry API. edu's `search` reads a registry's catalog (`GET
# /v2/_catalog`), which registries like ours offer and Docker Hub does not. In a terminal:
# `edu search 127.0.0.1:PORT/gree`, then `edu pull ...` and `edu images`.

# %% [markdown]
# ## 2. Digests: names made of the content
#
# Every blob in a registry (a manifest, a config, a layer) is named by the **sha256** of its
# bytes. The manifest lists the config and the layers by digest; the tag points at the
# manifest's digest. This part fetches greeting's manifest, config and top layer exactly as
# the registry serves them, and the cells after it hash them *here*, with `hashlib`.

# %%
def fetch_greeting():
    import base64
    import urllib.request

    reg = our_registry().address

    def get(path, accept="application/vnd.oci.image.manifest.v1+json"):
        request = urllib.request.Request(f"http://{reg}/v2/edu/greeting/{path}",
                                         headers={"Accept": accept})
        with urllib.request.urlopen(request) as answer:
            return answer.read(), answer.headers.get("Docker-Content-Digest", "")

    manifest, said = get("manifests/1")
    doc = json.loads(manifest)
    config, _ = get(f"blobs/{doc['config']['digest']}")
    top, _ = get(f"blobs/{doc['layers'][-1]['digest']}")
    print(f"GET /v2/edu/greeting/manifests/1: {len(manifest)} bytes; the registry names it "
          f"{short(said)}")
    print(f"GET the config blob: {len(config)} bytes; the top layer blob: {len(top)} bytes")
    return {"manifest": manifest.decode(), "registry_digest": said,
            "config": config.decode(), "top_layer": base64.b64encode(top).decode()}


fetched = lesson.live("digests", fetch_greeting)

# %%
import base64
import gzip
import hashlib


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


manifest = json.loads(fetched["manifest"])
print("the manifest lists:")
print(f"  config  {short(manifest['config']['digest'])}  {manifest['config']['size']:>8} bytes")
for n, layer in enumerate(manifest["layers"], 1):
    print(f"  layer {n} {short(layer['digest'])}  {layer['size']:>8} bytes")
print()
top = base64.b64decode(fetched["top_layer"])
ours = {"manifest": sha256(fetched["manifest"].encode()),
        "config": sha256(fetched["config"].encode()), "top layer": sha256(top)}
named = {"manifest": fetched["registry_digest"], "config": manifest["config"]["digest"],
         "top layer": manifest["layers"][-1]["digest"]}
for what in ours:
    print(f"sha256 of the {what:<9} {short(ours[what])}  named {short(named[what])}  "
          f"{'same' if ours[what] == named[what] else 'DIFFERENT'}")
digests_match = ours == named

# %% [markdown]
# Each name is the hash of the bytes, so nobody can change the bytes and keep the name. And
# the chain holds: the tag names the manifest, the manifest names the config and the layers.
# Trust the manifest's digest, and you can check everything below it.
#
# A layer has a second digest. The blob is gzip-compressed, and the config's `diff_ids` name
# the *unpacked* tar, which is what the store unpacks and checks:

# %%
config = json.loads(fetched["config"])
unpacked = gzip.decompress(top)
print(f"the top layer: {len(top)} bytes gzipped, {len(unpacked)} bytes as a tar")
print(f"sha256 of the tar    {short(sha256(unpacked))}")
print(f"config's diff_ids[-1] {short(config['rootfs']['diff_ids'][-1])}")
diff_id_matches = sha256(unpacked) == config["rootfs"]["diff_ids"][-1]

# %% [markdown]
# ### A tampered copy
#
# Now someone changes one letter of `/srv/greeting` ("hello" becomes "jello") in an archive of
# the image (`docker save` writes one), and one byte of the registry's own copy of a layer.
# Both go to a machine that has never seen greeting.

# %%
q_tamper = predict("One letter of a 10 KB layer was changed. What will `load` do with the "
                   "archive?", ["load it: one letter is nothing", "load it, with a warning",
                                "refuse the whole image"])
q_tamper


# %%
def flip_letter(archive_path, member="srv/greeting", old=b"h", new=b"j"):
    """Change the first letter of `member` inside a layer of a docker-archive, in place."""
    import tarfile

    with tarfile.open(archive_path) as outer:
        for layer in outer.getmembers():
            if not layer.name.endswith("layer.tar"):
                continue
            with tarfile.open(fileobj=outer.extractfile(layer)) as inner:
                names = {m.name.lstrip("./"): m for m in inner.getmembers()}
                if member in names:
                    at = layer.offset_data + names[member].offset_data
                    break
    with open(archive_path, "r+b") as f:
        f.seek(at)
        assert f.read(1) == old
        f.seek(at)
        f.write(new)
    return layer.name


def tamper():
    from edu_runtime.images import archive, registry
    from edu_runtime.images.store import Store

    served = our_registry()
    said = {}
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Store(Path(tmp) / "store")  # a machine that has never seen greeting
        saved = archive.save(Store(), [APP], Path(tmp) / "greeting.tar")  # docker save
        print(f"$ edu save -o greeting.tar {APP}; one letter changed in "
              f"{short(flip_letter(saved))}")
        try:
            archive.load(fresh, saved)  # docker load
        except archive.ArchiveError as exc:
            said["load"] = str(exc)
            print("$ edu load -i greeting.tar")
            say(exc)
        image = Store().get(APP)
        blob = served.blob_path(image.manifest["layers"][-1]["digest"])
        original = blob.read_bytes()
        changed = bytearray(original)
        changed[len(changed) // 2] ^= 0x01
        blob.write_bytes(bytes(changed))  # the registry's copy, on its disk
        try:
            registry.pull(fresh, f"{served.address}/edu/greeting:1")
        except registry.RegistryError as exc:
            said["pull"] = str(exc)
            print(f"$ edu pull {served.address}/edu/greeting:1")
            say(exc)
        finally:
            blob.write_bytes(original)  # as it was, for the parts after this one
        said["stored"] = len(fresh.images())
        print(f"images the new machine has now: {said['stored']}")
    return said


refused = lesson.live("tamper", tamper)

# %%
q_tamper.check("refuse the whole image" if "load" in refused else "load it: one letter is "
               "nothing",
               why="the changed tar no longer hashes to the diff_id its config promises, and "
                   "a digest cannot be a little wrong: any change gives a different hash. "
                   "edu (like Docker) refuses the whole image and stores nothing. The pull "
                   "is refused the same way, while the layer streams in, before anything "
                   "reaches the store.")

# %% [markdown]
# ## 3. Layers are overlay lowerdirs
#
# The store unpacks each layer once, into a directory of its own. A container does not copy
# them: the kernel's **overlayfs** stacks the directories, read-only (*lowerdirs*), under one
# writable directory of the container's own (*upperdir*), and shows the stack as one tree.
# This part starts a greeting container, then, inside it:
#
# - appends a line to `/srv/greeting`, a file of layer 3;
# - deletes `/etc/motd`, a file of layer 2.
#
# and looks at the layers and the upper dir from the host.

# %%
q_delete = predict("The container deletes /etc/motd, which layer 2 holds. What happens on the "
                   "host?", ["the file is deleted from layer 2",
                             "layer 2 keeps it; the upper dir gets a marker that hides it",
                             "the file moves to the upper dir"])
q_delete


# %%
def overlay_of(pid):
    """The overlay mounted at / in a process's mount namespace: its raw mountinfo line, and
    its lowerdirs (top first) and upperdir."""
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields, _, fs = line.partition(" - ")
        if fields.split()[4] == "/" and fs.startswith("overlay"):
            options = dict(o.split("=", 1) for o in fs.split()[2].split(",") if "=" in o)
            return {"line": line, "lower": options["lowerdir"].split(":"),
                    "upper": options["upperdir"]}
    raise RuntimeError(f"no overlay at / for pid {pid}")


def entry(path):
    """One line of `ls -l` for a file: its kind, and its size or device numbers."""
    import os
    import stat

    st = os.lstat(path)
    if stat.S_ISCHR(st.st_mode):
        return f"character device {os.major(st.st_rdev)}, {os.minor(st.st_rdev)}"
    return f"file, {st.st_size} bytes: {Path(path).read_text()!r}"


def layers_at_work():
    from edu_runtime import Container
    from edu_runtime.images.store import Store

    store = Store()
    image = store.get(APP)
    c = Container(APP, ["sleep", "3600"], name="l04-layers", network="none")
    lesson.made(container=c.id)
    c.start()  # docker run -d --name l04-layers l04-greeting:1 sleep 3600
    try:
        mount = overlay_of(c.pid)
        layer_dirs = {str(store.layer_dir(d)): n for n, d in enumerate(image.diff_ids, 1)}
        upper = Path(mount["upper"])
        lower = {"/srv/greeting": store.layer_dir(image.diff_ids[2]) / "srv/greeting",
                 "/etc/motd": store.layer_dir(image.diff_ids[1]) / "etc/motd"}
        c.exec(["sh", "-c", "echo 'changed in the container' >> /srv/greeting"])
        c.exec(["rm", "/etc/motd"])
        seen = {path: {"inside": c.exec(["cat", path]).output.strip(),
                       "layer": entry(lower[path]),
                       "upper": entry(upper / path.lstrip("/"))} for path in lower}
        print(f"container l04-layers (pid {c.pid}): changed /srv/greeting, deleted /etc/motd")
    finally:
        c.remove(force=True)  # docker rm -f
    print("removed container l04-layers, and its upper dir with it")
    return {"line": mount["line"], "upper": mount["upper"],
            "lower": [layer_dirs.get(d, d) for d in mount["lower"]],
            "created_by": [h.get("created_by", "") for h in image.config["history"]
                           if not h.get("empty_layer")],
            "seen": seen}


overlay = lesson.live("overlay", layers_at_work)

# %% [markdown]
# The kernel's evidence first: the container's line of `/proc/PID/mountinfo` for its `/`.

# %%
head, _, fs = overlay["line"].partition(" - ")
kind, source, options = fs.split()
print(f"{head} - {kind} {source}")
for option in options.split(","):
    key, _, value = option.partition("=")
    if key == "lowerdir":
        value = ("\n" + " " * 13 + ":").join(value.split(":"))
    print(f"    {key}{'=' if value else ''}{short(value)}")

# %% [markdown]
# `overlay` at `/`, with `lowerdir=` a list of directories, top first, an `upperdir=` and a
# `workdir=` (overlay's scratch space). What each lowerdir is:

# %%
for n, lower in enumerate(overlay["lower"], 1):
    if isinstance(lower, int):
        made = overlay["created_by"][lower - 1]
        print(f"lowerdir {n}: the image's layer {lower}  ({short(made).strip()[:60]})")
    else:
        print(f"lowerdir {n}: {lower.rsplit('/', 1)[-1]}  (the runtime's mount points, as "
              "Docker's -init layer)")
print(f"upperdir:   {short(overlay['upper'])}  (the container's own: empty at its start)")

# %% [markdown]
# The image's 3 layers, top first, under the runtime's *init layer*. Every greeting container
# stacks the very same directories: that is why a thousand containers of one image take the
# image's space once. Now the two changes, seen from the host:

# %%
for path, seen in overlay["seen"].items():
    print(f"{path}")
    print(f"  inside the container:  {seen['inside'][:60]!r}")
    print(f"  in its layer:          {seen['layer']}")
    print(f"  in the upper dir:      {seen['upper']}")

# %% [markdown]
# - **Copy-up.** To change `/srv/greeting`, overlayfs first copied the whole file from layer
#   3 into the upper dir, then changed the copy. The layer's file is as it was, so every other
#   container still sees "hello from layer 3".
# - **Whiteout.** To delete `/etc/motd`, overlayfs could not touch layer 2. It put a
#   *whiteout* in the upper dir: a character device with device numbers 0, 0. A lookup that
#   meets one answers "no such file".
#
# `docker commit` and `edu commit` turn exactly this upper dir into a new layer. The
# whiteout becomes an entry named `.wh.motd` in the layer's tar: that is how a layer says
# "deleted" (lesson 05's `RUN rm` makes one too).

# %%
whiteout = overlay["seen"]["/etc/motd"]["upper"] == "character device 0, 0"
q_delete.check("layer 2 keeps it; the upper dir gets a marker that hides it" if whiteout else
               "the file is deleted from layer 2",
               why="layers are shared and read-only: a container can only write to its own "
                   "upper dir. A deletion is a whiteout there (a 0, 0 character device), and "
                   "the layer's file stays, as the 'in its layer' line shows.")

# %% [markdown]
# ## 4. "Official" means provenance
#
# On Docker Hub, an *official image* (`docker.io/library/NAME`) is not official because of its
# name: it is official because of where it comes from. Each tag is listed in a public git
# repository (docker-library/official-images), with the git commit of the Dockerfile it is
# built from; Docker builds it, from that commit, and rebuilds it when its base changes. The
# promise is *provenance*: who built it, from what.
#
# An image carries some of that in its config: labels and history, which the next part reads
# too.
#
# A label is only a claim, though: anyone can write `LABEL org.opencontainers.image.authors=
# "Debian"`. What makes a claim hold is a **signature**: the builder signs "the image called
# NAME is the manifest with digest D" with a private key, and you check it with the public
# key. Docker Content Trust (Notary), cosign (Sigstore) and skopeo's "simple signing" are three
# formats of that idea. Here, skopeo signs our busybox with a throwaway GPG key, made in a
# temporary GnuPG home and deleted right after.

# %%
def provenance():
    from edu_runtime.images.store import Store

    store = Store()
    out = {}
    for name in ("busybox:latest", APP):
        image = store.get(name)
        out[name] = {"labels": image.config.get("config", {}).get("Labels") or {},
                     "history": [h.get("created_by", "") for h in image.config["history"]]}
    return out


q_sign = predict("We sign busybox's manifest, then change one layer digest in it. "
                 "`skopeo standalone-verify` will:",
                 ["still verify it: the signature is on the name", "refuse it"])
q_sign


# %%
def sign_and_verify():
    from edu_runtime.images import registry, signing

    reg = our_registry().address
    name = f"{reg}/edu/busybox:latest"
    with registry.Client(reg) as client:
        manifest, _, digest = client.manifest("edu/busybox", "latest")
        other, _, _ = client.manifest("edu/greeting", "1")
    theirs = json.loads(other)["layers"][-1]["digest"]
    mine = json.loads(manifest)["layers"][0]["digest"]
    tampered = manifest.replace(mine.encode(), theirs.encode())  # another layer, same name
    with signing.throwaway_key() as key:
        print(f"a throwaway key: {key.uid}, fingerprint …{key.fingerprint[-16:]}")
        signature = signing.sign(manifest, name, key)
        print(f"$ skopeo standalone-sign manifest.json {name} …{key.fingerprint[-16:]} "
              f"--output signature    ({len(signature)} bytes)")
        signed = signing.payload(signature, key)["critical"]
        verdicts = {"the manifest": signing.verify(manifest, name, key, signature),
                    "one layer digest changed": signing.verify(tampered, name, key, signature),
                    "another name": signing.verify(manifest, f"{reg}/edu/greeting:1", key,
                                                   signature)}
    for what, verdict in verdicts.items():
        print(f"$ skopeo standalone-verify ...   ({what})")
        say(("OK  " if verdict.ok else "NO  ") + verdict.said)
    return {"digest": digest, "signed": signed, "origins": provenance(),
            "verdicts": {what: {"ok": v.ok, "said": v.said} for what, v in verdicts.items()}}


signed = lesson.live("signature", sign_and_verify)

# %% [markdown]
# What exactly was signed: a small JSON document, the name and the manifest's digest.

# %%
print(json.dumps(signed["signed"], indent=1).replace(signed["digest"], short(signed["digest"])))
for name, origin in signed["origins"].items():
    print(f"\n{name}:")
    for key, value in sorted(origin["labels"].items()):
        print(f"  label   {key} = {short(value)[:50]}")
    for made in origin["history"]:
        print(f"  history {short(made).strip()[:78]}")

# %% [markdown]
# The signature covers the digest, and the digest covers every byte below it. Change a layer
# and the manifest's digest changes; sign one name and the signature does not vouch for
# another.
#
# Read the labels again: busybox's say who built it (`edu bootstrap`) and from which Debian
# package, at which version. greeting *inherited* them from its base: its `version` and
# `packages` labels are busybox's, and only `title`, `source` and `authors` were set by its
# own Dockerfile. A label nobody sets again is a claim about the base, not about the image
# you run. The history is the better record of what was done, and only a signature says that
# someone (this key's owner) stands by the result.

# %%
q_sign.check("refuse it" if not signed["verdicts"]["one layer digest changed"]["ok"] else
             "still verify it: the signature is on the name",
             why="the signature is on the pair (name, manifest digest). One changed layer "
                 "digest makes a different manifest, with a different digest, so the "
                 "signature no longer fits; and a signature for busybox says nothing about "
                 "greeting.")

# %% [markdown]
# ## 5. An image is an environment; tags are versions, and they move
#
# An image carries a whole user space: libraries, a shell, tools, all at fixed versions. The
# kernel is the host's. So the same command can give two answers in two versions of one
# base. Docker Hub keeps `debian:11` (bullseye) beside `debian:12` (bookworm); so does this
# course, built here with debootstrap from Debian's mirror (`edu bootstrap debian:11`).
#
# This part pushes both to our registry, plus a tag `stable`, which first points at Debian 11
# (as `debian:stable` did until June 2023), and runs one command in each.
#
# As `docker run` pulls an image it lacks, the next cell makes the two Debian images if this
# machine has not got them yet: debootstrap, as root, about 30 s each, once.

# %%
if not lesson.replaying("versions"):
    lesson.image("debian:12")
    lesson.image("debian:11")

# %%
q_versions = predict("`ldd --version` (glibc) and `uname -r` (the kernel), in a debian:11 and a "
                     "debian:12 container on this machine:",
                     ["both the same in both", "glibc differs, the kernel is the same",
                      "both differ"])
q_versions

# %%
COMMAND = ("cat /etc/debian_version; ldd --version | head -1 | awk '{print $NF}'; "
           "bash --version | head -1 | awk '{print $4}'; uname -r")
ROWS = ("Debian", "glibc", "bash", "kernel")


def run_in(image, command):
    """docker run --rm --network none IMAGE sh -c COMMAND: what it printed, as lines."""
    from edu_runtime import Container

    c = Container(image, ["sh", "-c", command], network="none", remove=True)
    lesson.made(container=c.id)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        c.run()
    return [line.strip() for line in out.getvalue().splitlines()]


def two_versions():
    from edu_runtime.images import registry
    from edu_runtime.images.store import Store

    store = Store()
    reg = our_registry().address
    digests = {}
    for local, remote in (("debian:11", f"{reg}/edu/debian:11"),
                          ("debian:12", f"{reg}/edu/debian:12"),
                          ("debian:11", f"{reg}/edu/debian:stable")):
        lesson.made(image=remote)
        store.tag(local, remote)
        digests[remote] = registry.push(store, remote).digest
        print(f"$ edu push {remote:<36} digest {short(digests[remote])}")
    answers = {tag: run_in(f"{reg}/edu/debian:{tag}", COMMAND) for tag in ("11", "12")}
    print(f"\n{'':8}{'debian:11':<20}debian:12")
    for n, row in enumerate(ROWS):
        print(f"{row:<8}{answers['11'][n]:<20}{answers['12'][n]}")
    return {"digests": digests, "answers": answers}


versions = lesson.live("versions", two_versions)

# %%
answers = versions["answers"]
glibc_differs = answers["11"][1] != answers["12"][1]
same_kernel = answers["11"][3] == answers["12"][3]
q_versions.check({(False, True): "both the same in both", (True, True):
                  "glibc differs, the kernel is the same"}.get((glibc_differs, same_kernel),
                                                               "both differ"),
                 why="glibc and bash are files of the image, so each version brings its own; "
                     "the kernel is not in any image: both containers ask the host's. A "
                     "program built for one glibc may not run on another, which is why "
                     "you pick, and pin, the version of a base.")

# %% [markdown]
# ### The tag moves; the digest does not
#
# Now Debian 12 becomes `stable`: the tag is pushed again, onto another image. Everyone
# whose Dockerfile says `FROM debian:stable` gets Debian 12 at their next pull, whether they
# were ready or not. A reference with a **digest**, `NAME@sha256:...`, names content, so it
# cannot move. Docker accepts both at once (`debian:stable@sha256:...`), and then the digest
# wins.

# %%
q_pin = predict("After `stable` moves to Debian 12, what does "
                "`127.0.0.1:PORT/edu/debian@sha256:<stable's old digest>` run?",
                ["Debian 11", "Debian 12", "nothing: the old digest is gone"])
q_pin


# %%
def move_the_tag():
    from edu_runtime.images import registry
    from edu_runtime.images.store import Store

    store = Store()
    reg = our_registry().address
    stable = f"{reg}/edu/debian:stable"
    lesson.made(image=stable)
    before = registry.pull(store, stable).digest  # what `stable` is now
    store.tag("debian:12", stable)
    after = registry.push(store, stable).digest  # Debian 12 becomes stable
    print(f"{stable}: was {short(before)}, now {short(after)}")
    pinned = f"{reg}/edu/debian@{before}"
    registry.pull(store, pinned)  # docker pull NAME@DIGEST: checked against the digest
    ran = {ref: run_in(ref, "cat /etc/debian_version")[0] for ref in (stable, pinned)}
    for ref, version in ran.items():
        print(f"$ edu run --rm {short(ref):<44} cat /etc/debian_version  -> {version}")
    return {"before": before, "after": after, "pinned": pinned, "ran": ran}


moved = lesson.live("pinning", move_the_tag)

# %%
pinned_version = moved["ran"][moved["pinned"]]
q_pin.check("Debian 11" if pinned_version.startswith("11.") else "Debian 12",
            why="a digest is the hash of one manifest: the registry still has that manifest, "
                "and no push can give the name another content. Pin a digest in a "
                "Dockerfile (FROM debian:12@sha256:...) or a compose file, and a rebuild "
                "next year starts from the same bytes; update it on purpose, after testing.")

# %% [markdown]
# ## Docker beside us (extra details)
#
# Docker speaks the same protocol and the same formats. It pulls greeting from our registry
# (a loopback registry needs no TLS, for Docker as for edu), and we compare what it says with
# what edu said; then a Docker container deletes `/etc/motd`, and we look for the whiteout in
# Docker's own upper dir (`docker inspect`'s `GraphDriver`). Docker is left as it was.

# %%
def docker_too():
    import subprocess

    from edu_runtime.images.store import Store

    def docker(*args):
        return subprocess.run(["docker", *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    reg = our_registry().address
    ref = f"{reg}/edu/greeting:1"
    had_it = subprocess.run(["docker", "image", "inspect", ref],
                            capture_output=True).returncode == 0
    subprocess.run(["docker", "rm", "-f", "l04-docker"], capture_output=True)  # a rerun
    try:
        pulled = docker("pull", ref)
        digest = next(line.split()[-1] for line in pulled.splitlines()
                      if line.startswith("Digest:"))
        image_id = docker("image", "inspect", "--format", "{{.Id}}", ref)
        docker("run", "-d", "--name", "l04-docker", ref, "sleep", "3600")
        driver = json.loads(docker("inspect", "--format", "{{json .GraphDriver.Data}}",
                                   "l04-docker"))
        docker("exec", "l04-docker", "rm", "/etc/motd")
        marker = entry(Path(driver["UpperDir"]) / "etc/motd")
        lowers = len(driver["LowerDir"].split(":"))
    finally:
        subprocess.run(["docker", "rm", "-f", "l04-docker"], capture_output=True)
        if not had_it:
            subprocess.run(["docker", "rmi", ref], capture_output=True)
    app = Store().get(APP)
    rows = [("manifest digest", digest, pushed["pushed"][ref]),
            ("image ID", image_id, app.id)]
    print(f"{'':18}{'docker says':<24}{'edu said':<24}")
    for what, theirs, edu_said in rows:
        print(f"{what:<18}{short(theirs):<24}{short(edu_said):<24}"
              f"{'same' if theirs == edu_said else 'different'}")
    print(f"Docker's overlay: {lowers} lowerdirs (its -init layer and the 3 layers)")
    print(f"after `docker exec l04-docker rm /etc/motd`, UpperDir/etc/motd is a {marker}")
    return {"same": digest == pushed["pushed"][ref] and image_id == app.id,
            "marker": marker}


docker_side = lesson.live("docker", docker_too)

# %% [markdown]
# The same digest and the same image ID (Docker's image ID is the config's digest): one
# format, two engines. Docker's layers are called `overlay2/<id>/diff` instead of
# `layers/sha256/<diff_id>`, and its mount uses short links (`overlay2/l/ABC...`) so the
# mount options fit in a page, but the lowerdirs, the upper dir and the whiteout are the
# kernel's, the same for both.

# %% [markdown]
# ## Exercise
#
# Which changes copy a file up? Reading it, changing its time, changing its mode? And is a
# new file a copy-up? Find out from the host.

# %%
ex = exercise(
    "Start a container `l04-ex` of l04-greeting:1 (sleep 600, no network) and run in it: "
    "`cat /etc/motd; touch /srv/greeting; chmod 600 /etc/passwd; echo new > /srv/note`. "
    "Then, from the host, list the *files* its upper dir holds that a lower layer also has "
    "(the copied-up ones), as paths inside the container, sorted: put them in `copied_up`.",
    solution='''
from edu_runtime import Container

box = Container(APP, ["sleep", "600"], name="l04-ex", network="none")
lesson.made(container=box.id)
box.start()
box.exec(["sh", "-c", "cat /etc/motd; touch /srv/greeting; chmod 600 /etc/passwd; "
                      "echo new > /srv/note"])
mount = overlay_of(box.pid)
upper = Path(mount["upper"])
changed = ["/" + str(p.relative_to(upper)) for p in upper.rglob("*") if p.is_file()]
copied_up = sorted(p for p in changed
                   if any(Path(d, p.lstrip("/")).exists() for d in mount["lower"]))
print("in the upper dir:", sorted("/" + str(p.relative_to(upper)) for p in upper.rglob("*")))
print("copied up:", copied_up)
box.remove(force=True)
''')
ex

# %% [markdown]
# ## Checks

# %%
results = [
    check("our registry listened on 127.0.0.1, not on the test suite's port 5000",
          REG.startswith("127.0.0.1:") and not REG.endswith(":5000"),
          hint="run part 1 from the top"),
    check("the new machine downloaded only the layers it lacked",
          greeting.count("Already exists") == 1 and greeting.count("Pull complete") == 2,
          hint="pull busybox before greeting, into the same empty store"),
    check("the manifest, the config and the layer hash to their names; the tar to its diff_id",
          digests_match and diff_id_matches, hint="run the hashing cells of part 2"),
    check("load and pull refused the changed copies, and stored nothing",
          "load" in refused and "pull" in refused and refused["stored"] == 0,
          hint="run the tamper part again"),
    check("the container's deletion is a 0, 0 whiteout; its layer kept the file",
          whiteout and overlay["seen"]["/etc/motd"]["layer"].startswith("file"),
          hint="part 3 reads the upper dir before the container is removed"),
    check("the signature verified the manifest, and neither a changed one nor another name",
          {what: v["ok"] for what, v in signed["verdicts"].items()} == {
              "the manifest": True, "one layer digest changed": False, "another name": False},
          hint="part 4 signs and verifies with one throwaway key"),
    check("debian 11 and 12 gave two glibc versions on one kernel; the digest pinned Debian 11",
          glibc_differs and same_kernel and pinned_version.startswith("11."),
          hint="part 5 pushes both versions, then moves the tag"),
    check("exercise: copied_up lists what a touch and a chmod copied up, and nothing else",
          lambda: copied_up == ["/etc/passwd", "/srv/greeting"],
          hint="a read (cat) copies nothing up, and a new file is not a copy-up: keep the "
               "upper dir's files that some lowerdir also has"),
]
summary(results)

# %% [markdown]
# ## Reset
#
# Stop the registry (its storage goes with it), and remove the containers and tags this
# lesson made. The base images (busybox, debian 11 and 12) stay, as `docker pull`ed images
# stay.

# %%
lesson.reset()

# %% [markdown]
# Next: **[05 the Dockerfile](05-dockerfile.ipynb)**: `FROM`, `COPY`, `RUN` and `CMD`, each a
# layer or a change to the config, and the build cache that reuses them.
