"""Signing an image: who vouches for these exact bytes, under this name.

A digest proves that bytes are the ones a manifest names; it cannot say *who* made the
manifest. A signature can: someone with a private key signs a small statement, "the image
called NAME is the manifest with digest D", and anyone with the public key can check it.
If one byte of the manifest changes, its digest changes, and the statement no longer fits.

This uses real tools, run in the open: GnuPG for the key and ``skopeo standalone-sign`` /
``standalone-verify`` for the signature (containers/image's "simple signing", what
``podman image sign`` and Red Hat's registries use; cosign and Notary are other formats of
the same idea). The key is a throwaway: made in a temporary ``GNUPGHOME``, never in yours,
and deleted with its gpg-agent when the block ends::

    with signing.throwaway_key() as key:
        signature = signing.sign(manifest, "127.0.0.1:40000/edu/busybox:latest", key)
        signing.verify(manifest, "127.0.0.1:40000/edu/busybox:latest", key, signature).ok

Introduced in notebooks/04-images.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .store import StoreError

DEFAULT_UID = "edu course, throwaway key <course@edu.invalid>"


class SigningError(StoreError):
    """A key could not be made or a signature written; the message says why and the fix."""


@dataclass
class Key:
    """A GPG signing key in a home of its own."""

    home: Path
    fingerprint: str
    uid: str

    def env(self) -> dict[str, str]:
        """The environment that makes gpg and skopeo use this key's home only."""
        return {**os.environ, "GNUPGHOME": str(self.home)}


@dataclass
class Verdict:
    """What ``skopeo standalone-verify`` said: ``ok``, and its sentence."""

    ok: bool
    said: str  # "Signature verified, digest sha256:..." or skopeo's error, without its log prefix
    command: list[str]


def tools() -> dict[str, str]:
    """The paths of gpg, gpgconf and skopeo; a sentence saying how to install a missing one."""
    found = {name: shutil.which(name) for name in ("gpg", "gpgconf", "skopeo")}
    missing = [name for name, path in found.items() if not path]
    if missing:
        packages = " ".join(sorted({"skopeo" if m == "skopeo" else "gnupg" for m in missing}))
        raise SigningError(f"{', '.join(missing)} not found: signing needs GnuPG and skopeo. "
                           f"Run 'apt-get install {packages}' (scripts/setup.sh does).")
    return found  # type: ignore[return-value]


def _run(argv: list[str], key_env: dict[str, str], what: str,
         data: bytes | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, env=key_env, input=data, capture_output=True, timeout=60)
    if done.returncode != 0:
        raise SigningError(f"{what} failed ({' '.join(argv[:2])} exit {done.returncode}): "
                           f"{_said(done.stderr)}")
    return done


def _said(stderr: bytes) -> str:
    """The sentence in a tool's error output (skopeo's ``msg="..."`` or gpg's last line)."""
    text = stderr.decode(errors="replace").strip()
    if 'msg="' in text:
        text = text.rsplit('msg="', 1)[1].rsplit('"', 1)[0].replace('\\"', '"')
    return text.splitlines()[-1] if text else "(no message)"


@contextlib.contextmanager
def throwaway_key(uid: str = DEFAULT_UID) -> Iterator[Key]:
    """A new ed25519 signing key with no passphrase, in a temporary GNUPGHOME; its
    gpg-agent is stopped and the directory deleted when the block ends."""
    found = tools()
    home = Path(tempfile.mkdtemp(prefix="edu-gpg-"))
    home.chmod(0o700)
    key = Key(home, "", uid)
    try:
        _run([found["gpg"], "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
              "--quick-gen-key", uid, "ed25519", "sign", "never"], key.env(), "making a key")
        listing = _run([found["gpg"], "--batch", "--with-colons", "--list-secret-keys"],
                       key.env(), "reading the key").stdout.decode()
        key.fingerprint = next(line.split(":")[9] for line in listing.splitlines()
                               if line.startswith("fpr:"))
        yield key
    finally:
        # The agent gpg started for this home, and its sockets (under /run/user when that
        # exists), go with it: nothing of the key outlives the block.
        for what in ("--kill", "--remove-socketdir"):
            args = [found["gpgconf"], "--homedir", str(home), what]
            subprocess.run(args + (["all"] if what == "--kill" else []), env=key.env(),
                           capture_output=True, timeout=30)
        shutil.rmtree(home, ignore_errors=True)


def sign(manifest: bytes, reference: str, key: Key) -> bytes:
    """``skopeo standalone-sign``: a signature saying ``reference`` is this manifest."""
    skopeo = tools()["skopeo"]
    with tempfile.TemporaryDirectory(dir=key.home) as tmp:
        (Path(tmp) / "manifest.json").write_bytes(manifest)
        _run([skopeo, "standalone-sign", str(Path(tmp) / "manifest.json"), reference,
              key.fingerprint, "--output", str(Path(tmp) / "signature")], key.env(),
             f"signing {reference}")
        return (Path(tmp) / "signature").read_bytes()


def verify(manifest: bytes, reference: str, key: Key, signature: bytes) -> Verdict:
    """``skopeo standalone-verify``: whether ``signature`` by ``key`` says that
    ``reference`` is this manifest; and skopeo's own sentence either way."""
    skopeo = tools()["skopeo"]
    with tempfile.TemporaryDirectory(dir=key.home) as tmp:
        (Path(tmp) / "manifest.json").write_bytes(manifest)
        (Path(tmp) / "signature").write_bytes(signature)
        argv = [skopeo, "standalone-verify", str(Path(tmp) / "manifest.json"), reference,
                key.fingerprint, str(Path(tmp) / "signature")]
        done = subprocess.run(argv, env=key.env(), capture_output=True, timeout=60)
    said = done.stdout.decode().strip() if done.returncode == 0 else _said(done.stderr)
    shown = ["skopeo", "standalone-verify", "manifest.json", reference, key.fingerprint[-16:],
             "signature"]
    return Verdict(done.returncode == 0, said, shown)


def payload(signature: bytes, key: Key) -> dict:
    """What a signature signs, as JSON: ``critical.identity.docker-reference`` and
    ``critical.image.docker-manifest-digest`` (``gpg --decrypt`` checks it on the way)."""
    done = _run([tools()["gpg"], "--batch", "--decrypt"], key.env(), "reading a signature",
                data=signature)
    return json.loads(done.stdout)
