"""``edu doctor``: what this machine can do for the course, and what to do about the rest.

The probes live beside the code they test (``edu_runtime.probes`` for the runtime,
``vm_compare.probes`` for virtual machines); this module only runs them, orders the report
and decides the exit code. ``assemble`` is pure, so its decisions are tested over injected
results. Introduced in notebooks/00-start-here.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from edu_runtime.probes import FAIL, PASS, WARN, ProbeResult
from edu_runtime.probes import run_all as runtime_probes

SCHEMA = 1


@dataclass
class Report:
    """The doctor's verdict: every probe's result, and whether the course can run."""

    results: list[ProbeResult]
    can_run: bool
    verdict: str

    @property
    def exit_code(self) -> int:
        """0 when the course can run (even degraded), 1 when it cannot."""
        return 0 if self.can_run else 1

    def to_json(self) -> str:
        """The report as JSON (``edu doctor --json``), with a versioned schema."""
        return json.dumps({"schema": SCHEMA, "can_run": self.can_run, "verdict": self.verdict,
                           "exit_code": self.exit_code,
                           "results": [r.to_dict() for r in self.results]}, indent=2)

    def to_text(self, color: bool = False) -> str:
        """The report as aligned lines: status, probe, what was found, and the fix."""
        paint = {PASS: "32", WARN: "33", FAIL: "31"}
        width = max(len(r.name) for r in self.results)
        lines = []
        for r in self.results:
            tag = r.status.upper()
            if color:
                tag = f"\033[{paint[r.status]}m{tag}\033[0m"
            lines.append(f"  {tag}  {r.name:<{width}}  {r.summary}")
            if r.fix and r.status != PASS:
                lines.append(f"        {'':<{width}}  fix: {r.fix}")
        return "\n".join(lines + ["", self.verdict])


def assemble(results: Iterable[ProbeResult]) -> Report:
    """Decide: the course cannot run if a critical probe failed; warnings only degrade it."""
    results = list(results)
    blocking = [r for r in results if r.status == FAIL and r.critical]
    warned = [r for r in results if r.status != PASS and r not in blocking]
    if blocking:
        verdict = "The course cannot run here: " + "; ".join(
            f"{r.name}: {r.summary}" for r in blocking) + "."
    elif warned:
        verdict = (f"The course can run, degraded in {len(warned)} place(s): "
                   + ", ".join(r.name for r in warned) + ".")
    else:
        verdict = "The course can run here, with everything real."
    return Report(results, not blocking, verdict)


def vm_probes(refresh: bool = False, fetch: bool = False) -> list[ProbeResult]:
    """KVM and libvirt, from vm_compare; a VM problem degrades one lesson, never blocks."""
    from vm_compare import probes  # imported here: doctor only, never on `edu run`'s path

    out = []
    for name, call in (("kvm", lambda: probes.probe_kvm(refresh=refresh, fetch=fetch)),
                       ("libvirt", probes.probe_libvirt)):
        try:
            d = call()
            out.append(ProbeResult(d["name"], d["status"], d["summary"], d.get("fix"),
                                   d.get("data") or {}, critical=False))
        except Exception as exc:  # noqa: BLE001 - doctor must always finish its report
            out.append(ProbeResult(name, FAIL, f"probe crashed: {exc!r}",
                                   "Please report this with edu doctor --json.",
                                   critical=False))
    return out


def run_doctor(refresh: bool = False, fetch: bool = False,
               progress: Callable[[str], None] | None = None) -> Report:
    """Run every probe on this machine and assemble the report."""
    if progress:
        progress("probing the kernel: namespaces, cgroups, overlayfs, capabilities ...")
    results = runtime_probes()
    if progress:
        progress("probing virtual machines: KVM (by booting the probe guest), libvirt ...")
    results += vm_probes(refresh=refresh, fetch=fetch)
    return assemble(results)


def main(args) -> int:
    """Entry point for ``edu doctor``."""
    say = None if args.json else (lambda msg: print(msg, file=sys.stderr, flush=True))
    report = run_doctor(refresh=args.refresh, fetch=args.fetch, progress=say)
    if args.json:
        print(report.to_json())
    else:
        print("edu doctor: what this machine can do for the course\n")
        print(report.to_text(color=sys.stdout.isatty()))
    return report.exit_code
