"""`qrun plan -o md`: the plan as a pull-request comment.

One summary line first (what runs, what is cached, what it costs), so that a reviewer sees
the gist without opening anything; the details (experiments by circuit and backend, what
changed, what is retired, the cost per backend) in a collapsed section. The whole comment
stays under GitHub's limit of 65,536 characters: tables are cut with "… and N more".
"""

from __future__ import annotations

import json

from .changes import shown
from .costs import money

GITHUB_LIMIT = 65_536  # characters in an issue or pull-request comment
_CLOSING_ROOM = 4_000  # kept for the sections after a cut table and the closing tags
_COLUMNS = ("new", "changed", "resume", "retry", "failed", "cached", "retired")


def markdown(report, limit: int = GITHUB_LIMIT) -> str:
    """The plan report as GitHub-flavoured Markdown, at most ``limit`` characters."""
    page = _Page(limit - _CLOSING_ROOM)
    page.add(summary(report), "")
    if report.over_budget:
        page.add(f"> [!WARNING]\n> apply would refuse this plan: {_cell(report.over_budget)}", "")
    page.add("<details><summary>Details</summary>", "")
    _counts(page, report)
    _changes(page, report)
    _experiments(page, report)
    _retired(page, report)
    page.room += _CLOSING_ROOM - 600  # the cost table and the closing lines are always shown
    _cost(page, report)
    page.add(f"Manifest sha256 `{report.manifest_sha256[:12]}`, state `{report.state_sha256[:12]}`; "
             "`qrun plan -o json` gives every figure.", "", "</details>")
    return "\n".join(page.lines) + "\n"


def summary(report) -> str:
    """One line: what runs (by reason), what is cached and retired, the estimated cost."""
    t = report.totals
    why = ", ".join(f"{t[reason]:,} {reason}" for reason in ("new", "changed", "resume", "retry")
                    if t[reason])
    parts = [f"**{report.to_run:,} to run**" + (f" ({why})" if why else ""), f"{t['cached']:,} cached"]
    if t["failed"]:
        parts.append(f"{t['failed']:,} failed (left for `qrun retry`)")
    if t["retired"]:
        parts.append(f"{t['retired']:,} retired")
    cost = report.cost
    return (f"**qrun plan** `{report.campaign}`: {', '.join(parts)}; estimated cost "
            f"**{money(cost.total, cost.currency)}**.")


class _Page:
    """Lines of Markdown within a budget of characters."""

    def __init__(self, room: int):
        self.lines: list[str] = []
        self.room = room

    def fits(self, text: str) -> bool:
        return len(text) + 1 <= self.room

    def add(self, *lines: str) -> None:
        for line in lines:
            self.lines.append(line)
            self.room -= len(line) + 1

    def table(self, header: tuple, rows, total: int, more: str) -> None:
        """A table of as many rows as fit, then "… and N more" for the rest of ``total``."""
        self.add("| " + " | ".join(header) + " |", "|" + "---|" * len(header))
        shown_rows = 0
        for row in rows:
            line = "| " + " | ".join(_cell(value) for value in row) + " |"
            if not self.fits(line + "\n… and 1,000,000 more " + more):
                break
            self.add(line)
            shown_rows += 1
        if total > shown_rows:
            self.add("", f"… and {total - shown_rows:,} more {more}")
        self.add("")


def _cell(value) -> str:
    text = value if isinstance(value, str) else shown(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _code(value: str) -> str:
    return f"`{value}`" if "`" not in value else value


def _counts(page: _Page, report) -> None:
    page.add("**Experiments by circuit and backend**", "")
    rows = ([_code(r["circuit"]), _code(r["backend"]), r["provider"], *(f"{r[c]:,}" for c in _COLUMNS)]
            for r in report.rows)
    page.table(("circuit", "backend", "provider", *_COLUMNS), rows, len(report.rows),
               "rows (`qrun plan -o json` lists all)")


def _what(changes: list) -> str:
    return "; ".join(f"{c['field']} {shown(c['before'])} → {shown(c['after'])}"
                     + (" (first of them)" if c.get("varies") else "") for c in changes)


def _changes(page: _Page, report) -> None:
    if not report.changes:
        return
    page.add("**What changed** (stored experiments of the same circuit, backend and sweep point)", "")
    rows = ([_code(g["circuit"]), _code(g["backend"]), f"{g['experiments']:,}", _what(g["changes"])]
            for g in report.changes)
    page.table(("circuit", "backend", "experiments", "change"), rows, len(report.changes),
               "groups of changes")


def _params(params: dict) -> str:
    return ", ".join(f"{name}={shown(value)}" for name, value in params.items()) or "—"


def _experiments(page: _Page, report) -> None:
    listed = report.experiments
    if not listed:
        return
    total = len(listed) + report.experiments_left_off
    page.add("**Experiments not cached**, in manifest order", "")
    rows = ([e["reason"], _code(e["circuit"]), _code(e["backend"]), _params(e["params"]),
             _what(e.get("changes", [])) or "—"] for e in listed)
    page.table(("reason", "circuit", "backend", "params", "what changed"), rows, total,
               "experiments not cached")


def _retired(page: _Page, report) -> None:
    total = report.totals["retired"]
    if not total:
        return
    page.add(f"**Retired**: {total:,} stored experiment{'s' if total != 1 else ''} the manifest "
             "no longer produces; not run, their results are kept in the state.", "")
    rows = ([_code(r["circuit"]), _code(r["backend"]), _params(r["params"]), r["state"]]
            for r in report.retired)
    page.table(("circuit", "backend", "params", "state"), rows, total, "retired experiments")


def _cost(page: _Page, report) -> None:
    estimate = report.cost
    currency = estimate.currency
    page.add("**Estimated cost**", "")
    rows = ([_code(r.backend), f"{r.work.tasks:,}", f"{r.work.shots:,}", money(r.cost, currency),
             money(r.spent, currency), r.price.source if r.price else "none known"]
            for r in estimate.backends.values())
    page.table(("backend", "tasks", "shots", "estimate", "sent before", "price"), rows,
               len(estimate.backends), "backends")
    if report.budget is not None:
        page.add(f"Budget: `{json.dumps(_budget(report.budget))}`", "")


def _budget(budget) -> dict:
    return {"total": budget.total, "backends": budget.backends, "currency": budget.currency}
