"""The lines of a libvirt domain XML that make a VM a VM, each with what it means.

Lesson 01 explains the hypervisor and the guest OS on the real XML of its busybox guest, as
libvirt completed it (``libvirt_guest.completed_xml``: libvirt fills in the emulator, the
machine type and the CPU model): the raw line first, then its meaning. Nothing here needs
libvirt or the engine, so a replay on any machine can show it.

Introduced in notebooks/01-containers-vs-vms.
"""

from __future__ import annotations

import re
import textwrap
import xml.etree.ElementTree as ET
from pathlib import PurePosixPath

WIDTH = 96  # a raw line longer than this is cut in its middle (a projector's width)


def _hypervisor(dom: ET.Element) -> str:
    if dom.get("type") == "kvm":
        return ("the hypervisor: KVM, in the host's Linux kernel, runs the guest's "
                "instructions on the real CPU; QEMU supplies the devices")
    return ("the hypervisor: 'qemu' is QEMU alone, emulating every guest instruction in "
            "software (TCG), as KVM does not work here; 'kvm' would run them on the real CPU")


def _memory(dom: ET.Element) -> str:
    node = dom.find("memory")
    kib = int(node.text) * {"KiB": 1, "MiB": 1024, "GiB": 2**20}.get(node.get("unit", "KiB"), 1)
    return (f"{kib // 1024} MiB of RAM for the guest, whether it uses it or not; the guest's "
            f"kernel manages it, the host sees only qemu's memory")


def _vcpu(dom: ET.Element) -> str:
    n = dom.findtext("vcpu", "1").strip()
    return (f"{n} virtual CPU{'s' if n != '1' else ''}: a thread of the qemu process; the "
            f"guest's kernel schedules the guest's processes on it")


def _machine(dom: ET.Element) -> str:
    machine = dom.find("os/type").get("machine", "pc")
    chipset = " (Intel's 440FX chipset of 1996)" if "i440fx" in machine else \
        " (Intel's Q35 chipset)" if "q35" in machine else ""
    return (f"a whole PC, emulated: machine {machine}{chipset}; 'hvm' means the guest "
            f"believes it is a real computer and brings its own OS")


def _cpu_model(dom: ET.Element) -> str:
    return (f"the CPU the guest sees: {dom.findtext('cpu/model', '').strip()}, QEMU's "
            f"generic x86-64 model")


def _kernel(dom: ET.Element) -> str:
    name = PurePosixPath(dom.findtext("os/kernel", "").strip()).name
    release = name.removeprefix("vmlinuz-")
    return (f"the guest OS's own kernel, Linux {release}: a second kernel that boots inside "
            f"the VM, beside the host's")


def _initrd(_dom: ET.Element) -> str:
    return ("the busybox image's files, packed as an initramfs: the guest's root filesystem, "
            "unpacked into the guest's own memory")


def _cmdline(dom: ET.Element) -> str:
    return ("the guest kernel's command line: its console is the first serial port (ttyS0), "
            "where it says \"ready\"")


def _emulator(dom: ET.Element) -> str:
    program = PurePosixPath(dom.findtext("devices/emulator", "").strip()).name
    return (f"the program that *is* the VM on the host: one {program} process, the only "
            f"thing of the guest the host's ps can show")


def _serial(_dom: ET.Element) -> str:
    return "the guest's serial port, a pty on the host: how we read its \"ready\" line"


#: what, the start of the raw line (a regular expression), and how to say what it means.
LINES = [
    ("hypervisor", r"<domain\b", _hypervisor),
    ("memory", r"<memory\b", _memory),
    ("vcpu", r"<vcpu\b", _vcpu),
    ("machine", r"<type\b[^>]*\bmachine=", _machine),
    ("kernel", r"<kernel>", _kernel),
    ("initrd", r"<initrd>", _initrd),
    ("cmdline", r"<cmdline>", _cmdline),
    ("cpu model", r"<model\b[^>]*>[^<]", _cpu_model),
    ("emulator", r"<emulator>", _emulator),
    ("serial", r"<serial\b", _serial),
]


def cut(line: str, width: int = WIDTH) -> str:
    """``line`` at most ``width`` characters, cut in its middle with an ellipsis."""
    if len(line) <= width:
        return line
    keep = width - 1
    return line[:keep // 2] + "…" + line[len(line) - (keep - keep // 2):]


def key_lines(xml: str, width: int = WIDTH) -> list[dict[str, str]]:
    """The lines that make this domain a VM, in the XML's order: ``what``, the raw ``line``
    (stripped, cut to ``width``) and what it ``means``. Lines the XML lacks are left out."""
    dom = ET.fromstring(xml)
    raw = xml.splitlines()
    found = []
    for what, start, means in LINES:
        for number, line in enumerate(raw):
            if re.search(start, line):
                found.append((number, {"what": what, "line": cut(line.strip(), width),
                                       "means": means(dom)}))
                break
    return [entry for _, entry in sorted(found, key=lambda f: f[0])]


def explain(xml: str, width: int = WIDTH) -> str:
    """The key lines as text: each raw line, then what it means, indented below it."""
    out = []
    for entry in key_lines(xml, width):
        out.append(entry["line"])
        out.append(textwrap.fill(entry["means"], width, initial_indent="    → ",
                                 subsequent_indent="      "))
    return "\n".join(out)


def _plain(line: str) -> str:
    """A line as libvirt would write it: single quotes, no space before ``/>``."""
    return re.sub(r"\s+/>", "/>", line.strip().replace('"', "'"))


def added_by_libvirt(ours: str, completed: str) -> list[str]:
    """The lines libvirt's completed XML has and ours did not (its choices: the machine
    type, a CPU model, the emulator, devices), raw; the name, uuid and owner left out."""
    mine = {_plain(line) for line in ours.splitlines()}
    skip = ("</", "<name>", "<uuid>", "<metadata", "<edu:owner")
    return [line.strip() for line in completed.splitlines()
            if _plain(line) not in mine and not line.strip().startswith(skip)]
