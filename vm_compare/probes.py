"""VM probes for ``edu doctor``: can this machine boot a VM, how, and can libvirt manage it?

Each probe returns a plain dict the CLI turns into a pass/warn/fail line::

    {"name": str, "status": "pass" | "warn" | "fail", "summary": str, "fix": str | None,
     "data": {...}}

Every probe is two halves. A *gatherer* touches the machine (boots QEMU, connects to libvirt)
and returns raw facts; a *verdict* function turns facts into the dict above and touches nothing.
Tests feed the verdict functions invented facts ("KVM hung, TCG booted") without needing a host
that really behaves that way.

The KVM probe boots real guests, which takes seconds, so its verdict is cached in
``cache_dir()/doctor/kvm.json``. The cache key is what could change the answer: the host's boot
id (a reboot may load or unload kvm modules), the QEMU version and the guest kernel and initramfs.

Introduced in notebooks/00-start-here (edu doctor) and notebooks/01-containers-vs-vms.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from edu_runtime import paths
from vm_compare import kernel_pkg, probe_guest
from vm_compare.probe_guest import BootResult

KVM_TIMEOUT = 12.0  # a working KVM reaches the marker in well under a second
TCG_TIMEOUT = 60.0  # software emulation: about 7-9 s here, slower on a busy laptop

LIBVIRT_MISSING_FIX = "pip install libvirt-python (make lab installs it)"
LIBVIRTD_FIX = "start libvirtd (make lab starts it: scripts/services.sh start)"


def result(name: str, status: str, summary: str, fix: str | None = None, **data) -> dict:
    """Build one probe result dict in the shape ``edu doctor`` expects."""
    assert status in ("pass", "warn", "fail"), status
    return {"name": name, "status": status, "summary": summary, "fix": fix, "data": data}


# --- KVM / TCG -----------------------------------------------------------------------------


def kvm_verdict(kvm_boot: BootResult | None, tcg_boot: BootResult | None) -> dict:
    """Decide pass/warn/fail from the two probe boots (None means that boot was not tried)."""
    boots = {"kvm": _boot_summary(kvm_boot), "tcg": _boot_summary(tcg_boot)}
    tcg_ok = tcg_boot is not None and tcg_boot.seen
    if kvm_boot is not None and kvm_boot.seen:
        return result(
            "kvm",
            "pass",
            f"KVM works: guest reached its marker in {kvm_boot.seconds:.1f} s "
            f"(TCG fallback {_why_not(tcg_boot)})",
            accel="kvm",
            boots=boots,
        )
    if tcg_ok:
        return result(
            "kvm",
            "warn",
            f"KVM unusable ({_why_not(kvm_boot)}), using TCG "
            f"(guest reached its marker in {tcg_boot.seconds:.1f} s)",
            _kvm_fix(kvm_boot),
            accel="tcg",
            boots=boots,
        )
    return result(
        "kvm",
        "fail",
        f"no VM could boot: KVM {_why_not(kvm_boot)}; TCG {_why_not(tcg_boot)}",
        "check that qemu-system-x86 is installed and the guest kernel is fetched (make lab), "
        "then read the console output in `edu doctor --json`.",
        accel=None,
        boots=boots,
    )


def probe_kvm(
    refresh: bool = False, fetch: bool = False, progress: Callable[[str], object] = print
) -> dict:
    """Boot the probe guest under KVM then TCG, once per host boot; return the verdict."""
    try:
        kernel = kernel_pkg.ensure_kernel(progress) if fetch else kernel_pkg.installed_kernel()
        if kernel is None:
            return result(
                "kvm",
                "fail",
                "cannot test KVM: the guest kernel has not been fetched yet",
                "run make lab (or `edu doctor --fetch`)",
            )
        key = _kvm_cache_key(kernel)
    except (kernel_pkg.KernelFetchError, probe_guest.GuestError) as err:
        return result("kvm", "fail", *_split_fix(str(err)))
    cache = kvm_cache_path()
    if not refresh:
        cached = _read_cache(cache, key)
        if cached is not None:
            cached["data"]["cached"] = True
            return cached
    kvm_boot = probe_guest.boot_raw("kvm", KVM_TIMEOUT, kernel)
    tcg_boot = probe_guest.boot_raw("tcg", TCG_TIMEOUT, kernel)
    verdict = kvm_verdict(kvm_boot, tcg_boot)
    _write_cache(cache, key, verdict)
    verdict["data"]["cached"] = False
    return verdict


def kvm_cache_path() -> Path:
    """The file that remembers the KVM verdict for this host boot."""
    return paths.cache_dir() / "doctor" / "kvm.json"


def host_boot_id() -> str:
    """The host kernel's random boot id: it changes on every reboot."""
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _kvm_cache_key(kernel: kernel_pkg.KernelInfo) -> dict:
    """Everything that, if changed, could change the KVM verdict."""
    initrd = probe_guest.ensure_probe_initramfs()
    return {
        "host_boot_id": host_boot_id(),
        "qemu": probe_guest.qemu_version(),
        "kernel": kernel.to_json(),
        "initramfs": json.loads(initrd.with_suffix(".json").read_text()),
    }


def _read_cache(cache: Path, key: dict) -> dict | None:
    """The cached verdict if it was made under the same key, else None."""
    try:
        stored = json.loads(cache.read_text())
    except (OSError, ValueError):
        return None
    if stored.get("key") != key:
        return None
    return stored.get("verdict")


def _write_cache(cache: Path, key: dict, verdict: dict) -> None:
    """Store the verdict atomically; a doctor run reading it never sees half a file."""
    paths.ensure(cache.parent)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"key": key, "verdict": verdict}, indent=2, sort_keys=True) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, cache)


def _why_not(boot: BootResult | None) -> str:
    """A short phrase saying why a boot did not reach its marker."""
    if boot is None:
        return "was not tried"
    if boot.seen:
        return f"booted in {boot.seconds:.1f} s"
    if boot.timed_out:
        return f"guest did not reach its marker in {boot.timeout:g} s"
    errors = [line for line in boot.stderr.splitlines() if "warning" not in line.lower()]
    last = (errors or boot.stderr.splitlines() or ["no output"])[-1]
    return f"qemu exited with status {boot.returncode}: {last}"


def _kvm_fix(kvm_boot: BootResult | None) -> str:
    """What to do about an unusable KVM, judged from how the KVM boot failed."""
    if kvm_boot is not None and "Permission denied" in kvm_boot.stderr:
        todo = "add yourself to the kvm group (adduser $USER kvm) and log in again"
    else:
        todo = "enable hardware virtualisation (on a cloud VM: nested virtualisation)"
    return (
        f"VM lessons still run, only slower (software emulation). For KVM: {todo}, "
        "then re-check with `edu doctor --refresh`."
    )


def _boot_summary(boot: BootResult | None) -> dict | None:
    """The parts of a BootResult worth keeping in the doctor cache (console trimmed)."""
    if boot is None:
        return None
    summary = boot.to_dict()
    summary["console"] = boot.console[-2000:]
    return summary


def _split_fix(message: str) -> tuple[str, str | None]:
    """Split "what failed. Fix: do this." into (summary, fix)."""
    summary, _, fix = message.partition(" Fix: ")
    return summary.rstrip("."), (fix.rstrip(".") or None)


# --- libvirt -------------------------------------------------------------------------------


def libvirt_uri() -> str:
    """``qemu:///system`` for root, ``qemu:///session`` (the user's own daemon) otherwise."""
    return "qemu:///system" if os.geteuid() == 0 else "qemu:///session"


def libvirt_facts(uri: str | None = None) -> dict:
    """Connect to libvirt and collect versions and the domain types it offers for x86_64."""
    uri = uri or libvirt_uri()
    facts = {"uri": uri, "module": False, "error": None}
    try:
        import libvirt  # lazy: importing it costs start-up time every CLI call would pay
    except ImportError:
        return facts
    facts["module"] = True
    # Without this, libvirt prints every error to stderr itself, before we can explain it.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as err:
        facts["error"] = str(err)
        return facts
    try:
        facts["libvirt_version"] = _version(conn.getLibVersion())
        facts["hypervisor_version"] = _version(conn.getVersion())
        facts["driver"] = conn.getType()
        facts["domain_types"] = domain_types(conn.getCapabilities())
    except libvirt.libvirtError as err:
        facts["error"] = str(err)
    finally:
        conn.close()
    return facts


def domain_types(capabilities_xml: str, arch: str = "x86_64") -> list[str]:
    """Domain types ("kvm", "qemu") the capabilities XML offers for ``arch``, sorted."""
    root = ET.fromstring(capabilities_xml)
    found = {
        domain.get("type")
        for guest in root.findall("guest")
        for guest_arch in guest.findall("arch")
        if guest_arch.get("name") == arch
        for domain in guest_arch.findall("domain")
    }
    return sorted(t for t in found if t)


def libvirt_verdict(facts: dict) -> dict:
    """Decide pass/fail from ``libvirt_facts`` output."""
    uri = facts.get("uri")
    if not facts.get("module"):
        return result(
            "libvirt",
            "fail",
            "the libvirt Python module is not installed",
            LIBVIRT_MISSING_FIX,
            uri=uri,
        )
    error = facts.get("error")
    if error:
        fix = LIBVIRTD_FIX
        if "ermission denied" in error:
            fix = "add yourself to the libvirt group (adduser $USER libvirt), then log in again"
        return result("libvirt", "fail", f"cannot connect to {uri}: {error}", fix, uri=uri)
    types = facts.get("domain_types") or []
    data = {k: facts.get(k) for k in ("uri", "libvirt_version", "hypervisor_version", "driver")}
    data["domain_types"] = types
    if not types:
        return result(
            "libvirt",
            "fail",
            f"{uri} offers no x86_64 guests",
            "apt-get install qemu-system-x86, then restart libvirtd",
            **data,
        )
    return result(
        "libvirt",
        "pass",
        f"libvirt {data['libvirt_version']} at {uri}, {data['driver']} "
        f"{data['hypervisor_version']}, domain types: {', '.join(types)}",
        **data,
    )


def probe_libvirt(uri: str | None = None) -> dict:
    """Check that libvirt answers at the right URI and can run x86_64 guests."""
    return libvirt_verdict(libvirt_facts(uri))


def _version(number: int) -> str:
    """libvirt packs versions as major * 1,000,000 + minor * 1,000 + release."""
    return f"{number // 1_000_000}.{number // 1_000 % 1_000}.{number % 1_000}"
