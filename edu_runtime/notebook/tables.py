"""Tables for a projector, drawn from plain data (so a replay draws them the same way):
the doctor's report in colour, and what each lesson will do live here and what it will
replay.

Introduced in notebooks/00-start-here.
"""

from __future__ import annotations

import html
from typing import Any

COLOURS = {"pass": "#2ca02c", "warn": "#e69500", "fail": "#d62728",
           "live": "#2ca02c", "replay": "#1f77b4"}
CELL = "padding:3px 10px;text-align:left;vertical-align:top"


def _tag(word: str) -> str:
    return (f"<td style='{CELL};color:white;background:{COLOURS[word]};font-weight:bold;"
            f"text-align:center'>{word.upper()}</td>")


class Table:
    """Rows shown as a coloured HTML table in JupyterLab and as aligned text elsewhere."""

    def __init__(self, rows: list[list[str]], html_rows: list[str], footer: str = "",
                 banner: str = ""):
        self.rows, self.html_rows, self.footer, self.banner = rows, html_rows, footer, banner

    def __repr__(self) -> str:
        widths = [max(len(r[i]) for r in self.rows) for i in range(len(self.rows[0]) - 1)] \
            if self.rows else []
        lines = [f"[{self.banner}]"] if self.banner else []
        for r in self.rows:
            lines.append("  " + "  ".join(f"{c:<{w}}" for c, w in zip(r, widths, strict=False))
                         + "  " + r[-1])
        return "\n".join(lines + ([f"\n{self.footer}"] if self.footer else []))

    def _repr_html_(self) -> str:
        top = f"<p><i>{html.escape(self.banner)}</i></p>" if self.banner else ""
        foot = f"<p style='font-size:16px'><b>{html.escape(self.footer)}</b></p>" \
            if self.footer else ""
        return (f"{top}<table style='font-size:15px;border-collapse:collapse'>"
                f"{''.join(self.html_rows)}</table>{foot}")


def doctor_table(report: dict[str, Any]) -> Table:
    """``edu doctor --json`` as a table: status, probe, what was found, and the fix."""
    rows, out = [], []
    for r in report["results"]:
        status = r["status"]
        fix = r.get("fix") if status != "pass" else None
        rows.append([status.upper(), r["name"], r["summary"] + (f" (fix: {fix})" if fix
                                                                 else "")])
        out.append(f"<tr>{_tag(status)}<td style='{CELL}'><b>{html.escape(r['name'])}</b>"
                   f"</td><td style='{CELL}'>{html.escape(r['summary'])}"
                   + (f"<br><i>fix: {html.escape(fix)}</i>" if fix else "") + "</td></tr>")
    return Table(rows, out, report.get("verdict", ""), report.get("replay", ""))


def plan_table(plan: list[dict[str, str]]) -> Table:
    """What each lesson's parts will do on this host: live, or replay (and why)."""
    rows, out = [], []
    for p in plan:
        rows.append([p["lesson"], p["part"], p["how"].upper(), p["what"] + (
            f" ({p['why']})" if p["why"] else "")])
        out.append(f"<tr><td style='{CELL}'>{html.escape(p['lesson'])}</td>"
                   f"<td style='{CELL}'>{html.escape(p['part'])}</td>{_tag(p['how'])}"
                   f"<td style='{CELL}'>{html.escape(p['what'])}"
                   + (f"<br><small>{html.escape(p['why'])}</small>" if p["why"] else "")
                   + "</td></tr>")
    live = sum(p["how"] == "live" for p in plan)
    return Table(rows, out, f"{live} of {len(plan)} parts run live on this machine; the "
                            f"rest replay a real run, and say so.")
