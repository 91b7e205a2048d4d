"""Boot a guest with raw QEMU and *libvirt's own command line*: what libvirt itself costs.

Comparing "libvirt" with "a QEMU command line I wrote by hand" would measure two different
machines: libvirt picks the machine type, CPU model, devices and options. So we ask libvirt
for the command line it would run for our domain XML (``virConnectDomainXMLToNative`` with
"qemu-argv", what ``virsh domxml-to-native`` prints) and change only what cannot work
without libvirt, each change listed with its reason in ``Boot.changes``:

- ``-S`` goes: libvirt starts QEMU paused and resumes it over QMP once it has set it up;
- the QMP monitor (``-chardev socket,id=charmonitor`` and ``-mon``) goes: it is libvirt's
  control socket, in a directory libvirt makes for the running domain;
- ``-object secret`` goes: libvirt's master key file exists only while libvirt runs the
  domain;
- ``-no-shutdown`` goes: libvirt stops QEMU itself when the guest powers off; alone, QEMU
  would wait forever;
- the serial port's pty (which libvirtd relays) becomes ``stdio``, a pipe we read.

The same image boots to the same marker, timed the same way (host clock from just before
starting the process, console bytes stamped as they arrive, the same phases), so
``libvirt_guest`` time minus this time is libvirt's own overhead. On timeout or any error
QEMU is killed and reaped here: it is our child, not libvirtd's.

Introduced in notebooks/01-containers-vs-vms.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from vm_compare import libvirt_guest, probes
from vm_compare.libvirt_guest import Boot, Console

if TYPE_CHECKING:
    from vm_compare.guest_image import GuestFiles


def native_command(xml: str, uri: str | None = None) -> tuple[dict[str, str], list[str]]:
    """libvirt's QEMU command line for ``xml``: the environment it sets, and the argv."""
    _, conn = libvirt_guest.connect(uri or probes.libvirt_uri())
    try:
        text = conn.domainXMLToNative("qemu-argv", xml, 0)
    finally:
        conn.close()
    return libvirt_guest.split_command(text)


def adapt(argv: list[str]) -> tuple[list[str], list[str]]:
    """libvirt's argv changed only where it needs libvirt; also returns what changed, and why."""
    out, changes = [argv[0]], []
    for option in _options(argv[1:]):
        flag, value = option[0], " ".join(option[1:])
        if flag == "-S":
            changes.append("dropped -S: libvirt starts QEMU paused and resumes it over QMP")
        elif flag == "-daemonize":
            changes.append("dropped -daemonize: QEMU stays our child, so we reap it")
        elif flag == "-no-shutdown":
            changes.append("dropped -no-shutdown: libvirt ends QEMU when the guest powers "
                           "off; alone it would wait forever")
        elif (flag == "-chardev" and "id=charmonitor" in value) or flag == "-mon":
            changes.append(f"dropped {flag} {value}: the QMP monitor is libvirt's socket")
        elif flag == "-object" and '"qom-type":"secret"' in value:
            changes.append("dropped -object secret: libvirt's master key file for the domain")
        elif flag == "-chardev" and value.startswith("pty,"):
            stdio = "stdio," + value.removeprefix("pty,")
            out += [flag, stdio]
            changes.append(f"-chardev {value} -> {stdio}: the serial console goes to our pipe "
                           f"instead of a pty that libvirtd relays")
        else:
            out += option
    return out, changes


@contextmanager
def boot(guest: GuestFiles, *, uri: str | None = None, accel: str | None = None,
         timeout: float | None = None, name: str | None = None,
         memory_mib: int | None = None) -> Iterator[Boot]:
    """Boot ``guest`` with libvirt's command line run by hand; yield it at its marker."""
    uri = uri or probes.libvirt_uri()
    accel = accel or libvirt_guest.choose_accel()
    name = name or libvirt_guest.new_name()
    b = Boot(name=name, via="raw qemu", uri=uri, accel=accel, xml="", t0=0.0,
             console=Console())
    workdir = proc = pump = None
    stderr = bytearray()
    try:
        workdir, disk = libvirt_guest.make_workdir(name, guest)
        b.xml = libvirt_guest.domain_xml(guest, name=name, accel=accel, memory_mib=memory_mib,
                                         disk=disk)
        env, native = native_command(b.xml, uri)
        b.argv, b.changes = adapt(native)
        # A tag in QEMU's environment (its argv stays libvirt's) lets cleanup_stale find a
        # QEMU whose caller was killed before it could kill QEMU.
        env["EDU_GUEST_OWNER"] = libvirt_guest.owner_tag()
        b.t0 = time.monotonic()
        proc = subprocess.Popen(b.argv, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        b.times["create_call"] = time.monotonic() - b.t0
        b.qemu_pid = proc.pid
        pump = threading.Thread(target=_pump, args=(proc, b.console, stderr),
                                name=f"{name}-console", daemon=True)
        pump.start()
        b.wait_marker(guest.marker, b.t0 + (timeout or libvirt_guest.TIMEOUTS[accel]))
        yield b
    finally:
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()  # reaps it: no zombie
            pump.join()
            proc.stdout.close()
            proc.stderr.close()
            b.qemu_log = stderr.decode(errors="replace")
        b.console.close()
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


def _options(words: list[str]) -> list[list[str]]:
    """Group argv words into options: each "-flag" with the values that follow it."""
    groups: list[list[str]] = []
    for word in words:
        if word.startswith("-") or not groups:
            groups.append([word])
        else:
            groups[-1].append(word)
    return groups


def _pump(proc: subprocess.Popen, console: Console, stderr: bytearray) -> None:
    """Feed QEMU's stdout (the serial console) into ``console`` until QEMU closes both pipes."""
    sinks = {proc.stdout.fileno(): console.feed, proc.stderr.fileno(): stderr.extend}
    while sinks:
        ready, _, _ = select.select(list(sinks), [], [])
        for fd in ready:
            chunk = os.read(fd, 65536)
            if chunk:
                sinks[fd](chunk)
            else:
                del sinks[fd]
    console.close()
