"""Terminal output of the CLI: tables and the progress bar, drawn with rich.

Kept apart from cli.py so the command definitions stay short, and imported only by commands
that print, so `qrun --help` never pays for rich.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def reported_usage(reported: dict, currency: str) -> str:
    """One backend's usage as its provider reported it, and the calibrations seen."""
    from .costs import money

    figures = [f"{reported[name]:,} {name}" for name in ("tasks", "shots") if reported.get(name) is not None]
    if reported.get("seconds") is not None:
        figures.append(f"{reported['seconds']:,.1f} seconds")
    text = (f"provider reported {', '.join(figures) or 'no usage figures'} over {reported['jobs']:,} "
            f"jobs, {money(reported['cost'], currency)}")
    for name, jobs in (reported.get("unknown_for") or {}).items():
        text += f"; {name} unknown for {jobs:,} jobs"
    if reported.get("unsettled"):
        text += (f"; {reported['unsettled']:,} jobs' usage not settled by the provider yet "
                 "(the next apply reads it again)")
    calibrations = reported.get("calibrations") or []
    if calibrations:
        text += (f"; ran under {len(calibrations)} calibration(s), latest "
                 f"{calibration_label(calibrations[-1])}")
    return text


def calibration_label(calibration: dict) -> str:
    """A calibration in a few characters: when the provider last updated the device's
    figures (IBM, Braket), else a digest of the figures it published (Pasqal and Quandela
    give no date: their specs' own "version" is a schema version, not the device's)."""
    dated = next((v for k, v in calibration.items() if "update" in k and v), None)
    if dated:
        return str(dated)
    digests = [f"{k.removesuffix('_sha256')} {str(v)[:12]}" for k, v in calibration.items()
               if k.endswith("_sha256") and v]
    if digests:
        return ", ".join(digests)
    return ", ".join(f"{k} {v}" for k, v in calibration.items() if v) or "unnamed"


PLAN_COLUMNS = ("new", "changed", "resume", "retry", "failed", "cached", "retired")


def plan(report) -> None:
    from .changes import shown

    table = Table(title=f"plan for campaign {report.campaign}", title_justify="left")
    for column in ("circuit", "backend", "provider"):
        table.add_column(column, overflow="fold")
    rows = report.rows[:MAX_TABLE_ROWS]
    # Only the reasons this plan has: ten columns of mostly zeros fit no terminal, and the
    # totals line below names every reason anyway.
    reasons = [c for c in PLAN_COLUMNS if any(row[c] for row in report.rows)] or ["cached"]
    for column in reasons:
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(row["circuit"], row["backend"], row["provider"],
                      *(str(row[column]) for column in reasons))
    out.print(table)
    if len(report.rows) > len(rows):
        out.print(f"... and {len(report.rows) - len(rows)} more rows (`qrun plan -o json` lists all)")
    t = report.totals
    out.print(f"Plan: {report.to_run} to run ({t['new']} new, {t['changed']} changed, "
              f"{t['resume']} to resume, {t['retry']} to retry), {t['cached']} cached, "
              f"{t['failed']} failed, {t['retired']} retired.")
    for group in report.changes[:MAX_TABLE_ROWS]:
        what = "; ".join(f"{c['field']} {shown(c['before'])} -> {shown(c['after'])}"
                         + (" (first of them)" if c.get("varies") else "") for c in group["changes"])
        out.print(f"  changed: {group['circuit']} on {group['backend']}, "
                  f"{group['experiments']} experiment{'s' if group['experiments'] != 1 else ''}: {what}",
                  soft_wrap=True)
    if len(report.changes) > MAX_TABLE_ROWS:
        out.print(f"  ... and {len(report.changes) - MAX_TABLE_ROWS} more groups of changes")
    if t["retired"]:
        one = t["retired"] == 1
        out.print(f"{t['retired']} stored experiment{'' if one else 's'} {'is' if one else 'are'} "
                  "no longer produced by the manifest: retired, not run; "
                  f"{'its results are' if one else 'their results are'} kept in the state.")
    if t["failed"]:
        out.print("Failed experiments are not run again by apply; use `qrun retry` once the "
                  "cause is fixed.")
    _cost(report.cost, report.budget)


def _cost(estimate, budget) -> None:
    """The estimate per backend (where anything costs or is unknown), its total, the budget."""
    from .costs import money

    currency = estimate.currency
    priced = [r for r in estimate.backends.values()
              if r.price is None or r.price.per_task or r.price.per_shot or r.price.per_second]
    if priced:
        table = Table(title="estimated cost", title_justify="left")
        for column in ("backend", "tasks", "shots", "estimate", "sent before", "price"):
            table.add_column(column, justify="right" if column in ("tasks", "shots") else "left")
        for row in priced:
            table.add_row(row.backend, f"{row.work.tasks:,}", f"{row.work.shots:,}",
                          money(row.cost, currency), money(row.spent, currency),
                          row.price.source if row.price else "none known")
        out.print(table)
        for row in priced:
            if row.cost is None:
                out.print(f"{row.backend}: cost unknown, {row.why_unknown}.")
    free = len(estimate.backends) - len(priced)
    note = f" ({free} backend{'s' if free != 1 else ''} free: local or rehearsal)" if free else ""
    out.print(f"Estimated cost: {money(estimate.total, currency)}{note}.")
    if budget is not None:
        parts = []
        if budget.total is not None:
            parts.append(f"{money(budget.total, budget.currency)} in total")
        parts += [f"{money(bound, budget.currency)} on {name}" for name, bound in budget.backends.items()]
        out.print(f"Budget: {', '.join(parts)}; sent before: {money(estimate.spent, currency)}.")


class ApplyProgress:
    """The engine's progress sink: a bar of experiments done, on terminals only."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and err.is_terminal
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def start(self, planned, total: int, done: int) -> None:
        if not self.enabled:
            return
        self._progress = Progress(TextColumn("[bold]apply"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(),
                                  TextColumn("{task.fields[note]}"), console=err, transient=False)
        self._task = self._progress.add_task("apply", total=total, completed=done, failed=0, note="")
        self._progress.start()

    def experiments_finished(self, done: int, failed: int) -> None:
        if self._progress is not None and self._task is not None:
            task = self._progress.tasks[0]
            self._progress.update(self._task, advance=done + failed,
                                  failed=task.fields["failed"] + failed, note="")

    def waiting(self, backend: str, reason: str) -> None:
        """Submissions wait for room at a provider: said on the bar until work moves again."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, note=f"{backend}: waiting for room at the provider")

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


# A summary table longer than this is cut: thousands of circuits would bury the totals.
MAX_TABLE_ROWS = 40


def _state_table(rows: list, title: str | None = None) -> None:
    """Experiments per backend and circuit by state; failures first when the table is cut."""
    table = Table(title=title, title_justify="left")
    for column in ("backend", "provider", "circuit"):
        table.add_column(column)
    for column in ("done", "failed", "pending"):
        table.add_column(column, justify="right")
    shown = sorted(rows, key=lambda r: (-r.failed, -r.pending))[:MAX_TABLE_ROWS] \
        if len(rows) > MAX_TABLE_ROWS else rows
    for row in shown:
        table.add_row(row.backend, row.provider, row.circuit, str(row.done), _red(row.failed),
                      str(row.pending))
    out.print(table)
    if len(rows) > len(shown):
        out.print(f"... and {len(rows) - len(shown)} more rows (`qrun status -o json` lists all)")


def apply_summary(report, seconds: float) -> None:
    _state_table(report.backends, f"campaign {report.campaign}")
    if report.planned is not None:
        p = report.planned
        out.print(f"{report.run.finished} experiments run, {p.cached} cached, "
                  f"{report.state['failed']} failed, {report.state['pending']} pending "
                  f"in {seconds:.1f} s; state: {report.state_path}", soft_wrap=True)
    for path, count in report.exports:
        out.print(f"exported {count} rows to {path}", soft_wrap=True)
    if report.failures:
        failures(report.failures, report.failure_causes, report.state["failed"])
        err.print("Fix the cause, then run `qrun retry` to give failed experiments new attempts.")
    if report.state["pending"] and not report.interrupted:
        pending(report.pending_causes, report.state["pending"])
    for notice in report.run.notices[:MAX_TABLE_ROWS]:
        err.print(notice, soft_wrap=True)
    if report.injected_faults:
        err.print(f"[yellow]Faults were injected into local runs (QRUN_FAULTS: "
                  f"{report.injected_faults}): a rehearsal.[/yellow]")
    if report.interrupted:
        err.print("Interrupted: finished work is saved; run `qrun apply` again to resume.")


def failures(rows: list, causes: list, failed: int) -> None:
    """What failed and why: the causes with their counts, then the first failed experiments."""
    if len(causes) > 1 or failed > len(rows):
        why = Table(title="why experiments failed", title_justify="left")
        why.add_column("experiments", justify="right")
        for column in ("backend", "error"):
            why.add_column(column, overflow="fold")
        for cause in causes:
            why.add_row(str(cause.experiments), cause.backend, cause.error or "")
        err.print(why)
    table = Table(title="failed experiments", title_justify="left")
    for column in ("circuit", "backend", "params", "error"):
        table.add_column(column, overflow="fold")
    for row in rows:
        params = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in row.params.items())
        table.add_row(row.circuit, row.backend, params, row.error or "")
    err.print(table)
    if failed > len(rows):
        err.print(f"... and {failed - len(rows)} more failed experiments "
                  "(`qrun export` lists each with its error)")


# What an unfinished job waits for, when nothing went wrong with it.
_WAITING = {"pending": "not started yet",
            "submitting": "submission not confirmed: its tag is looked up before anything is sent again",
            "submitted": "at the provider; `qrun apply` re-attaches it",
            "running": "running at the provider; `qrun apply` re-attaches it"}


def pending(causes: list, count: int) -> None:
    """Why experiments are still pending after an apply: per backend, their jobs' state and
    the last thing that held them up (a silent service, a refused lookup, ...)."""
    table = Table(title=f"why {count} experiments are pending", title_justify="left")
    table.add_column("experiments", justify="right")
    for column in ("backend", "job state", "reason"):
        table.add_column(column, overflow="fold")
    for cause in causes:
        table.add_row(str(cause.experiments), cause.backend, cause.job_state,
                      cause.reason or _WAITING.get(cause.job_state, ""))
    err.print(table)


def status(report: dict) -> None:
    counts = report["experiments"]
    out.print(f"campaign [bold]{report['campaign']}[/bold]: {counts['total']} experiments, "
              f"{counts['done']} done, {counts['failed']} failed, {counts['pending']} pending")
    if not report["applied"]:
        out.print(f"not applied yet (state: {report['state_path']})", soft_wrap=True)
    if report["backends"]:
        _state_table(report["backends"])
    last = report["last_apply"]
    if last:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["started_at"]))
        commit = (last["git_commit"] or "no git")[:12]
        dirty = " (dirty)" if last["git_dirty"] else ""
        out.print(f"last {last['command']}: {when}, {last['outcome'] or 'running'}, "
                  f"manifest sha256 {last['manifest_sha256'][:12]}, commit {commit}{dirty}")
    if report["manifest_changed"]:
        out.print("[yellow]The manifest changed since the last apply; `qrun plan` shows what "
                  "would run.[/yellow]")
    if report["lock"]:
        lock = report["lock"]
        state = "running" if lock.alive else "gone (stale lock)"
        out.print(f"locked by pid {lock.pid} on {lock.host}: {state}")
    if report.get("remote_jobs"):
        table = Table(title="remote jobs (unfinished first)", title_justify="left")
        for column in ("job", "backend", "state", "provider state", "remote id"):
            table.add_column(column, overflow="fold")
        for job in report["remote_jobs"]:
            table.add_row(str(job.job), job.backend, job.state, job.provider_state or "",
                          job.remote_id)
        out.print(table)
    spend = report.get("spend")
    if spend and spend["backends"]:
        from .costs import money

        shown = ", ".join(f"{row['backend']} {money(row['cost'], spend['currency'])} "
                          f"({row['tasks']:,} tasks, {row['shots']:,} shots)" for row in spend["backends"])
        out.print(f"sent to providers (estimated at the manifest's prices): "
                  f"{money(spend['total'], spend['currency'])}: {shown}", soft_wrap=True)
        for row in spend["backends"]:
            if row.get("reported"):
                out.print(f"  {row['backend']}: {reported_usage(row['reported'], spend['currency'])}",
                          soft_wrap=True)
    if report["failures"]:
        failures(report["failures"], report["failure_causes"], report["experiments"]["failed"])
    if report.get("pending_causes") and report["applied"]:
        pending(report["pending_causes"], report["experiments"]["pending"])


def _red(count: int) -> str:
    return f"[red]{count}[/red]" if count else "0"


def providers_table(listing: dict) -> None:
    table = Table(title="Providers", title_justify="left")
    for column in ("provider", "kind", "formats", "devices", "package", "fake"):
        table.add_column(column)
    for row in listing["providers"]:
        table.add_row(row["id"], row["kind"], ", ".join(row["formats"]), row["devices"],
                      row["package"] or "", "yes" if row["fake"] else "")
    out.print(table)
